"""Pod start per driver and architecture: ``run_pod`` → terminated for ``python -c pass``.

The ``container`` driver runs the stock ``python:3.11-slim`` of each architecture the image
store has (arm64 under qemu-user, as CG2's Cortex-A53 and Jetson run it); the first pod of a
platform also creates the user's network and telemetry service, so it is reported apart
("first") from the steady state. Prints a table and writes benchmarks/results/pod_start.json.

    PODRUN_IMAGE_STORE=/var/cache/podrun-test-images python benchmarks/pod_start.py [--repeat N]

(the image store must hold the stock images: ``podrun images prepare python:3.11-slim --arch host``
and ``--arch arm64``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402


def one_pod(platform, pod_name: str) -> float:  # type: ignore[no-untyped-def]
    from podrun.platform.types import PodSpec

    start = time.perf_counter()
    platform.run_pod(PodSpec(image="python:3.11-slim", node="MPU", max_duration=1, pod_name=pod_name,
                             command="python3", args=["-c", "pass"]))
    while not (state := platform.pod_status(pod_name)).is_terminal:
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    if state.detail.get("reason") != "Completed":
        raise SystemExit(f"pod {pod_name} did not complete: {state.detail}")
    return elapsed


def measure(home: Path, driver: str, arch: str | None, repeat: int) -> dict[str, object] | None:
    from podrun.platform.local import LocalPlatform

    try:
        platform = LocalPlatform(home / f"local-{driver}-{arch}", driver=driver, arch=arch)
    except Exception as exc:  # noqa: BLE001 - a driver that cannot run here is reported, not fatal
        print(f"{driver}/{arch}: unavailable: {exc}")
        return None
    if driver == "container" and platform.resolve_image("python:3.11-slim") is None:
        print(f"{driver}/{arch}: no python:3.11-slim of {platform.arch} in the image store")
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = one_pod(platform, "bench-first")
            samples = [one_pod(platform, "bench") for _ in range(repeat)]
    finally:
        platform.shutdown()
    return {"driver": driver, "arch": platform.arch if driver == "container" else "host", "first_s": first,
            "median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples), "n": repeat}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with private_home() as home:
        for driver, arch in (("process", None), ("container", "host"), ("container", "arm64")):
            result = measure(home, driver, arch, args.repeat)
            if result:
                rows.append(result)
    print_table("pod start: run_pod → terminated, python -c pass (seconds)",
                ["driver", "arch", "first", "median", "min", "max", "n"],
                [[r["driver"], r["arch"], r["first_s"], r["median_s"], r["min_s"], r["max_s"], r["n"]] for r in rows])
    write_json("pod_start", {"results": rows})


if __name__ == "__main__":
    main()
