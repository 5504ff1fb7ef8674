"""Unpack the job's shipped wheels into the volume once and make them what the job imports.

A wheel is a zip laid out for ``site-packages``; importing from it needs no installer: its
contents go to ``/data/.podrun/site/<wheel hash>/`` (``<name>.data/purelib`` and ``platlib``
merged into that folder, as pip would), written to a temporary folder and renamed into place so
concurrent pods of one volume never see half a wheel. Later jobs find the folder and skip the
unpacking. C extensions load from there as from any site-packages.

A shipped wheel wins over every other copy of its modules (``wheels=`` means that version):
``active`` puts the job's wheel folders first on ``sys.path`` and, for the job's duration, takes
the modules they provide out of ``sys.modules``, so the user's ``import msgpack`` loads the
wheel's even though the runtime had already imported its own (the zipapp's msgpack, the
image's zstandard). The runtime keeps using the module objects it holds; they are put back
when the job ends, so the next job of a warm pod starts from the runtime's state again.
Two modules cannot be handled so (the client refuses such wheels before sending anything,
``client/wheels.py``): ``podrun`` itself, and a ``cloudpickle`` other than the client's, which
the runtime needs to load the client's pickles in this very process.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from ..store.volume_blobs import VolumeBlobs

SITE = ".podrun/site"
KEPT = frozenset({"cloudpickle"})  # the runtime's copy stays: the client admits only its own version (client/wheels.py)


def hashes(table: Sequence[Sequence[Any]] | None) -> set[str]:
    """The blob hashes of the job's wheels table."""
    return {str(row[1]) for row in table or ()}


def _unpack(data: bytes, target: Path) -> None:
    """Extract into a fresh folder beside ``target`` and rename it into place."""
    import shutil  # here, not at the top: every pod imports this module, few unpack a wheel
    import zipfile

    work = target.with_name(f".{target.name}.{os.urandom(4).hex()}.tmp")
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            for member in archive.infolist():
                name = member.filename
                if name.startswith("/") or ".." in Path(name).parts:
                    raise IntegrityError(f"wheel member {name!r} escapes its folder")
            archive.extractall(work)
        for data_dir in work.glob("*.data"):
            for scheme in ("purelib", "platlib"):
                for item in (data_dir / scheme).glob("*") if (data_dir / scheme).is_dir() else ():
                    os.replace(item, work / item.name)
        try:
            os.replace(work, target)
        except OSError:
            if not target.is_dir():  # not "another pod unpacked it first"
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install(blobs: VolumeBlobs, data_dir: Path, table: Sequence[Sequence[Any]] | None) -> tuple[list[Path], list[str]]:
    """Unpack each wheel not yet unpacked; returns the wheels' folders, and the hashes whose blob
    is missing from the volume (their imports will fail; the client re-sends them)."""
    folders: list[Path] = []
    missing: list[str] = []
    for filename, blob_hash in table or ():
        blobs.path(blob_hash)  # refuses anything but a content hash before it names a folder
        target = data_dir / SITE / str(blob_hash)
        if not target.is_dir():
            if not blobs.has(blob_hash):
                missing.append(blob_hash)
                continue
            import zipfile  # only where a wheel is unpacked (see _unpack)

            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                _unpack(blobs.read(blob_hash), target)
            except IntegrityError:  # rotted in the volume: drop it so the client re-sends it
                blobs.path(blob_hash).unlink(missing_ok=True)
                missing.append(blob_hash)
                continue
            except (zipfile.BadZipFile, OSError) as exc:
                print(f"podrun: wheel {filename} could not be unpacked: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
        folders.append(target)
    return folders, missing


def top_level_names(folder: Path) -> set[str]:
    """The importable top-level names an unpacked wheel provides (packages, modules, extensions)."""
    names: set[str] = set()
    for entry in folder.iterdir():
        if entry.is_dir():
            if not entry.name.endswith((".dist-info", ".data")) and entry.name != "__pycache__" and entry.name.isidentifier():
                names.add(entry.name)
        elif entry.suffix in (".py", ".so", ".pyd"):
            names.add(entry.name.split(".")[0])
    return names


def kept_conflict(folders: Sequence[Path]) -> str | None:
    """Why the job cannot run, when a wheel carries another version of a module the runtime
    keeps (cloudpickle: the client admits only its own, but an image with podrun installed
    runs its own copy)."""
    import cloudpickle

    for folder in folders:
        for info in folder.glob("*.dist-info"):
            name, _, version = info.name[: -len(".dist-info")].partition("-")
            if name.lower() == "cloudpickle" and version != cloudpickle.__version__:
                return (f"EnvironmentMismatch: wheels= ships cloudpickle {version}, but this pod's runtime loads the job "
                        f"with its own cloudpickle {cloudpickle.__version__} in the same process; use the zipapp runtime "
                        "(PODRUN_RUNTIME=zipapp, the default) or an image whose cloudpickle is that version")
    return None


def _owned(names: set[str]) -> list[str]:
    return [key for key in sys.modules if key.partition(".")[0] in names]


@contextmanager
def active(folders: Sequence[Path]) -> Iterator[None]:
    """While the job runs: its wheels first on ``sys.path``, and the modules they provide
    imported from them, not from whatever the runtime or the image loaded before."""
    if not folders:  # no wheels (most jobs): nothing to put first, nothing to scan
        yield
        return
    names: set[str] = set()
    for folder in folders:
        names |= top_level_names(folder)
    names -= KEPT
    saved = {key: sys.modules.pop(key) for key in _owned(names)}
    added = [str(folder) for folder in folders if str(folder) not in sys.path]
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for key in _owned(names):  # the job's copies go; the runtime's come back
            del sys.modules[key]
        sys.modules.update(saved)
        for path in added:
            if path in sys.path:
                sys.path.remove(path)
