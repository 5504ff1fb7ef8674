"""Peak memory for one large result, in the client and in the pod.

A call returns SIZE incompressible bytes (``--mb``, default 256) as a numpy array, a ``bytes``
or a ``bytearray`` (``--kind``, default all three); the pod writes its peak RSS (``ru_maxrss``)
at exit, the client measures its own around ``fut.get()``. The figures are multiples of the
result's size above each process's baseline (ideal: 1x, the result itself). Local platform,
process driver: the pod is a plain process we can measure. The pod makes its result in place
(``readinto`` a buffer of the size, for bytearray and numpy), so making it costs 1x.

Also the client's peak RSS for a map over a generator of ``--map-mb`` fresh 1 MiB ``bytes``
arguments (each pickled out of band), above its baseline, in MB and as a multiple of the
map's argument bytes: the map holds a bounded window (``PODRUN_MAP_WINDOW``, 64 MiB) of them.

Also the client's bytes per pending call: ``tracemalloc``'s traced memory just after a
100k-call ``f.map`` returns (futures, the pickled argument table, the lane's bookkeeping),
divided by the number of calls (``--calls``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from _common import print_table, write_json

CLIENT = r"""
import resource, sys, time
import numpy as np
import podrun

size, kind = int(sys.argv[1]), sys.argv[2]

@podrun.remote(node="MPU", max_duration=10, workers=1)  # the runtime's own process: its atexit reports the RSS
def big(n, kind):
    import atexit, os, resource
    import numpy as np
    import podrun
    out = os.path.join(podrun.data_dir(), "pod-rss")
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the runtime loaded, nothing made yet
    atexit.register(lambda: open(out, "w").write(f"{start} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}"))
    if kind == "bytes":
        return os.urandom(n)
    value = bytearray(n)
    with open("/dev/urandom", "rb", buffering=0) as source:
        view, filled = memoryview(value), 0
        while filled < n:
            filled += source.readinto(view[filled:])
    return np.frombuffer(value, dtype=np.uint8) if kind == "numpy" else value

podrun.configure("local", driver="process")
assert len(big.remote(1024, kind).get(timeout=120)) == 1024  # warm: imports, runtime, manifests
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
value = big.remote(size, kind).get(timeout=600)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
assert type(value).__name__ == {"numpy": "ndarray"}.get(kind, kind) and len(value) == size
rss = podrun.client.config.current_platform().inner.volume_path(None) / "pod-rss"
for _ in range(600):  # the result streams in before the pod exits and writes it
    if rss.exists() and rss.read_text():
        break
    time.sleep(0.1)
print(before, after, rss.read_text())
"""


MAP = r"""
import os, resource, sys
import podrun

n = int(sys.argv[1])

@podrun.remote(node="MPU", max_duration=10)
def size(data):
    return len(data)

podrun.configure("local", driver="process")
assert size.remote(b"warm").get(timeout=120) == 4
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
futures = size.map(os.urandom(2**20) for _ in range(n))
assert podrun.get(futures, timeout=1800) == [2**20] * n
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(before, after, len({f.job_id for f in futures}))
"""


PENDING = r"""
import gc, sys, time, tracemalloc
import podrun

@podrun.remote(node="MPU", max_duration=10)
def inc(x):
    return x + 1

podrun.configure("local", driver="process")
podrun.get(inc.map(range(10)), timeout=120)  # warm: imports, runtime, manifests
n = int(sys.argv[1])
items = list(range(n))  # the caller's own data, made before measuring
gc.collect()
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
futures = inc.map(items)
held = tracemalloc.get_traced_memory()[0] - before
tracemalloc.stop()
pending = sum(not f.done() for f in futures)
podrun.get(futures, timeout=600)
print(held, pending)
"""


KINDS = ("numpy", "bytes", "bytearray")


def _run(script: str, *args: str) -> str:
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="podrun-bench-") as home:
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                              env={**os.environ, "PODRUN_HOME": home}, timeout=900)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
    return done.stdout


def pending_calls(n: int) -> dict[str, float]:
    held, pending = (int(x) for x in _run(PENDING, str(n)).split())
    return {"calls": n, "pending_at_measure": pending, "client_bytes_per_pending_call": held / n}


def map_peak(mb: int) -> dict[str, float]:
    before, after, jobs = (int(x) for x in _run(MAP, str(mb)).split())
    return {"map_mb": mb, "client_peak_over_baseline_mb": (after - before) / 2**20,
            "client_over_arguments": (after - before) / (mb * 2**20), "jobs": jobs}


def measure(size: int, kind: str) -> dict[str, float]:
    before, after, pod_start, pod_peak = (int(x) for x in _run(CLIENT, str(size), kind).split())
    return {"client_peak_mb": after / 2**20, "client_over_result": (after - before) / size,
            "pod_peak_mb": pod_peak / 2**20, "pod_over_result": (pod_peak - pod_start) / size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--kind", choices=KINDS, action="append", help="the result's type (repeatable; default: all)")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--pending-only", action="store_true", help="only the bytes per pending call")
    parser.add_argument("--map-mb", type=int, default=512, help="MB of arguments the map over a generator sends")
    parser.add_argument("--map-only", action="store_true", help="only the map over a generator")
    args = parser.parse_args()
    mapped = map_peak(args.map_mb)
    print_table(f"client peak RSS for a map over a generator of {args.map_mb} x 1 MiB arguments",
                ["MB over baseline", "x argument bytes", "jobs"],
                [[mapped["client_peak_over_baseline_mb"], mapped["client_over_arguments"], mapped["jobs"]]])
    if args.map_only:
        write_json("memory_map", mapped)
        return
    pending = pending_calls(args.calls)
    print_table(f"client memory per pending call ({args.calls:,}-call map)", ["bytes per call", "pending when measured"],
                [[pending["client_bytes_per_pending_call"], pending["pending_at_measure"]]])
    if args.pending_only:
        write_json("memory_pending", pending)
        return
    size = args.mb * 2**20
    results = {kind: measure(size, kind) for kind in args.kind or KINDS}
    print_table(f"peak memory for one {args.mb} MB result", ["result", "client peak RSS MB", "client x result size",
                                                             "pod peak RSS MB", "pod x result size"],
                [[kind, r["client_peak_mb"], r["client_over_result"], r["pod_peak_mb"], r["pod_over_result"]]
                 for kind, r in results.items()])
    write_json("memory", {"result_mb": args.mb, "results": results, "map": mapped, "pending": pending})


if __name__ == "__main__":
    main()
