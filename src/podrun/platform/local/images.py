"""The local image store: podman's containers-storage under ``$PODRUN_IMAGE_STORE``.

Why: a local pod must run inside a real image (its own Python, its own files, its own
architecture), as on CG2. One store serves every volume and user of a ``PODRUN_HOME``; podman
keeps it content-addressed, so an image (or a layer two images share) is stored once.

Names inside the store are podrun's own, so no name a user or a tar chooses can shadow
another's image:

* stock images (made by ``podrun images prepare``): ``localhost/podrun-stock/<arch>/<name>``;
* built and loaded images of a user: ``localhost/podrun-user/<scope>/<name>``, where the scope
  names the user and their platform (LocalPlatform: ``<hash of its root>/<user>``), so two
  podrun homes or emulators sharing one store never see each other's images.

A pod names an image as CG2 does (``python:3.11-slim``, ``fpga.dphi.space:5000/alpine:latest``,
``echo-test``); :meth:`ImageStore.resolve` maps that to the user's image first, then to the stock
image of the pods' architecture. Every command runs podman with a fixed environment and the
store's own flags (:meth:`ImageStore.engine_argv`), never the user's podman configuration.
"""

from __future__ import annotations

import builtins
import json
import os
import platform as _platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import ImageStoreError
from ..home import default_home

ONBOARD_REGISTRY = "fpga.dphi.space:5000/"
_DROP_PREFIXES = (ONBOARD_REGISTRY, "localhost/", "docker.io/library/", "docker.io/", "library/")
STOCK_PREFIX = "localhost/podrun-stock"
USER_PREFIX = "localhost/podrun-user"
ARCHES = ("arm64", "amd64")
STORAGE_DRIVERS = ("overlay", "vfs")
ENGINE_TIMEOUT = 600.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}(:[\w][\w.-]{0,127})?$")
_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_arch() -> str:
    """This machine's architecture in OCI's words (``amd64``, ``arm64``)."""
    machine = _platform.machine().lower()
    return _MACHINE_ARCH.get(machine, machine)


def pod_arch(choice: str | None = None) -> str:
    """The architecture local pods get: ``choice``, else ``$PODRUN_LOCAL_ARCH``, else the
    default. ``host`` means this machine's. The default is ``host``: measured, a ``python -c
    pass`` pod starts several times faster than under qemu (README, benchmarks/pods.py);
    ``arm64`` is what CG2 runs and what the slow suites use."""
    value = (choice or os.environ.get("PODRUN_LOCAL_ARCH") or "host").lower()
    value = host_arch() if value == "host" else _MACHINE_ARCH.get(value, value)
    if value not in ARCHES:
        raise ValueError(f"unknown pod architecture {value!r}: choose arm64, amd64 or host")
    return value


def normalize(name: str) -> str:
    """CG2's spellings of one image to one name: ``fpga.dphi.space:5000/alpine:latest`` → ``alpine``."""
    for prefix in _DROP_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name[: -len(":latest")] if name.endswith(":latest") else name


def valid_name(name: str) -> bool:
    """Whether ``name`` is an image name podrun accepts (lowercase repository, optional tag)."""
    return isinstance(name, str) and bool(_NAME.match(name)) and ".." not in name and "//" not in name


def _ref(prefix: str, scope: str, name: str) -> str:
    name = normalize(name)
    return f"{prefix}/{scope}/{name}" if ":" in name.rsplit("/", 1)[-1] else f"{prefix}/{scope}/{name}:latest"


def stock_ref(name: str, arch: str) -> str:
    """The store's name of stock image ``name`` for ``arch``."""
    return _ref(STOCK_PREFIX, arch, name)


def user_ref(scope: str, name: str) -> str:
    """The store's name of image ``name`` built or loaded by the owner ``scope`` names."""
    return _ref(USER_PREFIX, scope, name)


