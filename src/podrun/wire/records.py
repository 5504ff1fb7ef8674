"""Append-only record files: u32 length | msgpack map, one frame per record.

The pod appends one record per finished call and flushes it, so a pod killed mid-job loses
only calls that had not finished; a torn last frame (killed during a write) is ignored.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgpack

_LEN = struct.Struct("<I")

# Terminal statuses of a call, as the job's life in DESIGN.md names them.
OK = "OK"
RAISED = "RAISED"
TIMEOUT = "TIMEOUT"
KILLED = "KILLED"
CANCELLED = "CANCELLED"
LOST = "LOST"


def encode_record(record: dict[str, Any]) -> bytes:
    body = msgpack.packb(record, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def append_record(stream: BinaryIO, record: dict[str, Any]) -> None:
    """Write one whole frame and flush it to the OS before returning."""
    stream.write(encode_record(record))
    stream.flush()


def iter_records(data: bytes | memoryview) -> Iterator[dict[str, Any]]:
    """Every complete record in ``data``; a torn trailing frame is dropped silently."""
    view = memoryview(data)
    offset = 0
    while offset + _LEN.size <= len(view):
        (length,) = _LEN.unpack_from(view, offset)
        start = offset + _LEN.size
        if start + length > len(view):
            return
        try:
            yield msgpack.unpackb(view[start : start + length], raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return
        offset = start + length
