"""The frugal link: dedup of blobs, O(1) platform calls per job, exact accounting, two-tier
results, repair of blobs lost or corrupted in the volume."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import podrun
from podrun.client.pod_lease import LEASE_DIR
from podrun.platform.local import LocalPlatform
from podrun.runtime.pack import build_zipapp
from podrun.wire.layout import BLOBS, RESULTS_NAME, job_file

from .conftest import run_python

SHARED = np.random.default_rng(7).random(500_000)  # 4 MB of incompressible floats


@podrun.remote(max_duration=2)
def head(i, array):
    return float(array[i])


@podrun.remote(max_duration=2)
def make_array(n):
    return np.arange(n, dtype=np.float64)


def volume() -> LocalPlatform:
    return LocalPlatform()


def lease_bytes() -> int:
    """The lease record a lane took for its first job (held while it idles a moment): one file."""
    return sum(p.stat().st_size for p in (volume().volume_path(None) / LEASE_DIR).rglob("*") if p.is_file())


def blob_files() -> set[str]:
    path = volume().volume_path(None) / BLOBS
    return {p.name for p in path.iterdir() if not p.name.startswith(".")} if path.is_dir() else set()


def test_a_shared_argument_crosses_once_per_volume():
    futures = head.map(range(200), array=SHARED)
    assert podrun.get(futures, timeout=60) == [float(SHARED[i]) for i in range(200)]
    first = futures[0].job.stats.as_dict()
    assert SHARED.nbytes <= first["bytes_up"] <= SHARED.nbytes * 1.05 + 1024 * 200
    segments = futures[0].job.stream.segments  # results come back in segments as calls finish
    # list (fresh manifest), uplink, run, each segment once; the lease: list, uplink, list
    assert first["calls"] - first["polls"] <= 3 + segments + 3

    again = head.map(range(200), array=SHARED)
    podrun.get(again, timeout=60)
    second = again[0].job.stats.as_dict()
    assert second["bytes_up"] <= 1024 * 200 / 10  # the call table only: well under 1 KB a call
    # uplink, run, segments: no listing when fresh, the lane's lease held
    assert second["calls"] - second["polls"] == 2 + again[0].job.stream.segments


def test_dedup_across_processes(podrun_home):
    head.remote(0, SHARED).get(timeout=60)
    np.save(podrun_home / "shared.npy", SHARED)
    code = textwrap.dedent(f"""
        import numpy as np, podrun
        array = np.load({str(podrun_home / 'shared.npy')!r})
        f = podrun.remote(lambda i, a: float(a[i]), max_duration=2)
        assert f.remote(3, array).get(timeout=60) == float(array[3])
        print(podrun.stats()["bytes_up"])
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) < 10_000


def test_estimate_is_what_is_sent():
    estimate = head.estimate(1, SHARED)
    future = head.remote(1, SHARED)
    future.get(timeout=60)
    assert future.job.stats.bytes_up == estimate + lease_bytes()  # and the pod_name's lease, taken for it
    assert head.estimate(1, SHARED) < 1024  # now the volume holds the array


def test_blob_deleted_behind_our_back_is_sent_again():
    head.remote(0, SHARED).get(timeout=60)
    for name in blob_files():
        volume().delete(f"{BLOBS}/{name}")
    future = head.remote(5, SHARED)
    assert future.get(timeout=60) == float(SHARED[5])
    assert podrun.stats()["bytes_up"] >= 2 * SHARED.nbytes  # uplinked again: not assumed present


def test_corrupt_blob_in_volume_is_detected_and_repaired():
    head.remote(0, SHARED).get(timeout=60)
    big = max(blob_files(), key=lambda name: (volume().volume_path(None) / BLOBS / name).stat().st_size)
    path = volume().volume_path(None) / BLOBS / big
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert head.remote(9, SHARED).get(timeout=60) == float(SHARED[9])
    assert podrun.LocalPlatform().downlink(f"{BLOBS}/{big}") != bytes(data)  # replaced by a good copy


def test_large_results_stay_in_the_volume_until_get():
    future = make_array.remote(1_000_000)
    future.wait(60)
    before = podrun.stats()["bytes_down"]
    assert before < 10_000  # the results file only
    value = future.get()
    np.testing.assert_array_equal(value, np.arange(1_000_000, dtype=np.float64))
    assert podrun.stats()["bytes_down"] - before > 100_000
    future.get()
    assert podrun.stats()["bytes_down"] - before < 8_000_000 * 1.1  # fetched once


def test_corrupt_result_blob_raises_integrity_error_naming_it():
    future = make_array.remote(300_000)
    future.wait(60)
    record_blobs = blob_files()
    for name in record_blobs:
        path = volume().volume_path(None) / BLOBS / name
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(podrun.IntegrityError) as info:
        future.get()
    assert info.value.blob in record_blobs and info.value.blob in str(info.value)