def display_name(ref: str, scope: str | None = None) -> str:
    """The CG2 name of a store name: ``…/podrun-stock/arm64/alpine:latest`` → ``alpine``,
    ``…/podrun-user/<scope>/echo:latest`` → ``echo``."""
    prefix = f"{USER_PREFIX}/{scope}/" if scope else None
    if prefix and ref.startswith(prefix):
        return normalize(ref[len(prefix):])
    if ref.startswith(STOCK_PREFIX + "/"):
        return normalize(ref[len(STOCK_PREFIX) + 1:].split("/", 1)[1])
    return normalize(ref)


@dataclass(frozen=True)
class Image:
    """One image of the store and the configuration a pod of it starts with."""

    id: str
    names: tuple[str, ...]
    arch: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    size: int = 0
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]


def _image_from_inspect(item: dict[str, Any]) -> Image:
    config = item.get("Config") or {}
    env: dict[str, str] = {}
    for entry in config.get("Env") or []:
        key, _, value = str(entry).partition("=")
        env[key] = value
    return Image(
        id=str(item["Id"]), names=tuple(item.get("RepoTags") or ()), arch=str(item.get("Architecture") or ""),
        env=env, workdir=str(config.get("WorkingDir") or ""), entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []), user=str(config.get("User") or ""), size=int(item.get("Size") or 0),
        created=str(item.get("Created") or ""))


def _last_lines(text: str, count: int = 1) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:])[-2000:] if lines else "(no error output)"


