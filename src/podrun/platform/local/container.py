"""The ``container`` pod driver of LocalPlatform: pods run a real image under podman or docker.

Why: the ``process`` and ``bwrap`` drivers run a pod on the host's own Python, so they cannot
show what a stock ``python:3.11-slim`` pod lacks (no podrun, no cloudpickle, no zstandard).
Here the image is real: the volume is bind-mounted at ``/data``, each user's pods share one
network (``podrun-<user>``, where a pod is reachable as ``<pod_name>`` and
``<user>-<pod_name>``), every container carries ``podrun.*`` labels (node, user, pod), and only
the GPU node gets the machine's GPU.

The supervisor stays in charge of time: it runs ``<engine> run --rm --init --name NAME ...`` in
the foreground, in its own process group. SIGTERM of that group reaches the container (the
engine proxies signals; ``--init`` makes PID 1 forward them, so even ``sleep`` stops); SIGKILL
would leave the container running, so the spec carries a ``cleanup_argv`` (``rm -f``) that the
supervisor runs when it had to stop the pod, and LocalPlatform runs when the supervisor died.

Images come from podrun's local image store (``images.py``; ``podrun images prepare`` makes
CG2's stock images from Debian's packages): podman runs with the store's flags and each pod names
its image by ID, so nothing is ever pulled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ContainerUnavailable, PlatformError
from .images import ImageStore, host_arch

# Flag sets tried in order until a container starts. Podman 4.3 on hosts with hybrid cgroups:
# crun fails, runc works, and only lowered rlimits may be set by the container's init.
_PODMAN_FLAGS: tuple[tuple[str, ...], ...] = (
    (),
    ("--runtime", "runc"),
    ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
    ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
)
PROBE_TIMEOUT = 60.0
CLEANUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Engine:
    """A container engine that was seen to start a container here, with the flags it needed."""

    exe: str
    name: str
    flags: tuple[str, ...]
    store_flags: tuple[str, ...] = ()  # podman's global flags for the image store (ImageStore.engine_argv)

    @property
    def prefix(self) -> list[str]:
        return [self.exe, *self.store_flags]

    def run(self, *args: str, timeout: float = PROBE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def ensure_network(self, name: str) -> None:
        """Create the user's network once; a concurrent creator winning the race is fine."""
        exists = ["network", "exists", name] if self.name == "podman" else ["network", "inspect", name]
        if self.run(*exists).returncode == 0:
            return
        made = self.run("network", "create", "--label", "podrun=1", name)
        if made.returncode != 0 and self.run(*exists).returncode != 0:
            raise PlatformError(f"{self.name} network create {name} failed: {made.stderr.strip()[-500:]}")

    def cleanup_argv(self, container: str) -> list[str]:
        """Kill and remove a container, succeeding when it is already gone."""
        if self.name == "podman":
            return [*self.prefix, "rm", "--force", "--ignore", "--time", "0", container]
        return [self.exe, "rm", "--force", container]


_probed: dict[str, Engine | str] = {}
PROBE_IMAGES = ("busybox", "python:3.11-slim")  # stock images of this machine's arch, the smallest first


def find_engine(store: ImageStore | None = None) -> Engine:
    """podman, with the flags it needs to start a container here, probed once per process and
    store by running a prepared stock image of this machine's architecture; else
    :class:`ContainerUnavailable` naming each command and error."""
    store = store or ImageStore()
    cached = _probed.get(str(store.root))
    if isinstance(cached, Engine):
        return cached
    if isinstance(cached, str):
        raise ContainerUnavailable(cached)
    problems: list[str] = []
    engine = _probe(store, problems)
    if engine is not None:
        _probed[str(store.root)] = engine
        return engine
    message = ("no container engine can run a container here (" + "; ".join(problems) + "). Install podman "
               "(apt-get install podman runc mmdebstrap) and prepare an image: podrun images prepare busybox")
    _probed[str(store.root)] = message
    raise ContainerUnavailable(message)


def _probe(store: ImageStore, problems: list[str]) -> Engine | None:
    exe = shutil.which("podman")
    if not exe:
        problems.append("podman: not installed")
        return None
    try:
        store_flags = tuple(store.engine_argv()[1:])
        image = next((found for found in (store.resolve(n, arch=host_arch()) for n in PROBE_IMAGES) if found), None)
        if image is None:
            problems.append(f"podman: none of {', '.join(PROBE_IMAGES)} ({host_arch()}) is in the image store "
                            "(no registry is reachable; prepare one: podrun images prepare busybox)")
            return None
        last = ""
        for flags in _PODMAN_FLAGS:
            argv = [exe, *store_flags, "run", "--rm", "--pull=never", "--network=none", *flags, image.id, "true"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL,
                                  env=store.engine_env())
            if done.returncode == 0:
                return Engine(exe, "podman", tuple(flags), store_flags)
            shown = image.names[0] if image.names else image.short_id
            last = f"`podman run {' '.join(flags)} {shown} true` failed: {_last_line(done.stderr)}"
        problems.append(last)
    except (OSError, subprocess.TimeoutExpired, PlatformError) as exc:
        problems.append(f"podman: {type(exc).__name__}: {exc}")
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-400:] if lines else "(no error output)"


