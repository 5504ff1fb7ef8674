"""Pod start per driver and architecture, and one call end to end on each.

Pod start is ``run_pod`` to ``terminated`` of a ``python -c pass`` pod (``python:3.11-slim``),
polled as a client does, for each local driver that works here and, for the container driver,
each architecture whose image is prepared (arm64 runs under qemu-user). The call is one
``podrun.remote`` call end to end (``.remote(x).get()``, in a client process of its own), on
the process driver and on a container pod of each architecture: the first (the zero-build
runtime travels), ``--cold`` on cold pods (a pod per call) and ``--warm`` on a warm pod
(``keep_warm``: the pod serves calls from its inbox), as p50/p95, beside
``ProcessPoolExecutor.submit().result()`` measured in the same run (the ratio the issue's
target is set in).

With ``--baseline PATH`` (a checkout of podrun, e.g. of main) every call measure runs there
too (a client importing that checkout's ``src``, whose runtime it packs for its pods), in
``--rounds`` rounds interleaved with this checkout's, so before and after come from one run.
Under root it also times each container pod's inbound firewall hook alone (``pod_firewall.py``,
as the OCI runtime runs it, on a real network namespace): that part of a container pod's start.
Prints tables and writes benchmarks/results/pods.json.

    PODRUN_IMAGE_STORE=... python benchmarks/pods.py [--quick] [--calls-only] [--cold 10] [--warm 30]
        [--arch host|arm64|all] [--driver process|container|all] [--baseline /path/to/checkout] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
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

driver, arch, cold_n, warm_n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def inc(x):
    return x + 1

if driver == "process":
    podrun.configure("local", driver="process")  # as a user configures it; pods run on this Python
    image = None
else:
    podrun.configure(LocalPlatform(driver="container", arch=arch))
    image = sys.argv[5]

def timed(fn, n):
    started = time.perf_counter()
    assert fn.remote(n).get(timeout=600) == n + 1
    return time.perf_counter() - started

fn = podrun.remote(inc, image=image, max_duration=5, pod_name="job")
first = timed(fn, 1)
cold = [timed(fn, n) for n in range(cold_n)]
warm_fn = fn.options(keep_warm=60, pod_name="warm")
timed(warm_fn, 0)  # starts the warm pod
warm = [timed(warm_fn, n) for n in range(warm_n)]
print(json.dumps([first, cold, warm]))
"""


def end_to_end(driver: str, arch: str, cold: int, warm: int, home: Path, src: Path | None = None
               ) -> tuple[float, list[float], list[float]]:
    """One remote call end to end, in a client process of its own (a fresh PODRUN_HOME), of this
    checkout or of ``src``'s: the first call, ``cold`` on cold pods, ``warm`` on a warm one (seconds)."""
    import json
    import subprocess

    home.mkdir()
    env = {**os.environ, "PODRUN_HOME": str(home)}
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")  # ahead of this checkout's editable install
    try:
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", JOB, driver, arch, str(cold), str(warm), IMAGE],
                              capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
    finally:
        from podrun.platform.local import LocalPlatform

        LocalPlatform(home / "local").shutdown()
    first, cold_s, warm_s = json.loads(done.stdout.strip().splitlines()[-1])
    return first, cold_s, warm_s


