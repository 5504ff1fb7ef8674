"""The journal tells the truth: when a job was submitted (kept by whoever writes later), its
state as the process that follows it sees it, its link cost, and one line per function."""

from __future__ import annotations

import textwrap
import time

import podrun
from podrun.client import config, journal
from podrun.commands.jobs import _functions

from .conftest import run_python
from .services import Model


def square(x: int) -> int:
    return x * x


def test_job_id_is_known_when_remote_and_map_return() -> None:
    fn = podrun.remote(square, max_duration=2, pod_name="ids")
    one = fn.remote(3)
    many = fn.map([1, 2, 3])
    assert one.job_id is not None and many[0].job_id is not None
    assert len({future.job_id for future in many}) == 1  # one map: one job
    assert one.get(timeout=120) == 9 and podrun.get(many, timeout=120) == [1, 4, 9]
    assert one.job is not None and one.job.job_id == one.job_id  # the id it was given is the job's
    assert many[0].job is not None and many[0].job.job_id == many[0].job_id


def test_a_job_whose_client_died_shows_its_real_state_once_attached() -> None:
    code = textwrap.dedent("""
        import os, time, podrun
        from podrun.client import config, journal

        def slow(x):
            import time
            time.sleep(0.5)
            return x * 10

        futures = podrun.remote(slow, max_duration=2, pod_name="died").map([1, 2, 3])
        while not journal.entries(config.home()):
            time.sleep(0.01)
        print(futures[0].job_id, flush=True)
        os._exit(0)  # the client dies with its job running
    """)
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[-1]
    before = journal.read(config.home(), job_id)
    assert before.status == "submitted" and before.outcomes == {}

    futures = podrun.attach(job_id)
    assert podrun.get(futures, timeout=120) == [10, 20, 30]
    job = futures[0].job
    assert job is not None and job.finished.wait(60)
    after = journal.read(config.home(), job_id)
    assert after.status == "done" and after.outcomes == {"OK": 3}
    assert after.submitted == before.submitted  # attaching never rewrites when it was submitted
    assert after.link["downlinks"] >= 1 and after.link["bytes_down"] > 0


def test_a_runner_method_called_ten_times_is_one_line() -> None:
    with podrun.Runner("journal-runner", keep_warm=20) as runner:
        model = runner.service(Model)
        futures = [model.predict(i) for i in range(10)]
        assert podrun.get(futures, timeout=120) == list(range(1, 11))
        jobs = {future.job_id for future in futures}
    entries = [e for e in journal.entries(config.home()) if e.job_id in jobs]
    deadline = time.monotonic() + 60
    while sum(count for e in entries for name, count in e.groups if name == "Model.predict") < 10:
        assert time.monotonic() < deadline, "the calls never reached the journal"
        time.sleep(0.05)
        entries = [e for e in journal.entries(config.home()) if e.job_id in jobs]
    lines = [_functions(e) for e in entries]
    assert all(line.count("Model.predict") == 1 for line in lines), lines
    assert sum(int(line.split("×")[1].split(",")[0]) for line in lines) == 10
