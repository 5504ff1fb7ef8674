"""``podrun gc``: bound what a volume and the local journal keep.

What goes, for one volume (``plan`` says it, ``apply`` does it):

* **finished jobs** whose last activity is older than ``older_than``: their folder under
  ``.podrun/jobs`` (results, cancel file). A job counts as finished when its results end with
  an ``end`` record, or when no pod of the pod_name is running or waiting (nothing can still
  be running it). Calls of a later job that name one of its results (an upstream future) then
  fail with "has no result in this volume": the limit is the promise.
* **abandoned queued jobs**: bundles in the inbox older than ``older_than`` while no pod runs
  (a warm pod that starts later would otherwise run them long after their client gave up).
* **unreferenced blobs** older than ``grace`` (the pod refreshes a blob's time each time a job
  uses it, so this is "unused for ``grace``"): referenced are the blobs named by the results of
  every job kept, by blob-backed objects (``fut.ref()``, ``register_blobs``) and the runtime
  zipapp this client runs. Blobs are never removed while the pod_name's pod is running or
  waiting, or while the inbox still holds jobs: the bundle of a running or queued job names
  blobs that only its pod has read. A client that packed a job against a blob removed since
  gets it reported missing by the pod and re-sends it (the repair path), so a race costs a
  round trip, never a call.
* **journal entries** of this platform and pod_name submitted before ``older_than`` that are
  finished, or whose job is no longer in the volume.

Reading results to find what they reference costs link bytes on CG2; the plan counts them.
"""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from ..errors import NotFound, WireFormatError
from ..platform.metered import MeteredPlatform
from ..platform.types import FileEntry, walk_entries
from ..runtime.pack import build_zipapp
from ..wire import records as rec
from ..wire.hashing import is_content_hash
from ..wire.layout import BLOBS, INBOX, JOBS, OBJECTS, RESULTS_NAME, STOP_NAME
from . import journal
from .manifest import Manifest

DAY = 86400.0


@dataclass(frozen=True)
class Removal:
    """One thing gc removes: a volume path (file or job folder) or a journal entry."""

    kind: str  # "job" | "queued" | "blob" | "chunk" | "journal"
    path: str  # in the volume; the journal file's path for "journal"
    size: int  # bytes freed
    why: str


@dataclass
class Plan:
    pod_name: str | None
    removals: list[Removal] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # kind -> how many stay
    notes: list[str] = field(default_factory=list)  # why something was not removed
    bytes_read: int = 0  # downlinked to find references

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removals if r.kind != "journal")

    def count(self, kind: str) -> int:
        return sum(r.kind == kind for r in self.removals)


def entry_time(entry: FileEntry) -> float | None:
    """A listing's ``YYYY-MM-DD-HH-MM`` as seconds since the epoch (read as UTC), None when unreadable."""
    try:
        return float(calendar.timegm(time.strptime(entry.time, "%Y-%m-%d-%H-%M")))
    except (TypeError, ValueError):
        return None


def job_submitted(job_id: str) -> float | None:
    """A job id starts with its UTC submission time (``client/job.py``: 20261122-193012-…)."""
    try:
        return float(calendar.timegm(time.strptime(job_id[:15], "%Y%m%d-%H%M%S")))
    except ValueError:
        return None


def plan(platform: MeteredPlatform, pod_name: str | None, home: Path, older_than: float = 7 * DAY,
         grace: float = DAY, now: float | None = None) -> Plan:
    """What gc would remove from ``pod_name``'s volume and the journal now (removes nothing)."""
    now = time.time() if now is None else now
    result = Plan(pod_name)
    files = walk_entries(platform.list_files(pod_name))
    busy = not platform.pod_ended(pod_name)
    jobs = _jobs(files)
    removed_jobs: set[str] = set()
    referenced: set[str] = set()
    for job_id, entries in sorted(jobs.items()):
        times = [t for t in (job_submitted(job_id), *map(entry_time, entries.values())) if t is not None]
        old = bool(times) and max(times) < now - older_than
        records = [] if old and not busy else _read_results(platform, pod_name, job_id, entries, result)
        if old and (not busy or any(isinstance(r, rec.EndRecord) for r in records)):
            removed_jobs.add(job_id)
            result.removals.append(Removal("job", f"{JOBS}/{job_id}", sum(e.size for e in entries.values()),
                                           f"finished, last active {_age(now - max(times))} ago"))
            continue
        result.kept["job"] = result.kept.get("job", 0) + 1
        referenced |= result_blobs(records)
    queued = _queued(files, busy, now, older_than, result)
    _plan_blobs(platform, pod_name, files, referenced, busy, queued, now, grace, result)
    _plan_journal(platform, pod_name, home, set(jobs) - removed_jobs, now - older_than, result)
    return result


def apply(platform: MeteredPlatform, home: Path, planned: Plan) -> int:
    """Remove what ``planned`` lists; returns the bytes freed in the volume. A path already
    gone is skipped (another gc, or its owner, removed it)."""
    freed = 0
    journal.forget(home, [Path(r.path).stem for r in planned.removals if r.kind == "journal"])
    for removal in planned.removals:
        if removal.kind == "journal":
            continue
        with contextlib.suppress(NotFound):
            platform.delete(removal.path, planned.pod_name)
            freed += removal.size
    blobs = [r.path.rsplit("/", 1)[1] for r in planned.removals if r.kind == "blob"]
    if blobs:  # this client's record of the volume's blobs must not promise them any more
        Manifest(home, platform, planned.pod_name).discard(blobs)
    return freed


