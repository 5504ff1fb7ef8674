"""An object version as one contiguous byte string (its "image"), and back.

Deltas are computed between images, so an image must be stable where the value is: the
pickle stream and every out-of-band buffer (protocol 5) laid end to end, each buffer at a
64-byte aligned offset. Unpickling from a writable image hands numpy arrays views of it:
no copy, and a fresh image per read means nothing handed out aliases a cache.

Layout: ``MAGIC | u32 header length | msgpack [payload_len, [buffer_len...], [buffer_index...]]``
then padding to 64, the payload, then each distinct buffer (padded to 64).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ..errors import WireFormatError
from .serialize import Pickled, dumps, loads

MAGIC = b"POI1"
ALIGN = 64


def _pad(offset: int) -> int:
    return (-offset) % ALIGN


def pack(pickled: Pickled) -> bytearray:
    """Lay a :class:`Pickled` value out as one image (distinct buffers stored once)."""
    order = list(dict.fromkeys(pickled.buffers))
    index = [order.index(h) for h in pickled.buffers]
    views = [pickled.blobs[h] for h in order]
    return pack_parts(pickled.payload, views, index)


def pack_parts(payload: bytes | memoryview, buffers: list[Any], index: list[int] | None = None) -> bytearray:
    """An image from a payload and its distinct buffers; ``index`` maps pickle order to them."""
    views = [memoryview(b).cast("B") for b in buffers]
    index = list(range(len(views))) if index is None else index
    header = msgpack.packb([len(payload), [v.nbytes for v in views], index])
    head_len = len(MAGIC) + 4 + len(header)
    total = head_len + _pad(head_len) + len(payload)
    offsets = []
    for view in views:
        total += _pad(total)
        offsets.append(total)
        total += view.nbytes
    image = bytearray(total)
    image[: head_len] = MAGIC + struct.pack("<I", len(header)) + header
    start = head_len + _pad(head_len)
    image[start: start + len(payload)] = payload
    for offset, view in zip(offsets, views, strict=True):
        image[offset: offset + view.nbytes] = view
    return image


def encode(obj: Any, what: str = "the object") -> bytearray:
    """Pickle ``obj`` (protocol 5, large buffers out of band) straight into an image."""
    return pack(dumps(obj, threshold=4096, what=what))


def split(image: bytes | bytearray | memoryview) -> tuple[memoryview, list[memoryview]]:
    """The payload and the buffers in pickle order, as views of ``image`` (no copies)."""
    view = memoryview(image).cast("B")
    if view.nbytes < len(MAGIC) + 4 or bytes(view[: len(MAGIC)]) != MAGIC:
        raise WireFormatError("not a podrun object image (bad magic): the cached or stored version is corrupt")
    (header_len,) = struct.unpack_from("<I", view, len(MAGIC))
    head_len = len(MAGIC) + 4 + header_len
    try:
        payload_len, sizes, index = msgpack.unpackb(view[len(MAGIC) + 4: head_len])
    except (ValueError, msgpack.ExtraData) as exc:
        raise WireFormatError(f"corrupt podrun object image header: {exc}") from exc
    position = head_len + _pad(head_len)
    payload = view[position: position + payload_len]
    position += payload_len
    distinct = []
    for size in sizes:
        position += _pad(position)
        distinct.append(view[position: position + size])
        position += size
    if position > view.nbytes:
        raise WireFormatError("podrun object image is truncated")
    return payload, [distinct[i] for i in index]


def decode(image: bytes | bytearray | memoryview) -> Any:
    """Unpickle an image; arrays are views of it (writable when ``image`` is a bytearray)."""
    payload, buffers = split(image)
    return loads(payload, buffers)
