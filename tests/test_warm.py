"""Warm pods: one pod serves many jobs from its volume's inbox."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

import podrun
from podrun.client.jobs.follow import WAKEFUL_WAIT
from podrun.platform.local import LocalPlatform


def process_identity():
    """pid plus start time: pids alone repeat under bwrap's PID namespace (always 2 or so)."""
    with open("/proc/self/stat") as f:
        return os.getpid(), f.read().split(")")[-1].split()[19]


@podrun.remote(max_duration=1, pod_name="warm", keep_warm=20)
def pid_and_square(x):
    return process_identity(), x * x


def test_jobs_reuse_one_warm_pod_without_pod_starts():
    first_pid, value = pid_and_square.remote(3).get(timeout=60)
    assert value == 9
    before = podrun.stats()
    pids = set()
    for i in range(5):
        future = pid_and_square.remote(i)
        pid, square = future.get(timeout=60)
        assert square == i * i
        pids.add(pid)
        assert future.job.finished.wait(60)
        assert future.job.stats.calls - future.job.stats.polls == 1 + future.job.stream.segments  # uplink, segments: no run_pod
    assert pids == {first_pid}
    assert podrun.stats()["calls"] - before["calls"] <= 5 * 3 + podrun.stats()["polls"] - before["polls"]  # <= 2 segments a job


def test_a_warm_call_is_woken_by_what_lands_on_the_local_platform():
    """Between polls the job waits on the platform's watch: here the warm pod's status and the
    call's result segment end those waits (``Job.woken``), so the result is taken as it lands."""
    pid_and_square.remote(2).get(timeout=60)  # a warm pod serves
    future = pid_and_square.remote(7)
    assert future.get(timeout=60)[1] == 49
    assert future.job.finished.wait(60)
    assert future.job.woken >= 1
    assert future.job.state is None  # over at its end record


def test_a_warm_call_on_the_local_platform_is_one_uplink_and_one_downlink():
    """The job's folder is watched from before the uplink and its segment wakes the job: no
    look at the warm pod's status file, nor at the pod's status (those are the fallback of a
    wait that lasted ``WAKEFUL_WAIT`` with nothing landing, on a machine slower than that)."""
    pid_and_square.remote(2).get(timeout=60)  # a warm pod serves
    for i in range(3):
        started = time.monotonic()
        future = pid_and_square.remote(i)
        assert future.get(timeout=60)[1] == i * i
        assert future.job.finished.wait(60)
        stats, slow_waits = future.job.stats, int((time.monotonic() - started) / WAKEFUL_WAIT)
        assert stats.polls <= 2 * slow_waits
        assert stats.calls == 1 + future.job.stream.segments + stats.polls  # the bundle up, its segment down
        assert future.job.woken >= 1


def _serve_status(job_id: str) -> dict:
    """The warm pod's status file once it lists ``job_id`` as done."""
    path = LocalPlatform().volume_path("warm") / ".podrun" / "serve" / "status"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):  # the pod's first job is not over yet
            status = json.loads(path.read_text())
            if job_id in status["done"]:
                return status
        time.sleep(0.01)
    raise AssertionError(f"the warm pod never listed job {job_id} as done")


def test_a_warm_pod_writes_its_status_once_per_job_after_it():
    """Not as it takes the job (a warm call's costliest write in the pod): the job's results
    file and segments say that it began and what it did."""
    before = _serve_status(pid_and_square.remote(1).job_id)
    future = pid_and_square.remote(2)
    assert future.get(timeout=60)[1] == 4
    after = _serve_status(future.job.job_id)
    assert after["beat"] == before["beat"] + 1 and after["current"] is None and after["pid"] == before["pid"]


def test_a_cold_call_reads_the_pod_status_when_it_changes_not_on_a_schedule():
    """A cold call's watch wakes as the pod's state changes: the status is read then (and a
    segment looked for), not every few milliseconds of a backoff."""
    started = time.monotonic()
    future = pid_and_square.options(keep_warm=0, pod_name="cold-polls").remote(3)
    assert future.get(timeout=60)[1] == 9
    assert future.job.finished.wait(60)
    looks = future.job.woken + 1 + int((time.monotonic() - started) / WAKEFUL_WAIT)
    assert future.job.stats.polls <= 2 * looks  # a look: a segment asked for, the state read


def test_a_warm_pod_that_stopped_is_started_again():
    pid_one, _ = pid_and_square.options(keep_warm=0.3).remote(1).get(timeout=60)
    time.sleep(1.5)  # idle past keep_warm: the pod stops by itself
    assert LocalPlatform().pod_status("warm").is_terminal
    pid_two, square = pid_and_square.options(keep_warm=0.3).remote(4).get(timeout=60)
    assert square == 16 and pid_two != pid_one


def test_a_cold_call_replaces_the_warm_pod_and_warm_starts_again():
    pid_warm, _ = pid_and_square.remote(1).get(timeout=60)
    cold_pid, _ = pid_and_square.options(keep_warm=0).remote(2).get(timeout=60)
    assert cold_pid != pid_warm
    again, _ = pid_and_square.remote(3).get(timeout=60)
    assert again not in (pid_warm, cold_pid)


def test_failure_in_a_warm_pod_keeps_the_pod():
    @podrun.remote(max_duration=1, pod_name="warm", keep_warm=20)
    def sometimes(x):
        if x < 0:
            raise ValueError("negative")
        return process_identity()

    pid = sometimes.remote(1).get(timeout=60)
    with pytest.raises(ValueError):
        sometimes.remote(-1).get(timeout=60)
    assert sometimes.remote(2).get(timeout=60) == pid


def test_warm_pod_crash_mid_job_is_pod_failed():
    @podrun.remote(max_duration=1, pod_name="warm", keep_warm=20)
    def crash(x):
        if x == "crash":
            os._exit(3)
        return x

    assert crash.remote("ok").get(timeout=60) == "ok"
    with pytest.raises(podrun.PodFailed):
        crash.remote("crash").get(timeout=60)
    assert crash.remote("again").get(timeout=60) == "again"  # a new warm pod takes over


def test_a_new_warm_pod_never_runs_an_old_job_again():
    @podrun.remote(max_duration=1, pod_name="warm-once", keep_warm=0.3)
    def mark(tag):
        with open(podrun.data_dir() / "marks.txt", "a") as f:
            f.write(tag + "\n")
        return tag

    assert mark.remote("one").get(timeout=60) == "one"
    time.sleep(1.2)  # that warm pod stops; the next call starts another
    assert mark.remote("two").get(timeout=60) == "two"
    time.sleep(1.2)
    volume = LocalPlatform().volume_path("warm-once")
    assert (volume / "marks.txt").read_text().split() == ["one", "two"]
    # The bundles left the volume once their jobs had run.
    assert not [p for p in (volume / ".podrun" / "inbox").iterdir() if not p.name.startswith(".")]
