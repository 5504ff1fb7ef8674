"""Pack the pod runtime into one zipapp, at run time, from the installed package files.

Why: CG2 pods are air-gapped and a stock ``python:3.X-slim`` image has no podrun, cloudpickle
or msgpack. The zipapp carries the pod package whole and nothing else of podrun
(``POD_PACKAGE``: runtime, wire, store, errors, files and the package's ``__init__``, which
imports nothing outside it: ``tests/test_structure.py`` walks their imports), plus cloudpickle
(the client's own version: it must load the client's pickles) and a pure-Python msgpack. It
runs on the image's own ``python`` with the standard library alone.

msgpack: an image's own msgpack (Debian's, with its C extension: ~10x faster record encoding)
is used where it is recent enough for the wire (``MSGPACK_MIN``); only where it is missing or
older does ``__main__`` put the zipapp's copy (``_podrun_vendor/msgpack``, its pure-Python
``fallback``) on ``sys.path``. zstandard is C-only and not carried: a pod without it
negotiates zlib.

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

# The pod package: every module a pod runs, carried whole. No client, no platform: a pod
# talks to no EM API, and what shipped user modules name of the client API resolves to its
# pod-side stand-ins (``runtime/pod_api.py``).
POD_PACKAGE = ("__init__.py", "errors.py", "files.py", "inotify.py", "wire", "store", "runtime")
VENDOR = "_podrun_vendor"  # the zipapp's fallbacks, on sys.path only where the image lacks them
MSGPACK_MIN = (1, 0)  # the wire's msgpack API: packb/unpackb with 1.0's defaults (raw=False, bin type)
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


def _msgpack(root):
    # The image's msgpack where it is recent enough (its C extension is far faster than the
    # pure-Python copy carried here), else the zipapp's own.
    try:
        import msgpack

        if tuple(msgpack.version[:2]) >= {msgpack_min}:
            return
    except Exception:  # missing, or broken: the carried copy does
        pass
    for name in [name for name in sys.modules if name == "msgpack" or name.startswith("msgpack.")]:
        del sys.modules[name]
    sys.path.insert(1, os.path.join(root, "{vendor}"))


_here = _unpacked()
if _here is not None:
    sys.path[0] = _here
_msgpack(sys.path[0])

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
    """``{archive name: source}`` for the ``.py`` files of ``parts`` (all when None), under
    ``prefix``, the package's own name or a vendored path ending in it."""
    roots = [package_dir / part for part in parts] if parts else [package_dir]
    sources: dict[str, bytes] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            if "__pycache__" in path.parts:
                continue
            sources[f"{prefix}/{path.relative_to(package_dir).as_posix()}"] = path.read_bytes()
    return sources


def runtime_sources() -> dict[str, bytes]:
    """Every source file the zipapp holds, by archive name (checked to be importable alone).
    ``__main__.py`` carries the digest of the rest: the folder it unpacks into is named by it."""
    sources = _package_sources(Path(__file__).resolve().parents[1], "podrun", POD_PACKAGE)
    sources.update(_package_sources(Path(cloudpickle.__file__).parent, "cloudpickle"))
    sources.update(_package_sources(Path(msgpack.__file__).parent, f"{VENDOR}/msgpack"))
    runtime_id = content_hash(*(name.encode() + b"\0" + sources[name] for name in sorted(sources)))[:24]
    main = MAIN_TEMPLATE.format(runtime_id=runtime_id, msgpack_min=MSGPACK_MIN, vendor=VENDOR)
    sources["__main__.py"] = main.encode()
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
