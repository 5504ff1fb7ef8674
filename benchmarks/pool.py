"""The pod's pool of worker processes (runtime/pool.py): a CPU-bound map against the ideal,
and the pod runtime's own cost per trivial call, with ``workers=1`` and all cores.

* CPU-bound: 200 calls of a function that burns 20 ms of CPU each, on a warm pod (its start
  left out) and on a cold one; the ideal is calls x 20 ms / cores.
* Runtime per call: the runtime run directly on a bundle of N trivial calls (``x + 1``), as a
  pod runs it; wall per call = (last call's end - first call's start) / N, from the records'
  own times, so neither the link nor the client is in it; CPU per call = the marginal CPU time
  of the runtime and its workers (N calls against N/5), which a busy machine does not inflate.

Prints tables and writes benchmarks/results/pool.json.

    python benchmarks/pool.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402

CALLS, BURN = 200, 0.02


def burn(_: int) -> float:
    start = time.process_time()
    while time.process_time() - start < BURN:
        pass
    return time.process_time() - start


def inc(x: int) -> int:
    return x + 1


def cpu_bound(repeat: int) -> list[list[object]]:
    import podrun
    from podrun.runtime.pool import node_cores

    cores = node_cores()
    ideal = CALLS * BURN / cores
    rows = []
    for workers in (1, cores):
        warm = podrun.remote(burn, max_duration=10, pod_name=f"bench-pool-{workers}", keep_warm=60, workers=workers)
        cold = podrun.remote(burn, max_duration=10, workers=workers)
        warm.remote(0).get(timeout=120)  # the pod (and its pool) started
        for name, function in (("warm", warm), ("cold", cold)):
            samples, busy = [], []
            for _ in range(repeat):
                start = time.perf_counter()
                futures = function.map(range(CALLS))
                [f.get(timeout=600) for f in futures]
                samples.append(time.perf_counter() - start)
                busy.append(_occupancy(futures, workers))
            best = min(samples)
            rows.append([f"{CALLS} x {BURN * 1000:.0f} ms CPU, {name} pod", workers, best, statistics.median(samples),
                         ideal, best / ideal, max(busy)])
    return rows


def _run_bundle(calls: int, workers: int) -> tuple[float, float]:
    """Run a bundle of ``calls`` trivial calls as a pod does: (seconds from the first call's
    start to the last one's end, from the records; CPU seconds of the runtime and its workers)."""
    import resource

    import cloudpickle

    from podrun.wire import records as rec
    from podrun.wire.bundle import CallGroup, JobHeader, encode_bundle
    from podrun.wire.compression import compress
    from podrun.wire.hashing import content_hash
    from podrun.wire.serialize import dumps

    function = cloudpickle.dumps(inc)
    table = dumps([((i,), {}) for i in range(calls)], what="the arguments")
    with tempfile.TemporaryDirectory(prefix="podrun-bench-volume-") as volume:
        job = Path(volume) / ".podrun" / "jobs" / "20261201-000000-00000000"
        job.mkdir(parents=True)
        group = CallGroup(content_hash(function), compress(table.payload), table.buffers, calls, None, workers)
        (job / "bundle").write_bytes(encode_bundle(JobHeader(job.name, [group]), {group.function: function}))
        env = {"PATH": os.environ["PATH"], "PODRUN_DATA": volume, "PYTHONPATH": os.pathsep.join(sys.path)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "podrun.runtime", str(job / "bundle")], env=env, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the runtime waits for its workers: theirs is in it
        records = [r for r in rec.iter_records((job / "results").read_bytes()) if r.get("k") == "call"]
        assert len(records) == calls and all(r["s"] == rec.OK for r in records)
        span = max(r["t"][1] for r in records) - min(r["t"][0] for r in records)
    return span, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _occupancy(futures: list, workers: int) -> float:
    """How busy the workers were with calls from the first call's start to the last one's end
    (each call's own start and end, from its record): 1.0 is no gap between calls. A machine
    that other work shares stretches the calls and the span alike, so this holds there too."""
    times = [f._record["t"] for f in futures]
    span = max(t[1] for t in times) - min(t[0] for t in times)
    return sum(t[1] - t[0] for t in times) / (span * workers)


def runtime_per_call(calls: int, repeat: int) -> list[list[object]]:
    """Per call: wall (records' span / calls) and marginal CPU (the CPU of ``calls`` calls less
    that of a fifth as many, over the difference: the runtime's start and the environment
    record drop out), best of ``repeat``. CPU time holds where other work shares the machine."""
    from podrun.runtime.pool import node_cores

    rows = []
    small = calls // 5
    for workers in (1, node_cores()):
        walls, cpus = [], []
        for _ in range(repeat):
            span, cpu = _run_bundle(calls, workers)
            _, cpu_small = _run_bundle(small, workers)
            walls.append(span / calls)
            cpus.append((cpu - cpu_small) / (calls - small))
        rows.append([f"{calls:,} trivial calls", workers, min(walls) * 1e6, statistics.median(walls) * 1e6,
                     min(cpus) * 1e6, statistics.median(cpus) * 1e6])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    # The process driver (pods on this host's Python) unless told otherwise: where no container
    # engine runs, probing for one leaves its storage mounted under the private home.
    os.environ.setdefault("PODRUN_LOCAL_DRIVER", "process")
    per_call = runtime_per_call(10_000 if args.quick else 50_000, repeat)
    print_table("pod runtime per trivial call (µs)", ["case", "workers", "wall best", "wall median", "CPU best",
                                                       "CPU median"], per_call)
    with private_home():
        cpu = cpu_bound(repeat)
        print_table(f"CPU-bound map (seconds; driver {os.environ['PODRUN_LOCAL_DRIVER']})",
                    ["case", "workers", "best", "median", "ideal", "best / ideal", "occupancy"], cpu)
        write_json("pool", {
            "cpu_bound": [dict(zip(["case", "workers", "best_s", "median_s", "ideal_s", "ratio", "occupancy"], r, strict=True))
                          for r in cpu],
            "runtime_per_call": [dict(zip(["case", "workers", "wall_best_us", "wall_median_us", "cpu_best_us",
                                           "cpu_median_us"], r, strict=True))
                                 for r in per_call]})

if __name__ == "__main__":
    main()
