"""The local job journal: one small JSON file per job under ``$PODRUN_HOME/journal``.

A call on a satellite can outlive the process that made it; the journal is what lets any
other process find the job again (``podrun.attach(job_id)``) and fetch its results from the
volume instead of running it twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFound
from ..files import atomic_write, best_effort


@dataclass
class JournalEntry:
    job_id: str
    platform: str  # the platform's identity(): attaching needs the same platform configured
    pod_name: str | None
    node: str
    image: str
    max_duration: float
    groups: list[tuple[str, int]]  # (function name, number of calls) in call order
    submitted: float = field(default_factory=time.time)
    status: str = "submitted"  # submitted | running (results coming in) | done | failed
    outcomes: dict[str, int] = field(default_factory=dict)  # terminal status -> count of the calls ended so far
    keep_warm: float = 0.0  # the job ran on a warm pod: it is followed through the pod's status file
    link: dict[str, int] = field(default_factory=dict)  # the job's LinkStats (calls, polls, downlinks, bytes) so far

    @property
    def call_count(self) -> int:
        return sum(count for _, count in self.groups)


def journal_dir(home: Path) -> Path:
    return home / "journal"


def write(home: Path, entry: JournalEntry) -> None:
    """Record ``entry``; where the journal cannot be written (a full home) a StateNotSaved
    warning says so and the job goes on: the journal serves re-attaching, never the job itself.
    A job writes its entry again when it ends, so space freed meanwhile still records it."""
    with best_effort(f"the journal entry of job {entry.job_id} (podrun.attach cannot find it until it is)"):
        atomic_write(journal_dir(home) / f"{entry.job_id}.json", json.dumps(asdict(entry)))


def read(home: Path, job_id: str) -> JournalEntry:
    if not isinstance(job_id, str) or "/" in job_id or job_id.startswith("."):
        raise NotFound(f"{job_id!r} is not a job id (they look like 20261122-193012-1a2b3c4d)")
    try:
        data: dict[str, Any] = json.loads((journal_dir(home) / f"{job_id}.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"no job {job_id!r} in the journal at {journal_dir(home)}; list jobs with 'podrun jobs ls'") from None
    data["groups"] = [tuple(group) for group in data["groups"]]
    return JournalEntry(**data)


def entries(home: Path, limit: int | None = None) -> list[JournalEntry]:
    """Newest first."""
    directory = journal_dir(home)
    if not directory.is_dir():
        return []
    names = sorted((p.stem for p in directory.glob("*.json")), reverse=True)
    return [read(home, name) for name in names[:limit]]


def forget(home: Path, job_ids: Iterable[str]) -> int:
    """Remove the entries of ``job_ids`` (``podrun gc`` prunes old ones); returns how many
    were there. A job forgotten can no longer be attached by id."""
    removed = 0
    for job_id in job_ids:
        if isinstance(job_id, str) and "/" not in job_id and not job_id.startswith("."):
            path = journal_dir(home) / f"{job_id}.json"
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed
