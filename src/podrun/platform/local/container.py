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

No registry is reachable from an air-gapped machine, so the images come from this machine:
:func:`prepare_base` builds a Python image from the host's own Debian packages
(``python -m podrun.platform.local.container prepare``).
"""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidRequest, PlatformError

# Everything podrun runs outside a pod is found on this fixed PATH and started with a fixed
# environment (engine_env): nothing a user or a pod chose (PATH, LD_PRELOAD, CONTAINERS_CONF,
# ...) can pick the program that runs as root on the host or change how it runs.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIDS_LIMIT = 1024
POD_UID_BASE = 524288  # host uids of a pod's user namespace under root podman: 524288-589823
POD_UID_COUNT = 65536
ENGINES = ("podman", "docker")
# Flag sets tried in order until a container starts. Podman 4.3 on hosts with hybrid cgroups:
# crun fails, runc works, and only lowered rlimits may be set by the container's init.
_PODMAN_FLAGS: tuple[tuple[str, ...], ...] = (
    (),
    ("--runtime", "runc"),
    ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
    ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
)
_DOCKER_FLAGS: tuple[tuple[str, ...], ...] = ((), ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"))
PROBE_TIMEOUT = 60.0
CLEANUP_TIMEOUT = 30.0

# Debian packages whose files make a Python image like the official ``python:3.X-slim``: the
# interpreter and standard library, the C libraries its extension modules link, and a shell.
BASE_PACKAGES = (
    "python{v}-minimal", "libpython{v}-minimal", "libpython{v}-stdlib",
    "libc6", "libgcc-s1", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0", "liblzma5", "libzstd1", "libssl3",
    "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libcrypt1", "libnsl2", "libtirpc3",
    "libdb5.3", "libgdbm6", "libmpdec3", "media-types", "netbase", "dash", "coreutils", "libacl1", "libattr1",
    "libselinux1", "libpcre2-8-0", "libgmp10",
)


class ContainerUnavailable(PlatformError):
    """No container engine can run a container here; the message says what was tried."""


def python_minor() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def base_tags(minor: str | None = None) -> list[str]:
    """The stock CG2 names a prepared base image answers to (the official slim image's layout)."""
    minor = minor or python_minor()
    return [f"python:{minor}-slim", f"python:{minor}"]


@dataclass(frozen=True)
class Engine:
    """A container engine that was seen to start a container here, with the flags it needed."""

    exe: str
    name: str
    flags: tuple[str, ...]
    global_flags: tuple[str, ...] = ()

    @property
    def prefix(self) -> list[str]:
        """The engine and its global flags (which store it uses): every command starts so."""
        return [self.exe, *self.global_flags]

    def run(self, *args: str, timeout: float = PROBE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=engine_env())

    def has_image(self, image: str) -> bool:
        try:
            if self.name == "podman":
                return self.run("image", "exists", image).returncode == 0
            return self.run("image", "inspect", image).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def cleanup_argv(self, container: str) -> list[str]:
        """Kill and remove a container, succeeding when it is already gone."""
        if self.name == "podman":
            return [*self.prefix, "rm", "--force", "--ignore", "--time", "0", container]
        return [*self.prefix, "rm", "--force", container]


def engine_env() -> dict[str, str]:
    """The fixed environment of every engine command: the caller's own never reaches it. A
    rootless engine finds its store through HOME and XDG_RUNTIME_DIR, taken from the account."""
    uid = os.geteuid()
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "HOME": pwd.getpwuid(uid).pw_dir}
    if uid != 0 and os.path.isdir(f"/run/user/{uid}"):
        env["XDG_RUNTIME_DIR"] = f"/run/user/{uid}"
    return env


_probed: dict[str, Engine | str] = {}


def find_engine(image: str | None = None) -> Engine:
    """The first engine that starts ``image`` (default: the prepared ``python:3.X-slim``) here,
    probed once per process; else :class:`ContainerUnavailable` naming each command and error."""
    image = image or base_tags()[0]
    cached = _probed.get(image)
    if isinstance(cached, Engine):
        return cached
    if isinstance(cached, str):
        raise ContainerUnavailable(cached)
    problems: list[str] = []
    for name in ENGINES:
        exe = shutil.which(name, path=HOST_PATH)
        if not exe:
            problems.append(f"{name}: not installed")
            continue
        engine = _probe(exe, name, image, problems)
        if engine is not None:
            _probed[image] = engine
            return engine
    message = ("no container engine can run a container here (" + "; ".join(problems) + "). Install podman "
               "(apt-get install podman runc) and prepare a base image: python -m podrun.platform.local.container prepare")
    _probed[image] = message
    raise ContainerUnavailable(message)


