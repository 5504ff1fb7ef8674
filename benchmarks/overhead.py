"""Overhead of podrun on the local platform against concurrent.futures.ProcessPoolExecutor.

Latency of one trivial call (cold pod, warm pod, process pool), and throughput of map over
1k, 10k and 100k trivial calls, in one run, same machine. The process pool gets its best chunksize (tried from a list). Prints
a table and writes benchmarks/results/overhead.json.

The client's own stages of a 50k-call map come first: submitting (``f.map`` returning its
futures: pickling the argument table, making futures, queueing), results in (the segments
downlinked and their records decoded) and settling (records turned into settled futures, as
segments stream in and at the job's end), in µs per call of the CPU time of the thread doing
each (the machine's other load stays out of it).

    python benchmarks/overhead.py [--quick] [--stages-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402


def inc(x: int) -> int:
    return x + 1


def time_it(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def client_stages(n: int, repeat: int) -> dict[str, float]:
    """µs per call of the client's stages (min over ``repeat`` maps of ``n``): submit (``map``
    returning), results in (segments downlinked and decoded, ``ResultStream.fetch``), settle
    (records to settled futures: ``Job._take`` as segments stream in, then ``Job._resolve``;
    ``resolve_us_per_call`` is the latter alone, the figure this table gave before streaming)
    and values read (``podrun.get`` of the settled futures: each value unpickled)."""
    import podrun
    from podrun.client.jobs import follow
    from podrun.client.jobs import job as job_module

    spent: dict[str, list[float]] = {"fetch": [], "take": [], "resolve": []}

    def timed(name: str, method):
        def run(*args, **kwargs):
            start = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name].append(time.thread_time() - start)
        return run

    originals = [(follow.ResultStream, "fetch"), (job_module.Job, "_take"), (job_module.Job, "_resolve")]
    saved = [getattr(cls, name) for cls, name in originals]
    remote_inc = podrun.remote(inc, max_duration=10)
    rows: dict[str, list[float]] = {"submit": [], "fetch": [], "settle": [], "resolve": [], "get": []}
    for (cls, name), method in zip(originals, saved, strict=True):
        setattr(cls, name, timed(name.lstrip("_"), method))
    try:
        with private_home():
            podrun.get(remote_inc.map(range(10)), timeout=120)
            for _ in range(repeat):
                for times in spent.values():
                    times.clear()
                start = time.thread_time()
                futures = remote_inc.map(range(n))
                rows["submit"].append(time.thread_time() - start)
                podrun.wait(futures, timeout=600)
                start = time.thread_time()
                podrun.get(futures, timeout=600)
                rows["get"].append(time.thread_time() - start)
                rows["fetch"].append(sum(spent["fetch"]))
                rows["settle"].append(sum(spent["take"]) + sum(spent["resolve"]))
                rows["resolve"].append(sum(spent["resolve"]))
                del futures
    finally:
        for (cls, name), method in zip(originals, saved, strict=True):
            setattr(cls, name, method)
    return {"calls": n, **{f"{stage}_us_per_call": min(times) / n * 1e6 for stage, times in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and sizes (CI smoke run)")
    parser.add_argument("--stages-only", action="store_true", help="only the client's submit and settle stages")
    args = parser.parse_args()
    stages = client_stages(50_000, 2 if args.quick else 3)
    print_table("client stages of a 50k-call map (min, CPU µs per call)", ["stage", "µs"],
                [["submit", stages["submit_us_per_call"]], ["results in (downlink, decode)", stages["fetch_us_per_call"]],
                 ["settle", stages["settle_us_per_call"]], ["of which at the job's end", stages["resolve_us_per_call"]],
                 ["values read (get)", stages["get_us_per_call"]]])
    if args.stages_only:
        write_json("overhead_stages", {"stages": stages})
        return
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    repeat = 3 if args.quick else 7

    import podrun

    remote_inc = podrun.remote(inc, max_duration=10)
    warm_inc = podrun.remote(inc, max_duration=10, pod_name="bench-warm", keep_warm=60)
    results: dict = {"stages": stages, "latency": {}, "map": {}}
    with private_home():
        remote_inc.remote(0).get(timeout=120)  # warm the manifest and the volume
        warm_inc.remote(0).get(timeout=120)  # start the warm pod
        lat = time_it(lambda: remote_inc.remote(1).get(timeout=120), repeat)
        warm_lat = time_it(lambda: warm_inc.remote(1).get(timeout=120), repeat * 3)
        with ProcessPoolExecutor() as pool:
            pool.submit(inc, 0).result()
            pool_lat = time_it(lambda: pool.submit(inc, 1).result(), repeat * 10)
            pool_cold = time_it(lambda: ProcessPoolExecutor(1).submit(inc, 1).result(), repeat)
            results["latency"] = {
                "podrun_cold_pod_s": statistics.median(lat),
                "podrun_warm_pod_s": statistics.median(warm_lat),
                "process_pool_warm_s": statistics.median(pool_lat),
                "process_pool_new_pool_s": statistics.median(pool_cold),
            }
            rows = []
            for n in sizes:
                podrun_s = min(time_it(lambda n=n: podrun.get(remote_inc.map(range(n)), timeout=600), max(1, repeat // 3)))
                best = None
                for chunksize in (1, 16, 256, 4096):
                    if chunksize == 1 and n > 10_000:
                        continue
                    t = min(time_it(lambda n=n, chunksize=chunksize: list(pool.map(inc, range(n), chunksize=chunksize)),
                                    max(1, repeat // 3)))
                    if best is None or t < best[0]:
                        best = (t, chunksize)
                results["map"][n] = {"podrun_s": podrun_s, "podrun_calls_per_s": n / podrun_s,
                                     "pool_s": best[0], "pool_chunksize": best[1], "pool_calls_per_s": n / best[0]}
                rows.append([n, podrun_s, n / podrun_s, best[0], best[1], n / best[0]])
    lat_rows = [[k, v * 1000] for k, v in results["latency"].items()]
    print_table("single-call latency (median, ms)", ["what", "ms"], lat_rows)
    print_table("map throughput", ["calls", "podrun s", "podrun calls/s", "pool s", "pool chunksize", "pool calls/s"], rows)
    write_json("overhead", results)


if __name__ == "__main__":
    main()
