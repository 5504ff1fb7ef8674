"""@podrun.remote → ObjectFuture, end to end on the local platform (real pods: processes)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import podrun
from podrun.client import config


@podrun.remote(node="MPU", max_duration=1)
def add(a, b=0):
    print(f"adding {a} and {b}")
    print("to stderr", file=__import__("sys").stderr)
    return a + b


@podrun.remote(max_duration=1)
def where():
    return {"data": str(podrun.data_dir()), "node": os.environ.get("PODRUN_NODE"), "files": os.listdir(podrun.data_dir())}


class CustomError(Exception):
    pass


class CalibrationError(Exception):
    """An ``__init__`` that takes other arguments than its message: plain unpickling fails."""

    def __init__(self, sensor, drift):
        super().__init__(f"sensor {sensor} drifted by {drift}")
        self.sensor = sensor
        self.drift = drift


class Unrebuildable(Exception):
    """Holds a lock: it cannot be pickled in the pod at all."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")
        self.lock = threading.Lock()


@podrun.remote(max_duration=1)
def fail(kind):
    if kind == "custom":
        raise CustomError("custom failure")
    if kind == "unrebuildable":
        raise Unrebuildable(1, 2)
    if kind == "calibration":
        raise CalibrationError("gyro-2", 0.25)
    if kind == "sysexit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt()
    if kind == "exit":
        os._exit(7)
    return kind


@podrun.remote(max_duration=1)
def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_remote_returns_value_and_output():
    fut = add.remote(2, b=3)
    assert isinstance(fut, podrun.ObjectFuture) and isinstance(fut, cf.Future)
    assert fut.get(timeout=60) == 5
    assert fut.stdout == "adding 2 and 3\n" and fut.stderr == "to stderr\n"
    assert fut.status == "OK" and fut.job is not None


def test_direct_call_runs_locally():
    assert add(1, 1) == 2
    assert podrun.stats()["calls"] == 0


def test_pod_sees_its_volume_and_node():
    info = where.options(node="GPU").remote().get(timeout=60)
    assert info["node"] == "GPU"
    assert ".podrun" in info["files"]


def test_map_is_one_job_in_order():
    futures = add.map(range(300), range(300))
    assert podrun.get(futures, timeout=60) == [2 * i for i in range(300)]
    assert len({f.job.job_id for f in futures}) == 1


def test_calls_made_close_together_share_a_job():
    futures = [add.remote(i) for i in range(30)]
    assert podrun.get(futures, timeout=60) == list(range(30))
    assert len({f.job.job_id for f in futures}) <= 2


def test_futures_work_with_concurrent_futures_helpers():
    futures = [nap.remote(0.01) for _ in range(3)] + add.map([1, 2])
    done, not_done = cf.wait(futures, timeout=60)
    assert not not_done and len(done) == 5
    assert sorted(f.result() for f in podrun.as_completed(futures, timeout=60)) == [0.01, 0.01, 0.01, 1, 2]
    done, _ = podrun.wait(futures, timeout=60, return_when=podrun.FIRST_COMPLETED)
    assert done


def test_remote_exception_keeps_its_type_and_traceback():
    with pytest.raises(CustomError, match="custom failure") as info:
        fail.remote("custom").get(timeout=60)
    assert "raise CustomError" in info.value.remote_traceback
    assert "Remote traceback" in str(info.value.__cause__)


def test_exception_that_cannot_be_rebuilt_is_remote_error():
    with pytest.raises(podrun.RemoteError) as info:
        fail.remote("unrebuildable").get(timeout=60)
    assert info.value.type_name.endswith("Unrebuildable") and "1/2" in info.value.message
    assert "raise Unrebuildable" in info.value.traceback_text


