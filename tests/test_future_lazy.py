"""``LazyFuture`` (and so ``ObjectFuture``) behaves as ``concurrent.futures.Future`` in every
sequence of operations, works with ``wait``/``as_completed`` while other threads settle it,
makes no lock for a future nobody waits on, and ``settle_all`` settles many at once as
``set_result`` would each."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

import podrun
from podrun.client.future import ObjectFuture
from podrun.client.lazy_future import LazyFuture, settle_all

OPERATIONS = ["cancel", "set_running_or_notify_cancel", "set_result", "set_exception", "done", "cancelled",
              "running", "result", "exception", "add_done_callback", "wait", "repr"]


def apply(future: cf.Future, operation: str, calls: list[str]) -> object:
    """One operation's outcome: its return value, or the type of what it raised."""
    try:
        if operation == "set_result":
            return future.set_result(42)
        if operation == "set_exception":
            return future.set_exception(ValueError("boom"))
        if operation in ("result", "exception"):
            outcome = getattr(future, operation)(timeout=0)
            return type(outcome).__name__ if isinstance(outcome, BaseException) else outcome
        if operation == "add_done_callback":
            return future.add_done_callback(lambda f: calls.append(f"callback saw done={f.done()}"))
        if operation == "wait":
            done, _ = cf.wait([future], timeout=0)
            return bool(done)
        if operation == "repr":
            return repr(future).split(" at ")[1].split(" ", 1)[1]  # the state words, not the class or address
        return getattr(future, operation)()
    except BaseException as exc:  # noqa: BLE001 - the outcome compared is the exception's type
        return type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(OPERATIONS), max_size=12))
def test_every_sequence_of_operations_matches_a_plain_future(operations):
    plain, lazy = cf.Future(), LazyFuture()
    plain_calls: list[str] = []
    lazy_calls: list[str] = []
    for operation in operations:
        assert apply(lazy, operation, lazy_calls) == apply(plain, operation, plain_calls), operation
        assert lazy_calls == plain_calls
        assert lazy._state == plain._state


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), mode=st.sampled_from(["wait_all", "wait_first", "as_completed", "result"]),
       exceptions=st.booleans())
def test_waiters_and_settlers_in_other_threads_never_miss_a_wake_up(n, mode, exceptions):
    futures = [ObjectFuture("f") for _ in range(n)]
    start = threading.Barrier(2)

    def settle() -> None:
        start.wait()
        for i, future in enumerate(futures):
            if exceptions and i % 3 == 0:
                future.set_exception(KeyError(i))
            else:
                future.set_result(i)

    settler = threading.Thread(target=settle)
    settler.start()
    start.wait()
    try:
        if mode == "wait_all":
            done, not_done = cf.wait(futures, timeout=30)
            assert len(done) == n and not not_done
        elif mode == "wait_first":
            done, _ = cf.wait(futures, timeout=30, return_when=cf.FIRST_COMPLETED)
            assert done
        elif mode == "as_completed":
            assert len(list(cf.as_completed(futures, timeout=30))) == n
        else:
            for i, future in enumerate(futures):
                assert future.exception(timeout=30) is not None if exceptions and i % 3 == 0 else future.result(30) == i
    finally:
        settler.join(30)
    assert all(future.done() for future in futures)


def test_a_callback_added_while_another_thread_settles_runs_exactly_once():
    for _ in range(200):
        future = LazyFuture()
        seen: list[int] = []
        racer = threading.Thread(target=future.set_result, args=(1,))
        racer.start()
        future.add_done_callback(lambda f, seen=seen: seen.append(f.result()))
        racer.join()
        assert seen == [1]


def test_a_future_nobody_waits_on_makes_no_lock():
    future = ObjectFuture("f")
    future.set_running_or_notify_cancel()
    future.set_result(3)
    assert future.result() == 3 and future.done() and future._watch is None
    waited = ObjectFuture("f")
    threading.Timer(0.05, waited.set_result, args=(4,)).start()
    assert waited.result(timeout=30) == 4 and waited._watch.condition is not None  # a wait made one, as a Future has


def test_a_real_map_settles_its_futures_without_a_lock_each():
    inc = podrun.remote(lambda x: x + 1, max_duration=2)
    futures = inc.map(range(300))
    futures[-1].wait(timeout=60)  # one waiter
    assert podrun.get(futures, timeout=60) == list(range(1, 301))
    assert sum(future._watch is not None for future in futures) <= 2  # the one waited on (and at most one get() raced)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), mode=st.sampled_from(["wait_all", "as_completed", "result", "callback", "none"]),
       cancelled=st.sets(st.integers(0, 299)))
def test_settle_all_wakes_every_waiter_and_runs_every_callback_once(n, mode, cancelled):
    """Waiters and callbacks on some futures, others cancelled before: ``settle_all`` ends each
    future exactly as ``set_result`` would (a cancelled one stays cancelled)."""
    futures = [ObjectFuture("f") for _ in range(n)]
    for i in cancelled:
        if i < n:
            assert futures[i].cancel()
    seen: list[int] = []
    if mode == "callback":
        for i, future in enumerate(futures[::2]):
            future.add_done_callback(lambda f, i=i: seen.append(i))
    outcome: list[object] = []
    watcher = threading.Thread(target=lambda: outcome.append(_watch(futures, mode)))
    watcher.start()
    settle_all(futures, list(range(n)))
    watcher.join(30)
    assert not watcher.is_alive() and outcome == [True]
    for i, future in enumerate(futures):
        assert future.cancelled() if i in cancelled else future.result(timeout=0) == i
    if mode == "callback":
        assert sorted(seen) == list(range(len(futures[::2])))
    if mode == "none":
        assert all(future._watch is None for future in futures)  # settled without a lock each


def _watch(futures: list[ObjectFuture], mode: str) -> bool:
    if mode == "wait_all":
        return not cf.wait(futures, timeout=30)[1]
    if mode == "as_completed":
        return len(list(cf.as_completed(futures, timeout=30))) == len(futures)
    if mode == "result":
        for future in futures:
            if not future.cancelled():
                with contextlib.suppress(cf.CancelledError):
                    future.result(timeout=30)
    return True


def test_a_pending_call_is_small():
    """Slotted, no condition, the rare fields apart: a pending call's future stays near 180
    bytes (a plain Future is ~1.6 KB; benchmarks/memory.py measures a whole map)."""
    import tracemalloc

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    futures = [ObjectFuture("f", ("local", None)) for _ in range(2000)]
    held = (tracemalloc.get_traced_memory()[0] - before) / len(futures)
    tracemalloc.stop()
    assert held < 250, held