def available(store: ImageStore | None = None) -> bool:
    try:
        find_engine(store)
    except ContainerUnavailable:
        return False
    return True


def reason_unavailable(store: ImageStore | None = None) -> str | None:
    """Why the container driver cannot run here (None when it can)."""
    try:
        find_engine(store)
    except ContainerUnavailable as exc:
        return str(exc)
    return None


def container_name(root: Path, user: str, volume: str, run_id: str) -> str:
    """Unique per LocalPlatform root and run: concurrent test sessions never collide."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"podrun-{tag}-{user}-{volume}-{run_id[:8]}")


def gpu_args(engine: Engine) -> list[str]:
    """The machine's GPU for the GPU node: CDI where configured, else the NVIDIA device nodes."""
    if engine.name == "docker" and shutil.which("nvidia-container-runtime-hook"):
        return ["--gpus", "all"]
    if engine.name == "podman" and any(Path(p).is_file() for p in ("/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml")):
        return ["--device", "nvidia.com/gpu=all"]
    args: list[str] = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        if dev.is_char_device():
            args += ["--device", str(dev)]
    return args


def run_argv(engine: Engine, *, name: str, image: str, volume: Path, network: str, hostnames: Sequence[str],
             labels: dict[str, str], env_names: Sequence[str], env_inline: dict[str, str], gpu: bool,
             command: Sequence[str], entrypoint: Sequence[str] | None = None) -> list[str]:
    """``<engine> run`` in the foreground for one pod. Pod variables are passed by name only
    (``-e NAME``: the engine reads the value from its own environment), so none shows in ``ps``."""
    argv = [*engine.prefix, "run", "--rm", "--init", "--pull=never", "--name", name, *engine.flags,
            "--network", network, "--hostname", hostnames[0]]
    for alias in hostnames:
        argv += ["--network-alias", alias]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--volume", f"{volume}:/data:rw", "--workdir", "/data"]
    for key in env_names:
        argv += ["--env", key]
    for key, value in env_inline.items():
        argv += ["--env", f"{key}={value}"]
    if gpu:
        argv += gpu_args(engine)
    if entrypoint:  # a pod's ``command`` replaces the image's ENTRYPOINT, its ``args`` the CMD (Kubernetes' rule)
        argv += ["--entrypoint", json.dumps(list(entrypoint))]
    return [*argv, image, *command]


def pod_process(engine: Engine, *, root: Path, user: str, volume_name: str, volume: Path, image: str,
                node: str, pod_name: str | None, argv: Sequence[str], pod_env: dict[str, str],
                host_env: dict[str, str], entrypoint: Sequence[str] | None = None) -> dict[str, Any]:
    """The supervisor's spec entries (argv, env, cwd, cleanup_argv) for one container pod."""
    network = f"podrun-{user}"
    engine.ensure_network(network)
    name = container_name(root, user, volume_name, os.urandom(8).hex())
    hostnames = [f"{user}-{pod_name}", pod_name] if pod_name else [f"{user}-{volume_name}"]
    env_names = [key for key in pod_env if key not in host_env and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key)]
    inline = {key: value for key, value in pod_env.items() if key not in env_names}
    labels = {"podrun.node": node, "podrun.user": user, "podrun.pod": volume_name, "podrun.root": str(root)}
    command = run_argv(engine, name=name, image=image, volume=volume, network=network, hostnames=hostnames,
                       labels=labels, env_names=env_names, env_inline=inline, gpu=node == "GPU", command=argv,
                       entrypoint=entrypoint)
    env = {**host_env, **{key: pod_env[key] for key in env_names}}
    return {"argv": command, "env": env, "cwd": str(volume), "driver": "container", "container": name,
            "cleanup_argv": engine.cleanup_argv(name)}


def cleanup(argv: Sequence[str] | None) -> None:
    """Run a pod's ``cleanup_argv`` (kill and remove its container); never raises."""
    if argv:
        try:
            subprocess.run(list(argv), capture_output=True, timeout=CLEANUP_TIMEOUT, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass
