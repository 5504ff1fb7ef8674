"""Pod start per driver and architecture, and a small job end to end on arm64.

Pod start is ``run_pod`` to ``terminated`` of a ``python -c pass`` pod (``python:3.11-slim``),
polled as a client does, for each local driver that works here and, for the container driver,
each architecture whose image is prepared (arm64 runs under qemu-user). The job is one
``podrun.remote`` call on a container pod of each architecture: the first (the zero-build
runtime travels) and the next.
Prints tables and writes benchmarks/results/pods.json.

    PODRUN_IMAGE_STORE=... python benchmarks/pods.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, private_home, write_json  # noqa: E402

IMAGE = "python:3.11-slim"


def inc(x: int) -> int:
    return x + 1


def pod_start(platform, repeat: int) -> list[float]:
    from podrun.platform.types import PodSpec

    samples = []
    for n in range(repeat):
        started = time.perf_counter()
        platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name=f"start-{n}",
                                 command="python", args=["-c", "pass"]))
        while not (state := platform.pod_status(f"start-{n}")).is_terminal:
            if state.is_stuck:
                raise RuntimeError(f"pod did not start: {state}")
            time.sleep(0.005)
        if state.exit_code != 0:
            raise RuntimeError(f"pod failed: {state}")
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7

    from podrun.platform.local import LocalPlatform
    from podrun.platform.local import container as _container
    from podrun.platform.local.images import ImageStore, host_arch, stock_ref

    store = ImageStore()  # the real store (PODRUN_IMAGE_STORE or $PODRUN_HOME/images), before the private home
    os.environ["PODRUN_IMAGE_STORE"] = str(store.root)
    results: dict = {"pod_start_s": {}, "images": {}, "job_s": {}}
    rows = []
    with private_home() as home:
        setups = [("process", "host", {})]
        if _container.available(store):
            setups += [("container", arch, {"arch": arch}) for arch in (host_arch(), "arm64")
                       if store.inspect(stock_ref(IMAGE, arch))]
        for driver, arch, extra in setups:
            platform = LocalPlatform(home / "local", driver=driver, **extra)
            shown = host_arch() if arch == "host" else arch
            try:
                samples = pod_start(platform, repeat)
            finally:
                platform.shutdown()
            results["pod_start_s"][f"{driver}/{shown}"] = {"median": statistics.median(samples), "min": min(samples)}
            rows.append([driver, shown, statistics.median(samples), min(samples), repeat])
        print_table("pod start: run_pod -> terminated, python -c pass (s)", ["driver", "arch", "median", "min", "runs"], rows)

        sizes = []
        for image in store.list("localhost/podrun-stock/"):
            for name in image.names:
                results["images"][name] = image.size
                sizes.append([name.removeprefix("localhost/podrun-stock/"), round(image.size / 2**20, 1)])
        print_table("stock images in the store", ["image", "MiB"], sorted(sizes))

        import podrun

        job_rows = []
        for arch in [a for a in (host_arch(), "arm64") if store.inspect(stock_ref(IMAGE, a)) and _container.available(store)]:
            podrun.configure(LocalPlatform(home / "local", driver="container", arch=arch))
            fn = podrun.remote(inc, image=IMAGE, max_duration=5, pod_name=f"job-{arch}")
            started = time.perf_counter()
            assert fn.remote(1).get(timeout=600) == 2
            first = time.perf_counter() - started
            again = []
            for n in range(repeat):
                started = time.perf_counter()
                assert fn.remote(n).get(timeout=600) == n + 1
                again.append(time.perf_counter() - started)
            results["job_s"][arch] = {"first": first, "next_median": statistics.median(again)}
            job_rows.append([arch, first, statistics.median(again)])
        print_table("one remote call on a container pod, end to end (s)", ["arch", "first (runtime travels)", "next (median)"],
                    job_rows)
    write_json("pods", results)


if __name__ == "__main__":
    main()
