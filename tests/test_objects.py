"""The object cache against the local platform: flamepy's version semantics, the conditional
write protocol under real concurrent writers, the on-disk client cache, link frugality."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import podrun
from podrun.client import config
from podrun.client.object_cache import ObjectCache
from podrun.platform.metered import PROCESS_STATS
from podrun.store.objects import DirectoryVolume, ObjectStore, Snapshot, resolve_object_refs
from podrun.store.refs import ObjectKey
from podrun.store.volume_blobs import VolumeBlobs
from podrun.wire.serialize import dumps


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One local platform (the volumes) for every client in the test."""
    root = tmp_path / "platform"
    podrun.configure("local", root=str(root))
    return root


@contextlib.contextmanager
def client(home: Path) -> Iterator[None]:
    """Act as another client: its own PODRUN_HOME, hence its own object cache."""
    old = os.environ["PODRUN_HOME"]
    os.environ["PODRUN_HOME"] = str(home)
    try:
        yield
    finally:
        os.environ["PODRUN_HOME"] = old


def race_two(action: Callable[[int], object]) -> list[object]:
    """Run ``action(0)`` and ``action(1)`` in two threads released together; each outcome is
    the returned value or the raised exception."""
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = action(i)
        except Exception as exc:  # noqa: BLE001 - the caller asserts which exceptions are allowed
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def counts() -> dict[str, int]:
    return PROCESS_STATS.as_dict()


def delta_since(before: dict[str, int]) -> dict[str, int]:
    now = counts()
    return {k: now[k] - before[k] for k in ("calls", "bytes_up", "bytes_down")}


def merge(base: list, deltas: list) -> list:
    return base + [x for d in deltas for x in d]


# --- version semantics ------------------------------------------------------------------------
def test_put_get_update_patch_versions(shared: Path) -> None:
    ref = podrun.put_object("_default/app", [1])
    assert ref.version == 1 and ref.key.startswith("_default/app/")
    assert podrun.patch_object(ref, [2]).version == 2
    assert podrun.patch_object(ref, [3]).version == 3
    assert podrun.get_object(ref, deserializer=merge) == [1, 2, 3]
    updated = podrun.update_object(ref, [9])
    assert updated.version == 4
    assert podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge) == [9]  # patches cleared


