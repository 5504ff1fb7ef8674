"""Pod networks of the container driver: one air-gapped network per user, as on CG2.

Why: CG2's pods of one user reach each other by name (``server:80``) and nothing else: not
another user's pods, not the ground, not the internet. Here each user of a LocalPlatform root
gets one podman network created ``--internal`` (netavark gives it no default route and no NAT,
so nothing beyond the bridge is reachable; aardvark-dns answers the pods' names and network
aliases). Two users' networks are separate bridges with no route between them, so both can
serve port 80. An internal network still gives the host an address on the bridge (the
gateway, where aardvark-dns listens): under root, a firewall chain of podrun's own drops
everything a pod sends to the host through that bridge except DNS, so a host service
listening on all addresses is out of reach too.

Nothing of a network outlives its pods: the network, its firewall rules and the telemetry
service beside it (``telemetry.py``) are removed by a pod's supervisor once no pod of the user
has run for ``linger`` seconds (``supervisor.py --linger``). Pod starts and that check take
the user's network lock (``network_lock``), so a pod never starts on a network being removed.

Pods of one user reach each other only on the ports they declare: traffic inside one bridge
does not cross the host's IP firewall (unless br_netfilter is loaded, which podrun does not
impose on the machine), so each pod gets an inbound firewall of its own, inside its network
namespace, from an OCI hook (``pod_firewall.py``) that the runtime runs as root before the
workload starts. :func:`firewall_hooks` writes that hook's file, with the executables it runs
resolved here. It needs root podman: without root, pods start without it, and podrun says so
once (:class:`OpenPortsWarning`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

from ...errors import PlatformError
from ...files import atomic_write, private_dirs
from . import pod_firewall
from .container import HOST_PATH, Engine, engine_env

CHAIN = "PODRUN-INPUT"
_FIREWALLS = ("iptables", "ip6tables")
_RULES = (("-p", "udp", "--dport", "53", "-j", "RETURN"), ("-p", "tcp", "--dport", "53", "-j", "RETURN"), ("-j", "DROP"))
REMOVER_STOP_WAIT = 5.0  # seconds shutdown looks for a lingering remover's pid to stop it, before it waits for its end


def network_name(root: Path, user: str) -> str:
    """One network per (LocalPlatform root, user): two roots (two test sessions, an emulator and
    a client) never share pods' names."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"podrun-{tag}-{user}")


class PodNetwork(NamedTuple):
    name: str
    bridge: str | None  # its host interface where podrun set firewall rules for it (root, podman)
    firewall: Path | None = None  # the hooks folder that gives each pod its inbound firewall (root, podman)


def lock_path(root: Path, user: str) -> Path:
    return private_dirs(root / "networks") / f"{user}.lock"


def linger_path(root: Path, user: str) -> Path:
    """Held by the process that waits to remove the user's network (``supervisor.py --linger``),
    which writes its pid there."""
    return private_dirs(root / "networks") / f"{user}.linger"


@contextmanager
def remover_held(root: Path, user: str) -> Iterator[None]:
    """Hold the remover's place while the platform removes the network itself (``shutdown``): a
    remover already waiting is ended by its pid, one that starts meanwhile leaves at once."""
    with open(linger_path(root, user), "a+") as holder:
        stopped: set[int] = set()
        deadline = time.monotonic() + REMOVER_STOP_WAIT
        while True:
            try:
                fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            # Read again each time: a remover locks the file a moment before it writes its pid,
            # and stopping none would wait out its whole linger.
            holder.seek(0)
            pid = holder.read().strip()
            if pid.isdigit() and int(pid) not in stopped and _is_remover(int(pid)):
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
                stopped.add(int(pid))
            if time.monotonic() >= deadline:
                fcntl.flock(holder, fcntl.LOCK_EX)  # released when the holder has ended
                break
            time.sleep(0.01)
        yield


def _is_remover(pid: int) -> bool:
    """Whether ``pid`` is a network remover (the file may still name the one before it)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return pid > 1 and b"--linger" in argv and any(a.endswith(b"supervisor.py") for a in argv)


@contextmanager
def network_lock(root: Path, user: str) -> Iterator[None]:
    """Held from ensuring the network until a pod's supervisor runs, and by the supervisor that
    removes the network, so neither sees the other half done."""
    with open(lock_path(root, user), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_network(engine: Engine, root: Path, user: str) -> PodNetwork:
    """Create the user's internal network once (a concurrent creator winning the race is fine)
    and close the host to it."""
    name = network_name(root, user)
    exists = ["network", "exists", name] if engine.name == "podman" else ["network", "inspect", name]
    if engine.run(*exists).returncode != 0:
        made = engine.run("network", "create", "--internal", "--label", "podrun=1", "--label", f"podrun.root={root}",
                          "--label", f"podrun.user={user}", name)
        if made.returncode != 0 and engine.run(*exists).returncode != 0:
            raise PlatformError(f"{engine.name} network create {name} failed: {made.stderr.strip()[-500:]}")
    if engine.name != "podman" or os.geteuid() != 0:
        _note_open_ports()
        return PodNetwork(name, None)
    bridge = bridge_of(engine, name)
    close_host(bridge)
    return PodNetwork(name, bridge, firewall_hooks(root))


class OpenPortsWarning(UserWarning):
    """Pods start without their inbound firewall: a user's pods reach each other on any port."""


