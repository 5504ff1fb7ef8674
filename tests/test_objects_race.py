"""The object store's commit protocol under interleavings chosen one volume operation at a
time: real writer threads, the real local platform, and a schedule that decides which thread
performs its next list, read, write or delete (``store/volume_steps.py`` is the seam).

The property every schedule must keep: each acknowledged write is applied exactly once, in
version order; no two writers are told the same version; no read ever holds a patch twice.
"""

from __future__ import annotations

import collections
import functools
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import podrun
from podrun.store import object_api, objects
from podrun.store.object_covers import MAX_ENTRIES, Covers
from podrun.store.volume_steps import stepping

from .em_server import EmulatorProcess
from .platforms import shared_emulator


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    root = tmp_path / "platform"
    podrun.configure("local", root=str(root))
    return root


_NO_SLEEP = types.SimpleNamespace(sleep=lambda seconds: None)  # all that the store modules take from time


def merge(base: list, deltas: list) -> list:
    return base + [x for d in deltas for x in d]


class Schedule:
    """Runs one thread per action, one volume operation at a time.

    A thread that reaches a volume operation parks until the schedule picks it; then it runs
    until its next operation (or its end) while every other thread stays parked, so a run is
    fully determined by ``order`` (indices of the threads to advance, in turn; an index that
    names no parked thread, and every pick after ``order`` runs out, go round-robin).

    The store's waits (a lost race's backoff, a writer waiting for a compaction to decide) do
    not sleep meanwhile: with every other thread parked, a sleep cannot change what happens
    next, only delay it (the backoff slept ~17 s of the 25 the hypothesis test took)."""

    def __init__(self, order: Sequence[int], frozen: Sequence[int] = ()) -> None:
        self.order = list(order)
        self.frozen = set(frozen)  # once ``order`` runs out, picked only when nothing else can run (a writer that hangs)
        self.cond = threading.Condition()
        self.parked: set[int] = set()
        self.done: set[int] = set()
        self.turn: int | None = None
        self.local = threading.local()
        self.trace: list[tuple[int, str, str]] = []

    def hook(self, operation: str, path: str) -> None:
        me = getattr(self.local, "index", None)
        if me is None:
            return  # the test's own thread: not scheduled
        with self.cond:
            self.parked.add(me)
            self.cond.notify_all()
            while self.turn != me:
                self.cond.wait()
            self.turn = None
            self.parked.discard(me)
            self.trace.append((me, operation, path.rsplit("/", 2)[-1]))

    def run(self, actions: Sequence[Callable[[], Any]]) -> list[Any]:
        """Each action's return value, or the exception it raised."""
        outcomes: list[Any] = [None] * len(actions)

        def body(i: int) -> None:
            self.local.index = i
            try:
                outcomes[i] = actions[i]()
            except Exception as exc:  # noqa: BLE001 - the test judges every outcome
                outcomes[i] = exc
            finally:
                with self.cond:
                    self.done.add(i)
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(actions))]
        with stepping(self.hook), mock.patch.object(object_api, "time", _NO_SLEEP), mock.patch.object(objects, "time", _NO_SLEEP):
            for thread in threads:
                thread.start()
            step = 0
            with self.cond:
                while True:
                    while not (self.turn is None and len(self.parked) + len(self.done) == len(actions)):
                        self.cond.wait()
                    live = sorted(self.parked - self.frozen if step >= len(self.order) else ()) or sorted(self.parked)
                    if not live:
                        break
                    pick = self.order[step] if step < len(self.order) else -1
                    self.turn = pick if pick in live else live[step % len(live)]
                    step += 1
                    self.cond.notify_all()
        for thread in threads:
            thread.join()
        return outcomes


def fresh(ref: podrun.ObjectRef) -> list:
    return podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge)


def test_a_patch_caught_by_a_compaction_is_applied_once(shared: Path) -> None:
    """The race of issue 13: the patch lands, a compaction folds it into a new base and retires
    its generation, and only then does the patcher check its write. It used to see its file
    gone, take that for a lost race, and write the patch again after the new base."""
    ref = podrun.put_object("_default/race", [0])
    podrun.patch_object(ref, [1])
    schedule = Schedule([0, 0] + [1] * 40)  # the patcher lists and writes; the compactor runs to its end
    outcomes = schedule.run([lambda: podrun.patch_object(ref, ["x"]), lambda: podrun.compact_object(ref, merge)])
    assert all(isinstance(o, podrun.ObjectRef) for o in outcomes), (outcomes, schedule.trace)
    patched, compacted = outcomes
    assert fresh(ref) == [0, 1, "x"], schedule.trace
    assert patched.version == 3 and compacted.version == 4  # the patch was folded at the version it wrote


