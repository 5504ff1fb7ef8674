"""``podrun objects ls|get|rm``: versioned objects (``podrun.put_object``) in a pod's volume."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cloudpickle
import typer
from rich.pretty import pretty_repr

from ..client import object_access as api
from ..platform.types import FileEntry, walk_entries
from ..store.objects import parse_listing
from ..store.refs import ObjectRef
from ..wire.layout import OBJECTS
from ._common import human_size, note, out, platform, pod_name_option, table

app = typer.Typer(help="Objects of the object cache (put_object and friends) in a pod's volume.", no_args_is_help=True)


def list_objects(entries: list[FileEntry]) -> list[tuple[str, int, int, int, str]]:
    """(key, version, bytes stored, files, last modified) per object, from one volume listing."""
    by_key: dict[str, dict[str, FileEntry]] = {}
    for path, entry in walk_entries(entries).items():
        if not path.startswith(OBJECTS + "/"):
            continue
        parts = path[len(OBJECTS) + 1:].split("/")
        if len(parts) == 5:  # <pod>/<ns>/<id>/<gen>/<version file>
            by_key.setdefault("/".join(parts[:3]), {})["/".join(parts[3:])] = entry
    rows = []
    for key, files in sorted(by_key.items()):
        state = parse_listing({rel: e.size for rel, e in files.items()})
        if state.version:
            size = sum(e.size for e in files.values())
            rows.append((key, state.version, size, len(files), max(e.time for e in files.values())))
    return rows


@app.command("ls")
def ls(
    prefix: str = typer.Argument("", help="only keys starting with this, e.g. 'my-pod/shared'"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """List the objects of a volume with their current version and stored size (one listing call)."""
    rows = [row for row in list_objects(platform().list_files(pod_name)) if row[0].startswith(prefix)]
    out().print(table(f"objects in volume {pod_name or '(default)'}", ["key", "version", "stored", "files", "modified"],
                      [[key, version, human_size(size), count, when] for key, version, size, count, when in rows],
                      right=["version", "stored", "files"]))
    note(f"{len(rows)} objects")


@app.command("get")
def get(
    key: str = typer.Argument(..., help="'<pod_name>/<namespace>/<object_id>' ('_default/...' for the default volume)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write it to this file instead of printing it"),
    max_width: int = typer.Option(200, "--max-width", help="characters of the repr to print"),
) -> None:
    """Print an object's latest value (its repr), or write it to a file: bytes as they are,
    any other value pickled (cloudpickle)."""
    with warnings.catch_warnings(record=True) as caught:  # e.g. patches dropped: a note, not a source line
        warnings.simplefilter("always")
        value = api.get_object(ObjectRef(key, 0))
    for warning in caught:
        note(f"warning: {warning.message}")
    if output is None:
        out().print(pretty_repr(value, max_width=max_width, max_length=50, max_string=max_width), markup=False)
        return
    data = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else cloudpickle.dumps(value, protocol=5)
    partial = output.with_name(f".{output.name}.part")
    partial.write_bytes(data)
    os.replace(partial, output)
    kind = "bytes" if isinstance(value, (bytes, bytearray, memoryview)) else f"a pickled {type(value).__name__}"
    note(f"wrote {key} ({kind}, {human_size(len(data))}) to {output}")


@app.command("rm")
def rm(key: str = typer.Argument(..., help="a full key, or a prefix '<pod_name>/<namespace>' for all its objects")) -> None:
    """Delete one object, or every object under a prefix (one platform call)."""
    api.delete_objects(key)
    note(f"deleted {key}")
