"""Volume-relative paths: the one place that decides whether a path stays inside its volume."""

from __future__ import annotations

from pathlib import PurePosixPath

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


def check_file_name(name: str) -> str:
    """An uplinked file's name: one path component (the EM API transmits basenames only)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise IllegalPath(f"illegal file name {name!r}: give a plain file name and put folders in dest_path")
    return name
