"""``podrun gc``: show (and with ``--yes`` remove) old jobs, unreferenced blobs and old
journal entries of one volume; the rules are ``client/gc.py``'s."""

from __future__ import annotations

import re

import typer

from ..client import config
from ..client import gc as collecting
from ._common import human_size, note, out, platform, pod_name_option, table

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 86400.0}


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w``; a bare number is days."""
    match = _DURATION.match(text or "")
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration: write e.g. 7d, 12h, 30m, 90s or 2w (a bare number is days)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def gc(
    older_than: str = typer.Option("7d", "--older-than", help="remove finished jobs (and journal entries) older than this"),
    grace: str = typer.Option("1d", "--grace", help="keep any blob used or stored more recently than this"),
    yes: bool = typer.Option(False, "--yes", "-y", help="remove them (without it: only show what would go)"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Bound what a volume keeps: finished jobs older than --older-than, blobs no kept job or
    object references (unused for --grace; never while its pod runs or jobs are queued), and
    old journal entries. Shows what it would remove; --yes removes it."""
    target = platform()
    planned = collecting.plan(target, pod_name, config.home(), parse_duration(older_than), parse_duration(grace))
    rows = [[r.kind, r.path, human_size(r.size) if r.kind != "journal" else "-", r.why] for r in planned.removals]
    volume = pod_name or "(default)"
    out().print(table(f"gc of volume {volume}{'' if yes else ' (dry run: --yes removes)'}",
                      ["kind", "path", "size", "why"], rows, right=["size"], whole=("path",)))
    for line in planned.notes:
        note(line)
    counts = ", ".join(f"{planned.count(kind)} {kind}" for kind in ("job", "queued", "blob", "chunk", "journal")
                       if planned.count(kind))
    kept = ", ".join(f"{n} {kind}" for kind, n in sorted(planned.kept.items())) or "nothing"
    link = f"; read {human_size(planned.bytes_read)} of records to find references" if planned.bytes_read else ""
    if not planned.removals:
        note(f"nothing to remove from {volume} (kept: {kept}){link}")
        return
    if not yes:
        note(f"would remove {counts}, freeing {human_size(planned.freed)} (kept: {kept}){link}; run again with --yes")
        return
    freed = collecting.apply(target, config.home(), planned)
    note(f"removed {counts}, freed {human_size(freed)} (kept: {kept}){link}")
