"""The ``container`` pod driver of LocalPlatform (the CG2 driver): pods run inside their image under podman.

Why: a pod must be what it is on CG2: its image's root file system and Python, nothing of the
host. Here the volume is bind-mounted at ``/data``, ``/tmp`` is private, the image's ENV,
WORKDIR, ENTRYPOINT and CMD apply (``command``/``args`` override them as in Kubernetes), each
user's pods share one air-gapped network (``network.py``: reachable as ``<pod_name>`` and
``<user>-<pod_name>`` on the ports the pod declares, each pod behind an inbound firewall of its
own: ``pod_firewall.py``), every container carries ``podrun.*`` labels (node, user, pod), and
only the GPU node gets the machine's GPU. A pod is a sandbox also when podrun runs as root
(:func:`hardening_args`): no capabilities, no privilege gain, a user namespace, a pids limit.

The supervisor stays in charge of time: it runs ``<engine> run --rm --init --name NAME ...`` in
the foreground, in its own process group. A stop's SIGTERM goes to the container through the
engine (the spec's ``term_argv``, ``kill --signal TERM``; ``--init`` makes PID 1 forward it, so
even ``sleep`` stops), not through the client's signal proxy: podman before 4.4 installs that
proxy only after the container has started, and a SIGTERM in between ended the client and the
container without the workload seeing it. SIGKILL would leave the container running, so the
spec carries a ``cleanup_argv`` (``rm -f``) that the supervisor runs when it had to stop the
pod, and LocalPlatform runs when the supervisor died.

Images come from podrun's local image store (``images.py``; ``podrun images prepare`` makes
CG2's stock images from Debian's packages): podman runs with the store's flags and each pod names
its image by ID, so nothing is ever pulled.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ContainerUnavailable, InvalidRequest, PlatformError
from .images import ImageStore, host_arch
from .pod_firewall import ANNOTATION as PORTS_ANNOTATION

# Everything podrun runs outside a pod is found on this fixed PATH and started with a fixed
# environment: nothing a user or a pod chose (PATH, LD_PRELOAD, CONTAINERS_CONF, ...) can pick
# the program that runs as root on the host or change how it runs.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIDS_LIMIT = 1024
POD_UID_BASE = 524288  # host uids of a pod's user namespace under root podman: 524288-589823
POD_UID_COUNT = 65536

# Flag sets tried in order until a container starts. Podman 4.3 on hosts with hybrid cgroups:
# crun fails, runc works, and only lowered rlimits may be set by the container's init.
_PODMAN_FLAGS: tuple[tuple[str, ...], ...] = (
    (),
    ("--runtime", "runc"),
    ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
    ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
)
PROBE_TIMEOUT = 60.0
DEFAULT_HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")  # podman's own
CLEANUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Engine:
    """A container engine that was seen to start a container here, with the flags it needed."""

    exe: str
    name: str
    flags: tuple[str, ...]
    store_flags: tuple[str, ...] = ()  # podman's global flags for the image store (ImageStore.engine_argv)
    env_items: tuple[tuple[str, str], ...] = ()  # its fixed environment (ImageStore.engine_env)

    @property
    def prefix(self) -> list[str]:
        return [self.exe, *self.store_flags]

    def environment(self) -> dict[str, str]:
        """The fixed environment every engine command runs with: never the caller's."""
        return dict(self.env_items) or engine_env()

    def run(self, *args: str, timeout: float = PROBE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.environment())

    def term_argv(self, container: str) -> list[str]:
        """SIGTERM a container's PID 1 through the engine; fails while it is not yet running."""
        return [*self.prefix, "kill", "--signal", "TERM", container]

    def cleanup_argv(self, container: str) -> list[str]:
        """Kill and remove a container, succeeding when it is already gone."""
        if self.name == "podman":
            return [*self.prefix, "rm", "--force", "--ignore", "--time", "0", container]
        return [self.exe, "rm", "--force", container]


def engine_env() -> dict[str, str]:
    """The fixed environment of the processes podrun starts outside pods (the supervisor, an
    engine without a store of its own): nothing of the caller's reaches them."""
    uid = os.geteuid()
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "HOME": pwd.getpwuid(uid).pw_dir}
    if uid != 0 and os.path.isdir(f"/run/user/{uid}"):
        env["XDG_RUNTIME_DIR"] = f"/run/user/{uid}"
    return env


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
    exe = shutil.which("podman", path=HOST_PATH)
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
                return Engine(exe, "podman", tuple(flags), store_flags, tuple(sorted(store.engine_env().items())))
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
    if engine.name == "docker" and shutil.which("nvidia-container-runtime-hook", path=HOST_PATH):
        return ["--gpus", "all"]
    if engine.name == "podman" and any(Path(p).is_file() for p in ("/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml")):
        return ["--device", "nvidia.com/gpu=all"]
    args: list[str] = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        if dev.is_char_device():
            args += ["--device", str(dev)]
    return args


