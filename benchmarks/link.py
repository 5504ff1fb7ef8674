"""Link cost of podrun against two baselines, in bytes and platform calls, on one platform.

(a) 1,000 calls sharing one 50 MB numpy argument; (b) the same map submitted again;
(c) two chained calls: the first returns a 100 MB array that the second consumes.

Baselines, implemented here over the same Platform:
* naive EM usage: per call, uplink the pickled function and arguments, run a pod, poll,
  downlink the result (what a hand-written EM script does);
* Lithops-style: per map, one uplinked object holding the function and every call's data,
  one pod, then one result object per call downlinked (no dedup across maps).

The naive baseline is run on a sample of calls and scaled (its per-call cost is identical by
construction); the table says so. Prints a table, writes benchmarks/results/link.json.

    python benchmarks/link.py [--calls 1000] [--mb 50] [--chain-mb 100] [--naive-sample 5]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402

POD_SCRIPT = """
import pickle, sys, os
data = os.environ.get("PODRUN_DATA", "/data")
with open(os.path.join(data, sys.argv[1]), "rb") as f:
    fn, calls = pickle.load(f)
for i, (args, kwargs) in enumerate(calls):
    with open(os.path.join(data, sys.argv[2] + "-%d" % i), "wb") as out:
        pickle.dump(fn(*args, **kwargs), out, protocol=5)
"""


def first_element(i: int, array: np.ndarray) -> float:
    return float(array[i % array.size])


def produce(n: int) -> np.ndarray:
    return np.random.default_rng(1).random(n)


def consume(array: np.ndarray) -> float:
    return float(array.sum())


def wait(platform, pod_name):
    delay = 0.01
    while True:
        state = platform.pod_status(pod_name)
        if state.is_terminal or state.is_stuck:
            return state
        time.sleep(delay)
        delay = min(0.25, delay * 1.5)


def run_baseline_job(platform, pod_name, fn, calls, tag):
    """One uplinked object with (fn, calls), one pod, one downlink per result."""
    payload = cloudpickle.dumps((fn, calls), protocol=5)
    platform.uplink([(f"{tag}.pkl", payload)], dest_path="baseline", pod_name=pod_name)
    from podrun.platform.types import PodSpec

    platform.run_pod(PodSpec(image="python:3.11-slim", node="MPU", max_duration=10, command="python",
                             args=["-c", POD_SCRIPT, f"baseline/{tag}.pkl", f"baseline/{tag}-out"], pod_name=pod_name))
    wait(platform, pod_name)
    return [pickle.loads(platform.downlink(f"baseline/{tag}-out-{i}", pod_name)) for i in range(len(calls))]


def measure(fn):
    from podrun.platform.metered import PROCESS_STATS

    PROCESS_STATS.reset()
    started = time.perf_counter()
    result = fn()
    stats = PROCESS_STATS.as_dict()
    stats["seconds"] = time.perf_counter() - started
    return result, stats


def table_row(who: str, scenario: str, stats: dict) -> list:
    """One row of the link-cost table from :func:`measure`'s stats."""
    calls = stats["calls"] - stats["polls"]
    return [who, scenario, stats["bytes_up"], stats["bytes_down"], calls, stats["polls"], stats["seconds"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--chain-mb", type=float, default=100)
    parser.add_argument("--naive-sample", type=int, default=5)
    args = parser.parse_args()

    import podrun
    from podrun.client import config
    from podrun.wire.compression import compress

    shared = np.random.default_rng(0).random(int(args.mb * 1e6 / 8))
    compressed_arg = len(compress(shared.tobytes()))
    rows, out = [], {"calls": args.calls, "arg_bytes": shared.nbytes, "arg_compressed_bytes": compressed_arg}
    with private_home():
        platform = config.current_platform()
        remote_first = podrun.remote(first_element, max_duration=10, pod_name="bench-podrun")

        # (a) and (b): podrun
        for label in ("a: first map", "b: same map again"):
            _, stats = measure(lambda: podrun.get(remote_first.map(range(args.calls), array=shared), timeout=600))
            out[f"podrun {label}"] = stats
            rows.append(table_row("podrun", label, stats))

        # (a) and (b): Lithops-style, one object per map
        calls = [((i, shared), {}) for i in range(args.calls)]
        for label in ("a: first map", "b: same map again"):
            _, stats = measure(
                lambda label=label: run_baseline_job(platform, "bench-lithops", first_element, calls, f"map-{label[0]}")
            )
            out[f"lithops-style {label}"] = stats
            rows.append(table_row("lithops-style", label, stats))

        # (a): naive per-call usage, measured on a sample and scaled
        sample = max(1, min(args.naive_sample, args.calls))
        _, stats = measure(
            lambda: [run_baseline_job(platform, "bench-naive", first_element, [calls[i]], f"call-{i}") for i in range(sample)]
        )
        scale = args.calls / sample
        scaled = {k: (v * scale if k != "seconds" else v * scale) for k, v in stats.items()}
        out["naive a: per call (scaled)"] = {**scaled, "sample_calls": sample}
        for label in ("a: first map", "b: same map again"):
            rows.append([f"naive (x{scale:g} of {sample})", label, int(scaled["bytes_up"]), int(scaled["bytes_down"]),
                         int(scaled["calls"] - scaled["polls"]), int(scaled["polls"]), scaled["seconds"]])

        podrun_a = out["podrun a: first map"]
        podrun_b = out["podrun b: same map again"]
        out["targets"] = {
            "a_bytes_up_limit": 1.05 * compressed_arg + 1024 * args.calls,
            "a_bytes_up": podrun_a["bytes_up"],
            "a_calls_besides_polls": podrun_a["calls"] - podrun_a["polls"],
            "b_bytes_up_per_call": podrun_b["bytes_up"] / args.calls,
        }
        out.update(chain_rows(podrun, platform, args, rows))
    print_table(f"link cost: {args.calls} calls sharing a {shared.nbytes / 1e6:.0f} MB argument; chain of {args.chain_mb:.0f} MB",
                ["who", "scenario", "bytes up", "bytes down", "calls (no polls)", "polls", "seconds"], rows)
    print("\ntargets:", {k: round(v, 1) if isinstance(v, float) else v for k, v in out["targets"].items()})
    write_json("link", out)


def chain_rows(podrun, platform, args, rows) -> dict:
    """(c): a 100 MB intermediate passed from one call to the next."""
    n = int(args.chain_mb * 1e6 / 8)
    remote_produce = podrun.remote(produce, max_duration=10, pod_name="bench-chain")
    remote_consume = podrun.remote(consume, max_duration=10, pod_name="bench-chain")
    results = {}

    def podrun_chain():
        return remote_consume.remote(remote_produce.remote(n).ref()).get(timeout=600)

    def naive_chain():
        (array,) = run_baseline_job(platform, "bench-chain-naive", produce, [((n,), {})], "produce")
        return run_baseline_job(platform, "bench-chain-naive", consume, [((array,), {})], "consume")[0]

    for who, fn in (("podrun", podrun_chain), ("naive / lithops-style", naive_chain)):
        value, stats = measure(fn)
        results[f"{who} c: chain"] = {**stats, "value": value}
        rows.append(table_row(who, "c: chained 100 MB", stats))
    return results


if __name__ == "__main__":
    main()
