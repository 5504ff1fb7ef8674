"""The remote traceback record: structured frames, not text.

Why: a pod never has the user's source files (never on CG2), and cloudpickle (3.1.3 and
later) renames every by-value code object's file to ``"<dynamic-code>"``. So the pod reports
each frame's code identity and line number, and the client renders the traceback from its
own copy of the source (``client/tracebacks.py``). A frame of code pickled by value carries
``code_id``: a hash of the code object that ignores its file name, so the id the pod computes
for the rebuilt code equals the one the client computed when it pickled the original
(``CodeOrigins``). Frames of installed code carry the source line the pod could read.

The record is versioned (``FORMAT``) and checked field by field on decoding: it comes from a
pod, which the client does not trust.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from types import CodeType
from typing import Any

from ..errors import WireFormatError

FORMAT = 1
MAX_FRAMES = 2000  # distinct frames per exception (repeats of one frame count once)
MAX_REPEAT = 10**7
MAX_CHAIN = 64  # exceptions linked by __cause__ / __context__
MAX_TEXT = 4096  # characters of one source line or name kept
MAX_SUMMARY = 64 * 1024  # characters of one exception's "Type: message" text kept
LINKS = {
    "cause": "The above exception was the direct cause of the following exception:",
    "context": "During handling of the above exception, another exception occurred:",
}


@dataclass(frozen=True)
class Frame:
    """One frame as the pod saw it."""

    file: str  # co_filename in the pod ("<dynamic-code>" for by-value code with cloudpickle >= 3.1.3)
    line: int  # the line being run (original numbering: by-value code keeps its line table)
    name: str  # co_name
    qualname: str  # co_qualname (co_name before Python 3.11)
    first_line: int  # co_firstlineno
    code_id: str | None = None  # code_id(code) where the pod could not read the source
    module: str | None = None  # the frame's module name (its globals' __name__)
    source: str | None = None  # the line's text, where the pod could read it
    shipped: bool = False  # the module was shipped by source (client/modules.py)
    repeat: int = 1  # consecutive identical frames (same code, same line) sent once: a RecursionError stays small


@dataclass(frozen=True)
class ExceptionEntry:
    """One exception of the chain, with its frames (outermost first)."""

    type_name: str  # module.qualname
    summary: str  # traceback.format_exception_only's text (message, notes, SyntaxError detail)
    frames: tuple[Frame, ...]
    link: str | None = None  # how it relates to the previous entry: "cause", "context" or None


@dataclass(frozen=True)
class TraceRecord:
    """The chain in printing order: the first cause first, the raised exception last."""

    exceptions: tuple[ExceptionEntry, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"v": FORMAT, "x": [
            {"t": e.type_name, "s": e.summary, "l": e.link,
             "f": [[f.file, f.line, f.name, f.qualname, f.first_line, f.code_id, f.module, f.source, f.shipped, f.repeat]
                   for f in e.frames]}
            for e in self.exceptions]}

    @classmethod
    def from_wire(cls, data: Any) -> TraceRecord:
        """Decode and check a record; WireFormatError for anything not of this format."""
        if not isinstance(data, dict) or data.get("v") != FORMAT:
            raise WireFormatError(f"traceback record: not format {FORMAT}: {_short(data)}")
        entries = data.get("x")
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_CHAIN:
            raise WireFormatError("traceback record: no exception list, or too long a chain")
        out = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise WireFormatError("traceback record: an exception entry is not a map")
            frames = entry.get("f")
            if not isinstance(frames, list) or len(frames) > MAX_FRAMES:
                raise WireFormatError("traceback record: a frame list is missing or too long")
            link = entry.get("l")
            if link is not None and link not in LINKS:
                raise WireFormatError(f"traceback record: unknown link {_short(link)}")
            summary = _text(entry.get("s"), MAX_SUMMARY)
            out.append(ExceptionEntry(_text(entry.get("t")), summary, tuple(_frame(f) for f in frames), link))
        return cls(tuple(out))


def _frame(row: Any) -> Frame:
    if not isinstance(row, list) or len(row) != 10:
        raise WireFormatError(f"traceback record: a frame is not a 10-field row: {_short(row)}")
    file, line, name, qualname, first_line, code_id, module, source, shipped, repeat = row
    if not (isinstance(line, int) and isinstance(first_line, int)) or isinstance(line, bool) or isinstance(first_line, bool):
        raise WireFormatError(f"traceback record: a frame's line numbers are not integers: {_short(row)}")
    if not isinstance(shipped, bool):
        raise WireFormatError(f"traceback record: a frame's shipped flag is not a boolean: {_short(row)}")
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise WireFormatError(f"traceback record: a frame's repeat count is not 1..{MAX_REPEAT}: {_short(row)}")
    return Frame(_text(file), line, _text(name), _text(qualname), first_line,
                 _optional_text(code_id), _optional_text(module), _optional_text(source), shipped, repeat)


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise WireFormatError(f"traceback record: expected text, got {_short(value)}")
    return value[:limit]


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- code identity -------------------------------------------------------------------------

def code_id(code: CodeType) -> str:
    """A hash of what cloudpickle carries of a code object, its file name left out: the same
    for the client's original and the pod's rebuilt copy, on any PYTHONHASHSEED."""
    digest = hashlib.sha256()
    _feed(digest, code)
    return digest.hexdigest()[:16]  # 64 bits: tells apart the by-value code of one client


def _feed(digest: Any, code: CodeType) -> None:
    qualname = getattr(code, "co_qualname", code.co_name)
    for part in (qualname, code.co_name, str(code.co_firstlineno), str(code.co_argcount), str(code.co_kwonlyargcount),
                 *code.co_names, "|", *code.co_varnames, "|", *code.co_freevars, "|", *code.co_cellvars):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(code.co_code)
    digest.update(code.co_linetable)
    for const in code.co_consts:
        _feed_const(digest, const)


def _feed_const(digest: Any, const: Any) -> None:
    if isinstance(const, CodeType):
        digest.update(b"code\0")
        _feed(digest, const)
    elif isinstance(const, tuple):
        digest.update(b"(")
        for item in const:
            _feed_const(digest, item)
        digest.update(b")")
    elif isinstance(const, frozenset):  # iteration order follows the hash seed: sort
        digest.update(b"{" + b"\0".join(sorted(repr(item).encode("utf-8", "surrogatepass") for item in const)) + b"}")
    else:
        digest.update(f"{type(const).__name__}:{const!r}".encode("utf-8", "surrogatepass") + b"\0")


class CodeOrigins:
    """Where each code object pickled by value in this process came from: ``code_id`` to
    (file, first line). Filled while pickling (``TrackingPickler``), read when rendering a
    remote traceback. Bounded: the oldest entries go first."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._origins: dict[str, tuple[str, int]] = {}
        self._seen: dict[int, CodeType] = {}  # id -> code already recorded (kept alive, so ids stay unique)
        self._lock = threading.Lock()

    def record(self, code: CodeType) -> None:
        if self._seen.get(id(code)) is code:
            return
        ident = code_id(code)
        with self._lock:
            if len(self._seen) >= self.LIMIT:
                self._seen.clear()  # ids are only a shortcut; origins stay (also bounded below)
            self._seen[id(code)] = code
            self._origins[ident] = (code.co_filename, code.co_firstlineno)
            if len(self._origins) > self.LIMIT:
                del self._origins[next(iter(self._origins))]

    def get(self, ident: str | None) -> tuple[str, int] | None:
        return self._origins.get(ident) if ident else None


ORIGINS = CodeOrigins()