def test_a_patch_that_lost_a_race_but_was_compacted_first_is_acknowledged_once(shared: Path) -> None:
    """Three writers: patches x and q race for version 3, and a compaction reads x before q
    lands. x sees q and loses; q sees x and loses and deletes its file; the compaction then
    finds x alone and wins, before x's writer deletes x. x is in the new base, so x's writer
    must be told so (at version 3), not Conflict, or it would patch again."""
    ref = podrun.put_object("_default/race", [0])
    podrun.patch_object(ref, [1])
    x, q, c = 0, 1, 2
    order = [q, x, x, c, c, q, x, c, q, q, q, c, c, c, x, x, x]
    schedule = Schedule(order)
    outcomes = schedule.run([lambda: podrun.patch_object(ref, ["x"]), lambda: podrun.patch_object(ref, ["q"]),
                             lambda: podrun.compact_object(ref, merge)])
    assert all(isinstance(o, podrun.ObjectRef) for o in outcomes), (outcomes, schedule.trace)
    assert [o.version for o in outcomes] == [3, 5, 4], schedule.trace
    assert fresh(ref) == [0, 1, "x", "q"], schedule.trace
    won = [i for i, (who, op, name) in enumerate(schedule.trace) if who == c and op == "delete" and name.endswith(".w")]
    x_deleted = [i for i, (who, op, _) in enumerate(schedule.trace) if who == x and op == "delete"]
    assert won and x_deleted and x_deleted[0] > won[0], schedule.trace  # the interleaving this test is about


