"""Pack the pod runtime into one zipapp, at run time, from the installed package files.

Why: CG2 pods are air-gapped and a stock ``python:3.X-slim`` image has no podrun, cloudpickle
or msgpack. The zipapp carries podrun's pod-side layers (wire, volume blobs, runtime, errors)
plus pure-Python cloudpickle and msgpack (its C extension is left out: ``msgpack`` falls back
to ``msgpack.fallback``; zstandard is C-only, so a pod without it negotiates zlib). It runs on
the image's own ``python`` with the standard library alone.

The archive is deterministic (sorted entries, fixed timestamps), so its SHA-256 names it: the
same podrun installation always produces the same hash, and a volume that holds it never
receives it again. Sources only: ``marshal`` output depends on reference counts, so bundled
bytecode would change the hash from one client process to the next (measured: +0.1 s of
compile time per job on x86-64 without it).
"""

from __future__ import annotations

import functools
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import msgpack

from ..wire.hashing import content_hash

# podrun's files a pod needs: the runtime and what it imports, and the client API too, because
# the user's shipped modules run in the pod and use it at import time (``@podrun.remote`` on a
# module-level function, ``podrun.get_object`` inside a call). The HTTP client and the surfaces
# stay out: a pod never talks to the EM API.
PODRUN_PARTS = ("__init__.py", "errors.py", "files.py", "wire", "store", "runtime", "platform", "client")
# Not needed in a pod, which talks to no EM API: its client (httpx) and its protocol table, and
# the telemetry server (a script run in its own container). The local platform stays: shipped
# modules may import it at import time, as this project's own tests do.
EXCLUDE_PREFIXES = ("podrun/platform/em.py", "podrun/platform/em_protocol.py", "podrun/platform/local/telemetry_server.py")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)

MAIN_TEMPLATE = """\
\"\"\"podrun pod runtime (zipapp): python RUNTIME.pyz /data/.podrun/jobs/JOB/bundle

On its first run in a volume it unpacks itself into /data/.podrun/runtime/<id>/, so later
pods import from plain files and reuse the bytecode Python caches there instead of
compiling every module from the zip again (a cold start on a slow MPU core saves most of its
import time). Where the volume is not writable it runs from the zip as it is.
\"\"\"
import os
import sys

RUNTIME_ID = "{runtime_id}"


def _unpacked():
    archive = os.path.abspath(sys.argv[0])
    target = os.path.join(os.environ.get("PODRUN_DATA", "/data"), ".podrun", "runtime", RUNTIME_ID)
    if not os.path.isdir(target):
        import shutil  # only to unpack: a pod that finds the runtime unpacked never imports them
        import zipfile

        tmp = "%s.%d.part" % (target, os.getpid())
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(tmp)
            os.replace(tmp, target)
        except OSError:  # read-only volume, or another pod unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
            return target if os.path.isdir(target) else None
    return target


_here = _unpacked()
if _here is not None:
    sys.path[0] = _here

from podrun.runtime.executor import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class Zipapp:
    """The packed runtime: its bytes and their content hash (its name in a volume)."""

    data: bytes
    hash: str
    files: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.data)


def _package_sources(package_dir: Path, prefix: str, parts: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """``{archive name: source}`` for the ``.py`` files of ``parts`` (all when None)."""
    roots = [package_dir / part for part in parts] if parts else [package_dir]
    sources: dict[str, bytes] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            if "__pycache__" in path.parts:
                continue
            name = f"{prefix}/{path.relative_to(package_dir).as_posix()}"
            if not name.startswith(EXCLUDE_PREFIXES):
                sources[name] = path.read_bytes()
    return sources


def runtime_sources() -> dict[str, bytes]:
    """Every source file the zipapp holds, by archive name (checked to be importable alone).
    ``__main__.py`` carries the digest of the rest: the folder it unpacks into is named by it."""
    sources = _package_sources(Path(__file__).resolve().parents[1], "podrun", PODRUN_PARTS)
    sources.update(_package_sources(Path(cloudpickle.__file__).parent, "cloudpickle"))
    sources.update(_package_sources(Path(msgpack.__file__).parent, "msgpack"))
    runtime_id = content_hash(*(name.encode() + b"\0" + sources[name] for name in sorted(sources)))[:24]
    sources["__main__.py"] = MAIN_TEMPLATE.format(runtime_id=runtime_id).encode()
    return sources


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


@functools.lru_cache(maxsize=1)
def build_zipapp() -> Zipapp:
    """Pack the runtime (once per process; a few tens of milliseconds)."""
    sources = runtime_sources()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(sources):
            archive.writestr(_entry(name), sources[name])
    data = buffer.getvalue()
    return Zipapp(data, content_hash(data), tuple(sorted(sources)))
