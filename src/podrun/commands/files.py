"""``podrun files ls|put|get|rm``: a volume's files, through the platform's uplink and downlink."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.text import Text

from ..errors import MissingFile, NotFound
from ..platform.types import FileEntry, walk_entries
from ._common import human_size, note, out, platform, pod_name_option, table, transfer

app = typer.Typer(help="List, upload, download and delete files of a pod's volume.", no_args_is_help=True)


def find(entries: list[FileEntry], path: str) -> FileEntry | None:
    """The entry at ``path`` ('a/b/c') in a listing; a root-like path is the volume itself."""
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    node = FileEntry("directory", "", 0, "", contents=entries)
    for part in parts:
        node = next((child for child in node.contents if child.name == part), None)  # type: ignore[assignment]
        if node is None or (node.type != "directory" and part != parts[-1]):
            return None
    return node


def visible(entries: list[FileEntry], show_all: bool) -> list[FileEntry]:
    """The tree ``ls`` shows: hidden entries (and all beneath them) left out unless ``show_all``."""
    return [replace(entry, contents=visible(entry.contents, show_all)) for entry in entries
            if show_all or not entry.name.startswith(".")]


def _rows(entries: list[FileEntry], depth: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for entry in sorted(entries, key=lambda e: (e.type != "directory", e.name)):
        folder = entry.type == "directory"
        name = Text("  " * depth + entry.name + ("/" if folder else ""), style="bold blue" if folder else "")
        rows.append([name, human_size(entry.size), entry.time])
        if folder:
            rows.extend(_rows(entry.contents, depth + 1))
    return rows


def footer(shown: list[FileEntry], every: list[FileEntry]) -> str:
    """What the table shows, counted; then what it leaves out and how to see it."""
    files, total = walk_entries(shown), walk_entries(every)
    line = f"{len(files)} files, {human_size(sum(e.size for e in files.values()))}"
    hidden = {path: entry for path, entry in total.items() if path not in files}
    if hidden:
        line += f" (and {len(hidden)} hidden, {human_size(sum(e.size for e in hidden.values()))}: --all shows them)"
    return line


@app.command("ls")
def ls(
    path: str = typer.Argument("", help="a folder of the volume (default: its root)"),
    show_all: bool = typer.Option(False, "--all", "-a", help="also show hidden entries (podrun's own .podrun/ folder)"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Show the volume's tree with sizes and modification times (UTC, to the minute)."""
    entry = find(platform().list_files(pod_name), path)
    if entry is None:
        raise NotFound(f"{path!r} is not in the volume {pod_name or '(default)'}")
    entries = entry.contents if entry.type == "directory" else [entry]
    shown = visible(entries, show_all or path.strip("/").startswith("."))
    out().print(table(f"volume {pod_name or '(default)'}:/{path.strip('/')}", ["name", "size", "modified"], _rows(shown, 0),
                      right=["size"]))
    note(footer(shown, entries))


def _plan(paths: list[Path], dest: str) -> list[tuple[str, list[tuple[str, Path]]]]:
    """(volume folder, files) per uplink call: loose files at ``dest``, a folder's tree under
    ``dest/<folder name>/...`` (the EM API takes basenames: one call per folder)."""
    groups: dict[str, list[tuple[str, Path]]] = {}
    base = dest.strip("/")
    for path in paths:
        if path.is_dir():
            path = path.resolve()  # so that '.' or 'a/..' upload under their real folder name
            for folder, _dirs, names in os.walk(path):
                rel = Path(folder).relative_to(path.parent).as_posix()
                target = f"{base}/{rel}" if base else rel
                groups.setdefault(target, []).extend((name, Path(folder) / name) for name in sorted(names))
        elif path.is_file():
            groups.setdefault(base, []).append((path.name, path))
        else:
            raise MissingFile(2, "no such local file or folder", str(path))
    return [(folder, files) for folder, files in groups.items() if files]


@app.command("put")
def put(
    paths: list[Path] = typer.Argument(..., help="local files or folders"),
    dest: str = typer.Option("", "--dest", "-d", help="folder of the volume to put them in (default: its root)"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Upload local files (folders with their tree) into the volume."""
    plan = _plan(paths, dest)
    total = sum(p.stat().st_size for _, files in plan for _, p in files)
    count = sum(len(files) for _, files in plan)
    target = platform()
    with transfer(f"uplink {count} files", total) as progress:
        for folder, files in plan:
            target.uplink(list(files), dest_path=folder, pod_name=pod_name, progress=progress)
    note(f"uplinked {count} files ({human_size(total)}) to {pod_name or '(default)'}:/{dest.strip('/')}")


def _fetch(path: str, size: int, local: Path, pod_name: str | None) -> None:
    """Downlink one file to ``local`` through a temporary name: no half file on a failure."""
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f".{local.name}.part")
    try:
        with open(partial, "wb") as sink, transfer(f"downlink {path}", size) as progress:
            platform().downlink_into(path, sink, pod_name, progress)
        os.replace(partial, local)
    finally:
        partial.unlink(missing_ok=True)


@app.command("get")
def get(
    path: str = typer.Argument(..., help="a file or folder of the volume"),
    local: Path | None = typer.Argument(None, help="where to write it (default: its name here; '-' for stdout)"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Download a file (or a folder's tree) from the volume."""
    clean = path.strip("/")
    entry = find(platform().list_files(pod_name), clean)
    if entry is None or not clean:
        raise NotFound(f"{path!r} is not a file or folder of the volume {pod_name or '(default)'}")
    if str(local) == "-":
        if entry.type == "directory":
            raise IsADirectoryError(21, "a folder cannot be written to stdout", path)
        sys.stdout.flush()
        platform().downlink_into(clean, sys.stdout.buffer, pod_name)
        sys.stdout.buffer.flush()
        return
    target = local or Path(entry.name)
    if target.is_dir() and entry.type == "file":
        target = target / entry.name
    if entry.type == "file":
        _fetch(clean, entry.size, target, pod_name)
        note(f"downlinked {clean} ({human_size(entry.size)}) to {target}")
        return
    files = walk_entries(entry.contents)
    for rel, item in files.items():
        _fetch(f"{clean}/{rel}", item.size, target / rel, pod_name)
    note(f"downlinked {len(files)} files ({human_size(sum(e.size for e in files.values()))}) to {target}/")


@app.command("rm")
def rm(
    path: str = typer.Argument(..., help="a file or folder of the volume (a folder goes with everything in it)"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Delete a file or a folder of the volume."""
    if not path.strip("/"):
        raise typer.BadParameter(
            "refusing to delete the whole volume; name a file or folder (or delete the volume with the EM API)"
        )
    platform().delete(path.strip("/"), pod_name)
    note(f"deleted {pod_name or '(default)'}:/{path.strip('/')}")
