"""ObjectFuture behaves as ``concurrent.futures.Future`` in every state.

One table of expectations runs on both a plain Future and an ObjectFuture; hypothesis then
drives both through the same random sequences of operations and compares every answer.
Last, real remote calls check that podrun's own states (waiting in a lane, sent) refine the
Future's: waiting is pending, sent is running.
"""

from __future__ import annotations

import concurrent.futures as cf
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import podrun

KINDS: dict[str, Callable[[], cf.Future]] = {"Future": cf.Future, "ObjectFuture": lambda: podrun.ObjectFuture("f")}


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What an operation did: ("ok", value) or ("raised", exception type name)."""
    try:
        value = call()
    except BaseException as exc:  # noqa: BLE001 - the exception's type is the observation
        kind = "CancelledError" if isinstance(exc, cf.CancelledError) else type(exc).__name__
        return ("raised", "TimeoutError" if isinstance(exc, cf.TimeoutError) else kind)
    return ("ok", value if not isinstance(value, BaseException) else type(value).__name__)


def _state_words(future: cf.Future) -> str:
    """The part of the repr both kinds share: ``state=finished returned int`` and the like."""
    match = re.search(r"state=(\w+)(?: (returned|raised) (\w+))?", repr(future))
    assert match, repr(future)
    return match.group(0)


def _observe(future: cf.Future) -> dict[str, Any]:
    return {
        "done": future.done(), "cancelled": future.cancelled(), "running": future.running(),
        "result": _outcome(lambda: future.result(timeout=0)),
        "exception": _outcome(lambda: future.exception(timeout=0)),
        "repr": _state_words(future),
    }


def _reach(future: cf.Future, state: str) -> None:
    if state == "running":
        assert future.set_running_or_notify_cancel() is True
    elif state == "returned":
        future.set_result(42)
    elif state == "raised":
        future.set_exception(ValueError("bad"))
    elif state == "running-returned":
        future.set_running_or_notify_cancel()
        future.set_result("ok")
    elif state == "cancelled":
        assert future.cancel() is True
    elif state == "cancelled-notified":
        future.cancel()
        assert future.set_running_or_notify_cancel() is False


# state -> what every Future answers there
TABLE: dict[str, dict[str, Any]] = {
    "pending": {"done": False, "cancelled": False, "running": False, "result": ("raised", "TimeoutError"),
                "exception": ("raised", "TimeoutError"), "repr": "state=pending", "cancel": True},
    "running": {"done": False, "cancelled": False, "running": True, "result": ("raised", "TimeoutError"),
                "exception": ("raised", "TimeoutError"), "repr": "state=running", "cancel": False},
    "returned": {"done": True, "cancelled": False, "running": False, "result": ("ok", 42), "exception": ("ok", None),
                 "repr": "state=finished returned int", "cancel": False},
    "raised": {"done": True, "cancelled": False, "running": False, "result": ("raised", "ValueError"),
               "exception": ("ok", "ValueError"), "repr": "state=finished raised ValueError", "cancel": False},
    "running-returned": {"done": True, "cancelled": False, "running": False, "result": ("ok", "ok"),
                         "exception": ("ok", None), "repr": "state=finished returned str", "cancel": False},
    "cancelled": {"done": True, "cancelled": True, "running": False, "result": ("raised", "CancelledError"),
                  "exception": ("raised", "CancelledError"), "repr": "state=cancelled", "cancel": True},
    "cancelled-notified": {"done": True, "cancelled": True, "running": False, "result": ("raised", "CancelledError"),
                           "exception": ("raised", "CancelledError"), "repr": "state=cancelled", "cancel": True},
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("state", sorted(TABLE))
def test_each_state_answers_as_the_table_says(kind, state):
    future = KINDS[kind]()
    _reach(future, state)
    expected = dict(TABLE[state])
    cancel = expected.pop("cancel")
    assert _observe(future) == expected
    calls: list[cf.Future] = []
    future.add_done_callback(calls.append)  # after completion or cancellation: called at once
    assert calls == ([future] if expected["done"] else [])
    assert future.cancel() is cancel
    assert future.cancel() is cancel  # asking twice changes nothing
    if expected["done"]:
        with pytest.raises(cf.InvalidStateError):
            future.set_result(1)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_callbacks_run_once_in_order_and_one_failing_stops_none(kind, caplog):
    future = KINDS[kind]()
    seen: list[str] = []
    future.add_done_callback(lambda f: seen.append("first"))
    future.add_done_callback(lambda f: 1 / 0)
    future.add_done_callback(lambda f: seen.append("third"))
    assert seen == []
    future.cancel()
    assert seen == ["first", "third"]
    future.add_done_callback(lambda f: seen.append("late"))
    assert seen == ["first", "third", "late"]
    assert "exception calling callback" in caplog.text


OPERATIONS = ["cancel", "set_running", "set_result", "set_exception", "add_callback", "observe"]


def _apply(future: cf.Future, operation: str, log: list[Any]) -> Any:
    if operation == "cancel":
        return _outcome(future.cancel)
    if operation == "set_running":
        return _outcome(future.set_running_or_notify_cancel)
    if operation == "set_result":
        return _outcome(lambda: future.set_result(7))
    if operation == "set_exception":
        return _outcome(lambda: future.set_exception(KeyError("k")))
    if operation == "add_callback":
        return _outcome(lambda: future.add_done_callback(lambda f: log.append(f.cancelled())))
    return _observe(future)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(OPERATIONS), max_size=12))
def test_any_sequence_of_operations_answers_as_a_plain_future(operations):
    plain, ours = cf.Future(), podrun.ObjectFuture("f")
    plain_log: list[Any] = []
    our_log: list[Any] = []
    for operation in operations:
        assert _apply(ours, operation, our_log) == _apply(plain, operation, plain_log), operations
        assert our_log == plain_log
    assert _observe(ours) == _observe(plain)


def test_a_cancelled_future_is_done_for_wait_and_as_completed():
    future = podrun.ObjectFuture("f")
    assert future.cancel()
    done, not_done = cf.wait([future], timeout=5)
    assert done == {future} and not not_done
    assert list(cf.as_completed([future], timeout=5)) == [future]


# -- real calls: podrun's states refine the Future's ---------------------------------------

@podrun.remote(max_duration=1)
def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_waiting_in_the_lane_is_pending_and_cancels():
    busy = nap.remote(1.0)
    while not busy.running():
        time.sleep(0.01)
    assert busy.sent  # sent: the Future's running
    waiting = nap.remote(0.01)
    assert not waiting.running() and not waiting.sent and not waiting.done()
    assert "state=pending" in repr(waiting)
    calls: list[bool] = []
    waiting.add_done_callback(lambda f: calls.append(f.cancelled()))
    assert waiting.cancel() is True and waiting.cancel() is True
    assert calls == [True]
    waiting.add_done_callback(lambda f: calls.append(f.cancelled()))
    assert calls == [True, True]
    with pytest.raises(cf.CancelledError):
        waiting.result()
    with pytest.raises(cf.CancelledError):
        waiting.exception()
    assert "state=cancelled" in repr(waiting)
    assert busy.result(timeout=60) == 1.0


def test_a_sent_call_skipped_by_its_pod_ends_as_a_cancelled_error():
    futures = nap.map([0.5, 0.01])
    while not futures[1].running():
        time.sleep(0.01)
    assert futures[1].cancel() is False  # running: cancel() cannot promise, the pod is asked
    with pytest.raises(podrun.Cancelled) as info:
        futures[1].result(timeout=60)
    assert isinstance(info.value, cf.CancelledError)
    assert not futures[1].cancelled() and futures[1].done()
    assert "state=finished raised Cancelled" in repr(futures[1])
    assert futures[0].result(timeout=60) == 0.5


def test_repr_of_a_remote_result_says_whether_it_was_fetched():
    future = nap.remote(0.01)
    future.wait(timeout=60)
    assert "returned a result not yet fetched" in repr(future)
    assert future.result() == 0.01
    assert "state=finished returned float" in repr(future) and f"job={future.job.job_id}" in repr(future)