_noted = False


def _note_open_ports() -> None:
    global _noted
    if not _noted:
        _noted = True
        warnings.warn("podrun: pods of one user reach each other on every port, not only those they declare: "
                      "each pod's inbound firewall is set by root podman (run podrun as root for it)",
                      OpenPortsWarning, stacklevel=4)


def firewall_hooks(root: Path) -> Path:
    """The OCI hooks folder (podman's ``--hooks-dir``) whose one hook gives each pod its inbound
    firewall (``pod_firewall.py``), written when missing or different; the executables it runs
    are resolved here on HOST_PATH, with the interpreter that runs podrun."""
    tools = []
    for tool, package in (("nsenter", "util-linux"), ("iptables-restore", "iptables"), ("ip6tables-restore", "iptables")):
        exe = shutil.which(tool, path=HOST_PATH)
        if exe is None:
            raise PlatformError(f"pod networks need {tool} to give each pod its inbound firewall: apt-get install {package}")
        tools.append(exe)
    hook = {"version": "1.0.0", "when": {"always": True}, "stages": ["createRuntime"],
            "hook": {"path": sys.executable, "env": ["PATH=" + HOST_PATH, "LANG=C.UTF-8"], "timeout": 30,
                     "args": [sys.executable, "-I", "-S", str(Path(pod_firewall.__file__).resolve()), *tools]}}
    folder = private_dirs(root / "networks" / "hooks")
    text = json.dumps(hook, indent=1)
    path = folder / "podrun-pod-firewall.json"
    with suppress(OSError):
        if path.read_text() == text:
            return folder
    atomic_write(path, text)
    return folder


def teardown_argvs(engine: Engine, network: PodNetwork) -> list[list[str]]:
    """The commands that remove ``network`` and then its firewall rules, for a supervisor that
    runs them in order and stops at the first failure: a network still in use is kept, and so
    are the rules that keep its pods off the host."""
    argvs = [[*engine.prefix, "network", "rm", network.name]]
    if network.bridge:
        for tool in _FIREWALLS:
            exe = shutil.which(tool, path=HOST_PATH)
            if exe:
                argvs += [[exe, "-w", "10", "-D", CHAIN, "-i", network.bridge, *rule] for rule in _RULES]
    return argvs


def bridge_of(engine: Engine, name: str) -> str:
    """The host interface of a podman network (``podman3``)."""
    done = engine.run("network", "inspect", name)
    try:
        return str(json.loads(done.stdout)[0]["network_interface"])
    except (ValueError, LookupError, TypeError):
        raise PlatformError(f"podman network inspect {name} gave no interface: {done.stderr.strip()[-300:]}") from None


def _firewall(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(tool, path=HOST_PATH)
    if exe is None:
        raise PlatformError(f"pod networks need {tool} to keep pods off the host: apt-get install iptables")
    return subprocess.run([exe, "-w", "10", *args], capture_output=True, text=True, env=engine_env(),
                          stdin=subprocess.DEVNULL, timeout=30)


def close_host(bridge: str) -> None:
    """Drop what pods send to the host through ``bridge``, DNS to aardvark-dns excepted
    (idempotent: the rules are added once per bridge)."""
    if not re.match(r"^[a-zA-Z0-9_.-]{1,15}$", bridge):
        raise PlatformError(f"unexpected bridge interface name {bridge!r}")
    for tool in _FIREWALLS:
        if _firewall(tool, "-n", "-L", CHAIN).returncode != 0:
            _firewall(tool, "-N", CHAIN)
        if _firewall(tool, "-C", "INPUT", "-j", CHAIN).returncode != 0:
            _firewall(tool, "-I", "INPUT", "1", "-j", CHAIN)
        if _firewall(tool, "-C", CHAIN, "-i", bridge, "-j", "DROP").returncode == 0:
            continue
        for rule in _RULES[:-1]:  # DNS first: the DROP last
            _firewall(tool, "-A", CHAIN, "-i", bridge, *rule)
        done = _firewall(tool, "-A", CHAIN, "-i", bridge, *_RULES[-1])
        if done.returncode != 0:
            raise PlatformError(f"{tool} could not close the host to pod network {bridge}: {done.stderr.strip()[-300:]}")


def open_host(bridge: str) -> None:
    """Remove ``bridge``'s rules (the network is gone; netavark may reuse the name)."""
    for tool in _FIREWALLS:
        for rule in _RULES:
            while _firewall(tool, "-D", CHAIN, "-i", bridge, *rule).returncode == 0:
                pass


def remove_network(engine: Engine, root: Path, user: str) -> None:
    """Remove the user's network and its firewall rules when no container uses it any more."""
    name = network_name(root, user)
    if engine.run(*(["network", "exists", name] if engine.name == "podman" else ["network", "inspect", name])).returncode != 0:
        return
    bridge = None
    if engine.name == "podman" and os.geteuid() == 0:
        try:
            bridge = bridge_of(engine, name)
        except PlatformError:
            bridge = None
    if engine.run("network", "rm", name).returncode == 0 and bridge:
        open_host(bridge)
