"""Wheels that travel with a job: ``@podrun.remote(wheels=["zstandard==0.23.0"])``.

Why: pods are air-gapped and cannot pip, and a C extension cannot ride as source the way the
user's own modules do. A wheel built for the pod's platform can: it is shipped as one
content-addressed blob in the job's bundle (so a volume receives it once, like any blob) and
the runtime unpacks it once into ``/data/.podrun/site/<hash>/`` and puts that on ``sys.path``
before it unpickles the calls (``runtime/wheels.py``).

An entry is a path to a ``.whl`` file, or a requirement (``name`` or ``name==version``)
fetched once into the local wheel cache for the pod's platform: ``manylinux_2_28_aarch64`` on
CG2, this machine's architecture on the local platform (``PODRUN_WHEEL_PLATFORM`` overrides).
"""

from __future__ import annotations

import functools
import os
import platform as host
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PodrunError, UsageError, WheelError
from ..wire.bundle import python_version
from ..wire.hashing import content_hash

# CG2's pods: glibc 2.28 or later (Debian buster on, the oldest the pods' Debian images are), the
# tag numpy >= 2.3 and others publish their aarch64 wheels under (none under manylinux2014).
WHEEL_PLATFORM = "manylinux_2_28_aarch64"


@dataclass(frozen=True)
class ShippedWheel:
    """One wheel as the job carries it: file name, content hash, bytes, and the top-level
    modules it provides (so preflight does not call them missing from the image)."""

    filename: str
    hash: str
    data: bytes
    top_level: frozenset[str]

    def entry(self) -> list[object]:
        """Its row in the job header's ``wheels`` table."""
        return [self.filename, self.hash]


def wheel_platform(platform_kind: str) -> str:
    """The wheel platform tag a pod of this platform kind loads."""
    if os.environ.get("PODRUN_WHEEL_PLATFORM"):
        return os.environ["PODRUN_WHEEL_PLATFORM"]
    if platform_kind == "local":  # the local pods' architecture (PODRUN_LOCAL_ARCH), the host's by default
        from ..platform.local.images import pod_arch  # the client's side only: not in a pod's zipapp

        return f"manylinux_2_28_{ {'arm64': 'aarch64', 'amd64': 'x86_64'}.get(pod_arch(), host.machine())}"
    return WHEEL_PLATFORM


def validate(entries: Iterable[object]) -> tuple[str, ...]:
    """The ``wheels=`` option as strings; a clear error for anything else."""
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    out: list[str] = []
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)) or not str(entry).strip():
            raise UsageError(f"wheels must be a list of requirements ('name==1.2') or .whl paths, not {entry!r}")
        out.append(os.fspath(entry))
    return tuple(out)


def top_level_modules(archive: zipfile.ZipFile) -> frozenset[str]:
    """From ``*.dist-info/top_level.txt`` where present, else from the archive's entries."""
    names = archive.namelist()
    listed = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/top_level.txt")]
    if listed:
        text = archive.read(listed[0]).decode("utf-8", "replace")
        return frozenset(line.strip().split("/")[0] for line in text.splitlines() if line.strip())
    tops: set[str] = set()
    for name in names:
        first = name.split("/")[0]
        if first.endswith((".dist-info", ".data")):
            continue
        if "/" in name:
            tops.add(first)
        elif first.endswith((".py", ".so", ".pyd")):
            tops.add(first.split(".")[0])
    return frozenset(tops)


def load(path: Path) -> ShippedWheel:
    """Read a ``.whl`` file and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise WheelError(f"wheel {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.count("/") == 1 and n.endswith(".dist-info/METADATA") for n in archive.namelist()):
                raise WheelError(f"{path.name} is not a wheel: it has no *.dist-info/METADATA")
            tops = top_level_modules(archive)
    except zipfile.BadZipFile:
        raise WheelError(f"{path.name} is not a wheel: not a zip archive") from None
    return ShippedWheel(path.name, content_hash(data), data, tops)


@functools.lru_cache(maxsize=64)
def _resolve_one(entry: str, platform_tag: str, python: str) -> ShippedWheel:
    if entry.endswith(".whl") or os.sep in entry:
        return load(Path(entry).expanduser())
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(==[A-Za-z0-9.+!_-]+)?$", entry):
        raise WheelError(f"wheels entry {entry!r}: give 'name' or 'name==version' (pods cannot resolve ranges) or a .whl path")
    from .images import fetch_wheel  # pip is only needed when a requirement must be fetched

    try:
        return load(fetch_wheel(entry, python_version=python, wheel_platform=platform_tag))
    except PodrunError as exc:
        raise WheelError(str(exc)) from None


def resolve(entries: Sequence[str], platform_kind: str) -> tuple[ShippedWheel, ...]:
    """Each entry's wheel for the pod (cached per process); duplicates by content dropped.
    Raises WheelError for wheels the pod could not honour (``check_admissible``)."""
    tag, python = wheel_platform(platform_kind), python_version()
    seen: dict[str, ShippedWheel] = {}
    for entry in entries:
        wheel = _resolve_one(entry, tag, python)
        seen.setdefault(wheel.hash, wheel)
    shipped = tuple(seen.values())
    check_admissible(shipped)
    return shipped


def check_admissible(shipped: Sequence[ShippedWheel]) -> None:
    """Refuse, before anything is sent, a set of wheels whose versions the function could not
    be given (``runtime/wheels.py`` gives it every other one, over the runtime's and the image's
    copies): two wheels of one module, podrun itself, or a cloudpickle other than the client's
    (the runtime loads this client's pickles with it, in the function's own process)."""
    owner: dict[str, str] = {}
    for wheel in shipped:
        for name in sorted(wheel.top_level):
            if name in owner:
                raise WheelError(f"wheels {owner[name]} and {wheel.filename} both provide module {name!r}: "
                                 "ship one version of it")
            owner[name] = wheel.filename
        if "podrun" in wheel.top_level:
            raise WheelError(f"{wheel.filename} provides podrun itself, which cannot be shipped: the pod runs the "
                             "runtime of this client's own podrun installation")
        if "cloudpickle" in wheel.top_level:
            import cloudpickle

            version = wheel_version(wheel.filename)
            if version != cloudpickle.__version__:
                raise WheelError(
                    f"{wheel.filename} is cloudpickle {version}, but the pod's runtime loads what this client pickled "
                    f"with this client's cloudpickle {cloudpickle.__version__}, in the same process as your function, "
                    f"so the function cannot be given another version: ship cloudpickle=={cloudpickle.__version__} "
                    "or leave it out of wheels=")


def wheel_version(filename: str) -> str:
    """The version in a wheel's file name (``name-version(-build)?-py-abi-platform.whl``)."""
    parts = filename[: -len(".whl")].split("-")
    return parts[1] if len(parts) >= 5 else ""
