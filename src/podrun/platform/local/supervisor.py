"""Supervisor of one local pod: run with ``python -I -S supervisor.py POD_DIR``.

Standard library only and no imports from podrun, so it starts in a few milliseconds and
keeps supervising after the client that started it has gone (a pod outlives its client).
It waits for the scheduled time, runs the pod's argv in its own process group, stops it
gracefully at ``max_duration`` and when the pod is replaced (SIGTERM, then SIGKILL after the
spec's ``grace_seconds``, Kubernetes' 30 s by default) and records every transition in
``state.json`` in the Kubernetes container-state shape, with the reason it stopped.

LocalPlatform starts it with a fixed environment and ``-I -S``; the pod's argv[0] is an
absolute path resolved before, so nothing a pod's envs hold can choose what runs here.

A container pod's spec carries ``cleanup_argv`` (``podman rm --force ...``): killing the
engine's client process does not stop its container, so whenever the supervisor had to stop
the pod it runs that command before recording the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

GRACE_SECONDS = 30.0  # when the spec names none: Kubernetes' terminationGracePeriodSeconds


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Supervisor:
    def __init__(self, pod_dir: str) -> None:
        self.pod_dir = pod_dir
        with open(os.path.join(pod_dir, "spec.json")) as f:
            self.spec = json.load(f)
        self.run_id = self.spec["run_id"]
        self.grace = float(self.spec.get("grace_seconds", GRACE_SECONDS))
        self.child: subprocess.Popen | None = None
        self.stop_reason: str | None = None
        self.stop_requested_at = 0.0

    def write_state(self, state: dict) -> None:
        try:
            with open(os.path.join(self.pod_dir, "current_run")) as f:
                if f.read().strip() != self.run_id:
                    return  # a newer run of this pod_name owns the state now
        except FileNotFoundError:
            return
        record = {"run_id": self.run_id, "supervisor_pid": os.getpid(), "state": state}
        tmp = os.path.join(self.pod_dir, f".state.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(self.pod_dir, "state.json"))

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop_reason = "Replaced" if signum == signal.SIGTERM else "Killed"
        self.stop_requested_at = time.monotonic()
        if self.child is not None:
            self._signal_child(signal.SIGTERM)
        else:
            self.write_state({"terminated": {"exitCode": 137, "reason": self.stop_reason, "startedAt": None,
                                             "finishedAt": _now()}})
            sys.exit(0)

    def _signal_child(self, signum: int) -> None:
        assert self.child is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, signum)
        if signum == signal.SIGKILL:
            self.cleanup()

    def cleanup(self) -> None:
        """Kill and remove the pod's container, if it has one (never raises)."""
        argv = self.spec.get("cleanup_argv")
        if argv:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=30, env=self.spec.get("env"))

    def stop_child(self) -> int:
        """SIGTERM the pod's process group, SIGKILL it after the grace period."""
        assert self.child is not None
        self._signal_child(signal.SIGTERM)
        try:
            return self.child.wait(self.grace)
        except subprocess.TimeoutExpired:
            self._signal_child(signal.SIGKILL)
            return self.child.wait()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        start_at = self.spec.get("start_at")
        if start_at:
            self.write_state({"waiting": {"reason": "ContainerCreating",
                                          "message": f"scheduled for {self.spec['scheduled_time']}"}})
            while time.time() < start_at and self.stop_reason is None:
                time.sleep(min(0.2, max(0.0, start_at - time.time())))
        if self.stop_reason:
            return
        started = _now()
        # A stop that arrives while the child is being started waits until self.child is set,
        # so it always reaches the child (else the child would outlive its supervisor).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            with open(os.path.join(self.pod_dir, "stdout.log"), "wb") as log:  # the child keeps its own copy
                self.child = subprocess.Popen(
                    self.spec["argv"],
                    cwd=self.spec["cwd"],
                    env=self.spec["env"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # the child must not inherit the blocked mask: it stops gracefully on SIGTERM
                    preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT}),
                )
        except OSError as exc:
            self.write_state({"terminated": {"exitCode": 127, "reason": "StartError", "message": str(exc),
                                             "startedAt": started, "finishedAt": _now()}})
            return
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        self.write_state({"running": {"startedAt": started}})
        deadline = time.monotonic() + float(self.spec["max_duration"]) * 60.0
        reason = None
        exited = _exit_watch(self.child.pid)
        while True:
            try:
                code = _wait(self.child, exited, max(0.0, min(0.2, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if self.stop_reason and time.monotonic() - self.stop_requested_at > self.grace:
                    self._signal_child(signal.SIGKILL)
                    continue
                if time.monotonic() >= deadline and not self.stop_reason:
                    reason = "DeadlineExceeded"
                    code = self.stop_child()
                    break
        if reason is not None or self.stop_reason:
            self.cleanup()  # the engine client has exited; make sure its container has too
        if reason is None:
            reason = self.stop_reason or ("Completed" if code == 0 else "Error")
        if code < 0:  # killed by a signal: report it as a shell would (128 + signal)
            code = 128 - code
        message = {
            "DeadlineExceeded": f"stopped after max_duration of {self.spec['max_duration']} min",
            "Replaced": "replaced by a new run of the same pod_name",
        }.get(reason)
        state = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": _now()}
        if message:
            state["message"] = message
        self.write_state({"terminated": state})


def _exit_watch(pid: int) -> int | None:
    """A pidfd of the pod's process (readable once it exits), where the kernel has them."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait(child: subprocess.Popen[bytes], exited: int | None, timeout: float) -> int:
    """``child.wait(timeout)``, but woken the moment the child exits: ``Popen.wait`` with a
    timeout sleeps in steps growing to 50 ms, and a cold pod's end paid that before its state
    was even written."""
    if exited is None:
        return child.wait(timeout=timeout)
    select.select([exited], [], [], timeout)
    code = child.poll()
    if code is None:
        raise subprocess.TimeoutExpired(child.args, timeout)
    return code


if __name__ == "__main__":
    Supervisor(sys.argv[1]).run()

