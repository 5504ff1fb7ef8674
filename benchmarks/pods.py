"""Pod start per driver and architecture, and a small job end to end on arm64.

Pod start is ``run_pod`` to ``terminated`` of a ``python -c pass`` pod (``python:3.11-slim``),
polled as a client does, for each local driver that works here and, for the container driver,
each architecture whose image is prepared (arm64 runs under qemu-user). The job is one
``podrun.remote`` call end to end, on the process driver and on a container pod of each
architecture: the first (the zero-build runtime travels), the next on a cold pod (a pod per
call), and the next on a warm pod (``keep_warm``: the pod serves calls from its inbox).
Under root it also times each container pod's inbound firewall hook alone (``pod_firewall.py``,
as the OCI runtime runs it, on a real network namespace): that part of a container pod's start.
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


def firewall_hook(repeat: int) -> list[float]:
    """The pod firewall hook run as runc runs it (OCI state on stdin), on a real network namespace."""
    import json
    import subprocess

    from podrun.platform.local import network as _network

    hook = json.loads(next(_network.firewall_hooks(Path(os.environ["PODRUN_HOME"]) / "local").iterdir()).read_text())["hook"]
    holder = subprocess.Popen(["/usr/bin/unshare", "--net", "/bin/sleep", "600"])
    try:
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if holder.poll() is not None:
                raise SystemExit("unshare --net failed: no network namespace to time the firewall hook on")
            time.sleep(0.01)  # until unshare has made the namespace
        state = json.dumps({"pid": holder.pid, "annotations": {"podrun.ports": "80 443"}})
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(hook["args"], executable=hook["path"], input=state, text=True, check=True,
                           env=dict(item.split("=", 1) for item in hook["env"]))
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        holder.kill()
        holder.wait()


JOB = r"""
import json, sys, time
import podrun
from podrun.platform.local import LocalPlatform

driver, arch, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])

def inc(x):
    return x + 1

if driver == "process":
    podrun.configure("local", driver="process")  # as a user configures it; pods run on this Python
    image = None
else:
    podrun.configure(LocalPlatform(driver="container", arch=arch))
    image = sys.argv[4]

def timed(fn, n):
    started = time.perf_counter()
    assert fn.remote(n).get(timeout=600) == n + 1
    return time.perf_counter() - started

fn = podrun.remote(inc, image=image, max_duration=5, pod_name="job")
first = timed(fn, 1)
cold = [timed(fn, n) for n in range(repeat)]
warm_fn = fn.options(keep_warm=30, pod_name="warm")
timed(warm_fn, 0)  # starts the warm pod
warm = [timed(warm_fn, n) for n in range(repeat * 3)]
print(json.dumps([first, cold, warm]))
"""


def end_to_end(driver: str, arch: str, repeat: int, home: Path) -> tuple[float, list[float], list[float]]:
    """One remote call end to end, in a client process of its own (a fresh PODRUN_HOME): the
    first call, ``repeat`` on cold pods, ``3 * repeat`` on a warm one (seconds)."""
    import json
    import subprocess

    home.mkdir()
    try:
        done = subprocess.run([sys.executable, "-c", JOB, driver, arch, str(repeat), IMAGE], capture_output=True,
                              text=True, env={**os.environ, "PODRUN_HOME": str(home)}, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
    finally:
        from podrun.platform.local import LocalPlatform

        LocalPlatform(home / "local").shutdown()
    first, cold, warm = json.loads(done.stdout.strip().splitlines()[-1])
    return first, cold, warm


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
        if os.geteuid() == 0 and _container.available(store):
            hook = firewall_hook(repeat * 3)
            results["pod_firewall_hook_s"] = {"median": statistics.median(hook), "min": min(hook)}
            print_table("each container pod's inbound firewall hook alone (s)", ["median", "min", "runs"],
                        [[statistics.median(hook), min(hook), len(hook)]])

        sizes = []
        for image in store.list("localhost/podrun-stock/"):
            for name in image.names:
                results["images"][name] = image.size
                sizes.append([name.removeprefix("localhost/podrun-stock/"), round(image.size / 2**20, 1)])
        print_table("stock images in the store", ["image", "MiB"], sorted(sizes))

        job_rows = []
        jobs = [("process", host_arch())]
        if _container.available(store):
            jobs += [("container", arch) for arch in (host_arch(), "arm64") if store.inspect(stock_ref(IMAGE, arch))]
        for driver, arch in jobs:
            first, cold, warm = end_to_end(driver, arch, repeat, home / f"job-{driver}-{arch}")
            results["job_s"][f"{driver}/{arch}"] = {"first": first, "cold_median": statistics.median(cold),
                                                    "cold_min": min(cold), "warm_median": statistics.median(warm),
                                                    "warm_min": min(warm)}
            job_rows.append([driver, arch, first, statistics.median(cold), min(cold), statistics.median(warm), min(warm)])
        print_table("one remote call end to end (s)", ["driver", "arch", "first (runtime travels)", "cold median",
                                                       "cold min", "warm median", "warm min"], job_rows)
    write_json("pods", results)


if __name__ == "__main__":
    main()
