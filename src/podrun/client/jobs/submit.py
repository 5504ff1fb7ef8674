"""Sending a job: its bundle up (blobs apart when over the per-call limit), then its pod
started at most once, or the bundle queued in a warm pod's inbox."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from ...errors import NotFound
from ...platform.metered import MeteredPlatform
from ...platform.types import PodSpec
from ...wire.bundle import encode_bundle
from ...wire.compression import compress
from ...wire.layout import BUNDLE_NAME, CANCEL_NAME, INBOX, RESULTS_NAME, job_dir, job_file
from ..blob_uplink import uplink_frames
from ..manifest import Manifest
from ..warm import WarmPod
from .key import JobKey, PendingGroup
from .pack import pack_job


@dataclass
class Launch:
    """One job's submission: what it carried and how its pod is (re)started."""

    platform: MeteredPlatform
    pod_name: str | None
    job_id: str
    key: JobKey
    warm: WarmPod
    embedded: list[str] = field(default_factory=list)
    runtime_from_volume: str | None = None  # the zipapp's hash when the pod runs it from the volume
    shipped: frozenset[str] = frozenset()  # modules shipped by source: their traceback frames render from here
    command: str = ""

    def submit(self, groups: list[PendingGroup], manifest: Manifest) -> None:
        packed = pack_job(self.job_id, groups, self.platform, self.key, manifest)
        self.embedded = packed.embedded
        self.shipped = frozenset(str(row[0]) for row in packed.header.options.get("modules", []))
        bundle, boot = packed.bundle, packed.boot
        self.runtime_from_volume = boot.runtime_hash if boot.runtime_hash and not boot.frames else None
        if len(bundle) > self.platform.max_uplink_bytes:
            self._uplink_blobs_apart(packed.raw, packed.codec)
            boot.uplink_apart(self.platform, self.pod_name)
            bundle = encode_bundle(packed.header, {})
        self.embedded += boot.installs
        if self.key.keep_warm and self.warm.key == self.key:
            # A warm pod of this kind serves: the job waits in its inbox, no pod is started.
            boot.in_inbox = True
            self.command = f"{boot.command} --serve {self.key.keep_warm:g}"
            self.platform.uplink([(self.job_id, bundle)], dest_path=INBOX, pod_name=self.pod_name)
            return
        # A new warm pod runs this job first, from the job's folder: never from the inbox, where
        # a pod of another kind, serving until it is replaced, could take it.
        self.command = boot.command + (f" --serve {self.key.keep_warm:g}" if self.key.keep_warm else "")
        self.platform.uplink([(BUNDLE_NAME, bundle)], dest_path=job_dir(self.job_id), pod_name=self.pod_name)
        self.start_pod()

    def start_pod(self) -> None:
        """run_pod replaces whatever pod this pod_name had, a warm one included. Sent at most
        once: a run whose answer was lost is checked against the job's run marker first."""
        was_warm, self.warm.key = self.warm.key is not None, None
        spec = PodSpec(
            image=self.key.image,
            node=self.key.node,
            max_duration=self.key.max_duration,
            command=self.command,
            envs=dict(self.key.envs),
            pod_name=self.pod_name,
        )
        self.platform.run_pod_at_most_once(spec, started=lambda: self._pod_started(trust_status=not was_warm))
        if self.key.keep_warm:
            self.warm.key = self.key

    def _pod_started(self, trust_status: bool) -> bool:
        """Whether a ``run_pod`` whose answer was lost reached the platform. The run marker is
        the job's results file, which the runtime creates before any call runs; before it
        appears, a pod_name whose pod is starting or running has ours (this lane's previous pod
        had ended), unless a warm pod of another kind served it (``trust_status`` False).
        Re-sending a run that did start would stop its pod mid-call: KILLED, never run twice."""
        try:
            self.platform.downlink(job_file(self.job_id, RESULTS_NAME), self.pod_name)
            return True
        except NotFound:
            pass
        if not trust_status:
            return False
        try:
            state = self.platform.pod_status(self.pod_name)
        except NotFound:
            return False
        return state.phase == "running" or (state.phase == "waiting" and not state.is_stuck)

    def _uplink_blobs_apart(self, raw: dict[str, bytes | memoryview], codec: int | None = None) -> None:
        """A bundle over the platform's per-call limit: send its blobs first, in as few
        uplinks as fit under the limit (chunked where one blob is larger), then a bundle of
        the call table alone."""
        uplink_frames(self.platform, {h: compress(raw[h], codec) for h in self.embedded}, self.pod_name)


def send_cancel(platform: MeteredPlatform, job_id: str, pod_name: str | None, indexes: set[int]) -> None:
    """Ask a job's pod to stop calls: the runtime looks at the job's cancel file while calls
    run (``runtime/cancel.py``), skips each listed call not yet started and interrupts a
    running one; both end CANCELLED. The file lists every index wanted."""
    platform.uplink([(CANCEL_NAME, msgpack.packb(sorted(indexes)))], dest_path=job_dir(job_id), pod_name=pod_name)
