"""``f.map`` over a huge iterable holds a bounded window of argument bytes: the iterable is
taken as the arguments are pickled, a window stops at ``PODRUN_MAP_WINDOW`` bytes, and a
window is begun only once the one before it is in a job. A map that fits one window is still
one group, one job, one ``run_pod``.

The arguments' lifetimes are watched with ``weakref.finalize`` on numpy arrays: an array sent
out of band stays alive exactly as long as the client holds its bytes (the blob is a view of
it), so the count of live arrays is the count of argument buffers held.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import podrun
from podrun.client.map_window import ENV_WINDOW, Window
from podrun.errors import ConfigError
from podrun.platform.local import LocalPlatform
from podrun.wire.serialize import BLOB_THRESHOLD, dumps, loads

ITEM = 2**20  # bytes of each argument array
WINDOW = 8 * ITEM


def first_word(array: np.ndarray) -> int:
    return int(array[:8].view(np.int64)[0])


def double(x: int) -> int:
    return 2 * x


class Alive:
    """How many of the generator's arrays are alive now, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def made(self, array: np.ndarray) -> np.ndarray:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        weakref.finalize(array, self.gone)
        return array

    def gone(self) -> None:
        with self.lock:
            self.now -= 1


def arrays(count: int, alive: Alive) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(7)
    for i in range(count):
        array = rng.integers(0, 256, ITEM, dtype=np.uint8)  # incompressible, and no two alike
        array[:8] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
        yield alive.made(array)


@pytest.fixture
def run_pods(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The jobs' ``run_pod`` calls, counted on the real platform as they go out."""
    started: list[str] = []
    real = LocalPlatform.run_pod

    def run_pod(self, spec, *args, **kwargs):
        started.append(spec.command)
        return real(self, spec, *args, **kwargs)

    monkeypatch.setattr(LocalPlatform, "run_pod", run_pod)
    return started


def test_a_huge_map_holds_a_bounded_window_of_argument_bytes(monkeypatch: pytest.MonkeyPatch, run_pods: list[str]):
    monkeypatch.setenv(ENV_WINDOW, str(WINDOW))
    podrun.configure("local", driver="process")
    alive, count = Alive(), 200
    futures = podrun.remote(first_word, max_duration=5, keep_warm=30).map(arrays(count, alive))  # one warm pod
    assert podrun.get(futures, timeout=600) == list(range(count))  # every result, in order
    per_window = WINDOW // ITEM + 2  # a window stops at its bound, or two calls past it (map_window.Window)
    # Two windows at most: the one a running job keeps (for a re-send) and the one being filled.
    print(f"{count} arrays of 1 MiB, window {WINDOW // ITEM} MiB: at most {alive.peak} alive")
    assert alive.peak <= 2 * per_window + 2, alive.peak
    jobs = {f.job_id for f in futures}
    assert len(jobs) >= count // per_window and len(run_pods) == 1  # a job per window, served by the warm pod
    assert all(len(f.job.groups) == 1 for f in futures)  # each window one group


def test_a_map_that_fits_one_window_is_one_group_one_job_one_pod(monkeypatch: pytest.MonkeyPatch,
                                                                 run_pods: list[str]):
    monkeypatch.setenv(ENV_WINDOW, str(WINDOW))
    podrun.configure("local", driver="process")
    alive = Alive()
    futures = podrun.remote(first_word, max_duration=5).map(arrays(6, alive))  # 6 MiB: one window
    assert podrun.get(futures, timeout=120) == list(range(6))
    assert len({f.job_id for f in futures}) == 1 and len(futures[0].job.groups) == 1
    assert len(run_pods) == 1
    small = podrun.remote(double, max_duration=5).map(range(10_000))  # the default window: one job
    assert podrun.get(small, timeout=120) == [2 * i for i in range(10_000)]
    assert len({f.job_id for f in small}) == 1 and len(small[0].job.groups) == 1
    assert len(run_pods) == 2


def test_a_map_of_many_windows_started_in_a_done_callback_does_not_wait_on_its_own_lane(monkeypatch: pytest.MonkeyPatch):
    """A done-callback runs on the lane's thread; a map there that waited for its first window
    to leave that lane would wait forever. Its windows go to the lane at once instead."""
    monkeypatch.setenv(ENV_WINDOW, str(2 * BLOB_THRESHOLD))
    podrun.configure("local", driver="process")
    remote = podrun.remote(first_word, max_duration=5)
    chained: list[list[podrun.ObjectFuture]] = []
    started = threading.Event()

    def then_map(_future: object) -> None:
        chained.append(remote.map(arrays(6, Alive())))  # six windows of one array each
        started.set()

    remote.remote(np.zeros(8, np.uint8)).add_done_callback(then_map)
    assert started.wait(60), "the map in the done-callback never returned"
    assert podrun.get(chained[0], timeout=120) == list(range(6))
    assert sum(len(job.groups) for job in {id(f.job): f.job for f in chained[0]}.values()) > 1  # a group per window


def test_a_map_with_future_arguments_past_its_first_window_is_sent_whole_in_order(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_WINDOW, str(4 * BLOB_THRESHOLD))
    podrun.configure("local", driver="process")
    remote = podrun.remote(double, max_duration=5)
    upstream = remote.remote(21)
    items = itertools.chain(range(3), [upstream], range(4, 8))
    assert podrun.get(remote.map(items), timeout=120) == [0, 2, 4, 84, 8, 10, 12, 14]  # double(double(21))


@pytest.mark.parametrize("raw", ["0", "-5", "lots", "1.5"])
def test_a_bad_window_setting_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch, raw: str):
    monkeypatch.setenv(ENV_WINDOW, raw)
    podrun.configure("local", driver="process")
    with pytest.raises(ConfigError, match=f"{ENV_WINDOW}=.*number of bytes"):
        podrun.remote(double).map(range(3))


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * BLOB_THRESHOLD), max_size=40), limit=st.integers(1, 8 * BLOB_THRESHOLD),
       in_band=st.booleans())
def test_windows_take_every_call_once_in_order_and_stop_at_their_bound(sizes: list[int], limit: int, in_band: bool):
    """In the stream (str) or out of band (bytes), windows partition the calls: none lost, none
    twice, and a window past its bound by at most its last two calls (and a 64 KiB frame)."""
    items = [("x" if in_band else b"x") * size + (str(i) if in_band else str(i).encode()) for i, size in enumerate(sizes)]
    calls = (((item,), {}) for item in items)
    taken: list[object] = []
    while True:
        window = Window(calls, limit)
        pickled = dumps(window, meter=window.meter)
        loaded = loads(pickled.payload, [bytes(pickled.blobs[h]) for h in pickled.buffers])
        assert loaded == window.calls
        made = len(pickled.payload) + pickled.blob_bytes
        if len(window.calls) > 1:  # the pickler takes a batch's first two calls before it writes the first
            last = sum(len(part.payload) + part.blob_bytes for part in map(dumps, window.calls[-2:]))
            assert made <= limit + last + 64 * 1024 + 64
        taken += [args[0] for args, _ in window.calls]
        if window.exhausted:
            break
        assert window.calls  # a window that is not the last holds a call at least
    assert taken == items
