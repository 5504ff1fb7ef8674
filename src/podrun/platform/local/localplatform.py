"""LocalPlatform: the EM API's semantics on this machine, with no server and no account.

Volumes are directories, one per (user, pod_name); pods are processes started by a small
detached supervisor (``supervisor.py``) that enforces ``max_duration`` and records the pod's
state, so pods outlive the client exactly as they do on CG2. Three drivers run a pod:

* ``bwrap`` (where bubblewrap works): the host's file system read-only, the volume mounted
  at ``/data`` read-write, a private ``/tmp`` and PID namespace. Faithful to CG2's ``/data``.
* ``process``: a plain child process with ``PODRUN_DATA`` pointing at the volume; any
  ``/data`` in the command line is rewritten to the volume so a raw command never touches the
  host's ``/data``. Not isolation: the pod runs with the client user's rights.
* ``container`` (where podman or docker can start a container, see ``container.py``): the real
  image, the volume bind-mounted at ``/data``, one network per user. ``auto`` prefers ``bwrap``
  (milliseconds to start), then ``container``, then ``process``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import InvalidRequest, NotFound, PlatformError, UsageError
from ..base import Platform, Progress, UplinkFile, content_size
from ..files import atomic_write, private_dirs
from ..paths import check_file_name, clean_relative
from ..types import NODE_STATUS_NAMES, NODES, FileEntry, PodSpec, PodState, validate_pod_name
from . import builds as _builds
from . import container as _container
from . import stock as _stock
from .images import USER_PREFIX, Image, ImageStore, ImageStoreError, display_name, pod_arch
from .images import normalize as normalize_image
from .volumes import Entry, VolumeDir, sha256_of

SUPERVISOR = Path(__file__).with_name("supervisor.py")
CHUNK = 1024 * 1024
DRIVERS = ("auto", "bwrap", "container", "process")

# The Python-capable images CG2 carries onboard (em-api.md §5), plus the shells. Anything
# else must be built or loaded first, or the pod waits in ImagePullBackOff as on CG2.
STOCK_IMAGES = frozenset(
    [f"python:{v}{s}" for v in ("3.10", "3.11", "3.12") for s in ("", "-slim", "-alpine")]
    + ["dphi-embedded-ml-armv8-py311", "distroless-python3-debian12", "alpine", "busybox"]
)
_DATA_TOKEN = re.compile(r"(?<![\w./-])/data(?=/|$|[\s'\";|&)>])")
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH", "TZ")


def default_home() -> Path:
    """``$PODRUN_HOME``, else ``$XDG_DATA_HOME/podrun``, else ``~/.local/share/podrun``."""
    if os.environ.get("PODRUN_HOME"):
        return Path(os.environ["PODRUN_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "podrun"


def image_root_tag(root: Path) -> str:
    """Names one LocalPlatform root in the image store (user images are scoped by it)."""
    return "r" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def _minute(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d-%H-%M")


def _signed64(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big", signed=True)


_bwrap_works: bool | None = None
# Supervisors this process started, by pid: whichever LocalPlatform instance asks about a pod,
# a supervisor that is our child must be polled (and so reaped), never probed with kill(0),
# which succeeds on a zombie.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


def bwrap_available() -> bool:
    """True when ``bwrap`` exists and can create a sandbox here (user namespaces allowed)."""
    global _bwrap_works
    if _bwrap_works is None:
        exe = shutil.which("bwrap")
        _bwrap_works = bool(exe) and subprocess.run(
            [exe, "--ro-bind", "/", "/", "--unshare-pid", "true"], capture_output=True
        ).returncode == 0
    return _bwrap_works


class LocalPlatform(Platform):
    """The embedded platform. ``root`` holds volumes, pod records and images; one
    LocalPlatform serves one ``user`` (the emulator makes one per authenticated user)."""

    kind = "local"
    poll_interval = (0.01, 0.05)  # a local status read costs microseconds: poll often, answer fast

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        user: str | None = None,
        driver: str | None = None,
        max_uplink_bytes: int | None = None,
        python: str | None = None,
        image_store: str | os.PathLike[str] | None = None,
        arch: str | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else default_home() / "local"
        self.user = user or os.environ.get("PODRUN_LOCAL_USER") or "local"
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", self.user):
            raise UsageError(f"invalid local user name {self.user!r}: lowercase letters, digits, '-' and '_'")
        driver = driver or os.environ.get("PODRUN_LOCAL_DRIVER") or "auto"
        if driver not in DRIVERS:
            raise UsageError(f"unknown local pod driver {driver!r}: choose one of {', '.join(DRIVERS)}")
        if driver == "bwrap" and not bwrap_available():
            raise PlatformError("the bwrap driver needs bubblewrap with user namespaces; install 'bubblewrap' or use driver='process'")
        # Shared by every user and volume of this machine's podrun home ($PODRUN_IMAGE_STORE overrides).
        self.images = ImageStore(image_store)
        self.arch = pod_arch(arch)  # the architecture of the stock images pods get (PODRUN_LOCAL_ARCH)
        if driver == "container":
            _container.find_engine(self.images)  # ContainerUnavailable says which engine command failed and how
        self.driver = driver
        # The interpreter a pod's ``python`` runs: the host's by default ("images run on the
        # host's tools"); another one (e.g. a bare venv) stands in for a stock Python image.
        self.pod_python = python or os.environ.get("PODRUN_LOCAL_PYTHON") or None
        if self.pod_python and not os.access(self.pod_python, os.X_OK):
            raise UsageError(f"pod interpreter {self.pod_python!r} (python= / PODRUN_LOCAL_PYTHON) is not an executable file")
        if max_uplink_bytes is not None:
            self.max_uplink_bytes = max_uplink_bytes
        self._hash_cache: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, hash): bounded by the files
        self._lock = threading.Lock()

    # layout --------------------------------------------------------------------------------
    def identity(self) -> str:
        return f"local:{self.root.resolve()}:{self.user}"

    @property
    def effective_driver(self) -> str:
        if self.driver == "auto":
            return "bwrap" if bwrap_available() else "container" if _container.available(self.images) else "process"
        return self.driver

    def volume_name(self, pod_name: str | None) -> str:
        validate_pod_name(pod_name)
        return pod_name if pod_name is not None else f"{self.user}-pvc"

    def volume_path(self, pod_name: str | None = None, create: bool = True) -> Path:
        path = self.root / "volumes" / self.user / self.volume_name(pod_name)
        if create:
            private_dirs(path)
        return path

    def _volume(self, pod_name: str | None) -> VolumeDir:
        """The volume's file operations, each resolved beneath its folder's descriptor (``volumes.py``)."""
        return VolumeDir(self.volume_path(pod_name))

    def _pod_dir(self, pod_name: str | None) -> Path:
        return self.root / "pods" / self.user / self.volume_name(pod_name)

    # files ---------------------------------------------------------------------------------
    def uplink(self, files: Sequence[UplinkFile], dest_path: str = "", pod_name: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
        if not files:
            raise InvalidRequest("No files were provided for uplink!", code="NO_FILES", status=400)
        clean_relative(dest_path)
        names = [check_file_name(name) for name, _ in files]
        total = sum(content_size(content) or 0 for _, content in files)
        if total > self.max_uplink_bytes:
            raise InvalidRequest(
                f"Total upload size exceeds {self.max_uplink_bytes} bytes", code="MAX_UPLINK_SIZE_EXCEEDED", status=400
            )
        volume = self._volume(pod_name)
        written = 0
        for name, (_, content) in zip(names, files, strict=True):
            written += volume.write(dest_path, name, content, progress)
        return {"file_count": len(files), "total_size_kb": round(written / 1024, 2)}

    def open_file(self, path: str, pod_name: str | None = None) -> BinaryIO:
        """Open a file of the volume for reading, resolved beneath the volume's descriptor with
        no symlink followed: a pod swapping a path component for a symlink cannot make podrun
        (or the emulator) read a file outside the volume."""
        try:
            return self._volume(pod_name).open_read(path)
        except NotFound:
            volume = self.volume_name(pod_name)
            raise NotFound(f"File missing: {path!r} is not a file in volume {volume!r}", code="FILE_MISSING",
                           status=404) from None

    def downlink_into(self, path: str, sink: BinaryIO, pod_name: str | None = None, progress: Progress | None = None) -> int:
        moved = 0
        with self.open_file(path, pod_name) as source:
            while chunk := source.read(CHUNK):
                sink.write(chunk)
                moved += len(chunk)
                if progress:
                    progress(len(chunk))
        return moved

    def list_files(self, pod_name: str | None = None) -> list[FileEntry]:
        """Files being written (an uplink's temporary ``.part``) are not listed, and a file
        deleted while the listing runs is simply left out: concurrent writers are normal."""
        volume = self._volume(pod_name)
        return _entries(volume.walk(lambda path, info, opener: self._file_hash(f"{volume.root}/{path}", info, opener)))

    def _file_hash(self, key: str, stat: os.stat_result, opener: Any) -> int:
        cached = self._hash_cache.get(key)
        if cached is not None and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        with opener() as source:
            value = _signed64(sha256_of(source))
        self._hash_cache[key] = (stat.st_size, stat.st_mtime_ns, value)
        return value

    def delete(self, path: str, pod_name: str | None = None) -> None:
        if not clean_relative(path):
            raise InvalidRequest("File delete failed: give a file or folder inside the volume, not its root",
                                 code="FILE_DELETE_FAILED", status=400)
        if not self._volume(pod_name).delete(path):
            volume = self.volume_name(pod_name)
            raise NotFound(f"File delete failed: {path!r} does not exist in volume {volume!r}",
                           code="FILE_DELETE_FAILED", status=400)

    # images --------------------------------------------------------------------------------
    @property
    def image_scope(self) -> str:
        """Where this platform's users' images live in the shared store: its root and the user."""
        return f"{image_root_tag(self.root)}/{self.user}"

    def _mark_images(self) -> None:
        """Record under the root that its users have images in the store (``images.scope``
        names their prefix), so whoever discards the root can remove them."""
        marker = self.root / "images.scope"
        if not marker.is_file():
            atomic_write(marker, f"{USER_PREFIX}/{image_root_tag(self.root)}/\n")

    def _host_volume_path(self, pod_name: str | None, path: str) -> str:
        return f"/clients/{self.user}-pvc/{clean_relative(path)}" if pod_name is None else f"/clients/{pod_name}/{clean_relative(path)}"

    def _log_paths(self, pod_name: str | None) -> dict[str, str]:
        """Host paths a build or load log may show, and what CG2's log shows instead."""
        return {str(self.volume_path(pod_name)): f"/clients/{self.volume_name(pod_name) if pod_name else self.user + '-pvc'}",
                str(self.root): "/var/lib/docker"}

    def image_build(self, dockerfile: str, image: str, context: str = ".", pod_name: str | None = None) -> None:
        """Build the Dockerfile offline, as onboard (``builds.py``): every instruction runs,
        ``RUN`` without a network, ``FROM`` from the local image store only. The context is
        handed to the builder as the folder descriptor opened beneath the volume, so a pod
        swapping a path component for a symlink cannot point the build at a host folder."""
        _check_image_name(image)
        volume = self._volume(pod_name)
        try:
            with volume.open_read(dockerfile) as handle:
                text = handle.read(CHUNK).decode(errors="replace")
        except NotFound:
            text = None
        try:
            with volume.folder(context) as folder:
                if text is None:
                    raise InvalidRequest("Docker build failed", code="BUILD_FAILED", status=400, log_tail=[
                        "failed to solve with frontend dockerfile.v0: failed to read dockerfile: "
                        f"open {clean_relative(dockerfile).rpartition('/')[2]}: no such file or directory\n"])
                self._mark_images()
                held = f"/proc/{os.getpid()}/fd/{folder}"
                hide = {**self._log_paths(pod_name), held: self._host_volume_path(pod_name, context).rstrip("/")}
                _builds.build(self.images, scope=self.image_scope, resolve=self.resolve_image, dockerfile=text,
                              context=Path(held), image=normalize_image(image), hide=hide)
        except NotFound:
            raise InvalidRequest("Docker build failed", code="BUILD_FAILED", status=400, log_tail=[
                f'unable to prepare context: path "{self._host_volume_path(pod_name, context)}" not found\n']) from None
        except _builds.BuildFailed as failed:
            raise InvalidRequest("Docker build failed", code="BUILD_FAILED", status=400, log_tail=failed.lines) from None
        except ImageStoreError as exc:
            raise InvalidRequest("Docker build failed", code="BUILD_FAILED", status=400, log_tail=[f"{exc.message}\n"]) from None

    def image_load(self, tarfile: str, image: str, pod_name: str | None = None) -> None:
        """Load a ``docker save``/OCI tar of the volume (opened beneath it); its tags must name ``image``."""
        _check_image_name(image)
        shown = self._host_volume_path(pod_name, tarfile)
        try:
            handle = self._volume(pod_name).open_read(tarfile)
        except NotFound:
            raise InvalidRequest("Docker Image tarfile failed to load", code="IMAGE_LOAD_FAILED", status=400, log_tail=[
                f"sh: line 1: {shown}: No such file or directory\n"]) from None
        self._mark_images()
        with handle:
            try:
                _builds.load(self.images, scope=self.image_scope, owner=self.user, tar=handle,
                             image=normalize_image(image), shown=shown)
            except _builds.BuildFailed as failed:
                raise InvalidRequest("Docker Image tarfile failed to load", code="IMAGE_LOAD_FAILED", status=400,
                                     log_tail=failed.lines) from None
            except ImageStoreError as exc:
                raise InvalidRequest("Docker Image tarfile failed to load", code="IMAGE_LOAD_FAILED", status=400,
                                     log_tail=[f"{exc.message}\n"]) from None

    def image_list(self) -> list[dict[str, Any]]:
        """The user's built and loaded images, in ``docker images``' fields (stock ones are not listed)."""
        try:
            found = self.images.list(prefix=f"{USER_PREFIX}/{self.image_scope}/")
        except ImageStoreError:
            return []
        rows = []
        for item in found:
            for ref in item.names:
                name, _, tag = display_name(ref, self.image_scope).partition(":")
                created = item.created[:19].replace("T", " ")
                rows.append({"Repository": f"{self.user}-{name}", "Tag": tag or "latest", "ID": item.short_id,
                             "CreatedAt": f"{created} +0000 UTC", "Size": f"{item.size}B", "Architecture": item.arch})
        return sorted(rows, key=lambda row: row["Repository"])

    def _image_name(self, image: str) -> str:
        name = normalize_image(image)
        return name[len(self.user) + 1:] if name.startswith(f"{self.user}-") else name

    def resolve_image(self, image: str) -> Image | None:
        """The store's image a pod of ``image`` runs: the user's own, else the stock one of the pods' arch."""
        try:
            return self.images.resolve(self._image_name(image), user=self.image_scope, arch=self.arch)
        except ImageStoreError:
            return None

    def image_runnable(self, image: str) -> bool:
        """Host-Python drivers run any stock name on this machine's tools; the image must exist otherwise."""
        return self._image_name(image) in STOCK_IMAGES or self.resolve_image(image) is not None

    def unpullable_state(self, image: str) -> dict[str, Any]:
        """The waiting state of a pod whose image is not here, as CG2 reports an image it cannot pull,
        with what can be prepared and how."""
        name = self._image_name(image)
        if name in _stock.PREPARABLE:
            return {"reason": "ErrImagePull", "message": (
                f'Back-off pulling image "{image}": ErrImagePull: {name} ({self.arch}) is not in the local image store '
                f"and no registry is reachable: prepare it with `podrun images prepare {name} --arch {self.arch}`")}
        return {"reason": "ImagePullBackOff", "message": (
            f'Back-off pulling image "{image}": ErrImagePull: failed to pull and unpack image '
            f'"docker.io/library/{name}": not found; build it with image_build or load it with image_load first. '
            f"Stock images that can be prepared here: {', '.join(sorted(_stock.PREPARABLE))} "
            f"(`podrun images prepare NAME --arch arm64|host`; Debian has Python 3.11 and 3.13 only)")}

    # pods ----------------------------------------------------------------------------------
    def run_pod(self, spec: PodSpec) -> None:
        """Stop the pod_name's pod, then start the new one, as one step: a file lock makes two
        concurrent runs (two processes, two emulator requests) replace each other in turn."""
        pod_dir = private_dirs(self._pod_dir(spec.pod_name))
        with open(pod_dir / "run.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._replace_pod(spec, pod_dir)

    def _replace_pod(self, spec: PodSpec, pod_dir: Path) -> None:
        volume = self.volume_path(spec.pod_name)
        self._stop_pod(pod_dir)
        run_id = secrets.token_hex(8)
        record: dict[str, Any] = {"run_id": run_id, "image": spec.image, "node": spec.node, "pod_name": spec.pod_name,
                                  "max_duration": spec.max_duration, "scheduled_time": spec.scheduled_iso()}
        (pod_dir / "current_run").write_text(run_id)
        in_image = self.effective_driver == "container"
        if not (self.resolve_image(spec.image) is not None if in_image else self.image_runnable(spec.image)):
            _write_json(pod_dir / "state.json", {"run_id": run_id, "supervisor_pid": None,
                                                 "state": {"waiting": self.unpullable_state(spec.image)}})
            _write_json(pod_dir / "spec.json", record)
            return
        record.update(self._pod_process(spec, volume))
        record["start_at"] = _parse_schedule(spec.scheduled_time)
        _write_json(pod_dir / "spec.json", record)
        _write_json(pod_dir / "state.json", {"run_id": run_id, "supervisor_pid": None,
                                             "state": {"waiting": {"reason": "ContainerCreating", "message": "starting"}}})
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SUPERVISOR), str(pod_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        (pod_dir / "supervisor.pid").write_text(str(child.pid))
        with _children_lock:
            for pid in [pid for pid, c in _children.items() if c.poll() is not None]:
                del _children[pid]
            _children[child.pid] = child

    def _pod_process(self, spec: PodSpec, volume: Path) -> dict[str, Any]:
        """argv, env and cwd of the pod's process for the chosen driver."""
        driver = self.effective_driver
        argv = _split_command(spec.command) + [str(arg) for arg in spec.args]
        if not argv:
            argv = ["python"]  # the stock Python images' default CMD
        if argv[0] in ("python", "python3", "/usr/local/bin/python", "/usr/bin/python3"):
            argv[0] = self.pod_python or sys.executable  # "images run on the host's tools": the host's Python
        env = {key: os.environ[key] for key in _PASS_ENV if key in os.environ}
        if self.pod_python:
            env.pop("PYTHONPATH", None)  # a stand-in image sees nothing of the host's packages
        env.update({str(k): str(v) for k, v in spec.envs.items()})
        env["PODRUN_NODE"] = spec.node
        if spec.pod_name:
            env["HOSTNAME"] = f"{self.user}-{spec.pod_name}"
        if spec.node != "GPU":
            env["CUDA_VISIBLE_DEVICES"] = ""  # only the GPU node has the GPU, as on CG2
        else:
            env.update({k: v for k, v in os.environ.items() if k.startswith(("CUDA_", "NVIDIA_"))})
        if driver == "container":
            host = {key: os.environ[key] for key in (*_PASS_ENV, "XDG_RUNTIME_DIR", "DOCKER_HOST", "CONTAINER_HOST") if key in os.environ}
            pod_env = {k: v for k, v in env.items() if k not in _PASS_ENV and k != "HOSTNAME"}
            pod_env["PODRUN_DATA"] = "/data"
            return _container.pod_process(
                _container.find_engine(self.images), root=self.root, user=self.user, volume_name=self.volume_name(spec.pod_name),
                volume=volume, image=self._engine_image(spec.image),
                node=spec.node, pod_name=spec.pod_name, entrypoint=_split_command(spec.command) or None,
                argv=[str(a) for a in spec.args],
                pod_env=pod_env, host_env=host)
        if driver == "bwrap":
            env["PODRUN_DATA"] = "/data"
            return {"argv": _bwrap_prefix(volume, gpu=spec.node == "GPU", python=self.pod_python) + argv, "env": env, "cwd": "/", "driver": driver}
        env["PODRUN_DATA"] = str(volume)
        argv = [_DATA_TOKEN.sub(lambda _m: str(volume), arg) for arg in argv]
        return {"argv": argv, "env": env, "cwd": str(volume), "driver": driver}

    def _engine_image(self, image: str) -> str:
        found = self.resolve_image(image)
        if found is None:
            raise PlatformError(f"image {image!r} left the local image store while its pod was starting")
        return found.id

    def _supervisor_alive(self, pid: int | None) -> bool:
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

    def _stop_pod(self, pod_dir: Path, timeout: float = 10.0) -> None:
        """Stop the pod_name's running pod (a new run replaces it) and wait for its supervisor."""
        record = _read_json(pod_dir / "state.json")
        if record and "terminated" in record.get("state", {}):
            return
        pid = record.get("supervisor_pid") if record else None
        if pid is None:
            try:
                pid = int((pod_dir / "supervisor.pid").read_text())
            except (FileNotFoundError, ValueError):
                return
        if not self._supervisor_alive(pid):
            # It died without recording an end: a container it ran may still be up.
            _container.cleanup((_read_json(pod_dir / "spec.json") or {}).get("cleanup_argv"))
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self._supervisor_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._supervisor_alive(pid):
            os.kill(pid, signal.SIGKILL)
            # A killed supervisor cannot stop its container: do it here.
            _container.cleanup((_read_json(pod_dir / "spec.json") or {}).get("cleanup_argv"))

    def pod_status(self, pod_name: str | None = None) -> PodState:
        pod_dir = self._pod_dir(pod_name)
        record = _read_json(pod_dir / "state.json")
        if record is None:
            raise NotFound(f"no pod named {self.volume_name(pod_name)!r} has been run", code="POD_NOT_FOUND", status=404)
        state = PodState(record["state"])
        pid = record.get("supervisor_pid")
        spec = _read_json(pod_dir / "spec.json") or {}
        starting = pid is None and state.phase == "waiting" and state.reason == "ContainerCreating"
        if starting:
            try:
                pid = int((pod_dir / "supervisor.pid").read_text())
            except (FileNotFoundError, ValueError):
                pid = None
        if not state.is_terminal and not state.is_stuck and pid and not self._supervisor_alive(pid):
            # The supervisor died without recording an end (killed, machine rebooted): say so
            # rather than report "running" forever. Re-read first: it may have just finished.
            record = _read_json(pod_dir / "state.json") or record
            state = PodState(record["state"])
            if not state.is_terminal and record.get("run_id") == spec.get("run_id"):
                state = PodState({"terminated": {"exitCode": 137, "reason": "Lost",
                                                 "message": "the pod's supervisor ended without recording an exit",
                                                 "startedAt": state.detail.get("startedAt"), "finishedAt": None}})
        return state

    def nodes_status(self) -> list[dict[str, str]]:
        return [{"name": NODE_STATUS_NAMES[node], "status": "True"} for node in NODES]

    # volumes -------------------------------------------------------------------------------
    def pvc_list(self) -> list[str]:
        base = self.root / "volumes" / self.user
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def pvc_delete(self, pvc_name: str) -> None:
        pod_name = None if pvc_name == f"{self.user}-pvc" else validate_pod_name(pvc_name)
        path = self.volume_path(pod_name, create=False)
        if not path.is_dir():
            raise NotFound(f"no volume named {pvc_name!r}", code="PVC_NOT_FOUND", status=404)
        self._stop_pod(self._pod_dir(pod_name))
        VolumeDir(path).remove_volume()

    def shutdown(self) -> None:
        """Stop every pod of this user (tests and the emulator call it on exit)."""
        base = self.root / "pods" / self.user
        if base.is_dir():
            for pod_dir in base.iterdir():
                self._stop_pod(pod_dir)
        with _children_lock:
            for pid in [pid for pid, c in _children.items() if c.poll() is not None]:
                del _children[pid]


def _split_command(command: str | list[str] | None) -> list[str]:
    if command is None or command == "":
        return []
    if isinstance(command, list):
        return [str(c) for c in command]
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid parameters: command {command!r} cannot be split: {exc}", status=400) from None


def _parse_schedule(value: Any) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"Invalid parameters: scheduled_time {value!r} is not an ISO-8601 timestamp with timezone", status=400) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"Invalid parameters: scheduled_time {value!r} needs a timezone, e.g. +00:00", status=400)
    return moment.timestamp()