def pool_submit(repeat: int) -> list[float]:
    """``ProcessPoolExecutor.submit(inc, n).result()`` on a warm pool, a worker per core (seconds)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(os.cpu_count()) as pool:
        pool.submit(inc, 0).result()
        samples = []
        for n in range(repeat):
            started = time.perf_counter()
            pool.submit(inc, n).result()
            samples.append(time.perf_counter() - started)
    return samples


def quantiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) of ``samples``."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke run)")
    parser.add_argument("--calls-only", action="store_true", help="only the calls end to end (no pod start, no image sizes)")
    parser.add_argument("--cold", type=int, help="cold calls per run (default 10; --quick 3)")
    parser.add_argument("--warm", type=int, help="warm calls per run (default 30; --quick 9)")
    parser.add_argument("--arch", choices=("host", "arm64", "all"), default="all", help="container pods' architectures")
    parser.add_argument("--baseline", type=Path, help="a podrun checkout to measure too (e.g. of main)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the calls are spread over")
    parser.add_argument("--driver", choices=("process", "container", "all"), default="all",
                        help="the drivers whose calls are measured (default all that work here)")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    cold = args.cold or (3 if args.quick else 10)
    warm = args.warm or (9 if args.quick else 30)

    from podrun.platform.local import LocalPlatform
    from podrun.platform.local import container as _container
    from podrun.platform.local.images import ImageStore, host_arch, stock_ref

    store = ImageStore()  # the real store (PODRUN_IMAGE_STORE or $PODRUN_HOME/images), before the private home
    os.environ["PODRUN_IMAGE_STORE"] = str(store.root)
    archs = {"host": [host_arch()], "arm64": ["arm64"], "all": [host_arch(), "arm64"]}[args.arch]
    containers = _container.available(store)
    results: dict = {"pod_start_s": {}, "images": {}, "call_s": {}}
    with private_home() as home:
        if not args.calls_only:
            rows = []
            setups = [("process", "host", {})]
            if containers:
                setups += [("container", arch, {"arch": arch}) for arch in archs if store.inspect(stock_ref(IMAGE, arch))]
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
            if os.geteuid() == 0 and containers:
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

        checkouts: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.baseline:
            if not (args.baseline / "src" / "podrun" / "__init__.py").is_file():
                raise SystemExit(f"--baseline {args.baseline}: no podrun checkout there (src/podrun is missing)")
            checkouts.append((f"baseline {args.baseline}", args.baseline.resolve()))
        jobs = [("process", host_arch())] if args.driver != "container" else []
        if containers and args.driver != "process":
            jobs += [("container", arch) for arch in archs if store.inspect(stock_ref(IMAGE, arch))]
        submit_p50, submit_p95 = quantiles(pool_submit(max(200, warm)))
        results["pool_submit_s"] = {"p50": submit_p50, "p95": submit_p95}
        call_rows = []
        for driver, arch in jobs:
            samples: dict[str, tuple[list[float], list[float], list[float]]] = {name: ([], [], []) for name, _ in checkouts}
            for number in range(args.rounds):  # interleaved rounds: a load that drifts weighs on every checkout alike
                order = checkouts if number % 2 == 0 else checkouts[::-1]
                for name, src in order:
                    tag = f"{'base' if src else 'this'}-{number}"
                    first, cold_s, warm_s = end_to_end(driver, arch, math.ceil(cold / args.rounds), math.ceil(warm / args.rounds),
                                                       home / f"job-{driver}-{arch}-{tag}", src)
                    for into, got in zip(samples[name], ([first], cold_s, warm_s), strict=True):
                        into.extend(got)
            for name, _ in checkouts:
                firsts, cold_s, warm_s = samples[name]
                (cold50, cold95), (warm50, warm95) = quantiles(cold_s), quantiles(warm_s)
                results["call_s"][f"{driver}/{arch}/{name}"] = {"first": firsts, "cold": cold_s, "warm": warm_s,
                                                                "cold_p50": cold50, "cold_p95": cold95,
                                                                "warm_p50": warm50, "warm_p95": warm95}
                call_rows.append([driver, arch, name, statistics.median(firsts) * 1e3, len(cold_s), cold50 * 1e3,
                                  cold95 * 1e3, len(warm_s), warm50 * 1e3, warm95 * 1e3, warm50 / submit_p50])
        print_table(f"one remote call end to end (ms; {args.rounds} interleaved rounds; ProcessPoolExecutor.submit().result() "
                    f"p50 {submit_p50 * 1e3:.3f} ms, p95 {submit_p95 * 1e3:.3f} ms)",
                    ["driver", "arch", "run", "first (runtime travels)", "cold n", "cold p50", "cold p95", "warm n",
                     "warm p50", "warm p95", "warm p50 / submit p50"], call_rows)
    write_json("pods", results)


if __name__ == "__main__":
    main()
