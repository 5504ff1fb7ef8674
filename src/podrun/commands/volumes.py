"""``podrun volumes ls|rm``: the user's volumes, through the platform's pvc routes."""

from __future__ import annotations

import typer

from ..errors import NotFound, UsageError
from ..platform.metered import MeteredPlatform
from ..platform.types import validate_pod_name, walk_entries
from ._common import human_size, note, out, platform, table

app = typer.Typer(help="List and delete your volumes (one per pod_name, and your default one).", no_args_is_help=True)


def pod_of(target: MeteredPlatform, name: str) -> str | None:
    """The pod_name whose volume ``name`` is: None for the default volume."""
    if name == target.default_volume():
        return None
    try:
        return validate_pod_name(name)
    except ValueError as exc:
        raise UsageError(f"{name!r} is not a volume name ({exc}); 'podrun volumes ls' lists yours") from None


def pod_phase(target: MeteredPlatform, pod_name: str | None) -> str:
    """``running``, ``waiting``, ``terminated``, or ``-`` when that pod_name never ran a pod."""
    try:
        return target.pod_status(pod_name).phase
    except NotFound:
        return "-"


@app.command("ls")
def ls(sizes: bool = typer.Option(True, "--sizes/--no-sizes", help="count each volume's files (one listing each)")) -> None:
    """List your volumes with their pod's state (and their files and size)."""
    target = platform()
    names = sorted(target.pvc_list())
    rows: list[list[object]] = []
    total_files = total_bytes = 0
    for name in names:
        try:
            pod_name = pod_of(target, name)
        except UsageError:  # a volume the platform made under a name no pod_name can have
            rows.append([name, "?", "-", *(["?", "?"] if sizes else [])])
            continue
        row: list[object] = [name, pod_name or "(default)", pod_phase(target, pod_name)]
        if sizes:
            files = walk_entries(target.list_files(pod_name))
            size = sum(entry.size for entry in files.values())
            total_files, total_bytes = total_files + len(files), total_bytes + size
            row += [len(files), human_size(size)]
        rows.append(row)
    columns = ["volume", "pod_name", "pod", *(["files", "size"] if sizes else [])]
    out().print(table("volumes", columns, rows, right=["files", "size"], whole=("volume", "pod_name")))
    footer = f"{len(names)} volumes"
    note(footer + (f", {total_files} files, {human_size(total_bytes)}" if sizes else ""))


@app.command("rm")
def rm(
    name: str = typer.Argument(..., help="a volume from 'podrun volumes ls'"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Delete a volume and every file in it (jobs, objects, blobs). Refused while its pod runs."""
    target = platform()
    if name not in target.pvc_list():
        raise NotFound(f"no volume named {name!r}; 'podrun volumes ls' lists yours", code="PVC_NOT_FOUND")
    pod_name = pod_of(target, name)
    phase = pod_phase(target, pod_name)
    if phase in ("running", "waiting"):
        flag = f" -p {pod_name}" if pod_name else ""
        raise UsageError(f"volume {name!r}: its pod is {phase}; wait for it to end ('podrun pods status{flag}'), "
                         "then run this again")
    if not yes and not typer.confirm(f"delete volume {name!r} and everything in it?", default=False, err=True):
        note("nothing deleted")
        raise typer.Exit(1)
    target.pvc_delete(name)
    note(f"deleted volume {name}")
