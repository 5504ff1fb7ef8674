"""The pod's pool of worker processes (runtime/pool.py) through real pods of the local
platform: calls run at once on several processes, a warm pod keeps its pool, a worker that
dies fails only its call, and timeouts, capture and records hold per worker."""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import podrun


def process_identity():
    """pid plus start time: pids alone may repeat (a PID namespace)."""
    with open("/proc/self/stat") as f:
        return os.getpid(), f.read().split(")")[-1].split()[19]


@podrun.remote(max_duration=1, workers=2)
def rendezvous(name, count):
    """Each call waits until ``count`` calls of ``name`` have arrived: only calls that run at
    the same time can all return (one after another, the first would wait forever)."""
    folder = podrun.data_dir() / "rendezvous" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while len(os.listdir(folder)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(folder))} of {count} calls ever ran at once")
        time.sleep(0.01)
    return os.getpid()


@podrun.remote(max_duration=1, workers=2)
def fragile(kind):
    print(f"running {kind}")
    if kind == "exit":
        os._exit(7)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "slow":
        time.sleep(30)
    return kind, os.getpid()


def test_calls_run_at_once_on_two_worker_processes():
    pids = [f.get(timeout=60) for f in rendezvous.map(["both"] * 2, [2] * 2)]
    assert len(set(pids)) == 2


def test_workers_1_runs_in_the_pods_own_process_and_a_warm_pod_keeps_its_pool():
    here = podrun.remote(process_identity, max_duration=1, pod_name="pool-warm", keep_warm=20, workers=1)
    pooled = podrun.remote(lambda: (process_identity(), os.getppid()), max_duration=1, pod_name="pool-warm",
                           keep_warm=20, workers=2)
    pod = here.remote().get(timeout=60)
    first = [f.get(timeout=60) for f in [pooled.remote() for _ in range(8)]]
    again = [f.get(timeout=60) for f in [pooled.remote() for _ in range(8)]]
    assert {parent for _, parent in first + again} == {pod[0]}  # forked by the pod's own process
    workers = {ident for ident, _ in first + again}
    assert pod not in workers and len(workers) <= 2  # the second job ran on the first one's workers
    assert here.remote().get(timeout=60) == pod  # one pod served all three jobs


@pytest.mark.parametrize("kind, how", [("exit", "exited with status 7"), ("segfault", "killed by SIGSEGV")])
def test_a_worker_that_dies_fails_only_its_call_and_is_replaced(kind, how):
    futures = fragile.map(["ok", kind, *["after"] * 6])
    with pytest.raises(podrun.PodFailed, match=how) as info:
        futures[1].get(timeout=60)
    assert info.value.status == "LOST" and "worker process" in str(info.value)
    assert futures[0].get(timeout=60)[0] == "ok"
    assert [f.get(timeout=60)[0] for f in futures[2:]] == ["after"] * 6
    assert all(f.stdout == "running after\n" for f in futures[2:])  # capture per worker


def test_timeout_and_capture_hold_per_worker():
    futures = fragile.options(timeout=0.5).map(["slow", "ok", "ok"])
    with pytest.raises(podrun.CallTimeout):
        futures[0].get(timeout=60)
    assert [f.get(timeout=60)[0] for f in futures[1:]] == ["ok", "ok"]
    assert futures[0].stdout == "running slow\n" and futures[1].stdout == "running ok\n"


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=300), st.integers(1, 3))
def test_any_table_comes_back_whole_and_in_order(values, workers):
    """Chunks of any size over any number of workers: every call once, results in call order."""
    double = podrun.remote(lambda x: 2 * x, max_duration=1, workers=workers)
    assert [f.get(timeout=60) for f in double.map(values)] == [2 * v for v in values]
