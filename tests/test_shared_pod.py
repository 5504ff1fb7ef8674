"""One pod_name shared by many client processes (``store/pod_lease.py``): real processes, each
its own podrun client, on the local platform and through the emulator (a real subprocess).

Every call appends ``<tag>-<index>`` to a ledger file in the shared volume, so the ledger
proves at-most-once: each call of every client is there exactly once, or the test fails.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podrun.client import config
from podrun.client.pod_lease import PodLease, Record, Renewer
from podrun.errors import PodBusy
from podrun.platform.local import LocalPlatform

from .clients import POD, Clients, expect, ledger, wait_holder, wait_sent
from .conftest import require_image
from .em_server import EmulatorProcess
from .platforms import needs_engine


def assert_all_ran_once(outcomes: dict[str, dict[str, list]], runs: list[tuple[str, int]]) -> None:
    for (tag, count) in runs:
        assert outcomes[tag]["failed"] == [], f"client {tag}: {outcomes[tag]['failed'][:3]}"
        assert outcomes[tag]["ok"] == [[tag, i] for i in range(count)]
    assert ledger() == expect(*runs)  # every call ran, and none twice


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    with Clients(tmp_path) as group:
        yield group


def test_two_clients_of_different_kinds_take_turns(clients: Clients) -> None:
    """The issue's reproduction: A's 20 calls are not replaced by B's 3 (another max_duration)."""
    a = clients.start("A", 20, nap=0.2)
    wait_sent(a)
    time.sleep(1.5)
    b = clients.start("B", 3, max_duration=3)
    outcomes = {"A": clients.outcome(a), "B": clients.outcome(b)}
    assert_all_ran_once(outcomes, [("A", 20), ("B", 3)])


def test_four_clients_mixed_kinds_warm_and_cold(clients: Clients) -> None:
    """Two warm clients of one kind share the warm pod; two cold ones of other kinds wait their turn."""
    runs = [("cold1", 8), ("warm1", 6), ("warm2", 6), ("cold2", 4)]
    procs = {
        "cold1": clients.start("cold1", 8),
        "warm1": clients.start("warm1", 6, keep_warm=5, max_duration=3),
        "warm2": clients.start("warm2", 6, keep_warm=5, max_duration=3),
        "cold2": clients.start("cold2", 4, max_duration=4),
    }
    outcomes = {tag: clients.outcome(proc) for tag, proc in procs.items()}
    assert_all_ran_once(outcomes, runs)
    record, _ = PodLease.on(config.current_platform(), POD).read()
    assert record.holders == []  # every client gave its lease back when it was done


def test_a_killed_clients_lease_lapses(clients: Clients) -> None:
    """A client killed while its job runs blocks the pod_name only until its lease lapses;
    while it lived, another kind's job waited and, past its wait, failed with PodBusy naming it."""
    a = clients.start("A", 1, nap=120, max_duration=5, PODRUN_LEASE_TTL="2")
    wait_sent(a)
    holder = wait_holder(a.pid, ttl=2)
    waiter = clients.start("busy", 1, max_duration=3, PODRUN_LEASE_TTL="2", PODRUN_POD_WAIT="1")
    busy = clients.outcome(waiter)
    notes = [line for line in clients.stderr[waiter.pid].splitlines() if "waits for pod_name 'shared', held by" in line]
    assert len(notes) == 1 and f"pid {a.pid}" in notes[0]  # said once, naming the holder
    assert busy["ok"] == [] and len(busy["failed"]) == 1
    assert busy["failed"][0].startswith("PodBusy") and f"pid {a.pid}" in busy["failed"][0] and holder.job in busy["failed"][0]
    os.kill(a.pid, signal.SIGKILL)
    a.communicate()
    b = clients.outcome(clients.start("B", 2, max_duration=3, PODRUN_LEASE_TTL="2"))
    assert b == {"ok": [["B", 0], ["B", 1]], "failed": []}
    assert ledger() == expect(("B", 2))  # A's call never finished: it was replaced once its lease lapsed
    assert all(f"pid {a.pid}" not in h.client for h in PodLease.on(config.current_platform(), POD).read()[0].holders)


def test_a_program_failing_while_its_job_runs_leaves_that_job_its_pod(clients: Clients) -> None:
    """A program that fails while its cold job runs exits at once; the job runs on (it can be
    attached to), and another kind's job waits for its pod to end, past the lease's ttl of
    1 s that no renewal keeps any more."""
    a = clients.start("A", 1, nap=4, max_duration=2, PODRUN_LEASE_TTL="1", CLIENT_FAILS="1")
    wait_sent(a)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 1 and "the program fails while its job runs" in err
    left = [h for h in PodLease.on(config.current_platform(), POD).read()[0].holders if h.client.endswith(f"pid {a.pid}")]
    assert len(left) == 1 and left[0].detached > 0
    b = clients.start("B", 2, max_duration=3, PODRUN_LEASE_TTL="1")
    assert clients.outcome(b) == {"ok": [["B", 0], ["B", 1]], "failed": []}
    assert "its job runs on until its pod ends" in clients.stderr[b.pid]  # B said whom it waited for
    assert ledger() == expect(("A", 1), ("B", 2))  # A's call ran to its end: B never replaced its pod


