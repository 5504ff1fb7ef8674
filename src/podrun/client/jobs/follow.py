"""Following a job's pod: status polls with backoff, and its records read from the volume."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...errors import NotFound
from ...platform.metered import MeteredPlatform
from ...platform.types import PodState
from ...wire import records as rec
from ...wire.layout import RESULTS_NAME, job_file


def await_pod(platform: MeteredPlatform, pod_name: str | None, on_tick: Callable[[], None]) -> PodState:
    """Poll until the pod ends or is stuck; ``on_tick`` runs before each poll (cancels)."""
    first, ceiling = platform.poll_interval
    delay = first
    while True:
        time.sleep(delay)
        on_tick()
        state = platform.pod_status(pod_name)
        if state.is_terminal or state.is_stuck:
            return state
        delay = min(ceiling, delay * 1.5)


def fetch_records(platform: MeteredPlatform, job_id: str, pod_name: str | None) -> list[dict[str, Any]]:
    """The job's records so far ([] before the runtime created its results file)."""
    try:
        data = platform.downlink(job_file(job_id, RESULTS_NAME), pod_name)
    except NotFound:
        return []
    return list(rec.iter_records(data))
