"""Run, replace, stop and report the pods of a LocalPlatform.

Why a module of its own: a pod's life is the supervisor's (``supervisor.py``), started here
detached so the pod outlives the client as on CG2, with a fixed environment and ``python -I -S``
(nothing of the caller's environment, nor of a pod's envs, reaches the process that supervises
as root). A new run of a pod_name replaces its pod under a file lock (two processes or two
emulator requests replace each other in turn); a stop is graceful (SIGTERM, the grace period,
SIGKILL, by the supervisor); a supervisor that died is reported ``Lost`` rather than running
forever. What runs in the pod is the platform's driver's business (``LocalPlatform.pod_process``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest, NotFound
from ...files import atomic_write, private_dirs
from ..types import PodSpec, PodState
from . import container as _container
from .supervisor import SPAWN_NAME

if TYPE_CHECKING:
    from .localplatform import LocalPlatform

SUPERVISOR = Path(__file__).with_name("supervisor.py")
STOP_MARGIN_SECONDS = 10.0  # how long past the grace a stop waits for the supervisor before killing it

# Supervisors this process started, by pid: whichever LocalPlatform instance asks about a pod,
# a supervisor that is our child must be polled (and so reaped), never probed with kill(0),
# which succeeds on a zombie.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


def run(platform: LocalPlatform, spec: PodSpec) -> None:
    """Stop the pod_name's pod, then start the new one, as one step."""
    pod_dir = private_dirs(platform._pod_dir(spec.pod_name))  # 0700: a pod's spec and env file are the host's
    with open(pod_dir / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _replace(platform, spec, pod_dir)


def _replace(platform: LocalPlatform, spec: PodSpec, pod_dir: Path) -> None:
    volume = platform.volume_path(spec.pod_name)
    stop(platform, pod_dir)
    run_id = secrets.token_hex(8)
    record: dict[str, Any] = {"run_id": run_id, "image": spec.image, "node": spec.node, "pod_name": spec.pod_name,
                              "max_duration": spec.max_duration, "scheduled_time": spec.scheduled_iso(),
                              "grace_seconds": platform.stop_grace}
    (pod_dir / "current_run").write_text(run_id)
    in_image = platform.effective_driver == "container"
    if not (platform.resolve_image(spec.image) is not None if in_image else platform.image_runnable(spec.image)):
        write_json(pod_dir / "state.json", {"run_id": run_id, "supervisor_pid": None,
                                            "state": {"waiting": platform.unpullable_state(spec.image)}})
        write_json(pod_dir / "spec.json", record)
        return
    with platform.network_lock():  # until its supervisor runs, the pod counts as live (supervisor.py --linger)
        record.update(platform.pod_process(spec, volume, pod_dir))
        record["start_at"] = parse_schedule(spec.scheduled_time)
        write_spawn(pod_dir, record)
        write_json(pod_dir / "spec.json", record)
        write_json(pod_dir / "state.json", {"run_id": run_id, "supervisor_pid": None,
                                            "state": {"waiting": {"reason": "ContainerCreating", "message": "starting"}}})
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SUPERVISOR), str(pod_dir)], env=_container.engine_env(), cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        (pod_dir / "supervisor.pid").write_text(str(child.pid))
    with _children_lock:
        _reap()
        _children[child.pid] = child


def _reap() -> None:
    for pid in [pid for pid, c in _children.items() if c.poll() is not None]:
        del _children[pid]


