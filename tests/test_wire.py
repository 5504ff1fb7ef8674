"""Wire format v1 round trips: compression, records, bundles, out-of-band pickling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podrun.errors import SerializationError, WireFormatError
from podrun.wire import compression as comp
from podrun.wire.bundle import CallGroup, JobHeader, encode_bundle, read_header
from podrun.wire.hashing import content_hash
from podrun.wire.serialize import dumps, find_unpicklable, loads


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=5000), codec=st.sampled_from([comp.RAW, comp.ZSTD, comp.ZLIB]))
def test_compression_round_trips(data, codec):
    frame = comp.compress(data, codec)
    assert comp.decompress(frame) == data
    assert frame[0] in (comp.RAW, codec)


def test_compressible_data_shrinks_and_random_data_is_stored_raw():
    text = b"podrun " * 10000
    assert len(comp.compress(text)) < len(text) / 20
    noise = np.random.default_rng(1).bytes(200_000)
    frame = comp.compress(noise)
    assert frame[0] == comp.RAW and len(frame) == len(noise) + 1


def test_unknown_codec_is_a_clear_error():
    with pytest.raises(WireFormatError, match="codec"):
        comp.decompress(b"\x09abc")


@settings(max_examples=30, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=3000), min_size=0, max_size=4), args=st.binary(max_size=200))
def test_bundle_round_trip(payloads, args):
    blobs = {content_hash(p): p for p in payloads}
    header = JobHeader("job-1", [CallGroup(next(iter(blobs), "0" * 64), comp.compress(args), list(blobs), 3, 1.5)])
    data = encode_bundle(header, blobs)
    stream = io.BytesIO(data)
    decoded, frames_at = read_header(stream)
    assert decoded.job_id == "job-1" and decoded.call_count == 3 and decoded.groups[0].timeout == 1.5
    assert comp.decompress(decoded.groups[0].args) == args
    for blob_hash, (offset, length) in decoded.embedded.items():
        assert comp.decompress(data[frames_at + offset: frames_at + offset + length]) == blobs[blob_hash]


def test_bundle_with_another_format_or_garbage_is_refused():
    header = JobHeader("j", [])
    header.format = 99
    with pytest.raises(WireFormatError, match="format 99"):
        read_header(io.BytesIO(encode_bundle(header, {})))
    with pytest.raises(WireFormatError, match="not a podrun job bundle"):
        read_header(io.BytesIO(b"GARBAGE!" + b"\x00" * 20))


arrays = st.builds(
    lambda n, dtype, seed: np.random.default_rng(seed).integers(0, 100, size=n).astype(dtype),
    st.integers(0, 40_000), st.sampled_from(["int8", "float32", "float64"]), st.integers(0, 2**32 - 1),
)


@settings(max_examples=40, deadline=None)
@given(array=arrays, extra=st.one_of(st.none(), st.text(max_size=30), st.binary(max_size=100_000)))
def test_out_of_band_pickling_round_trips(array, extra):
    value = {"array": array, "extra": extra, "same": array}
    pickled = dumps(value, threshold=1024)
    assert all(view.nbytes >= 1024 for view in pickled.blobs.values())
    assert len(pickled.blobs) <= 2  # the array's buffer is carried once, however often referenced
    restored = loads(pickled.payload, [pickled.blobs[h] for h in pickled.buffers])
    np.testing.assert_array_equal(restored["array"], array)
    assert restored["extra"] == extra


def test_large_buffer_is_one_blob_shared_by_all_calls():
    big = np.arange(1_000_000, dtype=np.float64)
    pickled = dumps([((i, big), {}) for i in range(100)])
    assert len(pickled.blobs) == 1 and pickled.blob_bytes == big.nbytes
    assert len(pickled.payload) < 10_000


def test_unpicklable_is_named():
    import threading

    lock = threading.Lock()
    with pytest.raises(SerializationError, match="arguments"):
        dumps(((lock,), {}), what="the arguments")
    assert "positional argument 1" in find_unpicklable((1, lock), {})
    assert "keyword argument 'guard'" in find_unpicklable((), {"guard": lock})


def _bytes_like(kind: str, data: bytes):
    import array

    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data)).cast("B")
    if kind == "readonly view of ints":
        data += bytes(4)  # an empty view of ints is one cast cannot rebuild (refused: test below)
        return memoryview(data[: len(data) // 4 * 4]).cast("i")
    return array.array("d", np.frombuffer(data[: len(data) // 8 * 8], dtype=np.float64).tolist())


BYTES_LIKE = ["bytes", "bytearray", "memoryview", "readonly view of ints", "array"]


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(BYTES_LIKE), data=st.binary(min_size=0, max_size=4096), fast=st.booleans(),
       times=st.integers(1, 4))
def test_bytes_like_arguments_above_the_threshold_travel_as_one_blob(kind, data, fast, times):
    value = _bytes_like(kind, data)
    nbytes = memoryview(value).nbytes
    pickled = dumps([((value, i), {}) for i in range(times)], threshold=1024, fast=fast)
    restored = loads(pickled.payload, [pickled.blobs[h] for h in pickled.buffers])
    for (args, _), i in zip(restored, range(times), strict=True):
        back = args[0]
        assert type(back) is type(value) and args[1] == i
        assert memoryview(back).tobytes() == memoryview(value).tobytes()
        if isinstance(value, memoryview):
            assert (back.format, back.shape, back.readonly) == (value.format, value.shape, value.readonly)
    assert all(arg is restored[0][0][0] for (arg, _), _ in restored)  # one object, however often it is passed
    if nbytes >= 1024:
        assert len(pickled.blobs) == 1 and pickled.blob_bytes == nbytes
        assert len(pickled.payload) < 200 + 30 * times  # the stream names the blob, it does not carry it
    else:
        assert not pickled.blobs


def test_a_bytearray_argument_is_snapshotted_and_stays_resizable():
    data = bytearray(b"x" * 100_000)
    pickled = dumps(((data,), {}), threshold=1024)
    data[:1] = b"y"
    data.extend(b"more")  # no view of the caller's buffer is kept
    (restored,), _ = loads(pickled.payload, [pickled.blobs[h] for h in pickled.buffers])
    assert restored == b"x" * 100_000


def test_a_memoryview_cast_cannot_rebuild_arrives_as_its_bytes():
    for view in (memoryview(np.zeros((0, 4), dtype=np.uint8)), memoryview(b"").cast("i")):
        pickled = dumps(((view,), {}), threshold=1024)
        assert loads(pickled.payload, []) == ((b"",), {})  # cloudpickle's own fallback
