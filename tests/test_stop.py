"""Stopping pods (``client/stop.py``): ``podrun pods stop``, ``podrun jobs cancel ID --kill``,
``podrun.cancel(futs, force=True)``, and Ctrl-C while waiting (``client/interrupt.py``).

The EM API has no stop route, so each stop is a replacement by a pod that exits at once; the
clients whose calls it ends hear who stopped them. Real pods, real client processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import podrun
from podrun.client import config
from podrun.platform.types import walk_entries

from .clients import POD, Clients, ledger, wait_holder, wait_sent
from .conftest import require_image
from .em_server import EmulatorProcess
from .platforms import needs_engine

ROOT = Path(__file__).resolve().parents[1]


def podrun_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``podrun ARGS`` as its own process: another client than the one whose pod it stops."""
    return subprocess.run([sys.executable, "-W", "ignore", "-m", "podrun.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "COLUMNS": "250"})


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replaced pod gets 3 s between SIGTERM and SIGKILL here, not Kubernetes' 30 (also in
    the client processes, which inherit the environment)."""
    monkeypatch.setenv("PODRUN_STOP_GRACE", "3")
    config.reset()


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    with Clients(tmp_path) as group:
        yield group


def test_pods_stop_ends_another_clients_calls_naming_the_stopper(clients: Clients) -> None:
    victim = clients.start("V", 3, nap=120, max_duration=5)
    wait_sent(victim)
    wait_holder(victim.pid)
    stopped = podrun_cli("pods", "stop", "-p", POD)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stderr and "exited at once" in stopped.stderr
    outcome = clients.outcome(victim)
    assert outcome["ok"] == [] and len(outcome["failed"]) == 3
    for failure in outcome["failed"]:
        assert failure.startswith("PodFailed") and "stopped by" in failure and "(podrun pods stop)" in failure, failure
    assert ledger() == {}  # no call finished, and none ran again after the stop
    assert config.current_platform().pod_status(POD).is_terminal
    again = podrun_cli("pods", "stop", "-p", POD)
    assert again.returncode == 0 and "not running: nothing to stop" in again.stderr


def test_help_says_how_a_pod_is_stopped() -> None:
    shown = podrun_cli("pods", "stop", "--help")
    assert shown.returncode == 0
    assert "no stop route" in shown.stdout and "exits" in shown.stdout


@podrun.remote(pod_name=POD, max_duration=5)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def pod_phase() -> str | None:
    try:
        return config.current_platform().pod_status(POD).phase
    except podrun.NotFound:
        return None  # not run yet


def _await_running(futures: Sequence[podrun.ObjectFuture] = ()) -> None:
    for _ in range(1200):
        if all(f.sent for f in futures) and pod_phase() == "running":
            return
        time.sleep(0.05)
    raise AssertionError("the calls' pod never ran")


def test_cancel_force_stops_the_pod() -> None:
    futures = nap.map([120, 120, 120])
    _await_running(futures)
    assert podrun.cancel(futures, force=True) == 3
    for future in futures:
        error = future.exception(timeout=120)
        assert isinstance(error, podrun.PodFailed) and error.status == "KILLED"
        assert "podrun.cancel(force=True)" in str(error)
    assert config.current_platform().pod_status(POD).is_terminal


def test_cancel_without_force_leaves_the_pod() -> None:
    futures = nap.map([0.5, 0.5])
    _await_running(futures)
    podrun.cancel(futures)
    outcomes = [f.exception(timeout=120) for f in futures]
    assert all(e is None or isinstance(e, podrun.Cancelled) for e in outcomes)  # none was stopped: KILLED never


@pytest.mark.slow  # about 15 s (the CLI's stop waits out the pod's grace): make test-slow
def test_jobs_cancel_kill_stops_the_jobs_pod() -> None:
    futures = nap.map([120, 120])
    _await_running(futures)
    job_id = futures[0].job.job_id
    killed = podrun_cli("jobs", "cancel", job_id, "--kill")
    assert killed.returncode == 0, killed.stderr
    assert f"stopped the pod of job {job_id}" in killed.stderr
    for future in futures:
        error = future.exception(timeout=120)
        assert isinstance(error, podrun.PodFailed) and error.status == "KILLED"
        assert f"podrun jobs cancel {job_id} --kill" in str(error)
    done = podrun_cli("jobs", "cancel", job_id, "--kill")
    assert done.returncode == 0 and "nothing left to stop" in done.stderr


WAITER = r'''
import sys, time
import podrun

@podrun.remote(pod_name="shared", max_duration=5)
def nap(seconds):
    time.sleep(seconds)
    return seconds

futures = nap.map([float(s) for s in sys.argv[1:]])
while not futures[0].sent:
    time.sleep(0.01)
print(futures[0].job.job_id, flush=True)
podrun.get(futures)
'''


def _interrupted(tmp_path: Path, naps: list[str], **env: str) -> tuple[str, list[str]]:
    """Run WAITER, Ctrl-C it once its job's pod runs; its job id and its stderr lines."""
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    proc = subprocess.Popen([sys.executable, "-W", "ignore", str(script), *naps], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **env})
    try:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().strip()
        wait_holder(proc.pid)
        _await_running()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0  # KeyboardInterrupt still ends the program
    return job_id, [line for line in err.splitlines() if line.startswith("podrun: interrupted")]


