"""A job's one bundle: its call table plus only the blobs the volume lacks."""

from __future__ import annotations

from dataclasses import dataclass

from ...platform.metered import MeteredPlatform
from ...wire.bundle import CallGroup, JobHeader, encode_bundle
from ...wire.compression import compress
from .. import bootstrap
from ..manifest import Manifest
from .key import JobKey, PendingGroup, new_job_id


@dataclass
class PackedJob:
    header: JobHeader
    raw: dict[str, bytes | memoryview]  # every blob the job references, by hash
    codec: int  # what the pod's image can decode
    boot: bootstrap.Bootstrap  # the pod command and the runtime frame, when the volume lacks it
    embedded: list[str]  # blobs the volume lacks, carried in the bundle
    bundle: bytes


def pack_job(job_id: str, groups: list[PendingGroup], platform: MeteredPlatform, key: JobKey, manifest: Manifest,
             refresh: bool = True) -> PackedJob:
    """The job's one bundle: its call table plus only the blobs the volume lacks.
    With ``refresh=False`` the manifest is used as it stands, making no platform call."""
    codec = bootstrap.pod_codec(platform, key)
    raw: dict[str, bytes | memoryview] = {}
    table: list[CallGroup] = []
    for group in groups:
        raw[group.function.hash] = group.function.payload
        raw.update(group.args.blobs)
        args = compress(group.args.payload, codec)
        table.append(CallGroup(group.function.hash, args, group.args.buffers, len(group.futures), group.timeout,
                               group.workers))
    header = JobHeader(job_id, table)
    boot = bootstrap.prepare(platform, key, groups, header, raw, manifest, refresh)  # runtime, modules
    embedded = manifest.missing(header.required_blobs(), refresh=refresh)
    bundle = encode_bundle(header, {h: raw[h] for h in embedded}, codec, frames_last=boot.frames)
    return PackedJob(header, raw, codec, boot, embedded, bundle)


def estimate_uplink(groups: list[PendingGroup], platform: MeteredPlatform, key: JobKey, manifest: Manifest) -> int:
    """Bytes a job of ``groups`` would uplink now, from the manifest as it stands (no platform call)."""
    return len(pack_job(new_job_id(), groups, platform, key, manifest, refresh=False).bundle)
