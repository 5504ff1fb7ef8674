"""The blob store as seen from inside a volume (the pod runtime, or any process that has the
volume's directory). Blobs are compressed frames named by the hash of their raw bytes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import IntegrityError
from ..files import atomic_write
from ..wire.compression import best_codec, decompress, frame_chunks
from ..wire.hashing import content_hash, is_content_hash
from ..wire.layout import BLOBS, blob_chunk_name


class VolumeBlobs:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(data_dir) / BLOBS

    def path(self, blob_hash: str) -> Path:
        if not is_content_hash(blob_hash):
            raise IntegrityError(f"{blob_hash!r} is not a blob name", blob=blob_hash)
        return self.directory / blob_hash

    def has(self, blob_hash: str) -> bool:
        """Present whole, or as a complete set of uplinked chunks (assembled now)."""
        return self.path(blob_hash).is_file() or self._assemble(blob_hash)

    def touch(self, blob_hash: str) -> None:
        """Mark a stored blob as just used: ``podrun gc`` removes unreferenced blobs only once
        unused for its grace period, so one that jobs keep using is never re-sent."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(blob_hash))

    def _assemble(self, blob_hash: str) -> bool:
        """Join ``<hash>.<i>of<n>`` chunks (a blob larger than one uplink call may carry) into
        the blob file; the chunks are removed once it is whole."""
        chunks = sorted(self.directory.glob(f"{blob_hash}.*of*")) if self.directory.is_dir() else []
        if not chunks:
            return False
        try:
            count = int(chunks[0].name.rsplit("of", 1)[1])
            parts = [self.directory / blob_chunk_name(blob_hash, i, count) for i in range(1, count + 1)]
        except ValueError:
            return False
        if not all(part.is_file() for part in parts):
            return False
        self._write(blob_hash, b"".join(part.read_bytes() for part in parts))
        for part in parts:
            part.unlink(missing_ok=True)
        return True

    def read(self, blob_hash: str) -> bytes:
        """The blob's raw bytes, verified against its name; FileNotFoundError when absent."""
        try:
            raw = decompress(self.path(blob_hash).read_bytes())
        except IntegrityError as exc:
            raise IntegrityError(f"blob {blob_hash} is corrupt in the volume: {exc}", blob=blob_hash) from None
        if content_hash(raw) != blob_hash:
            raise IntegrityError(f"blob {blob_hash} is corrupt in the volume: its bytes hash to {content_hash(raw)}",
                                 blob=blob_hash)
        return raw

    def write_frame(self, blob_hash: str, frame: bytes | memoryview) -> None:
        """Store an already-compressed frame, verifying it decodes to ``blob_hash`` first."""
        try:
            raw = decompress(frame)
        except IntegrityError as exc:
            raise IntegrityError(f"blob {blob_hash} arrived corrupt: {exc}", blob=blob_hash) from None
        if content_hash(raw) != blob_hash:
            raise IntegrityError(f"blob {blob_hash} arrived corrupt: its bytes hash to {content_hash(raw)}", blob=blob_hash)
        self._write(blob_hash, frame)

    def write_raw(self, data: bytes | memoryview, blob_hash: str | None = None, codecs: list[str] | None = None) -> str:
        """Compress and store raw bytes; returns their hash. Existing blobs are not rewritten.
        The frame is streamed to the file: a large result is never held twice in the pod."""
        blob_hash = blob_hash or content_hash(data)
        if not self.has(blob_hash):
            self._write(blob_hash, _PieceReader(frame_chunks(data, best_codec(codecs))))
        return blob_hash

    def _write(self, blob_hash: str, frame: bytes | memoryview | _PieceReader) -> None:
        atomic_write(self.path(blob_hash), frame)


class _PieceReader:
    """A stream over an iterator of pieces (what ``atomic_write`` reads to the end)."""

    def __init__(self, pieces: Iterator[bytes | memoryview]) -> None:
        self.pieces = pieces

    def read(self, _size: int = -1) -> bytes | memoryview:
        for piece in self.pieces:
            if len(piece):
                return piece
        return b""
