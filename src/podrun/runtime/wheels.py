"""Unpack the job's shipped wheels into the volume once and put them on ``sys.path``.

A wheel is a zip laid out for ``site-packages``; importing from it needs no installer: its
contents go to ``/data/.podrun/site/<wheel hash>/`` (``<name>.data/purelib`` and ``platlib``
merged into that folder, as pip would), written to a temporary folder and renamed into place so
concurrent pods of one volume never see half a wheel. Later jobs find the folder and skip the
unpacking. C extensions load from there as from any site-packages.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import zipfile
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from ..store.volume_blobs import VolumeBlobs

SITE = ".podrun/site"


def hashes(table: Sequence[Sequence[Any]] | None) -> set[str]:
    """The blob hashes of the job's wheels table."""
    return {str(row[1]) for row in table or ()}


def _unpack(data: bytes, target: Path) -> None:
    """Extract into a fresh folder beside ``target`` and rename it into place."""
    work = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
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


def install(blobs: VolumeBlobs, data_dir: Path, table: Sequence[Sequence[Any]] | None) -> list[str]:
    """Unpack each wheel not yet unpacked and prepend its folder to ``sys.path``; returns the
    hashes whose blob is missing from the volume (their imports will fail; the client re-sends)."""
    missing: list[str] = []
    for filename, blob_hash in table or ():
        blobs.path(blob_hash)  # refuses anything but a content hash before it names a folder
        target = data_dir / SITE / str(blob_hash)
        if not target.is_dir():
            if not blobs.has(blob_hash):
                missing.append(blob_hash)
                continue
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
        if str(target) not in sys.path:
            sys.path.insert(0, str(target))
    return missing
