"""Large ``bytes`` and ``bytearray`` results are held once: the pod sends them out of band as
they are (no pickled copy, no snapshot), and the client decodes each blob straight into an
object of the type the value holds and hands it over as it is (no second copy).

Values of sizes around every threshold (inline, out of band, the inline payload limit, a
stream chunk), compressible or not, at the top, nested, twice, or as a bytes and a bytearray of
the same content, come back equal and of their own types, through the wire functions and
through real pods. Peak memory is measured in ``test_volumes_stream.py`` and
``benchmarks/memory.py``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import podrun
from podrun.runtime.calls import INLINE_RESULT_BYTES
from podrun.wire.compression import MIN_COMPRESS_BYTES, STREAM_CHUNK
from podrun.wire.serialize import BLOB_THRESHOLD, dumps, loads

SIZES = [0, 1, MIN_COMPRESS_BYTES - 1, MIN_COMPRESS_BYTES, BLOB_THRESHOLD - 1, BLOB_THRESHOLD, BLOB_THRESHOLD + 1,
         INLINE_RESULT_BYTES + 1, STREAM_CHUNK + 7]
KINDS = ["bytes", "bytearray", "numpy"]
WRAPS = ["top", "tuple", "dict", "twice", "both"]
specs = st.tuples(st.sampled_from(KINDS), st.sampled_from(SIZES) | st.integers(0, 3 * BLOB_THRESHOLD),
                  st.booleans(), st.sampled_from(WRAPS), st.integers(0, 2**16))


def make(spec: tuple[str, int, bool, str, int]) -> Any:
    """The value a spec names, the same in the pod and here (random content is incompressible)."""
    kind, size, noisy, wrap, seed = spec
    data = random.Random(seed).randbytes(size) if noisy else bytes([seed % 251]) * size
    value: Any = {"bytes": bytes, "bytearray": bytearray}.get(kind, lambda d: np.frombuffer(bytearray(d), np.uint8))(data)
    if wrap == "tuple":
        return (seed, value, "tail")
    if wrap == "dict":
        return {"value": value, "seed": seed}
    if wrap == "twice":
        return [value, value]
    if wrap == "both":
        return (bytes(data), bytearray(data))
    return value


def same(got: Any, want: Any) -> bool:
    """Equal and of the same types, all the way down (an array's dtype, shape and bytes)."""
    if type(got) is not type(want):
        return False
    if isinstance(want, np.ndarray):
        return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    return bool(got == want)


def leaves(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    return [value]


@settings(max_examples=150, deadline=None)
@given(spec=specs)
def test_a_result_loads_from_its_own_buffers_with_no_copy(spec: tuple[str, int, bool, str, int]) -> None:
    value = make(spec)
    pickled = dumps(value, what="the result", fast=True, snapshot=False)
    # As the client fetches them: one fresh buffer per out-of-band buffer, bytes where a bytes holds it.
    buffers = [bytes(pickled.blobs[h]) if i in pickled.bytes_buffers else bytearray(pickled.blobs[h])
               for i, h in enumerate(pickled.buffers)]
    loaded = loads(pickled.payload, buffers, owned=True)
    assert same(loaded, value)
    if spec[3] == "twice":
        assert loaded[0] is loaded[1]  # one object sent twice is one object back
    for leaf in leaves(loaded):
        if type(leaf) in (bytes, bytearray) and len(leaf) >= BLOB_THRESHOLD:
            assert any(leaf is buffer for buffer in buffers)  # the fetched buffer itself, not a copy of it


def test_a_bytearray_result_is_not_snapshotted_and_a_bytes_one_is_marked() -> None:
    data = bytearray(random.Random(1).randbytes(BLOB_THRESHOLD))
    result = dumps((bytes(BLOB_THRESHOLD), data), fast=True, snapshot=False)
    assert result.blobs[result.buffers[1]].obj is data  # the pod writes the bytearray's own memory
    assert result.bytes_buffers == [0]
    argument = dumps(data, fast=True)  # an argument is still copied: the caller may change it later
    assert argument.blobs[argument.buffers[0]].obj is not data


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(specs, min_size=1, max_size=12))
def test_large_results_come_back_equal_and_of_their_own_types_from_pods(batch: list[Any]) -> None:
    podrun.configure("local", driver="process")
    futures = podrun.remote(make, max_duration=5).map(batch)
    for spec, value in zip(batch, podrun.get(futures, timeout=120), strict=True):
        assert same(value, make(spec)), spec
        if spec[3] == "twice":
            assert value[0] is value[1]
