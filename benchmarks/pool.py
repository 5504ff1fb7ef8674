"""The pod's pool of worker processes (runtime/pool.py): a CPU-bound map against the ideal,
and the pod runtime's own cost per trivial call, with ``workers=1`` and all cores.

* Runtime per call in images: the same bundles, run by the zipapp (as a pod gets it) inside
  stock images on the container driver: ``python:3.11-slim`` (no msgpack: the zipapp's pure-
  Python copy) and the ML image (Debian's C msgpack), with the cold runtime start (a one-call
  bundle, the runtime already unpacked in the volume) and the zipapp's size.
* CPU-bound: 200 calls of a function that burns 20 ms of CPU each, on a warm pod (its start
  left out) and on a cold one; the ideal is calls x 20 ms / cores.
* Runtime per call: the runtime run directly on a bundle of N trivial calls (``x + 1``), as a
  pod runs it; wall per call = (last call's end - first call's start) / N, from the records'
  own times, so neither the link nor the client is in it; CPU per call = the marginal CPU time
  of the runtime and its workers (N calls against N/5), which a busy machine does not inflate.

Prints tables and writes benchmarks/results/pool.json.

    PODRUN_IMAGE_STORE=... python benchmarks/pool.py [--quick]
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
IMAGES = ("python:3.11-slim", "dphi-embedded-ml-armv8-py311")  # no msgpack; Debian's C msgpack


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

    from podrun.wire import records as rec

    with tempfile.TemporaryDirectory(prefix="podrun-bench-volume-") as volume:
        job = Path(volume) / ".podrun" / "jobs" / "20261201-000000-00000000"
        job.mkdir(parents=True)
        (job / "bundle").write_bytes(_bundle(calls, workers, job_id=job.name))
        env = {"PATH": os.environ["PATH"], "PODRUN_DATA": volume, "PYTHONPATH": os.pathsep.join(sys.path)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "podrun.runtime", str(job / "bundle")], env=env, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the runtime waits for its workers: theirs is in it
        records = [r for r in rec.iter_records((job / "results").read_bytes()) if isinstance(r, rec.CallRecord)]
        assert len(records) == calls and all(r.status == rec.OK for r in records)
        span = max(r.ended for r in records) - min(r.started for r in records)
    return span, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _bundle(calls: int, workers: int, function: object = inc, job_id: str = "20261201-000000-00000000",
            codec: int | None = None) -> bytes:
    """A job bundle of ``calls`` calls of ``function`` (``function(i)`` for each i); ``codec``
    for an image without zstandard (None: this machine's best)."""
    import cloudpickle

    from podrun.wire.bundle import CallGroup, JobHeader, encode_bundle
    from podrun.wire.compression import CODEC_NAMES, compress
    from podrun.wire.hashing import content_hash
    from podrun.wire.serialize import dumps

    module = sys.modules[function.__module__]  # type: ignore[attr-defined]
    if module.__name__ != "__main__":  # imported (not run as a script): by value all the same, as a pod has no copy
        cloudpickle.register_pickle_by_value(module)
    pickled = cloudpickle.dumps(function)
    table = dumps([((i,), {}) for i in range(calls)], what="the arguments")
    group = CallGroup(content_hash(pickled), compress(table.payload, codec), table.buffers, calls, None, workers)
    header = JobHeader(job_id, [group]) if codec is None else JobHeader(job_id, [group], codecs=[CODEC_NAMES[codec]])
    return encode_bundle(header, {group.function: pickled}, codec)


def which_msgpack(_: int) -> str:
    """Run in the pod: the msgpack the runtime encodes its records with."""
    import sys

    module = sys.modules["msgpack"].Packer.__module__
    with open("/data/msgpack.txt", "w") as out:
        out.write(module)
    return module


# Run in the pod by the image's python: each bundle by the zipapp, as a pod runs a job, timed
# with the CPU of the runtime and its workers; one JSON line per bundle into /data/times.json.
IN_POD = r"""
import json, resource, subprocess, sys, time
rows = []
for bundle in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, sys.argv[1], bundle], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows.append([bundle, time.perf_counter() - started,
                 (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)])
with open("/data/times.json", "w") as out:
    json.dump(rows, out)
"""


def in_images(calls: int, repeat: int, images: tuple[str, ...]) -> tuple[list[list[object]], int]:
    """Per image (container driver, host architecture): runtime CPU per trivial call (marginal,
    ``calls`` against a fifth as many), wall per call, and a cold runtime start (a one-call
    bundle: wall and CPU, the runtime unpacked in the volume already). Also the zipapp's size."""
    import json

    from podrun.platform.local import LocalPlatform
    from podrun.platform.local import container as _container
    from podrun.platform.local.images import ImageStore, host_arch, stock_ref
    from podrun.platform.types import PodSpec
    from podrun.runtime.pack import build_zipapp
    from podrun.wire import records as rec
    from podrun.wire.compression import ZLIB

    app = build_zipapp()
    store = ImageStore()
    if not _container.available(store):
        print("runtime per call in images: skipped (no container engine here)")
        return [], app.size
    rows = []
    with private_home() as home:
        platform = LocalPlatform(home / "local", driver="container")
        try:
            for image in images:
                if not store.inspect(stock_ref(image, host_arch())):
                    print(f"{image}: not prepared (PODRUN_IMAGE_STORE={store.root} podrun images prepare {image})")
                    continue
                pod = "bench-" + image.replace(":", "-").replace(".", "-")[:40]
                small = calls // 5
                plan = [("warm-up", 1, inc), ("which", 1, which_msgpack)]
                for n in range(repeat):
                    plan += [(f"big-{n}", calls, inc), (f"small-{n}", small, inc), (f"one-{n}", 1, inc)]
                platform.uplink([("rt.pyz", app.data), ("in_pod.py", IN_POD.encode())], pod_name=pod)
                jobs = {name: f"20261201-000000-{n:08x}" for n, (name, _, _) in enumerate(plan)}
                for name, count, function in plan:  # zlib: the slim image has no zstandard
                    bundle = _bundle(count, 1, function, jobs[name], ZLIB)
                    platform.uplink([("bundle", bundle)], f".podrun/jobs/{jobs[name]}", pod)
                platform.run_pod(PodSpec(image=image, node="MPU", max_duration=30, pod_name=pod, command="python",
                                         args=["/data/in_pod.py", "/data/rt.pyz",
                                               *(f"/data/.podrun/jobs/{jobs[name]}/bundle" for name, _, _ in plan)]))
                while not (state := platform.pod_status(pod)).is_terminal:
                    time.sleep(0.05)
                if state.exit_code != 0:
                    log = (platform._pod_dir(pod) / "stdout.log").read_text(errors="replace")[-3000:]  # the pod's own log
                    raise SystemExit(f"{image}: the measuring pod failed: {state}\n{log}")
                names = {job: name for name, job in jobs.items()}
                measured = json.loads(platform.downlink("times.json", pod))
                times = {names[Path(bundle).parent.name]: (wall, cpu) for bundle, wall, cpu in measured}
                results = bytes(platform.downlink(f".podrun/jobs/{jobs['big-0']}/results", pod))
                records = [r for r in rec.iter_records(results) if isinstance(r, rec.CallRecord)]
                if len(records) != calls or any(r.status != rec.OK for r in records):
                    raise SystemExit(f"{image}: the calls did not all succeed: {records[:1]}")
                module = bytes(platform.downlink("msgpack.txt", pod)).decode()
                per_call = [(times[f"big-{n}"][1] - times[f"small-{n}"][1]) / (calls - small) for n in range(repeat)]
                wall = [(times[f"big-{n}"][0] - times[f"small-{n}"][0]) / (calls - small) for n in range(repeat)]
                one = [times[f"one-{n}"] for n in range(repeat)]
                rows.append([image, module, min(per_call) * 1e6, statistics.median(per_call) * 1e6,
                             min(wall) * 1e6, min(w for w, _ in one) * 1e3, min(c for _, c in one) * 1e3])
        finally:
            platform.shutdown()
    return rows, app.size


def _occupancy(futures: list, workers: int) -> float:
    """How busy the workers were with calls from the first call's start to the last one's end
    (each call's own start and end, from its record): 1.0 is no gap between calls. A machine
    that other work shares stretches the calls and the span alike, so this holds there too."""
    times = [(f._record.started, f._record.ended) for f in futures]
    span = max(end for _, end in times) - min(start for start, _ in times)
    return sum(end - start for start, end in times) / (span * workers)


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
    images, zipapp_size = in_images(10_000 if args.quick else 50_000, repeat, IMAGES)
    print_table(f"the zipapp in stock images, workers=1 (zipapp {zipapp_size:,} bytes)",
                ["image", "msgpack", "CPU/call best µs", "CPU/call median µs", "wall/call best µs",
                 "cold 1-call run ms", "cold 1-call CPU ms"], images)
    with private_home():
        cpu = cpu_bound(repeat)
        print_table(f"CPU-bound map (seconds; driver {os.environ['PODRUN_LOCAL_DRIVER']})",
                    ["case", "workers", "best", "median", "ideal", "best / ideal", "occupancy"], cpu)
        write_json("pool", {
            "zipapp_bytes": zipapp_size,
            "in_images": [dict(zip(["image", "msgpack", "cpu_best_us", "cpu_median_us", "wall_best_us", "cold_run_ms",
                                    "cold_cpu_ms"], r, strict=True)) for r in images],
            "cpu_bound": [dict(zip(["case", "workers", "best_s", "median_s", "ideal_s", "ratio", "occupancy"], r, strict=True))
                          for r in cpu],
            "runtime_per_call": [dict(zip(["case", "workers", "wall_best_us", "wall_median_us", "cpu_best_us",
                                           "cpu_median_us"], r, strict=True))
                                 for r in per_call]})

if __name__ == "__main__":
    main()
