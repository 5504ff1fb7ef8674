"""podrun against its peers, side by side in one run: ProcessPoolExecutor, loky, Dask, Ray.

Every system runs the same workloads on this machine's cores (podrun on the local platform,
process driver, so pods are plain processes of this machine as the peers' workers are):

- one trivial call ``x + 1``: latency p50/p95 cold (a fresh pod / pool / cluster each time,
  started and called once) and warm (a running pod / pool / cluster);
- map throughput at 1k/10k/100k trivial calls, each system's own bulk idiom: ``f.map`` for
  podrun, ``map`` for the pools (``ProcessPoolExecutor.map`` with the best chunksize of a small
  sweep, and one ``submit`` per call), ``client.map`` + ``gather`` for Dask, one ``.remote``
  per call for Ray;
- a CPU-bound map (200 calls of ~20 ms of pure Python, calibrated here), against the ideal
  ``calls x time / cores``;
- one shared 50 MB array passed to 100 calls, each system's way of sharing it: a shared
  keyword of ``f.map`` (podrun: pickled and sent once), ``client.scatter`` (Dask), ``ray.put``
  (Ray); the pools have none, so it travels with every call (or chunk).

Interleaved: each round runs every system once, in a rotated order, each in a fresh child
process of this one; figures are min/median over the rounds (latencies pooled over them).
A system whose estimated time for a map size exceeds the budget (60 s; --quick 5 s) skips it,
saying so (the first round decides for the others); a peer that cannot be imported is skipped
with a note (``make bench`` installs them from requirements/bench.lock).

Peak RSS, read from /proc by this (parent) process, not by the measured one: per workload it
resets the high-water marks (``clear_refs``), then samples every 50 ms. "client" is the child's
own peak (``VmHWM``); "workers" is the most, over the samples, of the summed peaks of every
other process alive at once (pods and their supervisors, pool workers, Dask's scheduler, nannies
and workers, Ray's GCS, raylet and workers: this process is their subreaper, so none escapes).

    python benchmarks/peers.py [--quick] [--systems podrun,pool,...] [--sizes 1000,10000]

Prints the figures and their ratios to ProcessPoolExecutor, writes benchmarks/results/peers.json.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import importlib.util
import inspect
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, print_table, private_home, write_json  # noqa: E402
from _proctree import Memory, become_subreaper, descendants, kill_leftovers  # noqa: E402

CORES = os.cpu_count() or 1
TIMEOUT = 600.0  # seconds any one result may take


# -- the workloads -------------------------------------------------------------------------
def inc(x: int) -> int:
    return x + 1


def spin(iterations: int) -> int:
    """Pure-Python CPU work: no I/O, no GIL release."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def pick(i: int, arr: Any) -> int:
    return int(arr[i])


# -- the systems ---------------------------------------------------------------------------
class System(abc.ABC):
    """One way of running calls. ``cold_call`` starts a fresh instance and calls it once (the
    last one started stays up for the warm workloads)."""

    started = False

    def start(self) -> None:
        self._start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            self._stop()
            self.started = False

    @abc.abstractmethod
    def _start(self) -> None:
        """Each system's own."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Each system's own."""

    @abc.abstractmethod
    def call(self) -> None:
        """Each system's own."""

    @abc.abstractmethod
    def map(self, n: int, chunksize: int | None) -> None:
        """Each system's own."""

    @abc.abstractmethod
    def cpu(self, calls: int, iterations: int) -> None:
        """Each system's own."""

    @abc.abstractmethod
    def shared(self, arr: Any, calls: int) -> None:
        """Each system's own."""

    def cold_call(self) -> None:
        self.stop()
        self.start()
        self.call()