def _check_image_name(image: str) -> None:
    if not isinstance(image, str) or not re.match(r"^[a-z0-9][a-z0-9._/-]{0,127}(:[\w][\w.-]{0,127})?$", image):
        raise InvalidRequest(f"Invalid parameters: image name {image!r}: lowercase letters, digits, '.', '_', '-', '/' and an optional :tag", status=400)


def _bwrap_prefix(volume: Path, gpu: bool, python: str | None = None) -> list[str]:
    """Host file system read-only, the volume at /data, private /tmp; the interpreter and
    podrun's own code stay visible even when they live under /tmp."""
    args = ["bwrap"]
    for entry in sorted(os.scandir("/"), key=lambda e: e.name):
        if entry.name in ("proc", "dev", "tmp", "data", "sys"):
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry.path), entry.path]
        else:
            args += ["--ro-bind", entry.path, entry.path]
    args += ["--proc", "/proc", "--tmpfs", "/tmp"]
    args += ["--dev-bind", "/dev", "/dev", "--ro-bind", "/sys", "/sys"] if gpu else ["--dev", "/dev"]
    keep = {sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[2])}
    keep.update(p for p in sys.path if p and os.path.isdir(p))
    if python:  # a stand-in pod interpreter (a venv): its tree must stay visible too
        keep.add(str(Path(python).absolute().parents[1]))
    for path in sorted(keep):
        if path.startswith("/tmp/") and os.path.exists(path):
            args += ["--ro-bind", path, path]
    args += ["--bind", str(volume), "/data", "--chdir", "/data", "--unshare-pid", "--die-with-parent", "--"]
    return args


def _entries(items: list[Entry]) -> list[FileEntry]:
    out: list[FileEntry] = []
    for item in items:
        if item.children is not None:
            children = _entries(item.children)
            size = sum(c.size for c in children)
            out.append(FileEntry("directory", item.name, size, _minute(item.stat.st_mtime), None, children))
        else:
            out.append(FileEntry("file", item.name, item.stat.st_size, _minute(item.stat.st_mtime), item.value))
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
