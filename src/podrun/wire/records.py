"""The pod's records of a job, one typed schema for the runtime that writes them and the
client that reads them.

A record file is a sequence of frames, u32 length | msgpack array ``[version, kind, fields...]``
(fields in the dataclass's order: compact, and a field can only be added at the end, with a
new version). The pod appends one record per step and flushes it, so a pod killed mid-job
loses only calls that had not finished; a torn last frame (killed during a write) is ignored.
A record of a newer format than this podrun reads is an error that says so, never a guess.

The records are slotted dataclasses, read-only by convention but not frozen: a client holds one
per call of a 100k map and a pod writes one per call, and a frozen ``__init__`` (a
``object.__setattr__`` per field) and a ``__dict__`` per record (more for the collector to walk)
cost more than the rest of a trivial call's record.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from operator import attrgetter
from typing import Any, ClassVar

import msgpack

from ..errors import WireFormatError

_LEN = struct.Struct("<I")
VERSION = 2  # of the record schema below (2: CallRecord.bytes_buffers)

# Terminal statuses of a call, as the job's life in DESIGN.md names them.
OK = "OK"
RAISED = "RAISED"
TIMEOUT = "TIMEOUT"
KILLED = "KILLED"
CANCELLED = "CANCELLED"
LOST = "LOST"
RERUNNABLE = (KILLED, LOST)  # outcomes a later pod of the same job may replace (calls it never began)


@dataclass(slots=True)
class StartRecord:
    """A pod began the job."""

    KIND: ClassVar[str] = "start"
    t: float
    python: str
    pid: int
    host: str
    machine: str
    node: str | None = None


@dataclass(slots=True)
class EnvRecord:
    """The pod's environment (``runtime/environment.py``'s fields: ``env_hash``, ``env``, ``error``)."""

    KIND: ClassVar[str] = "env"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunRecord:
    """Call ``i`` is about to run: a later pod of this job never runs it again (at most once)."""

    KIND: ClassVar[str] = "run"
    i: int
    n: int = 1  # a pool's chunk: calls i .. i+n-1, handed out together


@dataclass(slots=True)
class CallRecord:
    """Call ``i``'s outcome. An OK value is inline (``value``, compressed pickle) or a blob in the
    volume (``value_blob``), with its out-of-band ``buffers`` as blobs (``bytes_buffers``: the
    indexes of those a ``bytes`` holds, which the client decodes straight into one); a failure
    carries ``error`` (``runtime/executor.py``'s error info: type, message, tb, pickled, parts)."""

    KIND: ClassVar[str] = "call"
    i: int
    status: str
    started: float = 0.0
    ended: float = 0.0
    value: bytes | None = None
    value_blob: str | None = None
    buffers: Sequence[str] = ()  # read back as tuples, which the collector does not track (a list per field would be three)
    error: dict[str, Any] | None = None
    out: str = ""
    err: str = ""
    missing: Sequence[str] = ()  # blobs this call lacked (LOST: the client re-sends them)
    bytes_buffers: Sequence[int] = ()  # v2; a v1 record reads as none

    @property
    def final(self) -> bool:
        """No later pod of the job can give this call another outcome."""
        return self.status not in RERUNNABLE


@dataclass(slots=True)
class EndRecord:
    """The pod ended the job: ``fatal`` when it could not run it at all."""

    KIND: ClassVar[str] = "end"
    t: float
    fatal: str | None = None
    missing: list[str] = field(default_factory=list)
    stopped: bool = False


Record = StartRecord | EnvRecord | RunRecord | CallRecord | EndRecord
_KINDS: dict[str, type[Record]] = {cls.KIND: cls for cls in (StartRecord, EnvRecord, RunRecord, CallRecord, EndRecord)}


def encode_record(record: Record) -> bytes:
    body = _packer().pack([VERSION, record.KIND, *_VALUES[type(record)](record)])
    return _LEN.pack(len(body)) + body


def _packer() -> msgpack.Packer:
    """This thread's packer: ``msgpack.packb`` makes one per call, which costs as much as the packing."""
    try:
        return _LOCAL.packer
    except AttributeError:
        _LOCAL.packer = msgpack.Packer(use_bin_type=True)
        return _LOCAL.packer


_LOCAL = threading.local()


def decode_record(item: Any) -> Record:
    """One unpacked frame (arrays unpacked as tuples) as its record; a newer or foreign format
    raises WireFormatError. A call's sequences stay tuples; everything else reads as lists, as
    written (an error's traceback, the environment's fields: rare, and read by other code)."""
    if not (isinstance(item, tuple) and len(item) >= 2 and isinstance(item[0], int) and isinstance(item[1], str)):
        raise WireFormatError("a job record is not in podrun's record format (a file from another program, or an "
                              "older podrun); run the job again with this podrun")
    version, kind = item[0], item[1]
    if version > VERSION:
        raise WireFormatError(f"a job record is of format v{version}, but this podrun reads up to v{VERSION}: the pod "
                              "runs a newer podrun runtime; upgrade podrun here (or use the same version in the image)")
    cls = _KINDS.get(kind)
    if cls is None:
        raise WireFormatError(f"a job record of format v{version} has an unknown kind {kind!r}; upgrade podrun here")
    fields = item[2:]
    try:
        if cls is not CallRecord:
            fields = _as_lists(fields)
        elif len(fields) > _ERROR and fields[_ERROR] is not None:
            fields = (*fields[:_ERROR], _as_lists(fields[_ERROR]), *fields[_ERROR + 1:])
        return cls(*fields)  # an older version's record lacks the newest fields: their defaults
    except (TypeError, RecursionError) as exc:
        raise WireFormatError(f"a {kind!r} job record of format v{version} has the wrong fields: {exc}") from None


def _as_lists(value: Any) -> Any:
    """``value`` unpacked with tuples for arrays, with lists for them instead (all the way down)."""
    if isinstance(value, tuple):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


_ERROR = [f.name for f in dataclass_fields(CallRecord)].index("error")


def _values(cls: type[Record]) -> Callable[[Record], tuple[Any, ...]]:
    """A record's field values in order, as one C call."""
    names = [f.name for f in dataclass_fields(cls)]
    getter = attrgetter(*names)
    return getter if len(names) > 1 else lambda record: (getter(record),)


_VALUES: dict[type, Callable[[Record], tuple[Any, ...]]] = {cls: _values(cls) for cls in _KINDS.values()}


def iter_records(data: bytes | bytearray | memoryview) -> Iterator[Record]:
    """Every complete record in ``data``; a torn trailing frame is dropped silently, as is
    everything from a frame whose body is not exactly one msgpack value."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    size, offset, unpack_length, unpackb = len(view), 0, _LEN.unpack_from, msgpack.unpackb
    while offset + _LEN.size <= size:
        (length,) = unpack_length(view, offset)
        start, offset = offset + _LEN.size, offset + _LEN.size + length
        if offset > size:
            return
        try:
            item = unpackb(view[start:offset], use_list=False)
        except (ValueError, msgpack.UnpackException):
            return
        yield decode_record(item)
