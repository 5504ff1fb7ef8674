"""How a job's pod finds the podrun runtime, and what code travels with the job.

Zero-build bootstrap, one uplink per job:

* The runtime is a zipapp (``runtime/pack.py``) stored in the volume as an ordinary
  content-addressed blob whose frame is *raw* (codec byte 0, then the zip). A zip tolerates
  bytes before it, so that blob file is itself runnable: ``python /data/.podrun/blobs/<hash>``.
  The manifest tracks it like any blob, so it crosses the link once per volume.
* When the volume lacks it, the zipapp rides in the job's own bundle as the *last* embedded
  frame, so the bundle file ends with the zip and the pod runs ``python BUNDLE BUNDLE``: the
  runtime inside the bundle stores every embedded frame (itself included) into the blob
  store, and the next job runs it from there. Still one file, one uplink call.

Also here: the user's modules (per-module source blobs, see ``modules.py``), the wheels named
in ``wheels=`` (one blob each, see ``wheels.py``; the runtime makes them win over its own and the
image's copies) and the hints the runtime needs for the environment manifest (image name, the
env hash the client knows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..platform.base import Platform
from ..runtime.pack import build_zipapp
from ..wire.bundle import JobHeader
from ..wire.compression import RAW, best_codec
from ..wire.layout import BUNDLE_NAME, INBOX, blob_path, job_file
from . import modules as shipped
from . import preflight
from .blob_uplink import uplink_frames
from .manifest import Manifest

if TYPE_CHECKING:
    from .jobs.key import JobKey, PendingGroup

RUNTIME_MODES = ("zipapp", "installed")


def runtime_mode() -> str:
    """``zipapp`` (default: any Python image works) or ``installed`` (the image has podrun,
    e.g. one built from ``runtime_image/``: ``python -m podrun.runtime``)."""
    mode = os.environ.get("PODRUN_RUNTIME", "zipapp")
    if mode not in RUNTIME_MODES:
        raise ConfigError(f"PODRUN_RUNTIME={mode!r}: choose one of {', '.join(RUNTIME_MODES)}")
    return mode


@dataclass
class Bootstrap:
    """The pod command of one job and the raw frames its bundle must end with."""

    job_id: str
    runtime_hash: str | None
    frames: dict[str, bytes] = field(default_factory=dict)  # runtime frame, when the volume lacks it
    in_inbox: bool = False  # a warm pod's job: the bundle waits in the volume's inbox

    @property
    def bundle(self) -> str:
        if self.in_inbox:
            return f"/data/{INBOX}/{self.job_id}"
        return f"/data/{job_file(self.job_id, BUNDLE_NAME)}"

    @property
    def command(self) -> str:
        if self.runtime_hash is None:
            return f"python -m podrun.runtime {self.bundle}"
        if self.frames:  # the bundle carries the runtime: run the bundle itself
            return f"python {self.bundle} {self.bundle}"
        return f"python /data/{blob_path(self.runtime_hash)} {self.bundle}"

    @property
    def installs(self) -> list[str]:
        """Blob hashes this job stores in the volume beyond the header's own."""
        return list(self.frames)

    def uplink_apart(self, platform: Platform, pod_name: str | None) -> None:
        """The bundle is over the uplink limit: send the runtime frame as a blob of its own."""
        if self.frames:
            uplink_frames(platform, self.frames, pod_name)
            self.frames = {}


def pod_codec(platform: Platform, key: JobKey) -> int:
    """The codec for frames this job sends: zstd only where the pod reported it can read it.
    A bare image running the zipapp has no zstandard (C-only), so the default is zlib."""
    entry = preflight.cached(platform, key.image, key.node)
    codecs = entry["env"].get("codecs") if entry else None
    if codecs is None and runtime_mode() == "zipapp":
        codecs = ["zlib", "raw"]
    return best_codec(codecs)


def prepare(platform: Platform, key: JobKey, groups: Sequence[PendingGroup], header: JobHeader,
            raw: dict[str, Any], manifest: Manifest, refresh: bool = True) -> Bootstrap:
    """Add shipped module sources to ``raw`` and their table to the header; choose the command."""
    names: set[str] = set()
    for group in groups:
        function = group.function
        names |= function.modules | function.optional_modules | group.args.modules | group.args.optional
    sources = shipped.closure(names)
    wheels = {wheel.hash: wheel for group in groups for wheel in group.function.wheels}
    if wheels:  # blobs like any other: the bundle carries only those the volume lacks
        header.options["wheels"] = [wheel.entry() for wheel in wheels.values()]
        raw.update({wheel.hash: wheel.data for wheel in wheels.values()})
    if sources:
        header.options["modules"] = [[m.name, m.hash, m.is_package] for m in sources]
        raw.update({m.hash: m.source for m in sources})
    header.options["image"] = key.image
    known = preflight.known_hash(platform, key.image, key.node)
    if known:
        header.options["env_known"] = known
    if runtime_mode() == "installed":
        return Bootstrap(header.job_id, None)
    app = build_zipapp()
    boot = Bootstrap(header.job_id, app.hash)
    if manifest.missing([app.hash], refresh=refresh):
        boot.frames[app.hash] = bytes([RAW]) + app.data
    return boot
