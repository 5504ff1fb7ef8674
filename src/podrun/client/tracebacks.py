"""Render a pod's traceback record (``wire/tracebacks.py``) with the client's own source.

Per frame, the first that applies:

* code pickled by value: its ``code_id`` names the file and first line the client pickled it
  from (``ORIGINS``, recorded while pickling); the line's text comes from that file here;
* a module shipped by source (``modules=``, or found imported): the module's file here;
* code pickled by value in another process (a re-attached job): its module's file, where this
  process has that module loaded and the function starts on the line the pod reports;
* anything else (the image's packages, the standard library): the file as the pod saw it and
  the line the pod read.

Nothing the pod sends names a file the client then opens: only files the client itself
recorded, shipped or has loaded are read, and nothing is imported.
"""

from __future__ import annotations

import importlib.util
import linecache
import sys
from collections.abc import Collection
from typing import Any

from ..errors import WireFormatError
from ..wire.tracebacks import LINKS, ORIGINS, Frame, TraceRecord

REPEAT_SHOWN = 3  # identical consecutive frames shown before "[Previous line repeated N more times]", as Python does


def render_info(info: dict[str, Any], shipped: Collection[str] = ()) -> str:
    """The traceback text of a call's error info: rendered from its record, or the text an
    older runtime sent; ``shipped``: the names of the modules the job shipped by source."""
    record = info.get("tb")
    if record is not None:
        try:
            return render(TraceRecord.from_wire(record), shipped)
        except WireFormatError as exc:
            return f"(the pod's traceback record could not be read: {exc})\n"
    text = info.get("traceback")
    return text if isinstance(text, str) else ""


def render(record: TraceRecord, shipped: Collection[str] = ()) -> str:
    parts: list[str] = []
    for entry in record.exceptions:
        if entry.link is not None:
            parts.append(f"\n{LINKS[entry.link]}\n\n")
        if entry.frames:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(_frames(entry.frames, shipped))
        parts.append(entry.summary if entry.summary.endswith("\n") else entry.summary + "\n")
    return "".join(parts)


def _frames(frames: tuple[Frame, ...], shipped: Collection[str]) -> list[str]:
    lines: list[str] = []
    last: tuple[str, int, str] | None = None
    count = 0  # how many times in a row the last frame's line has come
    for frame in frames:
        file, source = _locate(frame, shipped)
        key = (file, frame.line, frame.name)
        if key != last:
            lines.extend(_repeated(count))
            last, count = key, 0
        text = f'  File "{file}", line {frame.line}, in {frame.name}\n'
        if source:
            text += f"    {source}\n"
        lines.extend([text] * max(0, min(frame.repeat, REPEAT_SHOWN - count)))
        count += frame.repeat
    lines.extend(_repeated(count))
    return lines


def _repeated(count: int) -> list[str]:
    hidden = count - REPEAT_SHOWN
    if hidden <= 0:
        return []
    return [f"  [Previous line repeated {hidden} more time{'s' if hidden > 1 else ''}]\n"]


def _locate(frame: Frame, shipped: Collection[str]) -> tuple[str, str | None]:
    """(file to show, source line) for one frame, from the client's own files where it has them."""
    origin = ORIGINS.get(frame.code_id)
    if origin is not None:
        return origin[0], _line(origin[0], frame.line) or frame.source
    if frame.shipped and frame.module is not None and frame.module in shipped:
        path = _module_file(frame.module)
        if path is not None:
            return path, _line(path, frame.line) or frame.source
    if frame.code_id is not None and frame.source is None:
        # By-value code this process did not pickle (a job re-attached from another process):
        # its module, where this process has it loaded and the function starts where the pod says.
        path = _loaded_file(frame.module)
        if path is not None and _defines(path, frame):
            return path, _line(path, frame.line)
    return frame.file, frame.source


def _loaded_file(name: str | None) -> str | None:
    path = getattr(sys.modules.get(name), "__file__", None) if name else None
    return path if isinstance(path, str) else None


def _defines(path: str, frame: Frame) -> bool:
    """Whether ``path`` has ``frame``'s function starting on its first line (a def, or a lambda there)."""
    text = linecache.getline(path, frame.first_line)
    return f"def {frame.name}" in text or (frame.name == "<lambda>" and "lambda" in text)


def _line(path: str, lineno: int) -> str | None:
    return linecache.getline(path, lineno).strip() or None


def _module_file(name: str) -> str | None:
    """The client's file of a module it shipped (located when it was shipped, so this imports
    nothing new)."""
    path = _loaded_file(name)
    if path is not None:
        return path
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None
