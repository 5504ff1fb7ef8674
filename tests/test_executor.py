"""podrun.Executor against the contract of ``concurrent.futures.Executor``, in the manner of
CPython's own executor tests (written here in this project's words): submit, map, map's
exceptions, timeout and chunksize, shutdown in each of its forms, the context manager, and
``wait``/``as_completed`` over its futures. Real pods on the local platform."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

import podrun


def mul(x, y=1):
    return x * y


def nap(seconds):
    time.sleep(seconds)
    return seconds


@pytest.fixture
def ex():
    executor = podrun.Executor(max_duration=1)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_is_a_concurrent_futures_executor_whose_futures_are_object_futures(ex):
    assert isinstance(ex, cf.Executor)
    future = ex.submit(mul, 6, 7)
    assert isinstance(future, podrun.ObjectFuture) and isinstance(future, cf.Future)
    assert future.result(timeout=60) == 42


def test_submit_with_keyword_arguments(ex):
    assert ex.submit(mul, 2, y=8).result(timeout=60) == 16
    assert ex.submit(mul, x=3, y=5).result(timeout=60) == 15


def test_submit_takes_builtins_and_remote_functions(ex):
    assert ex.submit(pow, 2, 8).result(timeout=60) == 256
    remote_mul = podrun.remote(mul, node="GPU")
    future = ex.submit(remote_mul, 4, 4)
    assert future.result(timeout=60) == 16
    assert future.job.key.node == "MPU"  # the executor's options, not the function's


def test_calls_submitted_together_share_a_job(ex):
    futures = [ex.submit(mul, i, 2) for i in range(30)]
    assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(30)]
    assert len({f.job.job_id for f in futures}) <= 2


def test_map_gives_results_in_order_from_one_job(ex):
    assert list(ex.map(pow, range(20), range(3, 23))) == list(map(pow, range(20), range(3, 23)))
    assert list(ex.map(mul, [])) == []


def test_map_stops_at_the_first_exception_in_order(ex):
    results = ex.map(divmod, [7, 5, 9], [2, 0, 4])
    assert next(results) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_timeout_raises_and_cancels_the_rest(ex):
    results = []
    with pytest.raises(cf.TimeoutError):
        for value in ex.map(nap, [30, 0.01], timeout=1):
            results.append(value)
    assert results == []


def test_map_with_chunksize_runs_chunks_as_calls(ex):
    assert list(ex.map(mul, range(25), range(25), chunksize=4)) == [i * i for i in range(25)]
    assert list(ex.map(mul, range(3), chunksize=10)) == [0, 1, 2]
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(mul, range(3), chunksize=0)
    errors = ex.map(divmod, [4, 4, 4], [1, 0, 2], chunksize=2)
    with pytest.raises(ZeroDivisionError):
        list(errors)


def test_shutdown_waits_for_every_call():
    ex = podrun.Executor(max_duration=1)
    futures = [ex.submit(nap, 0.2) for _ in range(3)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0.2, 0.2, 0.2]


def test_shutdown_without_wait_returns_and_the_calls_still_finish():
    ex = podrun.Executor(max_duration=1)
    future = ex.submit(nap, 2)
    ex.shutdown(wait=False)
    assert not future.done()  # a pod cannot have started, slept 2 s and answered by now
    assert future.result(timeout=60) == 2


def test_shutdown_with_cancel_futures_cancels_what_was_not_sent():
    ex = podrun.Executor(max_duration=1)
    first = ex.submit(nap, 1.0)
    while not first.running():  # sent: the lane is busy with its job
        time.sleep(0.01)
    queued = [ex.submit(mul, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert first.done() and not first.cancelled()
    if first.exception() is None:
        assert first.result() == 1.0
    else:  # sent but not yet started in the pod: it was skipped there
        assert isinstance(first.exception(), podrun.Cancelled)


def test_use_after_shutdown_is_a_runtime_error(ex):
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(mul, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(mul, [1])
    with pytest.raises(podrun.UsageError):
        ex.submit(mul, 1)
    ex.shutdown()  # a second shutdown is harmless


def test_context_manager_shuts_down_waiting():
    with podrun.Executor(max_duration=1) as ex:
        futures = [ex.submit(nap, 0.1), ex.submit(mul, 3, 3)]
    assert all(f.done() for f in futures)
    assert futures[1].result() == 9
    with pytest.raises(RuntimeError):
        ex.submit(mul, 1)


def test_wait_and_as_completed_over_its_futures(ex):
    futures = [ex.submit(mul, i, 10) for i in range(4)] + [ex.submit(divmod, 1, 0)]
    done, not_done = cf.wait(futures, timeout=60)
    assert len(done) == 5 and not not_done
    assert sorted(f.result() for f in futures[:4]) == [0, 10, 20, 30]
    assert set(cf.as_completed(futures, timeout=60)) == set(futures)
    first_error, _ = cf.wait(futures, timeout=60, return_when=cf.FIRST_EXCEPTION)
    assert futures[4] in first_error
    assert isinstance(futures[4].exception(), ZeroDivisionError)


def test_futures_of_one_executor_feed_its_next_calls(ex):
    base = ex.submit(mul, 5, 5)
    assert ex.submit(mul, base, 2).result(timeout=60) == 50


@pytest.mark.parametrize("options, message", [
    ({"node": "moon"}, "unknown node"),
    ({"pod_name": "Bad_Name"}, "invalid pod_name"),
    ({"max_duration": 0}, "max_duration"),
    ({"timeout": -1}, "timeout"),
    ({"keep_warm": "long"}, "keep_warm"),
])
def test_options_are_checked_as_for_remote(options, message):
    with pytest.raises(podrun.UsageError, match=message):
        podrun.Executor(**options)


def test_a_non_callable_is_a_type_error(ex):
    with pytest.raises(TypeError, match="callable"):
        ex.submit(42)