class ImageStore:
    """podman's containers-storage at ``root`` (``storage/``, ``run/``, ``tmp/`` beneath it)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, storage_driver: str | None = None) -> None:
        self.root = Path(root) if root is not None else default_store()
        self._driver = storage_driver or os.environ.get("PODRUN_IMAGE_DRIVER") or None
        if self._driver and self._driver not in STORAGE_DRIVERS:
            raise ValueError(f"unknown storage driver {self._driver!r}: choose one of {', '.join(STORAGE_DRIVERS)}")

    # podman ------------------------------------------------------------------------------
    @staticmethod
    def podman() -> str:
        exe = shutil.which("podman", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if not exe:
            raise ImageStoreError("the local image store needs podman: apt-get install podman runc")
        return exe

    @property
    def storage_driver(self) -> str:
        """``overlay`` where the store's file system can carry it, else ``vfs`` (a store on
        overlayfs, as in a nested container); fixed at the store's first use."""
        if self._driver:
            return self._driver
        chosen = self.root / "driver"
        try:
            self._driver = chosen.read_text().strip()
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            self._driver = "vfs" if _filesystem_type(self.root) in ("overlay", "overlayfs", "aufs") else "overlay"
            chosen.write_text(self._driver + "\n")
        if self._driver not in STORAGE_DRIVERS:
            raise ImageStoreError(f"{chosen} names an unknown storage driver {self._driver!r}")
        return self._driver

    def engine_argv(self) -> list[str]:
        """podman and the global flags that make it use this store and nothing else."""
        return [self.podman(), "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--tmpdir", str(self.root / "tmp"), "--storage-driver", self.storage_driver, "--events-backend", "none"]

    def engine_env(self) -> dict[str, str]:
        """A fixed environment for podman: nothing of the caller's (no ``CONTAINERS_*``, no ``HOME``)."""
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.root),
                "LANG": "C.UTF-8", "TMPDIR": str(self.root / "tmp")}

    def run(self, *args: str, timeout: float = ENGINE_TIMEOUT, check: bool = False,
            stdin: BinaryIO | None = None) -> subprocess.CompletedProcess[str]:
        """``podman <store flags> ARGS`` (``stdin``: a file it reads, e.g. an image tar);
        ``check`` raises :class:`ImageStoreError` on failure."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        argv = [*self.engine_argv(), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.engine_env(),
                                  stdin=subprocess.DEVNULL if stdin is None else stdin)
        except subprocess.TimeoutExpired:
            raise ImageStoreError(f"podman {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
        if check and done.returncode != 0:
            raise ImageStoreError(f"podman {' '.join(args[:2])} failed: {_last_lines(done.stderr)}")
        return done

    # looking images up -------------------------------------------------------------------
    def inspect(self, ref: str) -> Image | None:
        """The image a store name or ID names, or None."""
        done = self.run("image", "inspect", ref)
        if done.returncode != 0:
            return None
        items = json.loads(done.stdout or "[]")
        return _image_from_inspect(items[0]) if items else None

    def resolve(self, name: str, *, user: str | None = None, arch: str | None = None) -> Image | None:
        """The image a pod naming ``name`` runs: the image of that name of the owner ``user``
        (a scope, see :func:`user_ref`), else the stock image of ``arch`` (default:
        :func:`pod_arch`); None when neither is here."""
        if not valid_name(normalize(name)):
            return None
        candidates = [user_ref(user, name)] if user else []
        candidates.append(stock_ref(name, arch or pod_arch()))
        for ref in candidates:
            found = self.inspect(ref)
            if found is not None:
                return found
        return None

    def list(self, prefix: str = "localhost/podrun-") -> list[Image]:
        """The store's images with a name under ``prefix`` (all of podrun's by default)."""
        if not (self.root / "storage").is_dir():
            return []
        done = self.run("images", "--format", "json", check=True)
        ids = list(dict.fromkeys(str(item["Id"]) for item in json.loads(done.stdout or "[]")
                                 if any(str(n).startswith(prefix) for n in item.get("Names") or ())))
        if not ids:
            return []
        found = self.run("image", "inspect", *ids, check=True)
        images = [_image_from_inspect(item) for item in json.loads(found.stdout or "[]")]
        return [Image(**{**image.__dict__, "names": tuple(n for n in image.names if n.startswith(prefix))}) for image in images]

    def stock(self, arch: str | None = None) -> builtins.list[str]:
        """The stock images prepared here for ``arch`` (default: every arch), by CG2 name."""
        prefix = f"{STOCK_PREFIX}/{arch}/" if arch else f"{STOCK_PREFIX}/"
        return sorted({display_name(n) for image in self.list(prefix) for n in image.names})

    # changing the store ------------------------------------------------------------------
    def tag(self, image: Image | str, *refs: str) -> None:
        self.run("tag", image.id if isinstance(image, Image) else image, *refs, check=True)

    def untag(self, image: Image | str, ref: str) -> None:
        """Remove one name; an image left without names is removed by podman's next prune."""
        self.run("untag", image.id if isinstance(image, Image) else image, ref)

    def remove_all(self, prefix: str) -> None:
        """Take every name under ``prefix`` off its image (a platform's images when it is
        discarded), removing each image left without a name."""
        for image in self.list(prefix):
            for ref in image.names:
                self.untag(image, ref)
            self.remove(image.id)

    def remove(self, image_id: str) -> None:
        """Remove an image that has no name left (a build ``FROM x`` with no step *is* x, so an
        image may carry stock and user names at once); one a container still uses stays."""
        found = self.inspect(image_id)
        if found is not None and not found.names:
            self.run("rmi", "--ignore", found.id)

    def rootfs(self, image: Image) -> Path:
        """A mount of the image's root file system, for drivers that need a directory (bind
        it read-only: it is the store's own copy). Each call adds a mount; :meth:`release`."""
        done = self.run("image", "mount", image.id, check=True)
        return Path(done.stdout.strip().splitlines()[-1])

    def release(self, image: Image) -> None:
        self.run("image", "unmount", image.id)


def default_store() -> Path:
    """``$PODRUN_IMAGE_STORE``, else ``$PODRUN_HOME/images`` (shared by every volume and user)."""
    if os.environ.get("PODRUN_IMAGE_STORE"):
        return Path(os.environ["PODRUN_IMAGE_STORE"])
    return default_home() / "images"


def _filesystem_type(path: Path) -> str:
    """The file system type /proc/mounts gives for the mount holding ``path``."""
    best, kind = "", ""
    real = os.path.realpath(path)
    try:
        mounts: Sequence[str] = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, parts[2]
    return kind