def test_get_without_deserializer_warns_when_it_drops_deltas(shared: Path) -> None:
    ref = podrun.put_object("_default/app", [1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert podrun.get_object(ref) == [1]
    podrun.patch_object(ref, [2])
    with pytest.warns(UserWarning, match="1 patch"):
        assert podrun.get_object(ref) == [1]


def test_patch_without_base_is_not_found(shared: Path) -> None:
    with pytest.raises(podrun.NotFound):
        podrun.patch_object(podrun.ObjectRef("_default/app/nothing"), [1])
    with pytest.raises(podrun.NotFound):
        podrun.get_object(podrun.ObjectRef("_default/app/nothing", 1))


def test_bad_input_gets_typed_errors(shared: Path) -> None:
    ref = podrun.put_object("_default/app", 1)
    with pytest.raises(podrun.UsageError, match="prefix"):
        podrun.put_object(ref.key, 2)
    with pytest.raises(podrun.UsageError, match="ObjectRef"):
        podrun.get_object(ref.key)
    with pytest.raises(podrun.UsageError, match="not both"):
        podrun.get_object(ref, deserializer=merge, reducer=merge)
    with pytest.raises(podrun.UsageError, match="if_version"):
        podrun.update_object(ref, 3, if_version="1")
    with pytest.raises(podrun.UsageError):
        podrun.put_object("a/../b", 1)
    with pytest.raises(podrun.SerializationError):
        podrun.put_object("_default/app", threading.Lock())
    assert podrun.get_object(ref) == 1  # nothing stored was damaged


def test_reader_with_version_zero_downloads_in_full_and_cached_reader_fetches_only_new(shared: Path, tmp_path: Path) -> None:
    ref = podrun.put_object("_default/app", np.random.default_rng(0).random(100_000))
    with client(tmp_path / "reader"):
        before = counts()
        podrun.get_object(ref)
        full = delta_since(before)
        assert full["calls"] == 2 and full["bytes_down"] >= 800_000
        before = counts()
        podrun.get_object(ref)
        assert delta_since(before) == {"calls": 1, "bytes_up": 0, "bytes_down": 0}  # not modified: one listing
        before = counts()
        podrun.get_object(podrun.ObjectRef(ref.key, 0))
        assert delta_since(before)["bytes_down"] >= 800_000
    podrun.patch_object(ref, [1, 2, 3])
    with client(tmp_path / "reader"):
        before = counts()
        podrun.get_object(ref, deserializer=lambda b, d: d)
        step = delta_since(before)
        assert step["calls"] == 2 and step["bytes_down"] < 1000  # only the patch


def test_update_uplinks_a_delta_and_readers_downlink_only_it(shared: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.standard_normal(500_000).astype(np.float32)
    ref = podrun.put_object("_default/app", array)
    with client(tmp_path / "reader"):
        podrun.get_object(ref)
    array[rng.choice(array.size, 5000, replace=False)] = 1.5
    before = counts()
    ref2 = podrun.update_object(ref, array)
    up = delta_since(before)
    assert ref2.version == 2 and up["bytes_up"] < 0.03 * array.nbytes
    with client(tmp_path / "reader"):
        before = counts()
        np.testing.assert_array_equal(podrun.get_object(ref), array)
        assert delta_since(before)["bytes_down"] < 0.03 * array.nbytes
    with client(tmp_path / "fresh"):  # a reader with nothing cached rebuilds the chain
        np.testing.assert_array_equal(podrun.get_object(ref), array)


def test_delete_by_key_and_prefix_clears_exactly_those_cache_entries(shared: Path, podrun_home: Path) -> None:
    a = podrun.put_object("_default/s", "a")
    b = podrun.put_object("_default/s", "b")
    c = podrun.put_object("_default/s2", "c")
    cache = ObjectCache(podrun_home / "object-cache")
    scope = config.current_platform().identity()
    podrun.delete_objects(a.key)
    assert cache.load(scope, a.key) is None and cache.load(scope, b.key) is not None
    with pytest.raises(podrun.NotFound):
        podrun.get_object(a)
    podrun.delete_objects("_default/s")
    assert cache.load(scope, b.key) is None and cache.load(scope, c.key) is not None
    assert podrun.get_object(c) == "c"
    with pytest.raises(podrun.NotFound):
        podrun.delete_objects("_default/s")


def test_upload_and_download_files(shared: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(100_000))
    ref = podrun.upload_object("_default/pkg", source)
    out = podrun.download_object(ref, tmp_path / "out.bin")
    assert out.read_bytes() == source.read_bytes()
    chosen = podrun.upload_object("_default/pkg/wheel-1", source)
    assert chosen == podrun.ObjectRef("_default/pkg/wheel-1", 1)
    assert podrun.upload_object("_default/pkg/wheel-1", source).version == 2
    with pytest.raises(podrun.UsageError, match="not file bytes"):
        podrun.download_object(podrun.put_object("_default/pkg", 5), tmp_path / "x")
    with pytest.raises(podrun.UsageError, match="not a file"):
        podrun.upload_object("_default/pkg", tmp_path / "missing")


# --- conditional writes -----------------------------------------------------------------------
def test_if_version_conflicts_instead_of_losing_a_patch(shared: Path) -> None:
    ref = podrun.put_object("_default/app", [0])
    podrun.patch_object(ref, [1], if_version=1)
    with pytest.raises(podrun.Conflict):
        podrun.patch_object(ref, [2], if_version=1)
    with pytest.raises(podrun.Conflict):
        podrun.update_object(ref, [5], if_version=1)
    assert podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge) == [0, 1]


def test_two_concurrent_writers_never_both_win(shared: Path, tmp_path: Path) -> None:
    ref = podrun.put_object("_default/race", [])
    version = 1
    for round_ in range(8):
        def write(i: int, round_: int = round_, version: int = version) -> object:
            with client(tmp_path / f"w{i}"):
                return podrun.patch_object(ref, [(round_, i)], if_version=version)

        outcomes = race_two(write)
        winners = [o for o in outcomes if isinstance(o, podrun.ObjectRef)]
        assert len(winners) <= 1 and all(isinstance(o, (podrun.ObjectRef, podrun.Conflict)) for o in outcomes), outcomes
        value = podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge)
        if winners:
            version = winners[0].version
            assert value[-1] == (round_, outcomes.index(winners[0]))
        state = ObjectStore(DirectoryVolume(config.current_platform().inner.volume_path(None))).state(ref.object_key)
        assert not state.contested and state.version == version  # losers removed their files


def test_unconditional_concurrent_patches_are_all_kept(shared: Path, tmp_path: Path) -> None:
    ref = podrun.put_object("_default/race", [])
    errors: list[Exception] = []

    def write(i: int) -> None:
        try:
            podrun.patch_object(ref, [i])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    value = podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge)
    # every patch that returned is stored; a patch that ran out of retries raised Conflict
    assert len(value) == 3 - len(errors) and set(value) <= {0, 1, 2}
    assert all(isinstance(e, podrun.Conflict) for e in errors)


