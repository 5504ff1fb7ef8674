"""Results as calls finish: a job's futures settle while it runs, each result segment crosses
the link once, and a pod killed outright still gives back every call that finished.

The slow call waits for a file the test writes into the volume only after it has seen the
other results arrive: the order of events is asserted, never a duration.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import podrun
from podrun.client.config import current_platform
from podrun.wire import records as rec
from podrun.wire.layout import RESULTS_NAME, job_file, segment_name

from .em_server import EmulatorProcess

CALLS = 500
SLOW = CALLS - 1  # calls run in order in the pod: the last one is the slow one
RELEASE = "release-the-slow-call"


def held_until_released(i: int) -> int:
    """Call SLOW waits until the test writes RELEASE into the volume (at most a minute)."""
    if i == SLOW:
        gate = podrun.data_dir() / RELEASE
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return -1 if not gate.exists() else i * i
    return i * i


def killed_at(i: int, kill: int) -> int:
    if i == kill:
        os.kill(os.getpid(), signal.SIGKILL)  # the runtime gets no chance to close its segment
    return i


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("em-streaming"), driver="process") as em:
        yield em


def configure(kind: str, emulator_factory: pytest.FixtureRequest) -> None:
    if kind == "em":
        server: EmulatorProcess = emulator_factory.getfixturevalue("emulator")
        user, password = server.add_user("s")
        podrun.configure(platform="em", url=server.url, username=user, password=password)
    else:
        podrun.configure("local", driver="process")


def segment_sizes(job_id: str, pod_name: str) -> list[int]:
    """Sizes of the job's segments in its volume, in order (read here, not charged to the job)."""
    sizes: list[int] = []
    while True:
        try:
            sizes.append(len(current_platform().downlink(job_file(job_id, segment_name(len(sizes))), pod_name)))
        except podrun.NotFound:
            return sizes


@pytest.mark.parametrize("keep_warm", [0, 30], ids=["cold", "warm"])
@pytest.mark.parametrize("kind", ["local", "em"])
def test_first_results_arrive_while_the_slow_call_runs(kind: str, keep_warm: float, request: pytest.FixtureRequest) -> None:
    configure(kind, request)
    pod_name = f"stream-{kind}-{keep_warm}"
    remote = podrun.remote(held_until_released, max_duration=5, pod_name=pod_name, keep_warm=keep_warm)
    futures = remote.map(range(CALLS))
    assert futures[0].job_id is not None

    first = next(podrun.as_completed(futures, timeout=120))
    assert first is not futures[SLOW] and not futures[SLOW].done()
    ordered = podrun.iter_results(futures[:SLOW], timeout=120)
    assert list(ordered) == [i * i for i in range(SLOW)]  # every fast result, in order, before the release
    assert not futures[SLOW].done()

    current_platform().uplink([(RELEASE, b"")], pod_name=pod_name)
    assert futures[SLOW].get(timeout=120) == SLOW * SLOW

    job = futures[0].job
    assert job is not None and job.finished.wait(60)  # the end record may come in a segment of its own
    stats = job.stats.as_dict()
    sizes = segment_sizes(job.job_id, pod_name)
    assert len(sizes) >= 2  # the slow call's outcome came in a segment of its own, after the others
    assert stats["downlinks"] == len(sizes) == job.stream.segments  # each segment once, never the log
    results_down = stats["bytes_down"] - stats["bytes_polled"]  # a warm pod's status reads are polls
    assert sum(sizes) <= results_down <= 1.1 * sum(sizes)


@pytest.mark.parametrize("kind", ["local", "em"])
def test_a_pod_killed_outright_still_gives_back_what_finished(kind: str, request: pytest.FixtureRequest) -> None:
    configure(kind, request)
    # workers=1: the call runs in the runtime's own process, so its SIGKILL ends the pod (in a
    # pool worker it would end that worker alone: tests/test_runtime_pool.py).
    remote = podrun.remote(killed_at, max_duration=2, pod_name=f"killed-{kind}", workers=1)
    futures = remote.map(range(6), kill=4)
    assert [f.get(timeout=120) for f in futures[:4]] == [0, 1, 2, 3]
    for future in futures[4:]:
        with pytest.raises(podrun.PodFailed) as info:
            future.get(timeout=120)
        assert info.value.status in (rec.KILLED, rec.LOST)


def test_segments_are_numbered_on_from_an_earlier_pod_of_the_job(tmp_path: Path) -> None:
    from podrun.runtime.results import Segments, next_segment

    first = Segments(tmp_path)
    first.add(rec.CallRecord(0, rec.OK), rec.encode_record(rec.CallRecord(0, rec.OK)))
    first.add(rec.EndRecord(1.0), rec.encode_record(rec.EndRecord(1.0)))
    first.close()
    assert next_segment(tmp_path) == 1
    second = Segments(tmp_path)
    second.add(rec.RunRecord(1), rec.encode_record(rec.RunRecord(1)))  # a run marker stays in the pod
    second.close()
    assert next_segment(tmp_path) == 1
    data = (tmp_path / f"{RESULTS_NAME}.0").read_bytes()
    assert list(rec.iter_records(data)) == [rec.CallRecord(0, rec.OK), rec.EndRecord(1.0)]


def test_a_segment_closes_on_age_while_the_next_call_runs(tmp_path: Path) -> None:
    """No end and no size limit reached: the pod's own thread closes the segment once its
    oldest outcome has waited its age (waited for here as an event, bounded only by a minute)."""
    from podrun.runtime.results import Segments

    segments = Segments(tmp_path)
    try:
        segments.add(rec.StartRecord(0.0, "3.11", 1, "h", "m"), rec.encode_record(rec.StartRecord(0.0, "3.11", 1, "h", "m")))
        segments.add(rec.CallRecord(0, rec.OK), rec.encode_record(rec.CallRecord(0, rec.OK)))
        path = tmp_path / f"{RESULTS_NAME}.0"
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline, "the segment never closed on age"
            time.sleep(0.01)
        assert list(rec.iter_records(path.read_bytes())) == [rec.StartRecord(0.0, "3.11", 1, "h", "m"), rec.CallRecord(0, rec.OK)]
    finally:
        segments.close()
    assert not (tmp_path / f"{RESULTS_NAME}.1").exists()  # nothing was left to close


def test_records_before_the_first_outcome_do_not_close_a_segment(tmp_path: Path) -> None:
    from podrun.runtime.results import MIN_AGE, Segments

    segments = Segments(tmp_path)
    segments.add(rec.EnvRecord({"env_hash": "x"}), rec.encode_record(rec.EnvRecord({"env_hash": "x"})))
    time.sleep(3 * MIN_AGE)  # no outcome yet: the environment waits to ride with the first one
    assert not (tmp_path / f"{RESULTS_NAME}.0").exists()
    segments.close()
    assert (tmp_path / f"{RESULTS_NAME}.0").exists()


@given(elapsed=st.floats(min_value=0, max_value=1e7), more=st.floats(min_value=0, max_value=1e7))
def test_the_age_a_result_may_wait_grows_with_the_job_and_is_bounded(elapsed: float, more: float) -> None:
    from podrun.runtime.results import MAX_AGE, MIN_AGE, max_age

    assert MIN_AGE <= max_age(elapsed) <= max_age(elapsed + more) <= MAX_AGE
    assert max_age(3600) == MAX_AGE and max_age(1) == MIN_AGE  # an hour-long job: a segment a minute at most
