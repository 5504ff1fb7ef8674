"""Shared benchmark plumbing: a private PODRUN_HOME, a table printer, JSON output."""

from __future__ import annotations

import json
import os
import platform as host
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def private_home() -> Iterator[Path]:
    """Benchmarks never touch the user's real podrun state."""
    with tempfile.TemporaryDirectory(prefix="podrun-bench-") as tmp:
        os.environ["PODRUN_HOME"] = tmp
        from podrun.client import config

        config.reset()
        try:
            yield Path(tmp)
        finally:
            from podrun.platform.local import LocalPlatform

            LocalPlatform(Path(tmp) / "local").shutdown()
            _unmount_below(Path(tmp))


def _unmount_below(folder: Path) -> None:
    """podman's overlay image store under PODRUN_HOME mounts a folder onto itself: undo that,
    deepest first, so the temporary home can be removed."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{folder}/")]
    umount = shutil.which("umount", path="/usr/bin:/bin:/usr/sbin:/sbin")
    for point in sorted(points, reverse=True):
        if umount:
            subprocess.run([umount, point], check=False)


def _cell(value: Any) -> str:
    """A table cell: floats to four significant digits, integers with thousands separators."""
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))


def write_json(name: str, data: dict[str, Any], path: Path | None = None) -> Path:
    """``benchmarks/results/NAME.json``, or ``path`` (a smoke run leaves the real results alone)."""
    if path is None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{name}.json"
    data = {"machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "platform": host.platform()}, **data}
    path.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {path}")
    return path
