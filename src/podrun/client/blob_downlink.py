"""Fetching a blob from a volume through the platform, decoded as its bytes arrive: a large
result is held once in the client (its raw bytes), never compressed and raw side by side."""

from __future__ import annotations

import hashlib

from ..errors import IntegrityError
from ..platform.base import Platform
from ..wire.compression import FrameDecoder
from ..wire.layout import blob_path


class _DecodingSink(FrameDecoder):
    """``downlink_into``'s sink: a retried download rewinds it to the start (``seek(0)``)."""

    def tell(self) -> int:
        return self.received

    def seek(self, position: int) -> int:
        if position != 0:
            raise OSError("a decoding sink can only be rewound to its start")
        self.reset()
        return 0

    def truncate(self, _size: int | None = None) -> int:
        return self.received


def downlink_blob(platform: Platform, pod_name: str | None, blob_hash: str, attempts: int = 2,
                  as_bytes: bool = False) -> bytearray | bytes:
    """The blob's raw bytes in a fresh writable buffer (``as_bytes``: a ``bytes``, made without
    a second copy), verified against its name; re-fetched once on a mismatch (a torn transfer)."""
    for _attempt in range(attempts):
        sink = _DecodingSink(into_bytes=as_bytes)
        try:
            platform.downlink_into(blob_path(blob_hash), sink, pod_name)  # type: ignore[arg-type]
            raw = sink.finish()
        except IntegrityError:
            continue
        if hashlib.sha256(raw).hexdigest() == blob_hash:
            return raw
    raise IntegrityError(f"blob {blob_hash} in volume {pod_name or 'default'} does not match its hash; it is corrupt there",
                         blob=blob_hash)
