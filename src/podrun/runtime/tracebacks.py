"""Capture a call's exception as a traceback record (``wire/tracebacks.py``) in the pod.

The pod cannot render the user's traceback: it has no copy of their files, and by-value code
names no file at all. So it reports what it knows per frame (code identity, line number,
file as it saw it, the source line where it can read one: the image's own packages, the
zipapp, shipped module sources) and the client renders the rest from its own source.
"""

from __future__ import annotations

import linecache
import sys
import traceback
from dataclasses import replace
from types import TracebackType
from typing import Any

from ..wire.tracebacks import (
    MAX_CHAIN,
    MAX_FRAMES,
    MAX_REPEAT,
    MAX_SUMMARY,
    MAX_TEXT,
    ExceptionEntry,
    Frame,
    TraceRecord,
    code_id,
)
from .modules import ShippedModules


def capture(exc: BaseException, skip_frames: int = 0) -> dict[str, Any]:
    """The wire form of ``exc``'s record, its chain (__cause__ / __context__) included.
    ``skip_frames`` leaves out the runtime's own outermost frames of ``exc`` itself."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    # Printed oldest first; an entry's link is how the one printed before it leads to it.
    ordered = chain[::-1]
    exceptions = []
    for k, (error, _) in enumerate(ordered):
        tb = error.__traceback__
        if error is exc:
            for _ in range(skip_frames):
                if tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
        exceptions.append(ExceptionEntry(_type_name(type(error)), _summary(error), _frames(tb), ordered[k - 1][1] if k else None))
    return TraceRecord(tuple(exceptions)).to_wire()


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _summary(error: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(error), error))
    return text[:MAX_SUMMARY]


def _frames(tb: TracebackType | None) -> tuple[Frame, ...]:
    frames: list[Frame] = []
    ids: dict[int, str] = {}  # one hash per code object (a RecursionError repeats one code)
    last: tuple[int, int] | None = None
    while tb is not None:
        here = (id(tb.tb_frame.f_code), tb.tb_lineno)
        if here == last:  # the same code on the same line again (recursion): counted, not re-sent
            frames[-1] = replace(frames[-1], repeat=min(frames[-1].repeat + 1, MAX_REPEAT))
        else:
            frames.append(_frame(tb, ids))
            last = here
        tb = tb.tb_next
    return tuple(frames[-MAX_FRAMES:])


def _frame(tb: TracebackType, ids: dict[int, str]) -> Frame:
    frame, code = tb.tb_frame, tb.tb_frame.f_code
    lineno = tb.tb_lineno if tb.tb_lineno is not None else code.co_firstlineno
    source = linecache.getline(code.co_filename, lineno, frame.f_globals).strip() or None
    ident = None
    if source is None or code.co_filename == "<dynamic-code>":
        ident = ids.get(id(code)) or ids.setdefault(id(code), code_id(code))
    name = frame.f_globals.get("__name__")
    module = name[:MAX_TEXT] if isinstance(name, str) else None
    return Frame(code.co_filename, lineno, code.co_name, getattr(code, "co_qualname", code.co_name), code.co_firstlineno,
                 ident, module, source[:MAX_TEXT] if source else None, _shipped(module, code.co_filename))


def _shipped(name: str | None, filename: str) -> bool:
    """Whether this frame runs a module shipped by source from the client."""
    module = sys.modules.get(name) if name is not None else None
    shipped = module is not None and isinstance(getattr(module, "__loader__", None), ShippedModules)
    return shipped and getattr(module, "__file__", None) == filename