def test_ctrl_c_names_the_job_and_the_command_that_stops_it(tmp_path: Path) -> None:
    job_id, lines = _interrupted(tmp_path, ["120", "120"])
    assert len(lines) == 1, lines
    assert job_id in lines[0] and f"podrun jobs cancel {job_id} --kill" in lines[0]
    assert config.current_platform().pod_status(POD).phase == "running"  # it keeps running: nothing was cancelled
    stopped = podrun_cli("jobs", "cancel", job_id, "--kill")  # the command the line gave
    assert stopped.returncode == 0, stopped.stderr
    assert config.current_platform().pod_status(POD).is_terminal


def test_ctrl_c_cancels_the_calls_when_asked(tmp_path: Path) -> None:
    job_id, lines = _interrupted(tmp_path, ["1", "60", "60"], PODRUN_CANCEL_ON_INTERRUPT="1")
    assert len(lines) == 1 and "cancelled 3 call(s)" in lines[0] and job_id in lines[0], lines
    futures = podrun.attach(job_id)
    outcomes = [f.exception(timeout=120) for f in futures]
    assert all(isinstance(e, podrun.Cancelled) for e in outcomes[1:]), outcomes  # skipped: never started


def test_pods_stop_through_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same stop over the EM API, which has no stop route: a replacement pod, and the lease."""
    with EmulatorProcess(tmp_path / "em", driver="process", env={"PODRUN_STOP_GRACE": "3"}) as em:
        user, password = em.add_user("stop")
        env = {"PODRUN_PLATFORM": "em", "PODRUN_EM_URL": em.url, "PODRUN_EM_USERNAME": user, "PODRUN_EM_PASSWORD": password}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config.reset()
        with Clients(tmp_path) as group:
            victim = group.start("V", 2, nap=120, max_duration=5)
            wait_sent(victim)
            wait_holder(victim.pid)
            _await_running()
            stopped = podrun_cli("pods", "stop", "-p", POD)
            assert stopped.returncode == 0, stopped.stderr
            outcome = group.outcome(victim)
        assert outcome["ok"] == [] and len(outcome["failed"]) == 2
        assert all("stopped by" in f and "(podrun pods stop)" in f for f in outcome["failed"]), outcome
        assert config.current_platform().pod_status(POD).is_terminal


@pytest.mark.slow  # about 20 s: make test-slow
def test_kill_of_a_warm_job_queued_behind_another_clients_cancels_it_alone(clients: Clients) -> None:
    """--kill never stops a warm pod for a job still waiting in its inbox: the pod runs
    another client's job, which finishes; the queued job's calls end CANCELLED."""
    running = clients.start("A", 1, nap=20, keep_warm=5, max_duration=3)
    wait_sent(running)
    wait_holder(running.pid)
    queued = clients.start("B", 2, keep_warm=5, max_duration=3)
    job_id = wait_holder(queued.pid).job
    platform = config.current_platform()
    for _ in range(1200):
        if any(path.endswith(f"inbox/{job_id}") for path in walk_entries(platform.list_files(POD))):
            break
        time.sleep(0.05)
    killed = podrun_cli("jobs", "cancel", job_id, "--kill")
    assert killed.returncode == 0 and "waits in a warm pod's inbox" in killed.stderr, killed.stderr
    assert clients.outcome(running) == {"ok": [["A", 0]], "failed": []}
    outcome = clients.outcome(queued)
    assert outcome["ok"] == [] and all(f.startswith("Cancelled") for f in outcome["failed"]), outcome
    assert ledger() == {"A-0": 1}


@needs_engine
def test_cancel_force_stops_a_container_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replacement pod runs in the stopped pod's image (its 'true'), as it would on CG2."""
    require_image("python:3.11-slim")
    monkeypatch.setenv("PODRUN_LOCAL_DRIVER", "container")
    config.reset()
    futures = nap.options(image="python:3.11-slim").map([120, 120])
    _await_running(futures)
    assert podrun.cancel(futures, force=True) == 2
    for future in futures:
        error = future.exception(timeout=120)
        assert isinstance(error, podrun.PodFailed) and "podrun.cancel(force=True)" in str(error)
    state = config.current_platform().pod_status(POD)
    assert state.is_terminal and state.exit_code == 0  # the replacement ran and exited at once


def test_waiting_for_a_pods_end_reads_its_status_as_it_changes() -> None:
    """``wait_pod_end`` (``pods stop``, the CLI): on the local platform the pod's state landing
    wakes the wait, so the status is read at each change, not every few milliseconds."""
    from podrun.client.jobs.follow import WAKEFUL_WAIT
    from podrun.client.stop import wait_pod_end
    from podrun.platform.metered import LinkStats, charge_to
    from podrun.platform.types import PodSpec
    from podrun.wire.bundle import python_version

    platform = config.current_platform()
    platform.run_pod(PodSpec(image=f"python:{python_version()}-slim", node="MPU", max_duration=1, pod_name="ends",
                             command="python", args=["-c", "import time; time.sleep(1)"]))
    stats, started = LinkStats(), time.monotonic()
    with charge_to(stats):
        state = wait_pod_end(platform, "ends", timeout=120)
    assert state.is_terminal and state.exit_code == 0
    changes = 3  # the first look, running, terminated
    assert stats.polls <= changes + int((time.monotonic() - started) / WAKEFUL_WAIT)