def test_unconditional_concurrent_writers_are_told_distinct_versions(shared: Path, tmp_path: Path) -> None:
    """Four writers mixing updates (new bases, new generations) and patches on one key: no two
    are ever told they wrote the same version (a writer whose generation a newer base retired
    while it checked used to be told so), and the latest value is the last winner's."""
    ref = podrun.put_object("_default/race", [])
    told: list[tuple[int, int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        with client(tmp_path / f"w{i}"):
            barrier.wait()
            for n in range(12):
                try:
                    new = podrun.update_object(ref, [(i, n)]) if (i + n) % 2 else podrun.patch_object(ref, [(i, n)])
                except podrun.Conflict:
                    continue  # out of retries: allowed, and nothing of it stays
                with lock:
                    told.append((new.version, i, n))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [version for version, _, _ in told]
    assert len(versions) == len(set(versions)), sorted(versions)
    assert len(told) >= 24  # the writers mostly got through
    latest = podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge)
    assert latest[-1] == max(told)[1:]


# --- compaction and reducers ------------------------------------------------------------------
def test_compact_folds_patches_and_a_concurrent_patch_is_never_lost(shared: Path) -> None:
    ref = podrun.put_object("_default/app", [0])
    for i in range(1, 5):
        podrun.patch_object(ref, [i])
    with pytest.raises(podrun.UsageError, match="deserializer"):
        podrun.compact_object(ref)
    compacted = podrun.compact_object(ref, merge)
    assert compacted.version == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert podrun.get_object(podrun.ObjectRef(ref.key, 0)) == [0, 1, 2, 3, 4]

    calls = {"n": 0}

    def merge_while_someone_patches(base: list, deltas: list) -> list:
        calls["n"] += 1
        if calls["n"] == 1:
            podrun.patch_object(ref, ["late"])  # lands between the compactor's read and its write
        return merge(base, deltas)

    podrun.patch_object(ref, [5])
    with pytest.raises(podrun.Conflict):
        podrun.compact_object(ref, merge_while_someone_patches)
    assert podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=merge) == [0, 1, 2, 3, 4, 5, "late"]


def test_reducer_applies_only_new_deltas(shared: Path) -> None:
    seen: list[list] = []

    def total(state: int, deltas: list) -> int:
        seen.append(list(deltas))
        return state + sum(deltas)

    ref = podrun.put_object("_default/app", 10)
    podrun.patch_object(ref, 1)
    assert podrun.get_object(ref, reducer=total) == 11
    podrun.patch_object(ref, 2)
    podrun.patch_object(ref, 3)
    assert podrun.get_object(ref, reducer=total) == 16
    assert seen == [[1], [2, 3]]
    assert podrun.get_object(ref, reducer=total) == 16 and len(seen) == 2
    podrun.update_object(ref, 100)
    assert podrun.get_object(ref, reducer=total) == 100


# --- the client cache -------------------------------------------------------------------------
def test_returned_objects_never_alias_the_cache(shared: Path) -> None:
    ref = podrun.put_object("_default/app", {"x": np.zeros(50_000), "l": [1]})
    first = podrun.get_object(ref)
    first["x"][:] = 7
    first["l"].append(2)
    second = podrun.get_object(ref)
    assert not second["x"].any() and second["l"] == [1]
    assert second["x"].flags.writeable


def test_cache_is_byte_bounded_lru(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "c", max_bytes=3000)
    image = bytearray(1000)
    for name in ("p/n/a", "p/n/b"):
        cache.store("s", name, Snapshot(1, 1, image))
    assert cache.load("s", "p/n/a") is not None  # a becomes most recent
    os.utime(cache._entry("s", "p/n/b") / "meta", (1, 1))
    cache.store("s", "p/n/c", Snapshot(1, 1, image))
    cache.store("s", "p/n/d", Snapshot(1, 1, image))
    assert cache.usage() <= 3000
    assert cache.load("s", "p/n/b") is None and cache.load("s", "p/n/d") is not None
    cache.store("s", "p/n/huge", Snapshot(1, 1, bytearray(5000)))
    assert cache.load("s", "p/n/huge") is None and cache.usage() <= 3000


def test_cache_is_shared_between_processes(shared: Path, podrun_home: Path) -> None:
    from .conftest import run_python

    ref = podrun.put_object("_default/app", list(range(1000)))
    code = (f"import podrun; podrun.configure('local', root={str(shared)!r});"
            f"from podrun.platform.metered import PROCESS_STATS as S;"
            f"v = podrun.get_object(podrun.ObjectRef({ref.key!r}, 1)); print(len(v), S.bytes_down)")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "0"]  # served from the cache the put seeded


# --- inside a pod -----------------------------------------------------------------------------
def test_in_pod_objects_use_the_volume_with_zero_link_bytes(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = podrun.put_object("_default/app", np.arange(10))
    volume = config.current_platform().inner.volume_path(None)
    monkeypatch.setenv("PODRUN_IN_POD", "1")
    monkeypatch.setenv("PODRUN_DATA", str(volume))
    before = counts()
    np.testing.assert_array_equal(podrun.get_object(ref), np.arange(10))
    podrun.patch_object(ref, 5)
    assert podrun.get_object(ref, deserializer=lambda b, d: b.sum() + sum(d)) == 50
    assert delta_since(before) == {"calls": 0, "bytes_up": 0, "bytes_down": 0}
    with pytest.warns(UserWarning, match="1 patch"):  # an ObjectRef argument resolves to the base: say so
        args, kwargs = resolve_object_refs((ref, 3), {"k": ref}, volume)
    assert args[1] == 3 and list(kwargs["k"]) == list(range(10))


def test_registered_blobs_become_version_one_without_moving_bytes(shared: Path) -> None:
    volume = config.current_platform().inner.volume_path(None)
    value = {"a": np.arange(100_000), "b": "text"}
    pickled = dumps(value)
    blobs = VolumeBlobs(volume)
    payload = blobs.write_raw(pickled.payload)
    for blob_hash, view in pickled.blobs.items():
        blobs.write_raw(view, blob_hash)
    ref = ObjectStore(DirectoryVolume(volume)).register_blobs(ObjectKey("_default", "results"), payload, pickled.buffers)
    assert ref.version == 1
    got = podrun.get_object(ref)
    np.testing.assert_array_equal(got["a"], value["a"])
    assert got["b"] == "text"
    with pytest.raises(podrun.NotFound, match="not in the volume"):
        ObjectStore(DirectoryVolume(volume)).register_blobs(ObjectKey("_default", "results"), "0" * 64, [])
    assert podrun.patch_object(ref, 1).version == 2


# --- random histories across two clients ------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["patch", "update", "get", "get0"]), st.integers(0, 99)),
                max_size=12))
def test_random_histories_across_two_clients_agree_with_a_model(shared: Path, tmp_path: Path, ops: list) -> None:
    ref = podrun.put_object("_default/h", [0])
    model = [0]
    homes = [tmp_path / f"h{len(ops)}-{id(ops)}-{i}" for i in range(2)]
    for who, op, value in ops:
        with client(homes[who]):
            if op == "patch":
                podrun.patch_object(ref, [value])
                model.append(value)
            elif op == "update":
                model = [value] * (value % 5 + 1)
                podrun.update_object(ref, list(model))
            else:
                target = ref if op == "get" else podrun.ObjectRef(ref.key, 0)
                assert podrun.get_object(target, deserializer=merge) == model
    for home in homes:
        with client(home):
            assert podrun.get_object(ref, deserializer=merge) == model


def test_concurrent_uploads_to_one_new_key_leave_a_readable_object(tmp_path: Path) -> None:
    """Two uploaders race to create the same caller-chosen key: at most one wins, the other
    gets Conflict, and the object is readable afterwards (never a contested version 1)."""
    files = []
    for i in range(2):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(f"content {i}".encode() * 100)
    for round_ in range(5):
        key = f"_default/up/k{round_}"
        outcomes = race_two(lambda i, key=key: podrun.upload_object(key, files[i]))
        assert all(isinstance(o, (podrun.ObjectRef, podrun.Conflict)) for o in outcomes), outcomes
        winners = sorted((o.version, i) for i, o in enumerate(outcomes) if isinstance(o, podrun.ObjectRef))
        assert len({version for version, _ in winners}) == len(winners)  # never two writers of one version
        if winners:  # both may win one after the other (v1, then v2): the latest is the last winner's
            assert podrun.get_object(podrun.ObjectRef(key, 0)) == files[winners[-1][1]].read_bytes()