class Podrun(System):
    """``@podrun.remote`` on the local platform's process driver: cold calls each start a pod
    (``keep_warm=0``), the rest go to a warm pod (``keep_warm``), stopped at the end."""

    def __init__(self, workers: int | None) -> None:
        import podrun

        podrun.configure("local", driver="process")
        extra = {} if workers is None else {"workers": workers}
        tag = "default" if workers is None else f"w{workers}"
        self.podrun = podrun
        self.warm_name = f"bench-{tag}-warm"
        self.cold = podrun.remote(inc, max_duration=10, pod_name=f"bench-{tag}-cold", **extra)
        self.fns = {fn.__name__: podrun.remote(fn, max_duration=10, pod_name=self.warm_name, keep_warm=120, **extra)
                    for fn in (inc, spin, pick)}
        self.cold.remote(0).get(timeout=TIMEOUT)  # the runtime and the function reach the cold volume once

    def cold_call(self) -> None:
        self.cold.remote(1).get(timeout=TIMEOUT)

    def _start(self) -> None:
        self.fns["inc"].remote(0).get(timeout=TIMEOUT)

    def _stop(self) -> None:
        self.podrun.Runner(self.warm_name).close(keep_state=True)  # stops the warm pod; the volume stays

    def call(self) -> None:
        self.fns["inc"].remote(1).get(timeout=TIMEOUT)

    def map(self, n: int, chunksize: int | None) -> None:
        self.podrun.get(self.fns["inc"].map(range(n)), timeout=TIMEOUT)

    def cpu(self, calls: int, iterations: int) -> None:
        self.podrun.get(self.fns["spin"].map([iterations] * calls), timeout=TIMEOUT)

    def shared(self, arr: Any, calls: int) -> None:
        self.podrun.get(self.fns["pick"].map(range(calls), arr=arr), timeout=TIMEOUT)


class Pool(System):
    """``concurrent.futures.ProcessPoolExecutor`` with a worker per core; ``per_call``: one
    ``submit`` per call, else ``map`` (trivial maps: the chunksize given; the CPU map: chunksize
    1, so a busy core does not hold back half the calls; the shared array: one chunk per
    worker, so it is pickled once per worker, not once per call)."""

    def __init__(self, per_call: bool) -> None:
        self.per_call = per_call
        self.pool: Any = None

    def _start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(CORES)

    def _stop(self) -> None:
        self.pool.shutdown(wait=True)

    def call(self) -> None:
        self.pool.submit(inc, 1).result(timeout=TIMEOUT)

    def _run(self, fn: Callable[..., Any], items: list[Any] | range, chunksize: int, **shared: Any) -> None:
        if self.per_call:
            for future in [self.pool.submit(fn, item, **shared) for item in items]:
                future.result(timeout=TIMEOUT)
        else:
            target = _Bound(fn, shared) if shared else fn
            for _ in self.pool.map(target, items, chunksize=chunksize, timeout=TIMEOUT):
                pass

    def map(self, n: int, chunksize: int | None) -> None:
        self._run(inc, range(n), chunksize or 1)

    def cpu(self, calls: int, iterations: int) -> None:
        self._run(spin, [iterations] * calls, 1)

    def shared(self, arr: Any, calls: int) -> None:
        self._run(pick, range(calls), math.ceil(calls / CORES), arr=arr)


class _Bound:
    """``fn`` with keyword arguments, picklable by reference (``functools.partial`` of a
    ``__main__`` function is too, but says less)."""

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, item: Any) -> Any:
        return self.fn(item, **self.kwargs)


class Loky(Pool):
    """loky's ProcessPoolExecutor (cloudpickle, spawned workers): ``map`` with its default
    chunksize of 1; the shared array travels with each call."""

    def __init__(self) -> None:
        super().__init__(per_call=False)

    def _start(self) -> None:
        import loky

        self.pool = loky.ProcessPoolExecutor(CORES)

    def map(self, n: int, chunksize: int | None) -> None:
        self._run(inc, range(n), 1)

    def cpu(self, calls: int, iterations: int) -> None:
        self._run(spin, [iterations] * calls, 1)

    def shared(self, arr: Any, calls: int) -> None:
        self._run(pick, range(calls), 1, arr=arr)


class Dask(System):
    """Dask distributed: a ``LocalCluster`` of one single-threaded worker process per core on
    127.0.0.1, no dashboard."""

    def __init__(self) -> None:
        self.cluster: Any = None
        self.client: Any = None

    def _start(self) -> None:
        import logging

        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=CORES, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=None, silence_logs=logging.ERROR)
        self.client = Client(self.cluster)

    def _stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def call(self) -> None:
        self.client.submit(inc, 1, pure=False).result(timeout=TIMEOUT)

    def map(self, n: int, chunksize: int | None) -> None:
        self.client.gather(self.client.map(inc, range(n), pure=False))

    def cpu(self, calls: int, iterations: int) -> None:
        self.client.gather(self.client.map(spin, [iterations] * calls, pure=False))

    def shared(self, arr: Any, calls: int) -> None:
        scattered = self.client.scatter(arr, broadcast=True)
        self.client.gather(self.client.map(pick, range(calls), arr=scattered, pure=False))


