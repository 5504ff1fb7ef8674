"""The delta codec and object images: round trips under random edits, zero-copy arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podrun.errors import WireFormatError
from podrun.wire import delta, object_image


@st.composite
def edited(draw: st.DrawFn) -> tuple[bytes, bytes]:
    base = bytearray(draw(st.binary(min_size=0, max_size=4096)))
    new = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        at = draw(st.integers(0, len(new)))
        chunk = draw(st.binary(min_size=1, max_size=64))
        if op == "replace":
            new[at:at + len(chunk)] = chunk
        elif op == "insert":
            new[at:at] = chunk
        else:
            del new[at:at + len(chunk)]
    return bytes(base), bytes(new)


@settings(max_examples=60, deadline=None)
@given(edited())
def test_delta_round_trips_random_edit_scripts(pair: tuple[bytes, bytes]) -> None:
    base, new = pair
    assert bytes(delta.decode(base, delta.encode(base, new))) == new


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3000), st.lists(st.tuples(st.integers(0, 2999), st.floats(allow_nan=False, width=32)), max_size=40))
def test_delta_round_trips_numpy_edits_through_images(size: int, edits: list[tuple[int, float]]) -> None:
    before = np.arange(size, dtype=np.float32)
    after = before.copy()
    for at, value in edits:
        after[at % size] = value
    old, new = object_image.encode(before), object_image.encode(after)
    rebuilt = object_image.decode(delta.decode(old, delta.encode(old, new)))
    np.testing.assert_array_equal(rebuilt, after)


def test_delta_across_chunks_is_small_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delta, "CHUNK", 64 * 1024)
    monkeypatch.setattr(delta, "MARGIN", 4096)
    rng = np.random.default_rng(1)
    before = rng.standard_normal(200_000).astype(np.float32)
    after = before.copy()
    after[rng.choice(after.size, 2000, replace=False)] = 7.0
    encoded = delta.encode(before.tobytes(), after.tobytes())
    assert len(encoded) < 0.05 * after.nbytes
    assert bytes(delta.decode(before.tobytes(), encoded)) == after.tobytes()


def test_delta_against_the_wrong_base_is_a_typed_error() -> None:
    encoded = delta.encode(b"a" * 10_000, b"a" * 9_000 + b"b" * 1_000)
    with pytest.raises(WireFormatError):
        delta.decode(b"z" * 10, encoded)
    with pytest.raises(WireFormatError, match="magic"):
        delta.decode(b"", b"garbage!!!!!!!!!!!!!")


def test_image_arrays_are_writable_views_without_copies() -> None:
    array = np.arange(100_000, dtype=np.float64)
    image = object_image.encode({"x": array, "y": array})
    value = object_image.decode(image)
    assert value["x"].flags.writeable and np.shares_memory(value["x"], np.frombuffer(image, dtype=np.uint8))
    np.testing.assert_array_equal(value["y"], array)
    assert len(image) < array.nbytes + 4096  # the shared buffer is stored once