def _probe(exe: str, name: str, image: str, problems: list[str]) -> Engine | None:
    flag_sets = _PODMAN_FLAGS if name == "podman" else _DOCKER_FLAGS
    try:
        if name == "docker":
            info = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=PROBE_TIMEOUT, env=engine_env())
            if info.returncode != 0:
                problems.append(f"`{exe} info` failed: {_last_line(info.stderr)}")
                return None
        probe = Engine(exe, name, ())
        if not probe.has_image(image):
            problems.append(f"{name}: no image {image!r} in its local store (no registry is reachable; "
                            "prepare it: python -m podrun.platform.local.container prepare)")
            return None
        last = ""
        for flags in flag_sets:
            argv = [exe, "run", "--rm", "--pull=never", *flags, image, "python3", "-c", "pass"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL,
                                  env=engine_env())
            if done.returncode == 0:
                return Engine(exe, name, tuple(flags))
            last = f"`{' '.join(argv)}` failed: {_last_line(done.stderr)}"
        problems.append(last)
    except (OSError, subprocess.TimeoutExpired) as exc:
        problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-400:] if lines else "(no error output)"


def available() -> bool:
    try:
        find_engine()
    except ContainerUnavailable:
        return False
    return True


def reason_unavailable() -> str | None:
    """Why the container driver cannot run here (None when it can)."""
    try:
        find_engine()
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
             labels: dict[str, str], env_file: Path, gpu: bool, command: Sequence[str], args: Sequence[str]) -> list[str]:
    """``<engine> run`` in the foreground for one pod. The pod's variables come from
    ``env_file`` (private to the host), so none shows in ``ps`` or reaches the engine's own
    environment. ``command`` replaces the image's ENTRYPOINT and ``args`` its CMD, as in
    Kubernetes; with neither the image's own ENTRYPOINT and CMD run."""
    argv = [*engine.prefix, "run", "--rm", "--init", "--pull=never", "--name", name, *engine.flags,
            "--network", network, "--hostname", hostnames[0]]
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


def engine_image(name: str, images: dict[str, dict[str, Any]]) -> str:
    """The engine's name for a LocalPlatform image: a built image runs its base (this driver
    does not execute a Dockerfile's steps), a loaded one its first tag, a stock one itself."""
    seen: set[str] = set()
    while name in images and name not in seen:
        seen.add(name)
        record = images[name]
        if record.get("base"):
            name = record["base"]
        elif record.get("tags"):
            return str(record["tags"][0])
        else:
            break
    return name


def missing_image_message(engine: Engine, image: str) -> str:
    return (f'Back-off pulling image "{image}": ErrImagePull: {engine.name} has no local copy of it and no registry '
            f"is reachable; prepare the Python base with `python -m podrun.platform.local.container prepare`, or "
            f"`{engine.name} load`/`{engine.name} tag` an image under that name")


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # Kubernetes' rule for variable names


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """The pod's variables as an engine ``--env-file`` (mode 0600). Names follow Kubernetes'
    rule; a value may not hold a newline or NUL (the file format has no quoting)."""
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise InvalidRequest(f"Invalid parameters: env name {key!r}: letters, digits, '-', '.', '_', not starting with a digit", status=400)
        if "\n" in value or "\r" in value or "\0" in value:
            raise InvalidRequest(f"Invalid parameters: the value of env {key!r} holds a newline or NUL, which a pod's variables cannot carry", status=400)
        lines.append(f"{key}={value}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(lines))
    return path


def pod_process(engine: Engine, *, root: Path, user: str, volume_name: str, volume: Path, image: str,
                node: str, pod_name: str | None, command: Sequence[str], args: Sequence[str],
                pod_env: dict[str, str], pod_dir: Path, network: str) -> dict[str, Any]:
    """The supervisor's spec entries (argv, env, cwd, cleanup_argv) for one container pod."""
    name = container_name(root, user, volume_name, os.urandom(8).hex())
    hostnames = [f"{user}-{pod_name}", pod_name] if pod_name else [f"{user}-{volume_name}"]
    labels = {"podrun.node": node, "podrun.user": user, "podrun.pod": volume_name, "podrun.root": str(root)}
    env_file = write_env_file(pod_dir / "pod.env", pod_env)
    argv = run_argv(engine, name=name, image=image, volume=volume, network=network, hostnames=hostnames,
                    labels=labels, env_file=env_file, gpu=node == "GPU", command=command, args=args)
    return {"argv": argv, "env": engine_env(), "cwd": "/", "driver": "container", "container": name,
            "cleanup_argv": engine.cleanup_argv(name)}


def cleanup(argv: Sequence[str] | None) -> None:
    """Run a pod's ``cleanup_argv`` (kill and remove its container); never raises."""
    if argv:
        try:
            subprocess.run(list(argv), capture_output=True, timeout=CLEANUP_TIMEOUT, stdin=subprocess.DEVNULL,
                           env=engine_env())
        except (OSError, subprocess.TimeoutExpired):
            pass


# --- preparing a base image from this machine's own packages ------------------------------

def _package_files(packages: Sequence[str]) -> list[str]:
    """Regular files and symlinks the installed ``packages`` own, at their real location
    (merged /usr: ``/lib/x`` is stored as ``/usr/lib/x``)."""
    installed = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode == 0]
    listed = subprocess.run(["dpkg", "-L", *installed], capture_output=True, text=True, check=True).stdout.split("\n")
    files: set[str] = set()
    for path in filter(None, (line.strip() for line in listed)):
        real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if real.count("/") > 1 and (os.path.islink(real) or os.path.isfile(real)):
            files.add(real)
    return sorted(files)


