"""Sending blobs outside a job bundle, in as few uplink calls as the platform's per-call
limit allows (2 GB on the EM, 5 MB on the flight model). A blob larger than the limit goes
as numbered chunks that the volume side joins back (``VolumeBlobs.has``)."""

from __future__ import annotations

from collections.abc import Iterator

from ..platform.base import Platform
from ..wire.layout import BLOBS, blob_chunk_name


def _pieces(frames: dict[str, bytes], limit: int) -> Iterator[tuple[str, bytes]]:
    for blob_hash, frame in frames.items():
        if len(frame) <= limit:
            yield blob_hash, frame
            continue
        count = -(-len(frame) // limit)
        for index in range(count):
            yield blob_chunk_name(blob_hash, index + 1, count), frame[index * limit:(index + 1) * limit]


def uplink_frames(platform: Platform, frames: dict[str, bytes], pod_name: str | None) -> int:
    """Uplink compressed blob frames into the volume's blob store; returns the calls made."""
    limit = platform.max_uplink_bytes
    batch: list[tuple[str, bytes]] = []
    size = calls = 0
    for name, piece in _pieces(frames, limit):
        if batch and size + len(piece) > limit:
            platform.uplink(batch, dest_path=BLOBS, pod_name=pod_name)
            batch, size, calls = [], 0, calls + 1
        batch.append((name, piece))
        size += len(piece)
    if batch:
        platform.uplink(batch, dest_path=BLOBS, pod_name=pod_name)
        calls += 1
    return calls
