"""Per-call overhead of ``podrun.Executor.submit`` against ``f.remote`` (and ``Executor.map``
against ``f.map``) on the local platform: microseconds the caller spends per submitted call,
and the wall time until every result is back. Same function, same pod, same run.

    python benchmarks/executor.py [--quick]

Prints a table and writes benchmarks/results/executor.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402


def inc(x: int) -> int:
    return x + 1


def measure(submit_all, drain, n: int, repeat: int) -> dict[str, float]:
    """Median over ``repeat`` runs: caller time per call to submit, and wall time to all results."""
    submit_us, total_s = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        pending = submit_all(n)
        submitted = time.perf_counter()
        drain(pending)
        submit_us.append((submitted - start) / n * 1e6)
        total_s.append(time.perf_counter() - start)
    return {"submit_us_per_call": statistics.median(submit_us), "total_s": statistics.median(total_s)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer calls and repetitions (CI smoke run)")
    args = parser.parse_args()
    sizes = [100, 1_000] if args.quick else [100, 1_000, 5_000]
    repeat = 2 if args.quick else 5

    import podrun

    results: dict = {}
    rows = []
    with private_home():
        remote_inc = podrun.remote(inc, max_duration=10)
        with podrun.Executor(max_duration=10) as ex:
            ex.submit(inc, 0).result(timeout=120)  # the volume has the runtime and the function from here on
            futures = lambda pending: podrun.get(pending, timeout=600)  # noqa: E731
            ways = {
                "f.remote": (lambda n: [remote_inc.remote(i) for i in range(n)], futures),
                "Executor.submit": (lambda n: [ex.submit(inc, i) for i in range(n)], futures),
                "f.map": (lambda n: remote_inc.map(range(n)), futures),
                "Executor.map": (lambda n: ex.map(inc, range(n)), list),  # submits every call before it returns
            }
            for n in sizes:
                for name, (submit_all, drain) in ways.items():
                    entry = measure(submit_all, drain, n, repeat)
                    results.setdefault(str(n), {})[name] = entry
                    rows.append([n, name, entry["submit_us_per_call"], entry["total_s"], n / entry["total_s"]])
    print_table("caller overhead per call and wall time to all results (median)",
                ["calls", "how", "submit µs/call", "total s", "calls/s"], rows)
    write_json("executor", results)


if __name__ == "__main__":
    main()
