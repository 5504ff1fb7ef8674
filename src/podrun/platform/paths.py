"""Volume-relative paths: the one place that decides whether a path stays inside its volume."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import IllegalPath


def clean_relative(path: str) -> str:
    """Normalise a volume path as the EM API reads it: ``/x``, ``./x`` and ``x`` are the same
    file; ``..`` that climbs out of the volume, NUL bytes and backslashes are refused.
    Returns ``""`` for the volume root."""
    if not isinstance(path, str):
        raise IllegalPath(f"path must be a string, not {type(path).__name__}")
    if "\x00" in path or "\\" in path:
        raise IllegalPath(f"illegal path {path!r}: NUL bytes and backslashes are not allowed")
    parts: list[str] = []
    for part in PurePosixPath("/" + path).parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise IllegalPath(f"illegal path {path!r}: it climbs out of the volume")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def resolve_in(root: Path, path: str) -> Path:
    """``root / path`` after :func:`clean_relative`, refusing symlinks that lead outside ``root``."""
    relative = clean_relative(path)
    target = root / relative if relative else root
    real_root = os.path.realpath(root)
    real_target = os.path.realpath(target)
    if real_target != real_root and not real_target.startswith(real_root + os.sep):
        raise IllegalPath(f"illegal path {path!r}: it leads outside the volume")
    return target


def check_file_name(name: str) -> str:
    """An uplinked file's name: one path component (the EM API transmits basenames only)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise IllegalPath(f"illegal file name {name!r}: give a plain file name and put folders in dest_path")
    return name