def supervisor_alive(pid: int | None) -> bool:
    if not pid:
        return False
    with _children_lock:
        child = _children.get(pid)
        if child is not None:
            return child.poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop(platform: LocalPlatform, pod_dir: Path) -> None:
    """Stop the pod_name's running pod (a new run replaces it) and wait for its supervisor,
    which gives the workload its grace period between SIGTERM and SIGKILL."""
    spec = read_json(pod_dir / "spec.json") or {}
    timeout = float(spec.get("grace_seconds", platform.stop_grace)) + STOP_MARGIN_SECONDS
    record = read_json(pod_dir / "state.json")
    if record and "terminated" in record.get("state", {}):
        return
    pid = record.get("supervisor_pid") if record else None
    if pid is None:
        try:
            pid = int((pod_dir / "supervisor.pid").read_text())
        except (FileNotFoundError, ValueError):
            return
    if not supervisor_alive(pid):
        # It died without recording an end: a container it ran may still be up.
        _container.cleanup(spec.get("cleanup_argv"), spec.get("env"))
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _await_exit(pid, timeout)
    if supervisor_alive(pid):
        os.kill(pid, signal.SIGKILL)
        # A killed supervisor cannot stop its container: do it here.
        _container.cleanup(spec.get("cleanup_argv"), spec.get("env"))


def _await_exit(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the supervisor ``pid`` to end: woken by its pidfd the
    moment it does (a pod that ended its job just before being replaced is mid-exit, and the
    next job's start waits for it), else polled every 10 ms."""
    deadline = time.monotonic() + timeout
    try:
        exited: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here, or it has ended already
        exited = None
    try:
        while supervisor_alive(pid) and time.monotonic() < deadline:
            if exited is None:
                time.sleep(0.01)
            elif select.select([exited], [], [], max(0.0, min(1.0, deadline - time.monotonic())))[0]:
                os.close(exited)  # it ended; a zombie of another client stays "alive" until reaped: poll from here
                exited = None
    finally:
        if exited is not None:
            os.close(exited)


def status(platform: LocalPlatform, pod_name: str | None) -> PodState:
    pod_dir = platform._pod_dir(pod_name)
    record = read_json(pod_dir / "state.json")
    if record is None:
        raise NotFound(f"no pod named {platform.volume_name(pod_name)!r} has been run", code="POD_NOT_FOUND", status=404)
    state = PodState(record["state"])
    pid = record.get("supervisor_pid")
    spec = read_json(pod_dir / "spec.json") or {}
    starting = pid is None and state.phase == "waiting" and state.reason == "ContainerCreating"
    if starting:
        try:
            pid = int((pod_dir / "supervisor.pid").read_text())
        except (FileNotFoundError, ValueError):
            pid = None
    if not state.is_terminal and not state.is_stuck and pid and not supervisor_alive(pid):
        # The supervisor died without recording an end (killed, machine rebooted): say so
        # rather than report "running" forever. Re-read first: it may have just finished.
        record = read_json(pod_dir / "state.json") or record
        state = PodState(record["state"])
        if not state.is_terminal and record.get("run_id") == spec.get("run_id"):
            state = PodState({"terminated": {"exitCode": 137, "reason": "Lost",
                                             "message": "the pod's supervisor ended without recording an exit",
                                             "startedAt": state.detail.get("startedAt"), "finishedAt": None}})
    return state


def shutdown(platform: LocalPlatform) -> None:
    """Stop every pod of the platform's user."""
    base = platform.root / "pods" / platform.user
    if base.is_dir():
        for pod_dir in base.iterdir():
            stop(platform, pod_dir)
    with _children_lock:
        _reap()


def parse_schedule(value: Any) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"Invalid parameters: scheduled_time {value!r} is not an ISO-8601 timestamp with timezone",
                                 status=400) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"Invalid parameters: scheduled_time {value!r} needs a timezone, e.g. +00:00", status=400)
    return moment.timestamp()


def write_spawn(pod_dir: Path, record: dict[str, Any]) -> None:
    """What the supervisor starts a pod from before it has loaded anything (``spawn_early``):
    cwd, argv and env, NUL-separated (none of them can hold a NUL); none for a scheduled pod,
    which it starts from the spec when its time comes."""
    spawn = pod_dir / SPAWN_NAME
    spawn.unlink(missing_ok=True)  # never a previous run's
    if record["start_at"] is None:
        fields = [record["cwd"], str(len(record["argv"])), *record["argv"], *(f"{k}={v}" for k, v in record["env"].items())]
        atomic_write(spawn, b"\0".join(os.fsencode(field) for field in fields))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