def test_a_compaction_that_never_decides_leaves_its_writers_unsettled_not_retrying(
        shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compactor that hangs (here: is never scheduled again) after writing its base: the
    patch it folded can neither be acknowledged nor safely written again, so its writer
    reports WriteUnsettled, and the patch is in the object once."""
    monkeypatch.setattr(objects, "SETTLE_POLLS", 4)
    ref = podrun.put_object("_default/race", [0])
    schedule = Schedule([0, 0, 1, 1, 1, 0], frozen=[1])  # the compactor lists, reads, writes its base, then hangs
    outcomes = schedule.run([lambda: podrun.patch_object(ref, ["x"]), lambda: podrun.compact_object(ref, merge)])
    assert isinstance(outcomes[0], podrun.errors.WriteUnsettled), (outcomes, schedule.trace)
    assert "read the object" in str(outcomes[0])
    assert isinstance(outcomes[1], podrun.ObjectRef)  # it got its turns once nothing else could run
    assert fresh(ref) == [0, "x"]


def replay(acked: list[tuple[int, str, str]]) -> list[str]:
    """The value that applying each acknowledged write once, in version order, gives."""
    value: list[str] = []
    for _, op, item in sorted(acked):
        value = value + [item] if op == "patch" else [item]
    return value


def writer(ref: podrun.ObjectRef, who: int, plan: Sequence[str]) -> list[tuple[str, str, Any]]:
    """Carry out ``plan``: (op, item, version written or None when it lost, or the value read)."""
    out: list[tuple[str, str, Any]] = []
    for n, op in enumerate(plan):
        item = f"{who}.{n}"
        try:
            if op == "patch":
                out.append((op, item, podrun.patch_object(ref, [item]).version))
            elif op == "update":
                out.append((op, item, podrun.update_object(ref, [item]).version))
            elif op == "compact":
                out.append((op, item, podrun.compact_object(ref, merge).version))
            else:
                target = ref if op == "get" else podrun.ObjectRef(ref.key, 0)
                out.append((op, item, podrun.get_object(target, deserializer=merge)))
        except podrun.Conflict:
            out.append((op, item, None))  # lost its race (an unconditional write ran out of retries)
    return out


PLAN = st.lists(st.sampled_from(["patch", "patch", "update", "compact", "get", "get0"]), min_size=1, max_size=4)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plans=st.lists(PLAN, min_size=2, max_size=3), order=st.lists(st.integers(0, 2), max_size=30))
# A reader's listed patches vanished under it three listings in a row (each a write that lost
# its race): it gave up with NotFound on an object that exists.
@example(plans=[["patch", "patch"], ["get0", "patch"], ["get", "patch", "get0"]], order=[0, 1, 0, 0, 1, 1])
def test_every_interleaving_applies_each_acknowledged_write_once(shared: Path, plans: list[list[str]],
                                                                order: list[int]) -> None:
    """2-3 writers patching, updating, compacting and reading one key, interleaved one volume
    operation at a time. Once they are done, the value (read fresh and through the cache) is
    each acknowledged write applied once, in version order, and no two writes were told one
    version. A read made meanwhile may see a write in flight that then loses (the protocol
    says so): it is checked for what must hold anyway, no patch applied twice and nothing
    that no writer wrote. (``order`` is shorter than the listings a writer waits through for
    a compaction to decide, so no schedule starves the compactor it waits for.)"""
    ref = podrun.put_object("_default/h", ["put"])
    schedule = Schedule(order)
    outcomes = schedule.run([functools.partial(writer, ref, who, plan) for who, plan in enumerate(plans)])
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert not failures, (failures, schedule.trace)
    done = [entry for o in outcomes for entry in o]
    acked = [(1, "update", "put")] + [(v, op, item) for op, item, v in done if op in ("patch", "update") and v is not None]
    versions = [v for v, _, _ in acked]
    assert len(versions) == len(set(versions)), ("two writers told one version", sorted(acked))
    expected = replay(acked)
    assert fresh(ref) == expected, (sorted(acked), schedule.trace)
    assert podrun.get_object(ref, deserializer=merge) == expected  # through the cache too
    issued = {"put"} | {item for op, item, _ in done if op in ("patch", "update")}
    for op, _, value in done:
        if op.startswith("get"):
            assert len(value) == len(set(value)) and set(value) <= issued, ("a read applied a patch twice", value)


def reduce_list(state: list, deltas: list) -> list:
    return state + [x for d in deltas for x in d]


def test_a_cached_read_of_a_write_that_then_lost_is_read_again(shared: Path) -> None:
    """A reader caches version 3 while patch p is alone there; p then loses its race to q,
    which takes version 3, and p is written again at 4. The cached read (and the reducer
    state made from it) must not stand for version 3: reused, p counted twice."""
    ref = podrun.put_object("_default/race", [0])
    podrun.patch_object(ref, [1])
    p, q, r = 0, 1, 2
    schedule = Schedule([p, q, p, r, r, q, p, p, p, q])
    outcomes = schedule.run([lambda: podrun.patch_object(ref, ["p"]), lambda: podrun.patch_object(ref, ["q"]),
                             lambda: podrun.get_object(ref, reducer=reduce_list)])
    assert outcomes[2] == [0, 1, "p"], schedule.trace  # it read p while p was in flight
    assert [o.version for o in outcomes[:2]] == [4, 3], (outcomes, schedule.trace)
    assert podrun.get_object(ref, reducer=reduce_list) == [0, 1, "q", "p"]
    assert podrun.get_object(ref, deserializer=merge) == [0, 1, "q", "p"] == fresh(ref)


TOKENS = st.text("0123456789abcdef", min_size=16, max_size=16)


@given(st.integers(1, 3000), st.lists(st.tuples(st.integers(0, 2999), TOKENS), max_size=60),
       st.lists(st.tuples(st.integers(0, 2999), TOKENS), max_size=60), st.booleans())
def test_covers_records_round_trip_and_say_unknown_only_when_cut(base: int, carried: list, folded: list,
                                                                 chained: bool) -> None:
    """A compaction of the base at ``base`` and patches after it, over a compaction's record
    (``carried``, all below ``base``) or over a plain update."""
    carried = [(v % base + 1, t) for v, t in carried]
    folded = [(base + v, t) for v, t in folded]
    previous = Covers(1, True, frozenset(carried)) if chained else None
    covers = Covers.after(base, previous, folded)
    assert Covers.decode(covers.encode()) == covers
    for version, token in folded + (carried if chained else []):
        assert covers.holds(version, token)
        assert covers.holds(version, "x" * 16) is False
    if not chained:
        assert covers.since == base and all(covers.holds(v, t) is False for v, t in carried if v < base)


def test_covers_records_are_cut_to_the_newest_and_then_know_nothing_older() -> None:
    folded = [(v, f"{v:016x}") for v in range(1, MAX_ENTRIES + 11)]
    covers = Covers.after(1, None, folded)
    assert len(covers.entries) == MAX_ENTRIES and covers.since == 11 and not covers.reset
    assert covers.holds(5, f"{5:016x}") is None and covers.holds(11, f"{11:016x}") is True
    assert covers.holds(12, "f" * 16) is False


def test_a_covers_record_of_another_format_is_a_clear_error() -> None:
    with pytest.raises(podrun.errors.IntegrityError, match="format 2"):
        Covers.decode(msgpack.packb({"v": 2, "since": 1, "reset": True, "covers": []}))
    with pytest.raises(podrun.errors.IntegrityError, match="corrupt"):
        Covers.decode(b"\x93not a record")


def test_the_race_over_the_em_api(request: pytest.FixtureRequest) -> None:
    """The same interleaving through the emulator over real HTTP: the compaction's base, its
    covers record and its (empty) undecided mark travel in one multipart uplink."""
    server = shared_emulator(request)
    username, password = server.add_user()
    podrun.configure("em", url=server.url, username=username, password=password)
    ref = podrun.put_object("_default/race", [0])
    podrun.patch_object(ref, [1])
    schedule = Schedule([0, 0] + [1] * 40)
    outcomes = schedule.run([lambda: podrun.patch_object(ref, ["x"]), lambda: podrun.compact_object(ref, merge)])
    assert [getattr(o, "version", o) for o in outcomes] == [3, 4], schedule.trace
    assert fresh(ref) == [0, 1, "x"]
    assert [op for who, op, _ in schedule.trace if who == 1 and op == "write"] == ["write"]  # one uplink
    assert any(who == 0 and op == "read" and name.endswith(".c") for who, op, name in schedule.trace)


CHAOS = ("--chaos-locked-rate", "0.1", "--chaos-error-rate", "0.25", "--chaos-drop-rate", "0.25", "--chaos-seed", "13")


@pytest.mark.slow  # about 17 s a round of injected faults, as the chaos suite: make test-slow
def test_under_faults_every_write_is_told_what_happened(tmp_path: Path) -> None:
    """Two writers patch and compact one key through an emulator that answers 500, drops
    connections (also after it acted) and says 423, with a short retry deadline so that some
    calls give up. Each write ends acknowledged (in the value once), Conflict (not in it), a
    PlatformError raised before anything was stored (not in it), or WriteUnsettled (stored or
    not: the only case the value may or may not hold it)."""
    with EmulatorProcess(tmp_path / "em", *CHAOS) as em:
        username, password = em.add_user()
        podrun.configure("em", url=em.url, username=username, password=password, retry_deadline=0.5, timeout=5.0,
                         backoff=(0.01, 0.1))
        for _ in range(20):
            try:
                ref = podrun.put_object("_default/chaos", [])
                break
            except podrun.PlatformError:
                continue
        told: dict[str, str] = {}
        lock = threading.Lock()

        def write(who: int, round_no: int) -> None:
            for n in range(20):
                item = f"{round_no}.{who}.{n}"
                try:
                    if n % 5 == 4:
                        podrun.compact_object(ref, merge)
                        continue
                    podrun.patch_object(ref, [item])
                    outcome = "acked"
                except podrun.WriteUnsettled:
                    outcome = "unsettled"
                except podrun.Conflict:
                    outcome = "conflict"
                except podrun.PlatformError:
                    outcome = "failed"
                with lock:
                    told[item] = outcome

        # Rounds until some write gave up (the faults are random in time: a round may see none),
        # at most five; the checks below cover every round's writes.
        for round_no in range(5):
            threads = [threading.Thread(target=write, args=(i, round_no)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if any(outcome in ("failed", "unsettled") for outcome in told.values()):
                break
        podrun.configure("em", url=em.url, username=username, password=password, retry_deadline=60.0)
        value = fresh(ref)
    assert len(value) == len(set(value)), value  # nothing applied twice
    assert {item for item, outcome in told.items() if outcome == "acked"} <= set(value), (told, value)
    assert set(value) <= {item for item, outcome in told.items() if outcome in ("acked", "unsettled")}, (told, value)
    counts = collections.Counter(told.values())
    assert counts["acked"] >= 1 and counts["failed"] + counts["unsettled"] >= 1, counts  # faults met, and work to check
