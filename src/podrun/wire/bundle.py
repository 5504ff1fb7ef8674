"""The job bundle: one self-describing file that carries a whole job across the link.

Layout: ``MAGIC`` | u32 header length | msgpack header | embedded blob frames.
The header names the format version, the client's Python version, the codecs the client
reads (so the pod answers in one of them), the call groups and every blob the job needs;
only blobs the volume lacks are embedded, each a compressed frame at a recorded offset.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack

from ..errors import WireFormatError
from .compression import available_codecs, compress

MAGIC = b"PODRUNB1"
FORMAT_VERSION = 1
_LEN = struct.Struct("<I")


def python_version() -> str:
    """``major.minor`` of this interpreter: client and pod must agree (cloudpickle bytecode)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass
class CallGroup:
    """Calls of one callable whose arguments were pickled together.

    ``args`` is a compressed frame of the pickled list of ``(args, kwargs)`` tuples; a
    ``map`` is one group, so a shared argument is pickled (and hashed) once.

    ``workers`` rides with the group, not in the client's JobKey: it is how many of the pod's
    worker processes may run this function's calls at once (None: the node's core count, 1:
    in the pod's own process). The pool belongs to the pod and grows to the widest a job asks,
    so calls of different ``workers`` still share one job and one warm pod; a JobKey field
    would split them into separate jobs and make a warm pod of one width replaced by a job
    that only wants another.
    """

    function: str  # blob hash of the pickled callable
    args: bytes
    buffers: list[str]  # blob hashes of the group's out-of-band buffers, in order
    count: int
    timeout: float | None = None
    workers: int | None = None


@dataclass
class JobHeader:
    job_id: str
    groups: list[CallGroup]
    options: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION
    python: str = field(default_factory=python_version)
    codecs: list[str] = field(default_factory=available_codecs)
    embedded: dict[str, tuple[int, int]] = field(default_factory=dict)  # blob hash -> (offset, length)

    @property
    def call_count(self) -> int:
        return sum(group.count for group in self.groups)

    def required_blobs(self) -> list[str]:
        """Every blob the job reads: shipped wheels, module sources, callables and buffers,
        deduplicated, in first-use order."""
        seen: dict[str, None] = {}
        for _filename, blob_hash in self.options.get("wheels") or ():
            seen.setdefault(blob_hash, None)
        for _name, blob_hash, _is_package in self.options.get("modules") or ():
            seen.setdefault(blob_hash, None)
        for group in self.groups:
            seen.setdefault(group.function, None)
            for blob_hash in group.buffers:
                seen.setdefault(blob_hash, None)
        return list(seen)

    def to_wire(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "python": self.python,
            "job": self.job_id,
            "codecs": self.codecs,
            "options": self.options,
            "groups": [[g.function, g.args, g.buffers, g.count, g.timeout, g.workers] for g in self.groups],
            "embedded": {h: list(span) for h, span in self.embedded.items()},
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobHeader:
        return cls(
            job_id=data["job"],
            groups=[CallGroup(f, a, list(b), n, t, *rest[:1]) for f, a, b, n, t, *rest in data["groups"]],
            options=dict(data.get("options") or {}),
            format=data["format"],
            python=data["python"],
            codecs=list(data.get("codecs") or ["raw"]),
            embedded={h: (span[0], span[1]) for h, span in data.get("embedded", {}).items()},
        )


def encode_bundle(header: JobHeader, blobs: dict[str, bytes | memoryview], codec: int | None = None,
                  frames_last: dict[str, bytes] | None = None) -> bytes:
    """Serialize ``header`` and embed ``blobs`` (raw bytes by hash) as compressed frames.

    ``frames_last`` are frames embedded as given, after all others: the runtime zipapp rides
    there as a raw frame, so the bundle file ends with a zip and ``python BUNDLE`` runs it.
    """
    frames = [(blob_hash, compress(data, codec)) for blob_hash, data in blobs.items()]
    frames += list((frames_last or {}).items())
    offset = 0
    header.embedded = {}
    for blob_hash, frame in frames:
        header.embedded[blob_hash] = (offset, len(frame))
        offset += len(frame)
    head = msgpack.packb(header.to_wire(), use_bin_type=True)
    return b"".join([MAGIC, _LEN.pack(len(head)), head, *(frame for _, frame in frames)])


def read_header(stream: BinaryIO) -> tuple[JobHeader, int]:
    """Read and validate the header; returns it and the offset where embedded frames start."""
    magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise WireFormatError(f"not a podrun job bundle (magic {magic!r}, expected {MAGIC!r})")
    (length,) = _LEN.unpack(stream.read(_LEN.size))
    raw = stream.read(length)
    if len(raw) != length:
        raise WireFormatError("job bundle is truncated inside its header: the uplink was cut short")
    data = msgpack.unpackb(raw, raw=False)
    if data.get("format") != FORMAT_VERSION:
        raise WireFormatError(
            f"job bundle format {data.get('format')} is not format {FORMAT_VERSION}: "
            "the client and the pod runtime run different podrun versions"
        )
    return JobHeader.from_wire(data), len(MAGIC) + _LEN.size + length