def hardening_args(engine: Engine) -> list[str]:
    """What makes a pod a sandbox, also when podrun runs as root: no capabilities, no way to
    gain any (setuid files do nothing), a bounded number of processes, private PID, IPC, UTS,
    mount and network namespaces (the engine's defaults, IPC made explicit), and, under root
    podman, a user namespace: the pod's root is host uid POD_UID_BASE, owner of nothing else."""
    args = ["--cap-drop=all", "--security-opt", "no-new-privileges", "--pids-limit", str(PIDS_LIMIT),
            "--ipc", "private", "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777",
            # a pod's root may serve port 80 (DPhi's examples do) without CAP_NET_BIND_SERVICE
            "--sysctl", "net.ipv4.ip_unprivileged_port_start=0"]
    if engine.name == "podman" and os.geteuid() == 0:
        args += ["--uidmap", f"0:{POD_UID_BASE}:{POD_UID_COUNT}", "--gidmap", f"0:{POD_UID_BASE}:{POD_UID_COUNT}"]
    return args


def volume_arg(engine: Engine, volume: Path) -> str:
    """The volume at ``/data``; under a user namespace ``U`` hands its files to the pod's root
    (host uid POD_UID_BASE) at each start, so the pod can write what the client uplinked."""
    remapped = engine.name == "podman" and os.geteuid() == 0
    return f"{volume}:/data:rw,nosuid,nodev" + (",U" if remapped else "")


def run_argv(engine: Engine, *, name: str, image: str, volume: Path, network: str, hostnames: Sequence[str],
             labels: dict[str, str], env_file: Path, gpu: bool, command: Sequence[str], args: Sequence[str],
             firewall: Path | None = None, ports: Sequence[int] = ()) -> list[str]:
    """``<engine> run`` in the foreground for one pod. The pod's variables come from
    ``env_file`` (private to the host), so none shows in ``ps`` or reaches the engine's own
    environment. ``command`` replaces the image's ENTRYPOINT and ``args`` its CMD, as in
    Kubernetes; with neither the image's own ENTRYPOINT and CMD run. ``firewall``, podman's
    hooks folder of ``network.firewall_hooks``, closes the pod to all but its ``ports``."""
    hooks = []
    if firewall:  # podman's --hooks-dir replaces its default folders (a GPU's OCI hook lives there): name them too
        for folder in [*(d for d in DEFAULT_HOOKS_DIRS if os.path.isdir(d)), str(firewall)]:
            hooks += ["--hooks-dir", folder]
    argv = [*engine.prefix, *hooks, "run", "--rm", "--init", "--pull=never", "--name", name, *engine.flags,
            "--network", network, "--hostname", hostnames[0]]
    if firewall:  # always set: no annotation of the image's own can stand in for it
        argv += ["--annotation", f"{PORTS_ANNOTATION}={' '.join(str(int(port)) for port in ports)}"]
    for alias in hostnames:
        argv += ["--network-alias", alias]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += hardening_args(engine)
    argv += ["--volume", volume_arg(engine, volume), "--env-file", str(env_file)]
    if gpu:
        argv += gpu_args(engine)
    if command:
        argv += ["--entrypoint", command[0]]
        return [*argv, image, *command[1:], *args]
    return [*argv, image, *args]


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # Kubernetes' rule for variable names


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """The pod's variables as an engine ``--env-file`` (mode 0600). Names follow Kubernetes'
    rule; a value may not hold a newline or NUL (the file format has no quoting)."""
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise InvalidRequest(f"Invalid parameters: env name {key!r}: letters, digits, '-', '.', '_', "
                                 "not starting with a digit", status=400)
        if "\n" in value or "\r" in value or "\0" in value:
            raise InvalidRequest(f"Invalid parameters: the value of env {key!r} holds a newline or NUL, "
                                 "which a pod's variables cannot carry", status=400)
        lines.append(f"{key}={value}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(lines))
    return path


def pod_process(engine: Engine, *, root: Path, user: str, volume_name: str, volume: Path, image: str,
                node: str, pod_name: str | None, command: Sequence[str], args: Sequence[str],
                pod_env: dict[str, str], pod_dir: Path, network: str, firewall: Path | None = None,
                ports: Sequence[int] = ()) -> dict[str, Any]:
    """The supervisor's spec entries (argv, env, cwd, term_argv, cleanup_argv) for one container pod."""
    name = container_name(root, user, volume_name, os.urandom(8).hex())
    hostnames = [f"{user}-{pod_name}", pod_name] if pod_name else [f"{user}-{volume_name}"]
    labels = {"podrun.node": node, "podrun.user": user, "podrun.pod": volume_name, "podrun.root": str(root)}
    env_file = write_env_file(pod_dir / "pod.env", pod_env)
    argv = run_argv(engine, name=name, image=image, volume=volume, network=network, hostnames=hostnames,
                    labels=labels, env_file=env_file, gpu=node == "GPU", command=command, args=args,
                    firewall=firewall, ports=ports)
    return {"argv": argv, "env": engine.environment(), "cwd": "/", "driver": "container", "container": name,
            "term_argv": engine.term_argv(name), "cleanup_argv": engine.cleanup_argv(name)}


def cleanup(argv: Sequence[str] | None, env: dict[str, str] | None = None) -> None:
    """Run a pod's ``cleanup_argv`` (kill and remove its container); never raises."""
    if argv:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(list(argv), capture_output=True, timeout=CLEANUP_TIMEOUT, stdin=subprocess.DEVNULL,
                           env=env or engine_env())