def test_accounting_is_exact_for_a_known_job(monkeypatch: pytest.MonkeyPatch):
    stored: list[int] = []  # what each uplink left in the volume, measured there as it returns
    real_uplink = LocalPlatform.uplink

    def uplink(self, files, dest_path="", pod_name=None, progress=None):
        answer = real_uplink(self, files, dest_path, pod_name, progress)
        stored.extend((self.volume_path(pod_name) / dest_path / name).stat().st_size for name, _ in files)
        return answer

    monkeypatch.setattr(LocalPlatform, "uplink", uplink)  # the real uplink, watched: the pod removes the bundle later
    future = head.remote(2, np.arange(10))
    future.get(timeout=60)
    job = future.job
    assert job.finished.wait(60)  # the future settles as its segment arrives; the job then sees its pod end
    stats = job.stats.as_dict()
    platform = volume()
    assert not (platform.volume_path(None) / job_file(job.job_id, "bundle")).exists()  # gone once the job ran
    assert len(stored) == 2  # the lease record, then the bundle
    segments = sorted(platform.volume_path(None).glob(job_file(job.job_id, f"{RESULTS_NAME}.*")))
    assert stats["bytes_up"] == sum(stored)
    assert stats["bytes_down"] == sum(path.stat().st_size for path in segments)  # each segment once
    assert stats["downlinks"] == len(segments) == job.stream.segments
    # list_files (new manifest), uplink, run_pod, segments; the lease: list, uplink, list
    assert stats["calls"] == 3 + len(segments) + 3 + stats["polls"]
    assert podrun.stats() == stats
    podrun.reset_stats()
    assert podrun.stats() == {"calls": 0, "polls": 0, "downlinks": 0, "bytes_up": 0, "bytes_down": 0, "bytes_polled": 0}


@podrun.remote(max_duration=2, pod_name="chain")
def produce(n):
    return np.arange(n, dtype=np.float64)


@podrun.remote(max_duration=2, pod_name="chain")
def total(array):
    return float(array.sum())


def test_ref_chains_a_large_result_without_crossing_the_link():
    n = 2_000_000  # 16 MB
    ref = produce.remote(n).ref(timeout=60)
    assert isinstance(ref, podrun.ObjectRef) and ref.key.startswith("chain/results/")
    assert total.remote(ref).get(timeout=60) == float(np.arange(n, dtype=np.float64).sum())
    stats = podrun.stats()
    runtime = build_zipapp().size  # travels once per volume, in the first job
    assert stats["bytes_down"] < 100_000 and stats["bytes_up"] < runtime + 50_000  # the 16 MB stayed in the volume
    np.testing.assert_array_equal(podrun.get_object(ref)[:5], np.arange(5, dtype=np.float64))  # and is an object


def test_ref_of_a_small_result_and_of_a_failure():
    ref = head.options(pod_name="chain").remote(1, np.arange(4.0)).ref(timeout=60)
    assert total.remote(podrun.put_object("chain/inputs", np.ones(3))).get(timeout=60) == 3.0
    assert podrun.get_object(ref) == 1.0
    with pytest.raises(ZeroDivisionError):
        podrun.remote(lambda: 1 / 0, max_duration=1).remote().ref(timeout=60)


def test_a_blob_larger_than_one_uplink_goes_in_chunks(tmp_path):
    """The flight model takes 5 MB per uplink call: a larger argument is sent as chunks the
    pod joins back, and the job still works (here with a 1 MB limit and a 4 MB argument)."""
    platform = LocalPlatform(tmp_path / "fm", max_uplink_bytes=1_000_000)
    podrun.configure(platform=platform)
    future = head.remote(123, SHARED)
    assert future.get(timeout=60) == float(SHARED[123])
    stats = future.job.stats.as_dict()
    assert stats["bytes_up"] >= SHARED.nbytes and stats["calls"] - stats["polls"] >= 3 + 4  # list, >=5 uplinks, run, downlink
    blobs = platform.volume_path(None) / BLOBS
    assert not [p for p in blobs.iterdir() if "of" in p.name]  # the chunks were joined and removed
    assert head.remote(7, SHARED).get(timeout=60) == float(SHARED[7])  # and the joined blob serves the next job
    platform.shutdown()


@podrun.remote(max_duration=2)
def checksum(data, i):
    import hashlib

    return type(data).__name__, hashlib.sha256(memoryview(data).cast("B")).hexdigest(), i


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array"])
def test_a_large_bytes_like_argument_is_uplinked_once_for_ten_calls(kind):
    import array
    import hashlib

    raw = np.random.default_rng(3).bytes(2_000_000)  # incompressible: its bytes are what crosses
    value = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw),
             "array": array.array("B", raw)}[kind]
    expected = (type(value).__name__, hashlib.sha256(raw).hexdigest())
    podrun.reset_stats()
    together = [checksum.remote(value, i) for i in range(5)]  # close together: one job
    assert podrun.get(together, timeout=60) == [(*expected, i) for i in range(5)]
    apart = [checksum.remote(value, i).get(timeout=60) for i in range(5, 10)]  # one job each
    assert apart == [(*expected, i) for i in range(5, 10)]
    sent = podrun.stats()["bytes_up"]
    runtime = len(build_zipapp().data)
    assert len(raw) <= sent - runtime < len(raw) + 20_000  # the buffer once, plus ten small call tables