class Ray(System):
    """Ray local: ``ray.init`` with a CPU per core, on 127.0.0.1, no dashboard, its temporary
    files in this run's folder."""

    def __init__(self) -> None:
        import ray

        self.ray = ray
        self.fns = {fn.__name__: ray.remote(fn) for fn in (inc, spin, pick)}

    def _start(self) -> None:
        self.ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20,
                      _node_ip_address="127.0.0.1", _temp_dir=os.path.join(os.environ["HOME"], "ray"))

    def _stop(self) -> None:
        self.ray.shutdown()

    def call(self) -> None:
        self.ray.get(self.fns["inc"].remote(1), timeout=TIMEOUT)

    def map(self, n: int, chunksize: int | None) -> None:
        self.ray.get([self.fns["inc"].remote(i) for i in range(n)], timeout=TIMEOUT)

    def cpu(self, calls: int, iterations: int) -> None:
        self.ray.get([self.fns["spin"].remote(iterations) for _ in range(calls)], timeout=TIMEOUT)

    def shared(self, arr: Any, calls: int) -> None:
        ref = self.ray.put(arr)
        self.ray.get([self.fns["pick"].remote(i, ref) for i in range(calls)], timeout=TIMEOUT)


# What each row is: label, the module it needs, how to make it in the child.
SYSTEMS: dict[str, tuple[str, str, Callable[[], System]]] = {
    "podrun": ("podrun", "podrun", lambda: Podrun(None)),
    "podrun-w1": ("podrun workers=1", "podrun", lambda: Podrun(1)),
    f"podrun-w{CORES}": (f"podrun workers={CORES}", "podrun", lambda: Podrun(CORES)),
    "pool-submit": ("ProcessPoolExecutor.submit", "concurrent.futures", lambda: Pool(per_call=True)),
    "pool-map": ("ProcessPoolExecutor.map", "concurrent.futures", lambda: Pool(per_call=False)),
    "loky": ("loky", "loky", Loky),
    "dask": ("Dask LocalCluster", "distributed", Dask),
    "ray": ("Ray local", "ray", Ray),
}
GROUPS = {"podrun": ["podrun", "podrun-w1", f"podrun-w{CORES}"], "pool": ["pool-submit", "pool-map"]}


def workers_supported() -> bool:
    """Whether this podrun's ``@podrun.remote`` takes ``workers=`` (calls in parallel in a pod)."""
    import podrun

    return "workers" in inspect.signature(podrun.remote).parameters


