"""Client processes for the multi-client tests: each runs ``CLIENT``, a podrun program whose
calls on pod_name ``shared`` append ``<tag>-<index>`` to a ledger in the volume (proof that
each ran once), and prints its outcomes as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from podrun.client import config
from podrun.client.pod_lease import Holder, PodLease
from podrun.errors import NotFound

ROOT = Path(__file__).resolve().parents[1]
POD = "shared"

CLIENT = r'''
import json, os, sys, time
import podrun

tag, count = sys.argv[1], int(sys.argv[2])
max_duration, keep_warm, nap = (float(a) for a in sys.argv[3:6])

@podrun.remote(pod_name="shared", max_duration=max_duration, keep_warm=keep_warm)
def call(tag, index, nap):
    time.sleep(nap)
    with open(podrun.data_dir() / "ledger.txt", "a") as ledger:
        ledger.write(f"{tag}-{index}\n")
    return [tag, index]

futures = call.map([tag] * count, range(count), [nap] * count)
print("SENT", flush=True)
if os.environ.get("CLIENT_FAILS"):  # the program fails once its job's pod runs, leaving the job running there
    platform = podrun.client.config.current_platform()

    def running():
        try:
            return platform.pod_status("shared").phase == "running"
        except podrun.NotFound:  # not started yet
            return False

    while futures[0].job is None or not running():
        time.sleep(0.02)
    raise RuntimeError("the program fails while its job runs")
outcome = {"ok": [], "failed": []}
for future in futures:
    try:
        outcome["ok"].append(future.get(timeout=600))
    except Exception as exc:
        outcome["failed"].append(f"{type(exc).__name__}: {exc}")
print(json.dumps(outcome), flush=True)
'''


class Clients:
    """Client processes of one test; every one is killed (by its pid) when the test ends."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.script = workdir / "client.py"
        self.script.write_text(CLIENT)
        self.env = {**os.environ, **(env or {})}
        self.procs: list[subprocess.Popen[str]] = []
        self.stderr: dict[int, str] = {}

    def start(self, tag: str, count: int, *, max_duration: float = 2, keep_warm: float = 0, nap: float = 0.1,
              **env: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-W", "ignore", str(self.script), tag, str(count), str(max_duration), str(keep_warm), str(nap)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**self.env, **env})
        self.procs.append(proc)
        return proc

    def outcome(self, proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, list]:
        """The client's outcomes (its stderr is kept in ``self.stderr[pid]``)."""
        out, err = proc.communicate(timeout=timeout)
        self.stderr[proc.pid] = err
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert proc.returncode == 0 and lines, f"client failed ({proc.returncode}):\n{out}\n{err}"
        return json.loads(lines[-1])

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ledger() -> Counter[str]:
    """The ``<tag>-<index>`` lines the calls wrote, counted."""
    try:
        text = config.current_platform().downlink("ledger.txt", POD).decode()
    except NotFound:
        return Counter()
    return Counter(text.split())


def expect(*runs: tuple[str, int]) -> Counter[str]:
    return Counter(f"{tag}-{i}" for tag, count in runs for i in range(count))


def wait_holder(pid: int, ttl: float | None = None) -> Holder:
    """Until the client of ``pid`` holds the pod_name's lease; its holder entry."""
    lease = PodLease.on(config.current_platform(), POD, ttl=ttl)
    for _ in range(1200):
        holders = [h for h in lease.read()[0].holders if h.client.endswith(f"pid {pid}")]
        if holders:
            return holders[0]
        time.sleep(0.05)
    raise AssertionError(f"client pid {pid} never held the lease of {POD!r}")


def wait_sent(proc: subprocess.Popen[str]) -> None:
    """Until the client printed SENT (its calls are in its lane, about to be a job)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "SENT", line
