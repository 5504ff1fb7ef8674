"""Supervisor of one local pod: run with ``python -I -S supervisor.py POD_DIR``.

Standard library only and no imports from podrun, so it starts in a few milliseconds and
keeps supervising after the client that started it has gone (a pod outlives its client).
It waits for the scheduled time, runs the pod's argv in its own process group, stops it
gracefully at ``max_duration`` and when the pod is replaced (SIGTERM, then SIGKILL after the
spec's ``grace_seconds``, Kubernetes' 30 s by default) and records every transition in
``state.json`` in the Kubernetes container-state shape, with the reason it stopped.

LocalPlatform starts it with a fixed environment and ``-I -S``; the pod's argv[0] is an
absolute path resolved before, so nothing a pod's envs hold can choose what runs here.

A container pod's spec carries ``term_argv`` (``podman kill --signal TERM ...``), how a stop's
SIGTERM reaches the workload (the engine client's process group gets it only where that
command cannot: the container is not running yet), and ``cleanup_argv`` (``podman rm --force
...``): killing the engine's client process does not stop its container, so whenever the
supervisor had to stop the pod it runs that command before recording the end.

A container pod's spec also carries ``teardown``: what the user's pods share (the pod network,
its firewall rules, the telemetry service) and must not outlive them. When its pod ends, the
supervisor hands that to ``supervisor.py --linger POD_DIR``, a detached process (one per user:
it holds ``linger_lock``; later ones leave at once) that waits until no pod of the user has run
for ``linger`` seconds, then, under the network lock that pod starts hold, runs the commands.
"""

from __future__ import annotations

import os
import signal
import sys
import time

SPAWN_NAME = "spawn"  # in POD_DIR: the pod's cwd, argv and env, NUL-separated (pods.py), for a pod to start now
STOPS = {signal.SIGTERM, signal.SIGINT}
# Every signal a pod starts with at its default action, whatever the supervisor inherited (a
# SIGHUP ignored by nohup, say): a pod's dispositions are its image's, not the host's.
DEFAULTS = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))


def spawn_early(pod_dir: str) -> int | None:
    """Start the pod before anything else is imported (json, subprocess and the rest cost a cold
    pod tens of milliseconds on a loaded machine, in series before it): from the ``spawn`` file,
    by ``posix_spawn`` (no Python runs in the child), in a session of its own, stdin from
    /dev/null, stdout and stderr to the log, with the stops blocked here until the supervisor's
    handlers are in place (a stop then always reaches the pod). None: no ``spawn`` file (a
    scheduled pod) or it could not start; the supervisor's usual path then starts it or says why."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    pid = _spawn(pod_dir)
    if pid is None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    return pid


def _pod_signals() -> None:
    """In the pod's process before it execs (the Popen path): no stop blocked, every signal at
    its default action, as ``_spawn`` sets them."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    for number in DEFAULTS:
        signal.signal(number, signal.SIG_DFL)


def _spawn(pod_dir: str) -> int | None:
    try:
        with open(os.path.join(pod_dir, SPAWN_NAME), "rb") as f:
            fields = [os.fsdecode(field) for field in f.read().split(b"\0")]
        cwd, count = fields[0], int(fields[1])
        argv, env = fields[2:2 + count], dict(item.split("=", 1) for item in fields[2 + count:])
        if not argv or not os.path.isabs(argv[0]):
            return None
        log = os.path.join(pod_dir, "stdout.log")
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        os.chdir(cwd)  # posix_spawn has no cwd of its own here
        try:
            return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True, setsigmask=(),
                                  setsigdef=DEFAULTS)
        finally:
            os.chdir("/")
    except (OSError, ValueError, IndexError):
        return None


EARLY = spawn_early(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) == 2 else None
STARTED_AT = time.time()

# What the supervisor needs from here on loads while the pod starts.
import contextlib  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import subprocess  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

GRACE_SECONDS = 30.0  # when the spec names none: Kubernetes' terminationGracePeriodSeconds


