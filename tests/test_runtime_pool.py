"""The pod's pool of worker processes (runtime/pool.py) through real pods of the local
platform: calls run at once on several processes, a warm pod keeps its pool, a worker that
dies fails only its call, and timeouts, capture and records hold per worker."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import podrun
from podrun.client import config
from podrun.errors import NotFound
from podrun.wire import records as rec
from podrun.wire.bundle import CallGroup, JobHeader, encode_bundle
from podrun.wire.compression import compress
from podrun.wire.hashing import content_hash
from podrun.wire.serialize import dumps


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


def parent_runs_a_job():
    """Whether this process's parent is a pod runtime (so this is a pool worker), not the pod's supervisor."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        return b"bundle" in f.read()


def test_a_cold_pods_one_call_runs_in_the_pods_own_process():
    """A job of one call in a pod that runs no other job: no worker is forked for it (its start
    is all it would add); two calls in such a pod still go to the pool."""
    cold = podrun.remote(parent_runs_a_job, max_duration=1, pod_name="pool-cold", workers=2)
    assert cold.remote().get(timeout=60) is False
    two = podrun.remote(lambda _: parent_runs_a_job(), max_duration=1, pod_name="pool-cold", workers=2)
    assert [f.get(timeout=60) for f in two.map([1, 2])] == [True, True]


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


@podrun.remote(max_duration=1, pod_name="cancel")
def spin(marker):
    (podrun.data_dir() / marker).touch()  # the test sees that it runs, then cancels it
    while True:
        time.sleep(0.05)


def _wait_running(marker: str) -> None:
    platform = config.current_platform()
    deadline = time.monotonic() + 60
    while True:
        try:
            platform.downlink(marker, "cancel")
            return
        except NotFound:
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_cancelling_a_running_call_interrupts_it_where_it_is(workers):
    spinning, quick = spin.options(workers=workers), podrun.remote(lambda: "after", max_duration=1, pod_name="cancel",
                                                                  workers=workers)
    futures = [spinning.remote("running"), quick.remote()]  # one job: the pod goes on after the cancel
    _wait_running("running")
    assert futures[0].cancel() is False  # as a running concurrent.futures.Future: it was sent
    with pytest.raises(podrun.Cancelled, match="while it ran") as info:
        futures[0].get(timeout=60)
    assert isinstance(info.value, cf.CancelledError) and futures[0].status == "CANCELLED"
    remote = str(info.value.__cause__)
    assert "in spin" in remote and "time.sleep(0.05)" in remote  # the frame where it was interrupted
    assert futures[1].get(timeout=60) == "after"


def _once(i):
    """Leaves a marker that exists only once: a second run of call ``i`` fails to create it."""
    folder = podrun.data_dir() / "ran"
    folder.mkdir(exist_ok=True)
    with open(folder / str(i), "x"):
        pass
    time.sleep(0.02)
    return i


def _run_runtime(volume: Path, bundle: Path, kill_after: int | None) -> None:
    """``python -m podrun.runtime BUNDLE`` as a pod runs it, in its own process group; with
    ``kill_after``, SIGKILLed (workers and all) once that many calls have begun."""
    env = {"PATH": os.environ["PATH"], "PODRUN_DATA": str(volume), "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "podrun.runtime", str(bundle)], env=env, start_new_session=True)
    try:
        if kill_after is None:
            assert process.wait(timeout=120) == 0
            return
        deadline = time.monotonic() + 60
        while not (volume / "ran").is_dir() or len(os.listdir(volume / "ran")) < kill_after:
            assert time.monotonic() < deadline and process.poll() is None, "the job never got that far"
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_sigkilled_pool_keeps_every_call_at_most_once(tmp_path: Path):
    """The pod and its workers SIGKILLed mid-job, then the job run again (a re-sent run_pod):
    no call runs twice, and every call ends with exactly one terminal record."""
    volume = tmp_path / "volume"
    job = volume / ".podrun" / "jobs" / "20261201-000000-00000000"
    job.mkdir(parents=True)
    function = cloudpickle.dumps(_once)
    table = dumps([((i,), {}) for i in range(120)], what="the arguments")
    group = CallGroup(content_hash(function), compress(table.payload), table.buffers, 120, None, 2)
    header = JobHeader(job.name, [group])
    (job / "bundle").write_bytes(encode_bundle(header, {group.function: function, **table.blobs}))
    _run_runtime(volume, job / "bundle", kill_after=40)
    _run_runtime(volume, job / "bundle", kill_after=None)
    records = [r for r in rec.iter_records((job / "results").read_bytes()) if isinstance(r, rec.CallRecord)]
    assert sorted(r.i for r in records) == list(range(120))  # each call once, none twice
    assert all(r.status in (rec.OK, rec.KILLED) for r in records)  # never RAISED: no marker was made twice
    ran = {int(name) for name in os.listdir(volume / "ran")}
    assert {r.i for r in records if r.status == rec.OK} <= ran
    assert any(r.status == rec.KILLED for r in records) and len(ran) < 120 + 1


def test_max_duration_stops_the_workers_and_keeps_what_finished():
    """SIGTERM reaches the workers: a finished call keeps its result, the running one ends KILLED
    with its output, and nothing is left running."""
    futures = fragile.options(max_duration=0.1).map(["ok", "slow"])
    kind, worker = futures[0].get(timeout=60)
    assert kind == "ok"
    with pytest.raises(podrun.PodFailed, match="stopped while this call ran") as info:
        futures[1].get(timeout=60)
    assert info.value.status == "KILLED" and futures[1].stdout == "running slow\n"
    deadline = time.monotonic() + 30  # the process driver shares this host's pids: the worker is gone
    while _alive(worker):
        assert time.monotonic() < deadline, f"worker {worker} outlived its pod"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@settings(max_examples=30, deadline=None)
@given(st.one_of(st.integers(max_value=0), st.booleans(), st.floats(), st.text(max_size=3)))
def test_workers_must_be_a_count_of_processes(bad):
    with pytest.raises(podrun.UsageError, match="workers must be a number of worker processes"):
        podrun.remote(lambda: None, workers=bad).options()
    with pytest.raises(podrun.UsageError, match="workers must be"):
        podrun.Executor(workers=bad)


def test_a_class_service_keeps_its_one_object_in_the_pods_own_process():
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self):
            self.n += 1
            return self.n

    with podrun.Runner("pool-service", keep_warm=5) as runner:
        with pytest.raises(podrun.UsageError, match="one object in the pod's own process"):
            runner.service(Counter, workers=2)
        counter = runner.service(Counter)
        assert [f.get(timeout=60) for f in [counter.add() for _ in range(6)]] == [1, 2, 3, 4, 5, 6]
        square = runner.service(lambda x: (x * x, os.getpid()), workers=2)
        results = [f.get(timeout=60) for f in square.map(range(8))]
        assert [value for value, _ in results] == [x * x for x in range(8)]


def test_a_worker_that_died_between_jobs_is_replaced_without_failing_a_call():
    def leave(delay):
        import threading

        threading.Timer(delay, os._exit, (3,)).start()  # after its record: the worker dies idle
        return os.getpid()

    quitter = podrun.remote(leave, max_duration=1, pod_name="pool-idle-death", keep_warm=20, workers=2)
    gone = {f.get(timeout=60) for f in quitter.map([0.2, 0.2])}
    time.sleep(1)
    again = [f.get(timeout=60) for f in quitter.map([30, 30, 30])]  # ends the job before the timers fire
    assert not gone & set(again)  # new workers ran them
