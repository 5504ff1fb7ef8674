"""Futures that survive their process (journal + attach), and asyncio."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import podrun
from podrun.client import journal

from .conftest import ROOT, run_python


@podrun.remote(max_duration=1)
def slow_square(x, delay=0.0):
    time.sleep(delay)
    return x * x


def test_future_pickles_to_a_small_handle_and_reattaches_in_process():
    future = slow_square.remote(7)
    assert future.get(timeout=60) == 49
    handle = pickle.dumps(future)
    assert len(handle) < 300
    assert pickle.loads(handle).get(timeout=10) == 49


def test_unsent_future_cannot_be_pickled():
    with pytest.raises(TypeError, match="job id"):
        pickle.dumps(podrun.ObjectFuture("f"))


def test_reattach_after_the_submitting_process_was_killed(podrun_home):
    """Process A submits and is SIGKILLed mid-job; process B attaches and gets every result,
    and the calls run once (a marker file per call in the volume counts the runs)."""
    script = textwrap.dedent("""
        import os, sys, time, podrun
        def work(i):
            with open(os.path.join(podrun.data_dir(), f"ran-{i}"), "a") as f:
                f.write("x")
            time.sleep(0.4)
            return i * 10
        futures = podrun.remote(work, max_duration=1).map(range(4))
        journal = os.path.join(os.environ["PODRUN_HOME"], "journal")
        while futures[0].job is None or not os.path.exists(os.path.join(journal, futures[0].job.job_id + ".json")):
            time.sleep(0.01)
        print(futures[0].job.job_id, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ.copy())
    try:
        job_id = proc.stdout.readline().strip()
        assert job_id, "the submitting process printed no job id"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    futures = podrun.attach(job_id)
    assert [f.get(timeout=60) for f in futures] == [0, 10, 20, 30]
    volume = podrun.LocalPlatform().volume_path(None)
    assert all((volume / f"ran-{i}").read_text() == "x" for i in range(4))  # each call ran once
    deadline = time.monotonic() + 10
    while journal.read(podrun_home, job_id).status != "done" and time.monotonic() < deadline:
        time.sleep(0.02)  # the journal is updated just after the futures settle
    entry = journal.read(podrun_home, job_id)
    assert entry.status == "done" and entry.outcomes == {"OK": 4}


def test_attach_unknown_job_is_not_found():
    with pytest.raises(podrun.NotFound, match="podrun jobs ls"):
        podrun.attach("20990101-000000-deadbeef")


def test_attach_on_another_platform_is_refused(tmp_path):
    result = run_python("import podrun; f = podrun.remote(abs, max_duration=1).remote(-3); "
                        "f.get(timeout=60); print(f.job.job_id)")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert podrun.attach(job_id)[0].get(timeout=60) == 3  # same platform: fine
    podrun.configure(platform=podrun.LocalPlatform(tmp_path / "other", user="bob"))
    with pytest.raises(podrun.PodrunError, match="configure"):
        _attach_fresh(job_id)


def _attach_fresh(job_id):
    from podrun.client.jobs.job import LIVE_JOBS

    LIVE_JOBS.pop(job_id, None)  # forget the attachment made above, as a new process would
    return podrun.attach(job_id)


def test_await_future_and_aio_submit():
    async def main():
        futures = [slow_square.remote(i, 0.05) for i in range(3)]
        values = await asyncio.gather(*futures)
        direct = await slow_square.remote.aio(9)
        return values, direct

    assert asyncio.run(main()) == ([0, 1, 4], 81)


def test_await_reraises_remote_exception():
    @podrun.remote(max_duration=1)
    def broken():
        raise LookupError("nothing here")

    async def main():
        return await broken.remote()

    with pytest.raises(LookupError, match="nothing here"):
        asyncio.run(main())
