"""Results as calls finish: a map of 500 calls whose last call is slow, timed to its first
result and to its last, with the job's bytes down and its downlink calls (all of them, and
those that found a file), on the local platform (host pods).

With ``--baseline PATH`` (a checkout of podrun, e.g. of main) the same measure runs there
too, in a subprocess importing that checkout's ``src``, and the table shows both.

    python benchmarks/streaming.py [--calls 500] [--slow 3] [--baseline /path/to/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402


def slow_last(i: int, calls: int, seconds: float) -> int:
    if i == calls - 1:
        time.sleep(seconds)
    return i * i


def measure(calls: int, seconds: float) -> dict[str, Any]:
    """One run of the map, in this process, with whatever podrun it imports."""
    import podrun
    from podrun.platform.metered import MeteredPlatform

    counted = {"downlinks": 0, "found": 0}
    original = MeteredPlatform.downlink_into

    def counting(self: MeteredPlatform, path: str, *args: Any, **kwargs: Any) -> int:
        if "/jobs/" in path:  # the job's results, not a warm pod's status or a blob
            counted["downlinks"] += 1
        moved = original(self, path, *args, **kwargs)
        if "/jobs/" in path:
            counted["found"] += 1
        return moved

    from podrun.platform.local.images import ImageStore

    os.environ.setdefault("PODRUN_IMAGE_STORE", str(ImageStore().root))  # the real store, outside the private home
    with private_home():
        podrun.configure("local", driver="process")
        remote = podrun.remote(slow_last, max_duration=5)
        remote.remote(0, calls, 0).get(timeout=120)  # the runtime and the function reach the volume first
        MeteredPlatform.downlink_into = counting  # type: ignore[method-assign]
        try:
            started = time.monotonic()
            futures = remote.map(range(calls), calls=calls, seconds=seconds)
            next(podrun.as_completed(futures, timeout=600))
            first = time.monotonic() - started
            values = podrun.get(futures, timeout=600)
            last = time.monotonic() - started
            job = futures[0].job
            finished = getattr(job, "finished", None)
            if finished is not None:
                finished.wait(60)
        finally:
            MeteredPlatform.downlink_into = original  # type: ignore[method-assign]
        assert values == [i * i for i in range(calls)]
        volume = podrun.LocalPlatform().volume_path(None) / ".podrun" / "jobs" / job.job_id
        log = (volume / "results").stat().st_size
        stats = job.stats.as_dict()
    return {"first_result_s": first, "last_result_s": last, "bytes_down": stats["bytes_down"], "results_log_bytes": log,
            "downlink_calls": counted["downlinks"], "downlinks_found": counted["found"], "polls": stats["polls"]}


def in_checkout(checkout: Path, calls: int, seconds: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    done = subprocess.run([sys.executable, __file__, "--measure", "--calls", str(calls), "--slow", str(seconds)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the measure in {checkout} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--slow", type=float, default=3.0, help="seconds the last call sleeps")
    parser.add_argument("--baseline", type=Path, help="a podrun checkout to measure too (e.g. of main)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.calls, args.slow)))
        return
    runs = {"this checkout": in_checkout(Path(__file__).resolve().parents[1], args.calls, args.slow)}
    if args.baseline:
        runs[f"baseline {args.baseline}"] = in_checkout(args.baseline, args.calls, args.slow)
    columns = ["run", "first result s", "last result s", "bytes down", "results log bytes", "down/log",
               "downlink calls", "found", "polls"]
    rows = [[name, r["first_result_s"], r["last_result_s"], r["bytes_down"], r["results_log_bytes"],
             r["bytes_down"] / r["results_log_bytes"], r["downlink_calls"], r["downlinks_found"], r["polls"]]
            for name, r in runs.items()]
    print_table(f"{args.calls}-call map, the last call sleeping {args.slow:g} s (local platform, host pods)", columns, rows)
    write_json("streaming", {"calls": args.calls, "slow_s": args.slow, "runs": runs})


if __name__ == "__main__":
    main()
