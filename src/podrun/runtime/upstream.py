"""Another call's result as an argument: ``f.remote(other_future)`` on the same pod_name.

The client sends an ``UpstreamResult`` (the upstream call's job id and index) in place of the
future; the pod reads that call's record from the job's results file in its own volume and
passes the value on, so the result never crosses the link. An upstream call that raised
fails this one with ``_UpstreamFailed`` carrying the upstream's error record, which the
client rebuilds as it rebuilds any remote exception (client/jobs/resolve.py): the dependent call ends
with the upstream's own exception type and remote traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import CallTimeout, Cancelled, PodFailed
from ..store.volume_blobs import VolumeBlobs
from ..wire import records as rec
from ..wire.compression import decompress
from ..wire.layout import RESULTS_NAME, job_file

_JOB_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class UpstreamResult:
    """Stands for the result of call ``index`` of job ``job_id``, read in the pod."""

    job_id: str
    index: int


class _UpstreamFailed(Exception):
    """Not for users: carries a failed upstream call's error record from the pod to the client."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__("an argument of this call, another call's result, is that call's exception")
        self.info = info

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.info,))


def has_upstream(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return any(isinstance(v, UpstreamResult) for v in (*args, *kwargs.values()))


def resolve_upstream(args: tuple[Any, ...], kwargs: dict[str, Any],
                     data_dir: str | os.PathLike[str]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Replace top-level UpstreamResult arguments by the values their calls returned."""
    if not has_upstream(args, kwargs):
        return args, kwargs
    blobs = VolumeBlobs(data_dir)
    records: dict[str, dict[int, dict[str, Any]]] = {}

    def value(item: Any) -> Any:
        if not isinstance(item, UpstreamResult):
            return item
        if not _JOB_ID.match(item.job_id) or isinstance(item.index, bool) or not isinstance(item.index, int):
            raise PodFailed(f"malformed upstream reference {item!r}")
        if item.job_id not in records:
            records[item.job_id] = _call_records(Path(data_dir) / job_file(item.job_id, RESULTS_NAME))
        record = records[item.job_id].get(item.index)
        if record is None:
            raise PodFailed(f"call {item.index} of job {item.job_id}, an argument of this call, has no result in this "
                            "volume: it has not run here (yet)", status=rec.LOST)
        return _outcome(record, blobs, item)

    return tuple(value(a) for a in args), {name: value(v) for name, v in kwargs.items()}


def _call_records(path: Path) -> dict[int, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    return {r["i"]: r for r in rec.iter_records(data) if r.get("k") == "call"}


def _outcome(record: dict[str, Any], blobs: VolumeBlobs, item: UpstreamResult) -> Any:
    """The upstream call's value, or its failure raised again (typed as on the client)."""
    status = record["s"]
    if status == rec.OK:
        payload = blobs.read(record["vb"]) if "vb" in record else decompress(record["v"])
        return cloudpickle.loads(payload, buffers=[blobs.read(h) for h in record.get("b", [])])
    info = record.get("e") or {}
    where = f"call {item.index} of job {item.job_id} (an argument of this call)"
    if status == rec.RAISED:
        raise _UpstreamFailed(info)
    if status == rec.TIMEOUT:
        raise CallTimeout(f"{where} timed out: {info.get('message')}")
    if status == rec.CANCELLED:
        raise Cancelled(f"{where} was cancelled")
    raise PodFailed(f"{where} ended {status}: {info.get('message')}", status=status)