def test_exception_with_its_own_init_arguments_keeps_its_class_and_attributes():
    with pytest.raises(CalibrationError) as info:
        fail.remote("calibration").get(timeout=60)
    error = info.value
    assert type(error) is CalibrationError  # the client's own class: `except CalibrationError` works
    assert (error.sensor, error.drift) == ("gyro-2", 0.25)
    assert str(error) == "sensor gyro-2 drifted by 0.25" and error.args == ("sensor gyro-2 drifted by 0.25",)
    assert 'raise CalibrationError("gyro-2", 0.25)' in error.remote_traceback


@pytest.mark.parametrize("kind, type_name", [("sysexit", "builtins.SystemExit"), ("interrupt", "builtins.KeyboardInterrupt")])
def test_remote_exit_or_interrupt_never_stops_the_client(kind, type_name):
    futures = fail.map([kind, "after"])
    with pytest.raises(podrun.RemoteError) as info:  # a SystemExit here would end pytest itself
        futures[0].get(timeout=60)
    assert info.value.type_name == type_name and "not re-raised here" in info.value.message
    assert f"raise {type_name.split('.')[1]}" in info.value.traceback_text
    assert not isinstance(futures[0].exception(), (SystemExit, KeyboardInterrupt))
    assert futures[1].get(timeout=60) == "after"  # the pod went on with the next call


def test_pod_dying_without_results_is_pod_failed_not_a_hang():
    # workers=1: the calls run in the pod's own process, so os._exit ends the pod (a pool
    # worker's death fails only its call: tests/test_runtime_pool.py).
    futures = fail.options(workers=1).map(["ok", "exit", "never"])
    assert futures[0].get(timeout=60) == "ok"  # finished before the crash: not lost
    for future in futures[1:]:
        with pytest.raises(podrun.PodFailed) as info:
            future.get(timeout=60)
        assert info.value.status == "LOST" and info.value.state["terminated"]["exitCode"] == 7


def test_unknown_image_fails_with_the_pod_state():
    with pytest.raises(podrun.PodFailed, match="ImagePullBackOff") as info:
        add.options(image="no-such-image").remote(1).get(timeout=60)
    assert info.value.state["waiting"]["reason"] == "ImagePullBackOff"
    assert "'podrun images build'" in str(info.value)  # a fix that names a real command (tests/test_hints.py)


def test_max_duration_kills_and_keeps_what_finished(pod_architecture):
    # A 6 s pod limit (1.8 s ran out before the pod started on a loaded machine); in images, and
    # under qemu (arm64) where the runtime alone takes longer to start: 18 s. In the pod's own
    # process (workers=1), the quickest start; the pool's stop: tests/test_runtime_pool.py.
    futures = nap.options(max_duration=0.1 if pod_architecture == "host" else 0.3, workers=1).map([0.01, 60])
    assert futures[0].get(timeout=60) == 0.01
    with pytest.raises(podrun.PodFailed) as info:
        futures[1].get(timeout=60)
    assert info.value.status == "KILLED"


def test_call_timeout_is_its_own_outcome():
    futures = nap.options(timeout=0.3).map([5, 0.01])
    with pytest.raises(podrun.CallTimeout):
        futures[0].get(timeout=60)
    assert futures[1].get(timeout=60) == 0.01
    assert futures[0].status == "TIMEOUT"


def test_cancel_before_sending_and_after():
    slow = nap.remote(1.0)
    time.sleep(0.2)  # the lane is busy with `slow`; the next calls wait
    queued = add.remote(1)
    assert queued.cancel() and queued.cancelled()
    assert slow.get(timeout=60) == 1.0

    running = nap.map([0.5, 0.01, 0.01])
    time.sleep(0.3)
    assert running[2].cancel() is False  # already sent: asked to skip, ends as Cancelled
    with pytest.raises(podrun.Cancelled):
        running[2].get(timeout=60)
    assert running[1].get(timeout=60) == 0.01


def test_unpicklable_argument_fails_at_remote_naming_it():
    with pytest.raises(podrun.SerializationError, match="positional argument 1"):
        add.remote(1, threading.Lock())
    assert podrun.stats()["bytes_up"] == 0


