"""Compression with a one-byte codec header, negotiated down to what both ends have.

zstd where the ``zstandard`` package is importable, else stdlib zlib. Incompressible data
(already-compressed media, random floats) is detected by compressing a small sample and
stored raw, so it costs no CPU on either end.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from ..errors import CodecUnavailable, IntegrityError, WireFormatError

_zstd: ModuleType | None
try:  # zstandard is a core dependency on the client but may be missing in a bare pod image.
    import zstandard as _zstd
except ImportError:  # pragma: no cover - exercised by the bare-image bootstrap tests
    _zstd = None

_DECODE_ERRORS: tuple[type[Exception], ...] = (zlib.error,) if _zstd is None else (zlib.error, _zstd.ZstdError)

RAW = 0
ZSTD = 1
ZLIB = 2
CODEC_NAMES = {RAW: "raw", ZSTD: "zstd", ZLIB: "zlib"}

# Level 3 measured best on the benchmark payloads: level 1 is within 5 % of its speed, higher
# levels cost 2-6x the time for under 3 % fewer bytes on pickled arrays.
ZSTD_LEVEL = 3
ZLIB_LEVEL = 6
SAMPLE_BYTES = 64 * 1024
MIN_COMPRESS_BYTES = 256
WORTHWHILE_RATIO = 0.9


def available_codecs() -> list[str]:
    """Codec names this interpreter can decode, best first (sent in bundles for negotiation)."""
    return ["zstd", "zlib", "raw"] if _zstd is not None else ["zlib", "raw"]


def best_codec(peer_codecs: list[str] | None = None) -> int:
    """The best codec both this side and ``peer_codecs`` (None: assume everything) can read."""
    accepted = set(peer_codecs) if peer_codecs is not None else {"zstd", "zlib", "raw"}
    if _zstd is not None and "zstd" in accepted:
        return ZSTD
    if "zlib" in accepted:
        return ZLIB
    return RAW


def _compress_with(codec: int, data: bytes | memoryview) -> bytes:
    if codec == ZSTD:
        assert _zstd is not None  # ZSTD is only chosen where zstandard imports
        return _zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if codec == ZLIB:
        return zlib.compress(data, ZLIB_LEVEL)
    return bytes(data)


def worth_compressing(data: bytes | memoryview, codec: int) -> bool:
    """Compress a sample; only data that shrinks below ``WORTHWHILE_RATIO`` is worth it."""
    size = len(data)
    if codec == RAW or size < MIN_COMPRESS_BYTES:
        return False
    sample = memoryview(data)[:SAMPLE_BYTES] if size > SAMPLE_BYTES else data
    return len(_compress_with(codec, sample)) < WORTHWHILE_RATIO * len(sample)


def compress(data: bytes | bytearray | memoryview, codec: int | None = None) -> bytes:
    """``data`` prefixed with its codec byte, compressed only where a probe says it pays."""
    codec = best_codec() if codec is None else codec
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if not worth_compressing(view, codec):
        return bytes([RAW]) + bytes(view)
    packed = _compress_with(codec, view)
    if len(packed) >= len(view):
        return bytes([RAW]) + bytes(view)
    return bytes([codec]) + packed


def decompress(frame: bytes | bytearray | memoryview) -> bytes:
    """Inverse of :func:`compress`. A codec this side cannot decode raises WireFormatError;
    bytes that do not decode (corruption, truncation) raise IntegrityError."""
    if len(frame) == 0:
        raise IntegrityError("empty compressed frame: the file was truncated")
    codec = frame[0]
    body = memoryview(frame)[1:]
    try:
        return _decode(codec, body)
    except _DECODE_ERRORS as exc:
        raise IntegrityError(f"corrupt {CODEC_NAMES.get(codec, '?')} frame: {exc}") from None


def _decode(codec: int, body: memoryview) -> bytes:
    if codec == RAW:
        return bytes(body)
    if codec == ZLIB:
        return zlib.decompress(body)
    if codec == ZSTD:
        if _zstd is None:
            raise CodecUnavailable(
                "this frame is zstd-compressed but the 'zstandard' package is not installed here; "
                "install it, or let podrun negotiate zlib with this side"
            )
        return _zstd_decompress(body)
    raise WireFormatError(f"unknown compression codec byte {codec}: written by a newer podrun?")


def _zstd_decompress(body: memoryview) -> bytes:
    # Frames written by ZstdCompressor.compress carry their content size; stream otherwise.
    assert _zstd is not None  # the caller checked that this side has zstandard
    dctx = _zstd.ZstdDecompressor()
    try:
        return dctx.decompress(body)
    except _zstd.ZstdError:
        return b"".join(dctx.read_to_iter(bytes(body)))


STREAM_CHUNK = 1024 * 1024


def frame_chunks(data: bytes | bytearray | memoryview, codec: int | None = None) -> Iterator[bytes | memoryview]:
    """The frame :func:`compress` would make, as a stream of pieces (header byte first), so a
    large buffer is written out without a whole second copy of it in memory. Raw pieces are
    views of ``data``; compressed ones come from a streaming compressor, which
    :func:`decompress` reads like the one-shot frame."""
    codec = best_codec() if codec is None else codec
    view = memoryview(data).cast("B")
    if not worth_compressing(view, codec):
        codec = RAW
    yield bytes([codec])
    pieces = (view[i:i + STREAM_CHUNK] for i in range(0, len(view), STREAM_CHUNK))
    if codec == RAW:
        yield from pieces
        return
    if codec == ZSTD:
        assert _zstd is not None  # ZSTD is only chosen where zstandard imports
        packer: Any = _zstd.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=len(view))
    else:
        packer = zlib.compressobj(ZLIB_LEVEL)
    for piece in pieces:
        out = packer.compress(piece)
        if out:
            yield out
    yield packer.flush()


class FrameDecoder:
    """Decode a frame as its bytes arrive (``write`` each piece), into one growing buffer: a
    large blob is never held both compressed and raw. ``reset()`` starts over (a retried
    download); ``finish()`` gives the raw bytes once the frame is complete: a ``bytearray``, or
    with ``into_bytes`` an immutable ``bytes``, grown in a ``BytesIO`` whose ``getvalue()``
    hands its own buffer over (CPython: no copy), so a ``bytes`` result is held once."""

    def __init__(self, into_bytes: bool = False) -> None:
        self.into_bytes = into_bytes
        self.reset()

    def reset(self) -> None:
        self.raw: bytearray | io.BytesIO = io.BytesIO() if self.into_bytes else bytearray()
        self._append: Any = self.raw.write if isinstance(self.raw, io.BytesIO) else self.raw.extend
        self.received = 0
        self._codec: int | None = None
        self._unpack: Any = None

    def write(self, piece: bytes | bytearray | memoryview) -> int:
        view = memoryview(piece).cast("B")
        self.received += len(view)
        if self._codec is None and len(view):
            self._codec, view = view[0], view[1:]
            if self._codec == ZSTD:
                if _zstd is None:
                    _decode(ZSTD, view)  # raises the WireFormatError that names the fix
                    raise AssertionError("unreachable")
                self._unpack = _zstd.ZstdDecompressor().decompressobj()
            else:
                self._unpack = zlib.decompressobj() if self._codec == ZLIB else None
            if self._codec not in CODEC_NAMES:
                raise WireFormatError(f"unknown compression codec byte {self._codec}: written by a newer podrun?")
        try:
            self._append(view if self._unpack is None else self._unpack.decompress(view))
        except _DECODE_ERRORS as exc:
            raise IntegrityError(f"corrupt {CODEC_NAMES.get(self._codec or 0, '?')} frame: {exc}") from None
        return len(piece)

    def finish(self) -> bytearray | bytes:
        """The raw bytes; IntegrityError when the frame was empty or cut short."""
        if self._codec is None:
            raise IntegrityError("empty compressed frame: the file was truncated")
        if self._codec == ZLIB and not self._unpack.eof or self._codec == ZSTD and not self._unpack.eof:
            raise IntegrityError(f"truncated {CODEC_NAMES[self._codec]} frame")
        return self.raw.getvalue() if isinstance(self.raw, io.BytesIO) else self.raw
