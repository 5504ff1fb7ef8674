"""The pod's records of a job, one typed schema for the runtime that writes them and the
client that reads them.

A record file is a sequence of frames, u32 length | msgpack array ``[version, kind, fields...]``
(fields in the dataclass's order: compact, and a field can only be added at the end, with a
new version). The pod appends one record per step and flushes it, so a pod killed mid-job
loses only calls that had not finished; a torn last frame (killed during a write) is ignored.
A record of a newer format than this podrun reads is an error that says so, never a guess.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
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


@dataclass(frozen=True)
class StartRecord:
    """A pod began the job."""

    KIND: ClassVar[str] = "start"
    t: float
    python: str
    pid: int
    host: str
    machine: str
    node: str | None = None


@dataclass(frozen=True)
class EnvRecord:
    """The pod's environment (``runtime/environment.py``'s fields: ``env_hash``, ``env``, ``error``)."""

    KIND: ClassVar[str] = "env"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """Call ``i`` is about to run: a later pod of this job never runs it again (at most once)."""

    KIND: ClassVar[str] = "run"
    i: int
    n: int = 1  # a pool's chunk: calls i .. i+n-1, handed out together


@dataclass(frozen=True)
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
    buffers: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    out: str = ""
    err: str = ""
    missing: list[str] = field(default_factory=list)  # blobs this call lacked (LOST: the client re-sends them)
    bytes_buffers: list[int] = field(default_factory=list)  # v2; a v1 record reads as none

    @property
    def final(self) -> bool:
        """No later pod of the job can give this call another outcome."""
        return self.status not in RERUNNABLE


@dataclass(frozen=True)
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
    body = msgpack.packb([VERSION, record.KIND, *(getattr(record, f.name) for f in dataclass_fields(record))], use_bin_type=True)
    return _LEN.pack(len(body)) + body


def decode_record(item: Any) -> Record:
    """One unpacked frame as its record; a newer or foreign format raises WireFormatError."""
    if not (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], int) and isinstance(item[1], str)):
        raise WireFormatError("a job record is not in podrun's record format (a file from another program, or an "
                              "older podrun); run the job again with this podrun")
    version, kind = item[0], item[1]
    if version > VERSION:
        raise WireFormatError(f"a job record is of format v{version}, but this podrun reads up to v{VERSION}: the pod "
                              "runs a newer podrun runtime; upgrade podrun here (or use the same version in the image)")
    cls = _KINDS.get(kind)
    if cls is None:
        raise WireFormatError(f"a job record of format v{version} has an unknown kind {kind!r}; upgrade podrun here")
    names = _FIELDS[cls]
    if len(item) - 2 == len(names):  # every field: filled in directly (a frozen __init__ costs ~1 µs a record)
        record = object.__new__(cls)
        record.__dict__.update(zip(names, item[2:], strict=True))
        return record
    try:
        return cls(*item[2:])
    except TypeError as exc:
        raise WireFormatError(f"a {kind!r} job record of format v{version} has the wrong fields: {exc}") from None


_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in dataclass_fields(cls)) for cls in _KINDS.values()}


def iter_records(data: bytes | memoryview) -> Iterator[Record]:
    """Every complete record in ``data``; a torn trailing frame is dropped silently, as is
    everything from a frame whose body is not exactly one msgpack value. One unpacker reads
    all the frames (one per frame cost twice as much per record)."""
    size = len(memoryview(data))
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(size, 1))
    unpacker.feed(data)
    offset = 0
    while offset + _LEN.size <= size:
        (length,) = _LEN.unpack(unpacker.read_bytes(_LEN.size))
        offset += _LEN.size + length
        if offset > size:
            return
        try:
            item = unpacker.unpack()
        except (ValueError, msgpack.UnpackException):
            return
        if unpacker.tell() != offset:
            return
        yield decode_record(item)