def test_unpicklable_callable_fails_at_remote():
    lock = threading.Lock()

    def holds_lock():
        return lock.locked()

    with pytest.raises(podrun.SerializationError, match="holds_lock"):
        podrun.remote(holds_lock).remote()


@pytest.mark.parametrize("options, message", [
    ({"node": "TPU"}, "FPGA, GPU, MPU"),
    ({"max_duration": 0}, "positive"),
    ({"max_duration": -1}, "positive"),
    ({"pod_name": "Bad Name"}, "lowercase"),
    ({"timeout": 0}, "timeout"),
])
def test_invalid_options_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        podrun.remote(**options)(lambda: 1)
    with pytest.raises(ValueError, match=message):
        add.options(**options)


def test_configure_selects_platform(tmp_path):
    with pytest.raises(ValueError, match="local, em"):
        podrun.configure(platform="mars")
    other = podrun.LocalPlatform(tmp_path / "elsewhere", user="alice")
    podrun.configure(platform=other)
    assert add.remote(4).get(timeout=60) == 4
    assert "alice-pvc" in other.pvc_list()
    other.shutdown()


def test_environment_variable_selects_platform(monkeypatch):
    monkeypatch.setenv("PODRUN_PLATFORM", "nowhere")
    config.reset()
    with pytest.raises(ValueError, match="PODRUN_PLATFORM"):
        add.remote(1)


@podrun.remote(max_duration=1)
def leave_mark(name):
    (podrun.data_dir() / f"mark-{name}").write_text(name)
    return sorted(p.name for p in podrun.data_dir().iterdir() if p.name.startswith("mark-"))


def test_pod_names_are_separate_lanes_and_volumes():
    a = leave_mark.options(pod_name="lane-a").remote("a")
    b = leave_mark.options(pod_name="lane-b").remote("b")
    assert a.get(timeout=60) == ["mark-a"] and b.get(timeout=60) == ["mark-b"]  # each saw its own volume only
    assert a.job is not b.job
    platform = podrun.LocalPlatform()
    assert (platform.volume_path("lane-a") / "mark-a").read_text() == "a"
    assert not (platform.volume_path("lane-a") / "mark-b").exists()


def test_numpy_round_trip_through_a_pod(pod_architecture):
    # A stock python:3.11-slim image has no numpy (on CG2 too): in images it travels as a wheel.
    @podrun.remote(max_duration=1, wheels=[] if pod_architecture == "host" else ["numpy"])
    def scale(x, k):
        return x * k

    array = np.arange(100_000, dtype=np.float32)
    np.testing.assert_array_equal(scale.remote(array, 2).get(timeout=60), array * 2)


attributes = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                             st.none() | st.integers() | st.text(max_size=10) | st.lists(st.floats(allow_nan=False), max_size=3),
                             max_size=4)


@settings(max_examples=50, deadline=None)
@given(attributes, st.lists(st.integers() | st.text(max_size=8), max_size=3))
def test_any_exception_state_comes_back_as_its_class(attrs, extra_args):
    """The pod's side (executor._error_info) and the client's (rebuild_exception) in one process:
    whatever ``__init__`` takes, the client gets the class, its ``args`` and its attributes."""
    from podrun.client.jobs.resolve import rebuild_exception
    from podrun.runtime.executor import _error_info

    error = CalibrationError("s", 1.5)
    error.args = (*error.args, *extra_args)
    for name, value in attrs.items():
        setattr(error, name, value)
    try:
        raise error
    except CalibrationError as raised:
        info = _error_info(raised)
    rebuilt = rebuild_exception(info)
    assert type(rebuilt) is CalibrationError and rebuilt.args == error.args
    assert "raise error" in rebuilt.remote_traceback
    del rebuilt.remote_traceback
    assert vars(rebuilt) == vars(error) and "parts" in info