# -- the child: one system, one round --------------------------------------------------------
class Control:
    """The child's side of the handshake that lets the parent measure memory per workload."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        for fd in (fd_in, fd_out):
            os.set_inheritable(fd, False)  # no pod, worker or daemon of a peer holds the channel open
        self.reader = os.fdopen(fd_in, "r")
        self.writer = os.fdopen(fd_out, "w")

    def say(self, *words: Any) -> None:
        self.writer.write(" ".join(str(w) for w in words) + "\n")
        self.writer.flush()
        if self.reader.readline().strip() != "ok":
            raise SystemExit("the parent stopped answering")

    def workload(self, label: str) -> _Span:
        return _Span(self, label)


class _Span:
    def __init__(self, control: Control, label: str) -> None:
        self.control, self.label = control, label

    def __enter__(self) -> None:
        self.control.say("begin", self.label)

    def __exit__(self, *exc: object) -> None:
        self.control.say("end", self.label)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def samples(fn: Callable[[], Any], count: int, budget: float) -> list[float]:
    """Up to ``count`` timings of ``fn``, fewer once ``budget`` seconds are spent (at least one)."""
    out: list[float] = []
    spent = 0.0
    while len(out) < count and (not out or spent < budget):
        out.append(timed(fn))
        spent += out[-1]
    return out


def sweep_chunksize(system: System, n: int) -> tuple[int, dict[str, float]]:
    """The fastest chunksize for ``n`` trivial calls among a few (1 only where it is affordable)."""
    candidates = sorted({c for c in (1, 16, 256, 4096, math.ceil(n / (4 * CORES))) if c <= n and (c > 1 or n <= 10_000)})
    tried = {str(c): timed(lambda c=c: system.map(n, c)) for c in candidates}
    best = min(tried, key=tried.__getitem__)
    return int(best), tried


def run_child(name: str, plan: dict[str, Any], control: Control) -> dict[str, Any]:
    system = SYSTEMS[name][2]()
    out: dict[str, Any] = {"map": {}}
    try:
        if name != "pool-map":  # its calls are ProcessPoolExecutor.submit's
            with control.workload("cold"):
                out["cold_s"] = samples(system.cold_call, plan["cold_samples"], plan["cold_budget_s"])
        if not system.started:
            system.start()
        system.call()  # warm: the workers exist
        if name != "pool-map":
            with control.workload("warm"):
                out["warm_s"] = samples(system.call, plan["warm_samples"], plan["warm_budget_s"])
        previous: tuple[int, float] | None = None
        for n in plan["sizes"]:
            skip = plan["skip"].get(str(n))
            estimate = n * previous[1] / previous[0] if previous is not None and not plan["decided"] else 0.0
            if skip is None and estimate > plan["map_budget_s"]:
                skip = f"skipped: est. {estimate:.0f} s (over the {plan['map_budget_s']:g} s budget)"
            if skip:
                out["map"][str(n)] = {"skipped": skip}
                continue
            entry: dict[str, Any] = {}
            chunksize = plan["chunksize"].get(str(n))
            if name == "pool-map" and chunksize is None:
                chunksize, entry["sweep_s"] = sweep_chunksize(system, n)
            with control.workload(f"map-{n}"):
                runs = samples(lambda n=n, c=chunksize: system.map(n, c), 3, plan["map_repeat_budget_s"])
            entry.update(s=min(runs), chunksize=chunksize)
            out["map"][str(n)] = entry
            previous = (n, min(runs))
        with control.workload("cpu"):
            out["cpu_s"] = timed(lambda: system.cpu(plan["cpu_calls"], plan["spin_iterations"]))
        import numpy as np

        arr = np.frombuffer(os.urandom(plan["shared_mb"] * 2**20), dtype=np.uint8)  # new bytes each round: never cached
        with control.workload("shared"):
            out["shared_s"] = timed(lambda: system.shared(arr, plan["shared_calls"]))
    finally:
        system.stop()
    return out


# -- the parent: rounds, memory, tables ------------------------------------------------------
def spawn(name: str, plan: dict[str, Any], home: Path, timeout: float) -> dict[str, Any]:
    """Run one system's round in a child; returns its figures with the memory of each workload."""
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODRUN_") or k == "PODRUN_HOME"}  # defaults
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    log = home / f"{name}.log"
    with open(log, "w") as sink:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", name, "--plan", json.dumps(plan),
             "--control", f"{to_child_r},{from_child_w}"],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=env,
        )
    os.close(to_child_r)
    os.close(from_child_w)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        for pid in [child.pid, *descendants(child.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True  # a run that is stopped does not wait for it
    watchdog.start()
    memory, rss, result = Memory(child.pid), {}, None
    with os.fdopen(from_child_r) as reader, os.fdopen(to_child_w, "w") as writer:
        for line in reader:
            word, _, rest = line.strip().partition(" ")
            if word == "begin":
                memory.begin()
            elif word == "end":
                rss[rest] = memory.end()
            elif word == "result":
                result = json.loads(rest)
            with contextlib.suppress(BrokenPipeError):  # a child that died mid-word: its exit code says so
                writer.write("ok\n")
                writer.flush()
    code = child.wait()
    watchdog.cancel()
    kill_leftovers()
    if code != 0 or result is None:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        return {"error": f"exit {code}" + (f" (killed after {timeout:g} s)" if timed_out.is_set() else ""), "log_tail": tail}
    result["rss"] = rss
    return result


def calibrate(target_s: float) -> dict[str, float]:
    """Iterations of ``spin`` that take ``target_s`` here (the fastest of a few tries)."""
    probe = 200_000
    best = min(timed(lambda: spin(probe)) for _ in range(5))
    iterations = max(1, round(probe * target_s / best))
    return {"spin_iterations": iterations, "spin_s": min(timed(lambda: spin(iterations)) for _ in range(5))}


def p(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def aggregate(rounds: list[dict[str, Any]], plan: dict[str, Any], cores: int) -> dict[str, Any]:
    """One system's figures over its rounds."""
    good = [r for r in rounds if "error" not in r]
    out: dict[str, Any] = {"rounds": len(good)}
    if len(good) < len(rounds):
        out["errors"] = [r for r in rounds if "error" in r]
    if not good:
        return out
    for key in ("cold_s", "warm_s"):
        pooled = [s for r in good for s in r.get(key, [])]
        if pooled:
            out[key] = {"p50": p(pooled, 0.5), "p95": p(pooled, 0.95), "samples": pooled}
    out["map"] = {}
    for n in plan["sizes"]:
        runs = [r["map"][str(n)] for r in good if str(n) in r["map"]]
        timings = [e["s"] for e in runs if "s" in e]
        if timings:
            out["map"][str(n)] = {"min_s": min(timings), "median_s": statistics.median(timings),
                                  "calls_per_s": n / min(timings), "median_calls_per_s": n / statistics.median(timings),
                                  "chunksize": runs[0].get("chunksize"),
                                  **({"sweep_s": runs[0]["sweep_s"]} if "sweep_s" in runs[0] else {})}
        elif runs:
            out["map"][str(n)] = {"skipped": runs[0]["skipped"]}
    ideal = plan["cpu_calls"] * plan["spin_s"] / cores
    for key in ("cpu_s", "shared_s"):
        timings = [r[key] for r in good]
        out[key] = {"min": min(timings), "median": statistics.median(timings)}
    out["cpu_s"]["x_ideal"] = out["cpu_s"]["min"] / ideal
    out["rss_mb"] = {label: {side: max(r["rss"][label][side] for r in good if label in r["rss"])
                             for side in ("client_mb", "workers_mb")}
                     for label in good[0]["rss"]}
    return out


def columns(sizes: list[int]) -> list[tuple[str, str, str]]:
    """(key, header, kind) of each figure. Ratios by kind: ``latency`` ÷ ProcessPoolExecutor.submit's
    and ``memory`` ÷ ProcessPoolExecutor.map's (lower is better); ``speed`` (calls/s) ÷ the map's and
    ``seconds`` as the map's ÷ the row's (speed, higher is better); ``ratio`` is one already."""
    return [("cold_p50_ms", "cold p50 ms", "latency"), ("cold_p95_ms", "cold p95 ms", "latency"),
            ("warm_p50_ms", "warm p50 ms", "latency"), ("warm_p95_ms", "warm p95 ms", "latency"),
            *((f"map_{n}_calls_per_s", f"map {n:,} /s", "speed") for n in sizes),
            ("cpu_s", "cpu s", "seconds"), ("cpu_x_ideal", "cpu x ideal", "ratio"), ("shared_s", "shared s", "seconds"),
            ("client_peak_mb", "client MB", "memory"), ("workers_peak_mb", "workers MB", "memory")]


def figures(entry: dict[str, Any], sizes: list[int]) -> dict[str, float | str]:
    """One row of raw figures: latencies in ms, maps in calls/s (best round), CPU and shared in
    s (best round), peaks in MB (highest of every workload and round)."""
    if "map" not in entry:
        return {}
    row: dict[str, float | str] = {}
    for key in ("cold", "warm"):
        if f"{key}_s" in entry:
            row[f"{key}_p50_ms"] = entry[f"{key}_s"]["p50"] * 1e3
            row[f"{key}_p95_ms"] = entry[f"{key}_s"]["p95"] * 1e3
    for n in sizes:
        cell = entry["map"].get(str(n), {})
        row[f"map_{n}_calls_per_s"] = cell.get("calls_per_s", "skipped" if "skipped" in cell else "-")
    rss = entry["rss_mb"].values()
    row.update(cpu_s=entry["cpu_s"]["min"], cpu_x_ideal=entry["cpu_s"]["x_ideal"], shared_s=entry["shared_s"]["min"],
               client_peak_mb=max(r["client_mb"] for r in rss), workers_peak_mb=max(r["workers_mb"] for r in rss))
    return row


def ratios(row: dict[str, Any], submit: dict[str, Any], best: dict[str, Any], sizes: list[int]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for key, _, kind in columns(sizes):
        value, base = row.get(key, "-"), (submit if kind == "latency" else best).get(key)
        if isinstance(value, str) or kind == "ratio":
            out[key] = value
        elif not isinstance(base, float | int) or not base:
            out[key] = "-"
        else:
            out[key] = base / value if kind == "seconds" else value / base
    return out


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rotate(items: list[str], by: int) -> Iterator[str]:
    for i in range(len(items)):
        yield items[(i + by) % len(items)]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, smaller sizes (about 2 minutes)")
    parser.add_argument("--systems", default="podrun,pool,loky,dask,ray",
                        help="comma-separated: podrun, pool, loky, dask, ray (or single rows: pool-map, podrun-w1, ...)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--sizes", help="map sizes, comma-separated (default 1000,10000,100000; --quick 1000,10000)")
    parser.add_argument("--cpu-calls", type=int)
    parser.add_argument("--shared-mb", type=int)
    parser.add_argument("--shared-calls", type=int)
    parser.add_argument("--json", type=Path, help="where to write the JSON (default benchmarks/results/peers.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    return parser.parse_args()


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    return {
        "mode": "quick" if quick else "full",
        "rounds": args.rounds or (1 if quick else 3),
        "sizes": sizes,
        "cold_samples": 3 if quick else 5, "cold_budget_s": 3.0 if quick else 6.0,
        "warm_samples": 20 if quick else 50, "warm_budget_s": 1.0 if quick else 3.0,
        "map_budget_s": 5.0 if quick else 60.0, "map_repeat_budget_s": 0.5 if quick else 2.0,
        "cpu_calls": args.cpu_calls or (40 if quick else 200),
        "shared_mb": args.shared_mb or (10 if quick else 50),
        "shared_calls": args.shared_calls or (20 if quick else 100),
        "skip": {}, "chunksize": {}, "decided": False,
    }


def select(spec: str) -> tuple[list[str], dict[str, str]]:
    """The rows to run, and a note for each row that cannot run here."""
    names: list[str] = []
    for word in spec.split(","):
        word = word.strip()
        group = GROUPS.get(word, [word])
        unknown = [n for n in group if n not in SYSTEMS]
        if unknown:
            raise SystemExit(f"unknown system {unknown[0]!r}: choose from {', '.join([*GROUPS, *SYSTEMS])}")
        names += [n for n in group if n not in names]
    has_workers = workers_supported()
    if has_workers and "podrun" in names and len(names) > 1:
        names.remove("podrun")  # its default is a worker per core: the workers= rows say it all
    notes: dict[str, str] = {}
    for name in names:
        module = SYSTEMS[name][1]
        if name.startswith("podrun-w") and not has_workers:
            notes[name] = "n/a (workers= not available)"
        elif importlib.util.find_spec(module) is None:
            notes[name] = f"skipped: {module} is not installed (make bench installs requirements/bench.lock)"
    return names, notes


def main() -> None:
    args = parse()
    if args.child:
        fd_in, fd_out = (int(x) for x in args.control.split(","))
        control = Control(fd_in, fd_out)
        control.say("result", json.dumps(run_child(args.child, json.loads(args.plan), control)))
        return
    plan = make_plan(args)
    names, notes = select(args.systems)
    running = [n for n in names if n not in notes]
    plan.update(calibrate(0.020))
    become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its pods and peers
    partial = (args.json or RESULTS / "peers.json").with_suffix(".partial.json")  # what a killed run measured
    partial.parent.mkdir(exist_ok=True)
    per_system: dict[str, list[dict[str, Any]]] = {n: [] for n in running}
    plan["load_before"] = os.getloadavg()  # other work on the machine skews every figure: say how much there was
    started, commit = time.monotonic(), git_commit()  # the code that runs, not the tree at the end
    # Peers' own files (Ray's sockets: a short path) in a folder of this run, as their HOME.
    with private_home(), tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        for r in range(plan["rounds"]):
            for name in rotate(running, r):
                own = {**plan, **per_system_plan(per_system[name])}
                print(f"round {r + 1}/{plan['rounds']}: {SYSTEMS[name][0]} ...", file=sys.stderr, flush=True)
                load = os.getloadavg()[0]
                per_system[name].append({**spawn(name, own, Path(scratch), timeout=900.0), "load_1min": load})
                partial.write_text(json.dumps({"plan": plan, "names": names, "notes": notes, "rounds": per_system}))
    plan["load_after"] = os.getloadavg()
    summary = {n: aggregate(per_system[n], plan, CORES) for n in running}
    report(names, notes, summary, plan, time.monotonic() - started, args.json, commit)
    partial.unlink()


def per_system_plan(done: list[dict[str, Any]]) -> dict[str, Any]:
    """What the first good round decided holds for the later ones: skipped sizes and chunksizes."""
    first = next((r for r in done if "error" not in r), None)
    if first is None:
        return {}
    return {"decided": True, "skip": {n: e["skipped"] for n, e in first["map"].items() if "skipped" in e},
            "chunksize": {n: e["chunksize"] for n, e in first["map"].items() if e.get("chunksize")}}


def report(names: list[str], notes: dict[str, str], summary: dict[str, Any], plan: dict[str, Any], wall: float,
           path: Path | None, commit: str) -> None:
    sizes = plan["sizes"]
    cols = columns(sizes)
    header = ["system", *(h for _, h, _ in cols)]
    raw = {n: figures(summary[n], sizes) for n in summary}

    def cells(row: dict[str, Any], name: str) -> list[Any]:
        fill = "n/a" if name in notes else "failed" if not row else "-"
        return [SYSTEMS[name][0], *(row.get(key, fill) for key, _, _ in cols)]

    print_table(f"podrun and its peers: {CORES} cores, {plan['mode']} run, best of {plan['rounds']} round(s) "
                f"(latency: all rounds' samples); cpu: {plan['cpu_calls']} x {plan['spin_s'] * 1e3:.1f} ms; "
                f"shared: {plan['shared_mb']} MB to {plan['shared_calls']} calls",
                header, [cells(raw.get(n, {}), n) for n in names])
    submit, best = raw.get("pool-submit"), raw.get("pool-map")
    if submit and best:
        for n in raw:
            summary[n]["ratios"] = ratios(raw[n], submit, best, sizes)
        print_table("ratios to ProcessPoolExecutor: latency ÷ submit's and memory ÷ map's (lower is better); "
                    "maps, cpu and shared: speed ÷ map's (higher is better)",
                    header, [cells(summary[n]["ratios"], n) for n in raw])
        top = max((n for n in sizes if isinstance(submit.get(f"map_{n}_calls_per_s"), float)), default=None)
        if top is not None:
            key = f"map_{top}_calls_per_s"
            against = {n: raw[n][key] / submit[key] for n in raw if isinstance(raw[n].get(key), float)}
            for n, value in against.items():
                summary[n]["ratios"][f"map_{top}_vs_submit"] = value
            print(f"\nmap of {top:,} as speed ÷ one ProcessPoolExecutor.submit per call: "
                  + ", ".join(f"{SYSTEMS[n][0]} {v:.3g}x" for n, v in against.items()))
    for n, note in notes.items():
        print(f"{SYSTEMS[n][0]}: {note}")
    for n in summary:
        for size, cell in summary[n].get("map", {}).items():
            if "skipped" in cell:
                print(f"{SYSTEMS[n][0]}, map of {int(size):,}: {cell['skipped']}")
    for n in summary:
        for error in summary[n].get("errors", []):
            print(f"{SYSTEMS[n][0]} failed a round: {error['error']}; its log ends:\n  " + "\n  ".join(error["log_tail"]))
    result: dict[str, Any] = {"commit": commit, "plan": plan, "wall_s": wall, "systems": {}}
    for n in names:
        result["systems"][n] = {"label": SYSTEMS[n][0], **({"note": notes[n]} if n in notes else
                                                           {"figures": raw[n], **summary[n]})}
    print(f"\nran in {wall:.0f} s, commit {result['commit']}; load average before {plan['load_before'][0]:.1f}, "
          f"after {plan['load_after'][0]:.1f} (1 min)")
    write_json("peers", result, path)


if __name__ == "__main__":
    main()
