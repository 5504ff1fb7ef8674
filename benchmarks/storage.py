"""What a volume keeps: a 33 MB frame job's footprint, and 10 jobs before and after ``podrun gc``.

Local platform, cold pods (the host driver). Counts files and bytes of the volume (the
runtime, its unpacked copy, environment records included). Writes
benchmarks/results/storage.json.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import podrun
from podrun.client import config
from podrun.client import gc as collecting
from podrun.platform.types import walk_entries
from podrun.wire.layout import BLOBS, JOBS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

FRAME = 33 * 1000 * 1000
JOBS_RUN = 10
ARGUMENT = 300 * 1024


def nbytes(frame: object) -> int:
    return memoryview(frame).nbytes  # type: ignore[arg-type]


def footprint(pod_name: str) -> dict[str, int]:
    files = walk_entries(config.current_platform().list_files(pod_name))
    part = {name: [e for p, e in files.items() if p.startswith(prefix + "/")] for name, prefix in
            (("jobs", JOBS), ("blobs", BLOBS))}
    return {"files": len(files), "bytes": sum(e.size for e in files.values()),
            "job_bytes": sum(e.size for e in part["jobs"]), "blob_bytes": sum(e.size for e in part["blobs"])}


def frame(size: int, salt: int) -> pickle.PickleBuffer:
    """Incompressible bytes as an out-of-band buffer (as a numpy frame travels: one blob)."""
    return pickle.PickleBuffer(bytearray(os.urandom(size - 1) + bytes([salt])))


def main() -> int:
    os.environ["PODRUN_LOCAL_DRIVER"] = "process"  # footprints do not depend on the driver; this one is quick
    rows, data = [], {}
    # Not _common.private_home: its shutdown asks podman about the home's image store, which
    # leaves an overlay mount in the temporary folder. Cold process pods end with their job.
    with tempfile.TemporaryDirectory(prefix="podrun-storage-") as tmp:
        home = Path(tmp) / "home"
        os.environ["PODRUN_HOME"] = str(home)
        podrun.configure("local", root=f"{tmp}/platform")
        fn = podrun.remote(nbytes, max_duration=2, pod_name="bench-frame")
        assert fn.remote(frame(FRAME, 0)).get(timeout=600) == FRAME
        data["frame_job"] = footprint("bench-frame")
        rows.append(["one 33 MB frame job", *data["frame_job"].values()])

        fn = podrun.remote(nbytes, max_duration=2, pod_name="bench-gc")
        for i in range(JOBS_RUN):
            assert fn.remote(frame(ARGUMENT, i)).get(timeout=600) == ARGUMENT
        data["ten_jobs_before_gc"] = footprint("bench-gc")
        rows.append([f"{JOBS_RUN} jobs, before gc", *data["ten_jobs_before_gc"].values()])
        started = time.perf_counter()
        planned = collecting.plan(config.current_platform(), "bench-gc", home, older_than=0, grace=0)
        freed = collecting.apply(config.current_platform(), home, planned)
        data["gc_seconds"] = time.perf_counter() - started
        data["gc_freed"] = freed
        data["ten_jobs_after_gc"] = footprint("bench-gc")
        rows.append([f"{JOBS_RUN} jobs, after gc --older-than 0 --grace 0", *data["ten_jobs_after_gc"].values()])
    print_table("volume footprint", ["volume", "files", "bytes", "in jobs/", "in blobs/"], rows)
    print(f"\ngc freed {data['gc_freed']:,} B in {data['gc_seconds']:.3f} s")
    write_json("storage", data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
