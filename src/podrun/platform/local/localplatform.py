"""LocalPlatform: the EM API's semantics on this machine, with no server and no account.

Volumes are directories, one per (user, pod_name); pods are processes started by a small
detached supervisor (``pods.py`` starts it, ``supervisor.py`` is it) that enforces
``max_duration`` (SIGTERM, a grace period, SIGKILL) and records the pod's state, so pods outlive
the client exactly as they do on CG2. ``drivers.py`` says what runs a pod: ``container``
(inside its image, isolated: the default wherever podman runs) or ``process`` (an explicit,
never silent host mode).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import InvalidRequest, NotFound, PlatformError, UsageError
from ...files import atomic_write, private_dirs
from ..base import Platform, Progress, UplinkFile, Watch, content_size
from ..home import default_home
from ..paths import check_file_name, clean_relative
from ..types import NODE_STATUS_NAMES, NODES, FileEntry, PodSpec, PodState, validate_pod_name
from . import builds as _builds
from . import container as _container
from . import drivers as _drivers
from . import network as _network
from . import pods as _pods
from . import stock as _stock
from . import telemetry as _telemetry
from .drivers import DRIVERS as DRIVERS  # re-exported by the package
from .images import USER_PREFIX, Image, ImageStore, ImageStoreError, display_name, pod_arch
from .images import normalize as normalize_image
from .volumes import Entry, VolumeDir, sha256_of
from .watch import LocalWatch

CHUNK = 1024 * 1024
STOP_GRACE_SECONDS = 30.0  # Kubernetes' terminationGracePeriodSeconds
NETWORK_LINGER_SECONDS = 30.0  # a user's network and telemetry outlive their last pod this long

# The Python-capable images CG2 carries onboard (em-api.md §5), plus the shells. Anything
# else must be built or loaded first, or the pod waits in ImagePullBackOff as on CG2.
STOCK_IMAGES = frozenset(
    [f"python:{v}{s}" for v in ("3.10", "3.11", "3.12") for s in ("", "-slim", "-alpine")]
    + ["dphi-embedded-ml-armv8-py311", "distroless-python3-debian12", "alpine", "busybox"]
)


def image_root_tag(root: Path) -> str:
    """Names one LocalPlatform root in the image store (user images are scoped by it)."""
    return "r" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def _minute(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d-%H-%M")


def _signed64(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big", signed=True)


class LocalPlatform(Platform):
    """The embedded platform. ``root`` holds volumes, pod records and images; one
    LocalPlatform serves one ``user`` (the emulator makes one per authenticated user)."""

    kind = "local"
    poll_interval = (0.003, 0.02)  # a local status read costs microseconds: poll often, answer fast

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        user: str | None = None,
        driver: str | None = None,
        max_uplink_bytes: int | None = None,
        python: str | None = None,
        stop_grace: float | None = None,
        image_store: str | os.PathLike[str] | None = None,
        arch: str | None = None,
        network_linger: float = NETWORK_LINGER_SECONDS,
    ) -> None:
        self.root = Path(root) if root is not None else default_home() / "local"
        self.user = user or os.environ.get("PODRUN_LOCAL_USER") or "local"
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", self.user):
            raise UsageError(f"invalid local user name {self.user!r}: lowercase letters, digits, '-' and '_'")
        # Shared by every user and volume of this machine's podrun home ($PODRUN_IMAGE_STORE overrides).
        self.images = ImageStore(image_store)
        self.arch = pod_arch(arch)  # the architecture of the stock images pods get (PODRUN_LOCAL_ARCH)
        self.driver = _drivers.check_driver(driver or os.environ.get("PODRUN_LOCAL_DRIVER") or "auto", self.images)
        # SIGTERM, then SIGKILL this many seconds later, at max_duration and on replacement.
        grace = stop_grace if stop_grace is not None else float(os.environ.get("PODRUN_STOP_GRACE") or STOP_GRACE_SECONDS)
        if not 0 <= grace <= 3600:
            raise UsageError(f"stop grace {grace!r} (stop_grace= / PODRUN_STOP_GRACE): seconds between 0 and 3600")
        self.stop_grace = grace
        # The user's pod network and telemetry service are removed once no pod has run this long
        # (so a run of short jobs reuses them; a finished program leaves nothing running).
        self.network_linger = network_linger
        # The interpreter a pod's ``python`` runs: the host's by default ("images run on the
        # host's tools"); another one (e.g. a bare venv) stands in for a stock Python image.
        self.pod_python = python or os.environ.get("PODRUN_LOCAL_PYTHON") or None
        if self.pod_python and not os.access(self.pod_python, os.X_OK):
            raise UsageError(f"pod interpreter {self.pod_python!r} (python= / PODRUN_LOCAL_PYTHON) is not an executable file")
        if max_uplink_bytes is not None:
            self.max_uplink_bytes = max_uplink_bytes
        self._identity: str | None = None
        self._hash_cache: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, hash): bounded by the files
        self._lock = threading.Lock()

    # layout --------------------------------------------------------------------------------
    def identity(self) -> str:
        """The platform's name for lanes, journals and caches: resolved once (a client asks for it
        several times per call, and resolving walks the path with a system call per component)."""
        if self._identity is None:
            self._identity = f"local:{self.root.resolve()}:{self.user}"
        return self._identity

    def environment_scope(self) -> str:
        """The same volumes serve host-process pods (the host's Python and its zstandard) and
        container pods (the image's Python, maybe without): what one reported must not stand
        for the other, nor for another pod interpreter."""
        return f"{self.identity()}:{self.effective_driver}:{self.pod_python or ''}"

    @property
    def effective_driver(self) -> str:
        return _drivers.effective(self.driver, self.images)

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
    def uplink(self, files: Sequence[UplinkFile], dest_path: str = "", pod_name: str | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
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
        volume = f"{self.user}-pvc" if pod_name is None else pod_name
        return f"/clients/{volume}/{clean_relative(path)}"

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

    # pods (pods.py) ------------------------------------------------------------------------
    def run_pod(self, spec: PodSpec) -> None:
        _pods.run(self, spec)

    def pod_status(self, pod_name: str | None = None) -> PodState:
        return _pods.status(self, pod_name)

    def watch(self, folders: Sequence[str], pod_name: str | None = None) -> Watch:
        """Woken by inotify (``watch.py``): a result lands, a pod's state changes."""
        return LocalWatch(self._volume(pod_name), folders, self._pod_dir(pod_name))

    def _stop_pod(self, pod_dir: Path) -> None:
        _pods.stop(self, pod_dir)

    def _supervisor_alive(self, pid: int | None) -> bool:
        return _pods.supervisor_alive(pid)

    def pod_process(self, spec: PodSpec, volume: Path, pod_dir: Path) -> dict[str, Any]:
        """argv, env and cwd of the pod's process for the chosen driver."""
        if self.effective_driver != "container":
            return _drivers.process_pod(spec, volume, self.user, self.pod_python)
        engine = _container.find_engine(self.images)
        network = _network.ensure_network(engine, self.root, self.user)
        _telemetry.ensure_telemetry(engine, self.root, self.user, network.name, self.images)
        pod_env = _drivers.pod_env(spec, self.user)
        pod_env["PODRUN_DATA"] = "/data"
        process = _container.pod_process(
            engine, root=self.root, user=self.user, volume_name=self.volume_name(spec.pod_name), volume=volume,
            image=self._engine_image(spec.image), node=spec.node, pod_name=spec.pod_name,
            command=_drivers.split_command(spec.command), args=[str(a) for a in spec.args],
            pod_env=pod_env, pod_dir=pod_dir, network=network.name, firewall=network.firewall, ports=spec.ports)
        process["teardown"] = {  # supervisor.py --linger: what the user's last pod leaves to remove
            "pods": str(pod_dir.parent), "lock": str(_network.lock_path(self.root, self.user)),
            "linger_lock": str(_network.linger_path(self.root, self.user)), "linger": self.network_linger,
            "env": engine.environment(),
            "argv": [_telemetry.teardown_argv(engine, self.root, self.user), *_network.teardown_argvs(engine, network)],
        }
        return process

    def network_lock(self) -> AbstractContextManager[None]:
        """Held while a container pod starts: its network is not removed under it (``network.py``)."""
        return _network.network_lock(self.root, self.user) if self.effective_driver == "container" else nullcontext()

    def _engine_image(self, image: str) -> str:
        found = self.resolve_image(image)
        if found is None:
            raise PlatformError(f"image {image!r} left the local image store while its pod was starting")
        return found.id

    def nodes_status(self) -> list[dict[str, str]]:
        return [{"name": NODE_STATUS_NAMES[node], "status": "True"} for node in NODES]

    # volumes -------------------------------------------------------------------------------
    def pvc_list(self) -> list[str]:
        base = self.root / "volumes" / self.user
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def default_volume(self) -> str | None:
        return self.volume_name(None)

    def pvc_delete(self, pvc_name: str) -> None:
        pod_name = None if pvc_name == f"{self.user}-pvc" else validate_pod_name(pvc_name)
        path = self.volume_path(pod_name, create=False)
        if not path.is_dir():
            raise NotFound(f"no volume named {pvc_name!r}", code="PVC_NOT_FOUND", status=404)
        self._stop_pod(self._pod_dir(pod_name))
        VolumeDir(path).remove_volume()

    def shutdown(self) -> None:
        """Stop every pod of this user, its telemetry service and its network (tests and the
        emulator call it on exit)."""
        _pods.shutdown(self)
        if _container.available(self.images):
            engine = _container.find_engine(self.images)
            with _network.remover_held(self.root, self.user):
                _telemetry.stop_telemetry(engine, self.root, self.user)
                _network.remove_network(engine, self.root, self.user)


def _check_image_name(image: str) -> None:
    if not isinstance(image, str) or not re.match(r"^[a-z0-9][a-z0-9._/-]{0,127}(:[\w][\w.-]{0,127})?$", image):
        raise InvalidRequest(f"Invalid parameters: image name {image!r}: lowercase letters, digits, '.', '_', '-', '/' "
                             "and an optional :tag", status=400)


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


