"""The pod's typed job records: they round-trip, survive a torn tail, and a record of another
format is a clear WireFormatError, never a guess."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podrun.errors import WireFormatError
from podrun.wire import records as rec

texts = st.text(max_size=20)
hashes = st.lists(st.text("0123456789abcdef", min_size=4, max_size=8), max_size=3)
times = st.floats(allow_nan=False, allow_infinity=False)
error_infos = st.none() | st.fixed_dictionaries({"type": texts, "message": texts, "pickled": st.none() | st.binary(max_size=30)})
statuses = st.sampled_from([rec.OK, rec.RAISED, rec.TIMEOUT, rec.KILLED, rec.CANCELLED, rec.LOST])

records = st.one_of(
    st.builds(rec.StartRecord, times, texts, st.integers(0, 2**31), texts, texts, st.none() | texts),
    st.builds(rec.EnvRecord, st.dictionaries(texts, st.integers(-(2**63), 2**63 - 1) | texts, max_size=3)),
    st.builds(rec.RunRecord, st.integers(0, 2**40)),
    # a call's sequences as they read back: tuples
    st.builds(rec.CallRecord, st.integers(0, 2**40), statuses, times, times, st.none() | st.binary(max_size=64),
              st.none() | texts, hashes.map(tuple), error_infos, texts, texts, hashes.map(tuple),
              st.lists(st.integers(0, 9), max_size=3).map(tuple)),
    st.builds(rec.EndRecord, times, st.none() | texts, hashes, st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(records, max_size=12), cut=st.integers(min_value=0, max_value=60))
def test_records_round_trip_and_survive_a_torn_tail(items: list[rec.Record], cut: int) -> None:
    data = b"".join(rec.encode_record(item) for item in items)
    assert list(rec.iter_records(data)) == items
    torn = data[: max(0, len(data) - cut)]
    recovered = list(rec.iter_records(torn))
    assert recovered == items[: len(recovered)]  # a prefix: nothing invented, nothing reordered


def _frame(item: object) -> bytes:
    body = msgpack.packb(item, use_bin_type=True)
    return len(body).to_bytes(4, "little") + body


@settings(max_examples=50, deadline=None)
@given(version=st.integers(min_value=rec.VERSION + 1, max_value=2**31), record=records)
def test_a_newer_format_names_both_versions(version: int, record: rec.Record) -> None:
    frame = rec.encode_record(record)
    body = msgpack.unpackb(frame[4:])
    body[0] = version
    with pytest.raises(WireFormatError, match=f"v{version}.*up to v{rec.VERSION}.*upgrade podrun"):
        list(rec.iter_records(_frame(body)))


def test_a_v1_call_record_reads_with_no_bytes_buffers() -> None:
    v1 = [1, "call", 3, rec.OK, 1.0, 2.0, None, "ab" * 32, ["cd" * 32], None, "out", "", []]
    (record,) = rec.iter_records(_frame(v1))
    assert record == rec.CallRecord(3, rec.OK, 1.0, 2.0, None, "ab" * 32, ("cd" * 32,), None, "out", "", ())
    assert record.bytes_buffers == ()


@pytest.mark.parametrize("item", [{"k": "call", "i": 0, "s": "OK"}, [1], ["1", "call"], [rec.VERSION, "nope", 1],
                                  [rec.VERSION, "call"], [rec.VERSION, "run", 1, 2, 3]])
def test_a_foreign_or_malformed_record_is_a_wire_format_error(item: object) -> None:
    with pytest.raises(WireFormatError, match="record"):
        list(rec.iter_records(_frame(item)))


def test_only_killed_and_lost_may_be_replaced_by_a_later_pod() -> None:
    final = {s for s in (rec.OK, rec.RAISED, rec.TIMEOUT, rec.KILLED, rec.CANCELLED, rec.LOST) if rec.CallRecord(0, s).final}
    assert final == {rec.OK, rec.RAISED, rec.TIMEOUT, rec.CANCELLED}


@settings(max_examples=100, deadline=None)
@given(items=st.lists(records, min_size=1, max_size=6), at=st.integers(0, 5), skew=st.sampled_from([-2, -1, 1, 2]))
def test_a_frame_whose_length_disagrees_with_its_body_ends_the_records_there(items: list[rec.Record], at: int,
                                                                            skew: int) -> None:
    at %= len(items)
    frames = [rec.encode_record(item) for item in items]
    body = frames[at][4:]
    if len(body) + skew < 0:
        return
    data = b"".join(frames[:at]) + (len(body) + skew).to_bytes(4, "little") + body + b"".join(frames[at + 1:])
    assert list(rec.iter_records(data)) == items[:at]


def test_a_calls_sequences_read_as_tuples_and_the_rest_as_lists_as_written() -> None:
    """Tuples for the fields every call has (the collector does not track them); lists, as
    written, inside an error and in the other records, which other code reads as such."""
    error = {"type": "ValueError", "tb": [["f.py", 3, ["a", "b"]]], "extra": {"k": [1, 2]}}
    call = rec.CallRecord(0, rec.RAISED, buffers=["h1"], error=error, missing=["h2"], bytes_buffers=[0])
    env = rec.EnvRecord({"env": {"packages": [["numpy", "2.0"]]}})
    end = rec.EndRecord(1.0, missing=["h3"])
    read_call, read_env, read_end = rec.iter_records(b"".join(map(rec.encode_record, [call, env, end])))
    assert isinstance(read_call, rec.CallRecord)
    assert (read_call.buffers, read_call.missing, read_call.bytes_buffers) == (("h1",), ("h2",), (0,))
    assert read_call.error == error and isinstance(read_call.error["tb"][0][2], list)
    assert read_env == env and read_end == end


@pytest.mark.parametrize("depth", [900, 5000])
def test_a_record_nested_too_deep_ends_the_records_or_is_a_wire_format_error(depth: int) -> None:
    """A hostile pod's deeply nested environment record: never a RecursionError in the client."""
    body = (b"\x93" + msgpack.packb(rec.VERSION) + msgpack.packb("env") + b"\x81" + msgpack.packb("x")
            + b"\x91" * depth + b"\xc0")
    frame = len(body).to_bytes(4, "little") + body
    try:
        assert list(rec.iter_records(frame + rec.encode_record(rec.RunRecord(1)))) == []  # msgpack's own depth limit
    except WireFormatError as exc:
        assert "wrong fields" in str(exc)


def test_a_record_without_its_later_fields_gets_their_defaults() -> None:
    assert list(rec.iter_records(_frame([rec.VERSION, "call", 3, rec.OK]))) == [rec.CallRecord(3, rec.OK)]