def _now(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(at, timezone.utc) if at is not None else datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Spawned:
    """The pod started by ``spawn_early``: the part of ``Popen`` the supervisor uses."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        exited = _exit_watch(self.pid)
        try:
            while (code := self.poll()) is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                if exited is not None:
                    select.select([exited], [], [], left)
                else:
                    time.sleep(0.01 if left is None else min(0.01, left))
            return code
        finally:
            if exited is not None:
                os.close(exited)


class Supervisor:
    def __init__(self, pod_dir: str) -> None:
        self.pod_dir = pod_dir
        with open(os.path.join(pod_dir, "spec.json")) as f:
            self.spec = json.load(f)
        self.run_id = self.spec["run_id"]
        self.grace = float(self.spec.get("grace_seconds", GRACE_SECONDS))
        self.child: subprocess.Popen | _Spawned | None = None
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
        if signum == signal.SIGTERM and self._engine_term():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, signum)
        if signum == signal.SIGKILL:
            self.cleanup()

    def _engine_term(self) -> bool:
        """SIGTERM the container through its engine; False where there is none to (a process pod,
        a container not yet running: its engine client is signalled instead, and stops starting it)."""
        argv = self.spec.get("term_argv")
        if not argv:
            return False
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=30, env=self.spec.get("env")).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

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
        if EARLY is not None:  # started already, its stops blocked until now (spawn_early)
            self.child = _Spawned(EARLY, self.spec["argv"])
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
            self.watch_child(_now(STARTED_AT))
            return
        started = _now()
        # A stop that arrives while the child is being started waits until self.child is set,
        # so it always reaches the child (else the child would outlive its supervisor).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
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
                    # the child must not inherit the blocked mask (it stops gracefully on SIGTERM) nor
                    # an ignored signal
                    preexec_fn=_pod_signals,
                )
        except OSError as exc:
            self.write_state({"terminated": {"exitCode": 127, "reason": "StartError", "message": str(exc),
                                             "startedAt": started, "finishedAt": _now()}})
            return
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        self.watch_child(started)

    def watch_child(self, started: str) -> None:
        """The pod runs: record it, stop it at max_duration or when asked, record its end."""
        assert self.child is not None
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


    def hand_over_teardown(self) -> None:
        """Start the lingering remover of what the user's pods share (see the module's docstring)."""
        if not self.spec.get("teardown"):
            return
        with contextlib.suppress(OSError):
            subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), "--linger", self.pod_dir],
                             env=self.spec.get("env"), cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def pods_activity(pods: str) -> tuple[bool, float] | None:
    """(whether a pod of the user is starting or running, when a pod last changed state), or
    None when the user's pods folder is gone (the platform's root was removed)."""
    try:
        entries = list(os.scandir(pods))
    except OSError:
        return None
    live, latest = False, 0.0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = os.path.join(entry.path, "state.json")
        try:
            latest = max(latest, os.stat(path).st_mtime)
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if "terminated" in record.get("state", {}):
            continue
        pid = record.get("supervisor_pid")
        if pid is None:
            with contextlib.suppress(OSError, ValueError), open(os.path.join(entry.path, "supervisor.pid")) as f:
                pid = int(f.read())
        live = live or bool(pid and _alive(pid))
    return live, latest


def linger(pod_dir: str) -> int:
    """Remove what the user's pods share once none has run for ``linger`` seconds."""
    try:
        with open(os.path.join(pod_dir, "spec.json")) as f:
            teardown = json.load(f)["teardown"]
        holder = open(teardown["linger_lock"], "a+")  # noqa: SIM115 - held for this process's life
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # another pod's remover waits already (it sees this pod's end), or nothing to do
    holder.truncate(0)
    holder.write(str(os.getpid()))  # LocalPlatform.shutdown stops this process by it
    holder.flush()
    period = max(0.2, float(teardown["linger"]))
    while True:
        try:
            with open(teardown["lock"], "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                activity = pods_activity(teardown["pods"])
                if activity is None:
                    return 0
                live, latest = activity
                wait = latest + period - time.time()
                if not live and wait <= 0:
                    for argv in teardown["argv"]:  # in order; a failure keeps what follows (network.py)
                        try:
                            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL, timeout=60, env=teardown.get("env"))
                        except (OSError, subprocess.TimeoutExpired):
                            break
                        if done.returncode != 0:
                            break
                    return 0
        except OSError:
            return 0
        time.sleep(min(period, 5.0) if live else min(period, max(0.2, wait)))


def _exit_watch(pid: int) -> int | None:
    """A pidfd of the pod's process (readable once it exits), where the kernel has them."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait(child: subprocess.Popen[bytes] | _Spawned, exited: int | None, timeout: float) -> int:
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
    if sys.argv[1] == "--linger":
        sys.exit(linger(sys.argv[2]))
    try:
        supervisor = Supervisor(sys.argv[1])
    except BaseException:
        if EARLY is not None:  # no spec to supervise it by: it must not run unsupervised
            os.killpg(EARLY, signal.SIGKILL)
        raise
    try:
        supervisor.run()
    finally:
        supervisor.hand_over_teardown()