def test_a_failed_programs_job_holds_the_pod_name_no_longer_than_its_pod(clients: Clients) -> None:
    """Once the job a failed program left running has ended, its pod_name is free at once: a
    job of another kind starts within a 10 s wait although the lease's ttl is 60 s."""
    a = clients.start("A", 1, nap=0.5, max_duration=2, CLIENT_FAILS="1")
    wait_sent(a)
    a.communicate(timeout=120)
    platform = config.current_platform()
    for _ in range(600):
        if platform.pod_status(POD).is_terminal:
            break
        time.sleep(0.05)
    b = clients.start("B", 1, max_duration=3, PODRUN_POD_WAIT="10")
    assert clients.outcome(b) == {"ok": [["B", 0]], "failed": []}
    assert ledger() == expect(("A", 1), ("B", 1))
    assert PodLease.on(platform, POD).read()[0].holders == []


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[dict[str, str]]:
    # Host pods: the ledger script's pods need only the standard library and podrun.
    with EmulatorProcess(tmp_path / "em", driver="process") as em:
        user, password = em.add_user("share")
        env = {"PODRUN_PLATFORM": "em", "PODRUN_EM_URL": em.url, "PODRUN_EM_USERNAME": user, "PODRUN_EM_PASSWORD": password}
        yield env


def test_clients_share_a_pod_name_through_the_emulator(tmp_path: Path, emulator: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in emulator.items():
        monkeypatch.setenv(name, value)
    config.reset()
    group = Clients(tmp_path, emulator)
    try:
        runs = [("A", 10), ("W1", 4), ("W2", 4), ("B", 3)]
        procs = {
            "A": group.start("A", 10),
            "W1": group.start("W1", 4, keep_warm=5, max_duration=3),
            "W2": group.start("W2", 4, keep_warm=5, max_duration=3),
            "B": group.start("B", 3, max_duration=4),
        }
        outcomes = {tag: group.outcome(proc) for tag, proc in procs.items()}
    finally:
        group.close()
    assert_all_ran_once(outcomes, runs)


# --- the protocol itself, in one process (threads as clients) -------------------------------
@given(st.binary(max_size=512) | st.text(max_size=200).map(str.encode))
def test_any_lease_file_reads_as_a_record(data: bytes) -> None:
    """A lease file of any content is read, never a crash (what cannot be read counts as free)."""
    record = Record.parse(data)
    assert isinstance(record.holders, list)
    assert Record.parse(record.dump()) == record


def test_holders_of_other_kinds_never_overlap(local_platform: LocalPlatform) -> None:
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def client(kind: str) -> None:
        lease = PodLease.on(local_platform, "threads", ttl=30)
        grant = lease.acquire(f"job-{kind}", kind, False, image="python:3.11-slim", node="MPU", wait=120)
        began = time.monotonic()
        time.sleep(0.2)
        with lock:
            spans.append((began, time.monotonic()))
        lease.release(grant)

    threads = [threading.Thread(target=client, args=(f"K{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 4
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False))  # one holder at a time


def test_a_renewed_lease_outlives_its_ttl_and_warm_jobs_of_one_kind_join(local_platform: LocalPlatform) -> None:
    holder = PodLease.on(local_platform, "renewed", ttl=1)
    grant = holder.acquire("job-a", "W", True, image="python:3.11-slim", node="MPU")
    renewer = Renewer(holder, grant)
    try:
        time.sleep(2.5)  # past the ttl: alive only because it renews
        other = PodLease.on(local_platform, "renewed", ttl=1)
        with pytest.raises(PodBusy, match="job job-a"):
            other.acquire("job-b", "K", False, image="python:3.11-slim", node="MPU", wait=1.5)
        joined = other.acquire("job-c", "W", True, image="python:3.11-slim", node="MPU", wait=1.5)
        assert not joined.start_pod  # the warm pod of its kind serves it
        assert {h.job for h in holder.read()[0].holders} == {"job-a", "job-c"}
    finally:
        renewer.stop()
    assert not renewer.lost


@needs_engine
def test_two_clients_take_turns_on_container_pods(clients: Clients) -> None:
    """The same turn-taking with pods in python:3.11-slim under the container driver, CG2's kind."""
    require_image("python:3.11-slim")
    images = {"PODRUN_LOCAL_DRIVER": "container"}
    a = clients.start("A", 10, nap=0.2, **images)
    wait_sent(a)
    b = clients.start("B", 3, max_duration=3, **images)
    outcomes = {"A": clients.outcome(a), "B": clients.outcome(b)}
    assert_all_ran_once(outcomes, [("A", 10), ("B", 3)])