def _dir_entry(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info


def _link_entry(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def base_rootfs(out: Path, minor: str | None = None) -> Path:
    """A root file system tar with Debian's ``python3.X`` at ``/usr/local/bin/python``, the
    path the official images use. Needs a Debian-family host with that Python installed."""
    minor = minor or python_minor()
    interpreter = f"/usr/bin/python{minor}"
    if not shutil.which("dpkg") or not os.path.isfile(interpreter):
        raise ContainerUnavailable(f"preparing a base image needs a Debian-family host with {interpreter} "
                                   f"(apt-get install python{minor}-minimal libpython{minor}-stdlib)")
    files = _package_files([p.format(v=minor) for p in BASE_PACKAGES])
    seen: set[str] = set()
    with tarfile.open(out, "w") as tar:
        for top in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            if os.path.islink(f"/{top}"):
                tar.addfile(_link_entry(top, os.readlink(f"/{top}")))
                seen.add(top)
        for path in files:
            parents = Path(path).parents
            for parent in reversed(list(parents)[:-1]):
                name = str(parent)[1:]
                if name not in seen:
                    seen.add(name)
                    tar.add(str(parent), arcname=name, recursive=False)
            if path[1:] not in seen:
                seen.add(path[1:])
                tar.add(path, arcname=path[1:], recursive=False)
        for name, mode in (("tmp", 0o1777), ("data", 0o755), ("root", 0o700), ("usr/local/bin", 0o755),
                           ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("etc", 0o755)):
            if name not in seen:
                seen.add(name)
                tar.addfile(_dir_entry(name, mode))
        for name in ("python", "python3", f"python{minor}"):
            tar.addfile(_link_entry(f"usr/local/bin/{name}", interpreter))
        if "usr/bin/python3" not in seen:
            tar.addfile(_link_entry("usr/bin/python3", f"python{minor}"))
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        for name, data in (("etc/passwd", passwd), ("etc/group", b"root:x:0:\nnogroup:x:65534:\n")):
            if name not in seen:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out


def prepare_base(engine_exe: str | None = None, minor: str | None = None, force: bool = False) -> dict[str, Any]:
    """Import a ``python:3.X-slim`` stand-in into the engine's local store (skipped when it is
    already there). Returns what was done and how long it took."""
    minor = minor or python_minor()
    tags = base_tags(minor)
    exe = engine_exe or next((found for found in (shutil.which(e, path=HOST_PATH) for e in ENGINES) if found), None)
    if not exe:
        raise ContainerUnavailable("no podman or docker executable: apt-get install podman runc")
    engine = Engine(exe, Path(exe).name, ())
    if not force and all(engine.has_image(tag) for tag in tags):
        return {"engine": exe, "tags": tags, "prepared": False, "seconds": 0.0}
    started = time.monotonic()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"podrun-rootfs-{os.getpid()}.tar"
    try:
        base_rootfs(work, minor)
        changes = ["--change", "CMD [\"python3\"]", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                   "--change", "ENV LANG=C.UTF-8"]
        done = engine.run("import", *changes, str(work), tags[0], timeout=600)
        if done.returncode != 0:
            raise ContainerUnavailable(f"`{exe} import` failed: {_last_line(done.stderr)}")
        for tag in tags[1:]:
            tagged = engine.run("tag", tags[0], tag)
            if tagged.returncode != 0:
                raise ContainerUnavailable(f"`{exe} tag {tags[0]} {tag}` failed: {_last_line(tagged.stderr)}")
    finally:
        work.unlink(missing_ok=True)
    _probed.clear()
    return {"engine": exe, "tags": tags, "prepared": True, "seconds": round(time.monotonic() - started, 2)}


def main(argv: Sequence[str]) -> int:
    """``python -m podrun.platform.local.container prepare [--force]`` / ``check``."""
    if not argv or argv[0] not in ("prepare", "check"):
        print("usage: python -m podrun.platform.local.container prepare [--force] | check", file=sys.stderr)
        return 2
    try:
        if argv[0] == "prepare":
            print(prepare_base(force="--force" in argv))
        engine = find_engine()
    except ContainerUnavailable as exc:
        print(f"container driver unavailable: {exc}", file=sys.stderr)
        return 1
    print(f"container driver ready: {engine.exe} {' '.join(engine.flags)}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