def result_blobs(records: Iterable[rec.Record]) -> set[str]:
    """Blobs a job's result records name: large values (``value_blob``) and their buffers.
    The records were written in a pod (their fields are whatever it wrote): anything malformed
    names nothing."""
    named: set[str] = set()
    for record in records:
        if isinstance(record, rec.CallRecord) and record.status == rec.OK:
            buffers = record.buffers
            named.update(h for h in [record.value_blob, *(buffers if isinstance(buffers, list) else [])]
                         if isinstance(h, str) and is_content_hash(h))
    return named


# --- the parts --------------------------------------------------------------------------------
def _jobs(files: dict[str, FileEntry]) -> dict[str, dict[str, FileEntry]]:
    prefix = JOBS + "/"
    jobs: dict[str, dict[str, FileEntry]] = {}
    for path, entry in files.items():
        if path.startswith(prefix) and "/" in path[len(prefix):]:
            job_id, name = path[len(prefix):].split("/", 1)
            jobs.setdefault(job_id, {})[name] = entry
    return jobs


def _read_results(platform: MeteredPlatform, pod_name: str | None, job_id: str, entries: dict[str, FileEntry],
                  result: Plan) -> list[rec.Record]:
    """Every record of the job's results log (its segments hold copies of the same records).
    A record this podrun cannot read ends the reading: what came before it still counts."""
    records: list[rec.Record] = []
    if RESULTS_NAME not in entries:
        return records
    try:
        data = platform.downlink(f"{JOBS}/{job_id}/{RESULTS_NAME}", pod_name)
    except NotFound:
        return records
    result.bytes_read += len(data)
    with contextlib.suppress(WireFormatError):
        records.extend(rec.iter_records(data))
    return records


def _queued(files: dict[str, FileEntry], busy: bool, now: float, older_than: float, result: Plan) -> int:
    """Plan the removal of abandoned inbox bundles; returns how many queued jobs stay."""
    prefix = INBOX + "/"
    stay = 0
    for path, entry in sorted(files.items()):
        name = path[len(prefix):] if path.startswith(prefix) else ""
        if not name or "/" in name or name.startswith(".") or name == STOP_NAME:
            continue
        when = entry_time(entry)
        if not busy and when is not None and when < now - older_than:
            result.removals.append(Removal("queued", path, entry.size, f"queued {_age(now - when)} ago and no pod "
                                           "runs to serve it"))
        else:
            stay += 1
    if stay:
        result.kept["queued"] = stay
    return stay


def _plan_blobs(platform: MeteredPlatform, pod_name: str | None, files: dict[str, FileEntry], referenced: set[str],
                busy: bool, queued: int, now: float, grace: float, result: Plan) -> None:
    prefix = BLOBS + "/"
    blobs = {p[len(prefix):]: e for p, e in files.items() if p.startswith(prefix) and "/" not in p[len(prefix):]}
    if busy or queued:
        why = "the pod is running or waiting" if busy else f"{queued} job(s) wait in the inbox"
        result.notes.append(f"blobs kept: {why}, and a running or queued job may need any of them; run gc again "
                            "when the pod has stopped")
        result.kept["blob"] = len(blobs)
        return
    referenced = referenced | _object_blobs(platform, pod_name, files, result) | {build_zipapp().hash}
    for name, entry in sorted(blobs.items()):
        when = entry_time(entry)
        unused = 0.0 if when is None else now - when  # an unreadable time counts as fresh
        if is_content_hash(name):
            if name in referenced or unused < grace:
                result.kept["blob"] = result.kept.get("blob", 0) + 1
                continue
            result.removals.append(Removal("blob", prefix + name, entry.size, f"unreferenced, unused for {_age(unused)}"))
        elif unused >= grace:  # a chunk of an uplink that never completed
            result.removals.append(Removal("chunk", prefix + name, entry.size, f"partial uplink {_age(unused)} old"))


def _object_blobs(platform: MeteredPlatform, pod_name: str | None, files: dict[str, FileEntry], result: Plan) -> set[str]:
    """Blobs named by blob-backed object versions (kind ``r``: a small msgpack record each)."""
    named: set[str] = set()
    for path in sorted(p for p in files if p.startswith(OBJECTS + "/") and p.endswith(".r")):
        try:
            data = platform.downlink(path, pod_name)
        except NotFound:
            continue  # retired meanwhile: it names nothing any more
        result.bytes_read += len(data)
        try:
            body = msgpack.unpackb(data)
            named.update(h for h in [body["payload"], *body["buffers"]] if isinstance(h, str))
        except (ValueError, KeyError, TypeError, msgpack.ExtraData):
            result.notes.append(f"{path}: unreadable blob-backed object record; every blob is kept")
            named.update(p.rsplit("/", 1)[1] for p in files if p.startswith(BLOBS + "/"))
    return named


def _plan_journal(platform: MeteredPlatform, pod_name: str | None, home: Path, in_volume: set[str], before: float,
                  result: Plan) -> None:
    for entry in journal.entries(home):
        if entry.platform != platform.identity() or entry.pod_name != pod_name or entry.submitted >= before:
            continue
        if entry.status != "submitted" or entry.job_id not in in_volume:
            result.removals.append(Removal("journal", str(journal.journal_dir(home) / f"{entry.job_id}.json"), 0,
                                           f"submitted {time.strftime('%Y-%m-%d', time.gmtime(entry.submitted))}"))


def _age(seconds: float) -> str:
    """3725 → '1.0 h'."""
    for unit, size in (("d", DAY), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{max(seconds, 0):.0f} s"
