"""The client side of warm pods (see ``runtime/serve.py`` for the pod side).

A lane remembers which warm pod it believes is serving its pod_name (``WarmPod``). A warm
job is uplinked into the volume's inbox; only when no warm pod of the job's kind is serving
does the job also start one. Which pod serves a pod_name shared with other clients, and who may
start one, is the pod_name's lease's to say (``store/pod_lease.py``); the lane sets ``WarmPod``
from what its lease grants. The job then polls the pod's small status file, not the pod
status, and looks at the pod status only when the status file stops changing. Between polls
it waits on the platform's ``Watch`` of the job's folder and the pod's state; where that watch
wakes (the local platform) a segment landing is taken at once and the status file is read only
when a wake brought no segment or a long wait none: a warm call is one uplink and one downlink.
It is over as soon as its end record has come (``done``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..platform.base import Watch
from ..platform.metered import MeteredPlatform, polling
from ..platform.types import PodState
from ..wire.layout import RESULTS_NAME, SERVE_STATUS, job_file
from .jobs.follow import WAKEFUL_WAIT

if TYPE_CHECKING:
    from .jobs.key import JobKey


@dataclass
class WarmPod:
    """What a lane believes about its pod_name's warm pod."""

    key: JobKey | None = None  # the kind of pod serving (None: none believed to be)


def read_status(platform: MeteredPlatform, pod_name: str | None) -> dict[str, Any] | None:
    with polling():
        try:
            return json.loads(platform.downlink(SERVE_STATUS, pod_name))
        except (NotFound, ValueError):
            return None


def await_warm_job(platform: MeteredPlatform, pod_name: str | None, job_id: str, restart: Callable[[], None] | None,
                   on_tick: Callable[[bool], object], done: Callable[[], bool] = lambda: False,
                   watch: Watch | None = None) -> PodState | None:
    """Wait until ``done()`` (the job's end record came, through ``on_tick(woke)``) or the warm
    pod reports ``job_id`` done. Returns None then, or the pod's state when the pod ended
    without finishing it (after one ``restart``, if the job had not even started and the
    caller can restart it)."""
    watch = watch or Watch()
    first, ceiling = platform.poll_interval
    stall = max(2.0, 4 * ceiling)  # status unchanged this long: ask the platform about the pod
    if watch.wakes:  # a segment or the pod's state ends a wait: the status file is the fallback
        first = ceiling = WAKEFUL_WAIT
    delay, last_beat, last_change, restarted, begun = first, None, time.monotonic(), False, False
    while True:
        woke = watch.wait(delay)
        came = on_tick(woke)
        if done():
            return None
        begun = begun or bool(came)  # records came: a pod began the job
        if woke and came and watch.wakes:
            continue  # results landed: the pod is at our job, its status would say nothing new
        status = read_status(platform, pod_name)
        if status is not None and job_id in status.get("done", ()):
            return None
        beat = status.get("beat") if status else None
        now = time.monotonic()
        if beat != last_beat:
            last_beat, last_change = beat, now
        gone: PodState | None = None
        stopped = status is not None and status.get("state") == "stopped"
        if stopped or now - last_change > stall:
            # "stopped" may be the last pod's word while a new one starts: ask the platform.
            state = _pod_state(platform, pod_name)
            if state.is_terminal or state.is_stuck:
                gone = state
            last_change = now
        if gone is not None:
            started_ours = begun or (status is not None and status.get("current") == job_id) or _began(platform, pod_name, job_id)
            if started_ours or gone.is_stuck or restarted or restart is None:
                return gone
            restart()  # the pod stopped before taking our job: start one for it
            restarted, last_change, delay = True, time.monotonic(), first
            continue
        delay = min(ceiling, delay * 1.5)


def _began(platform: MeteredPlatform, pod_name: str | None, job_id: str) -> bool:
    """Whether a pod began ``job_id``: its results file, which the runtime makes before any call
    runs, is there (asked only once its pod has gone: a restart must not run a begun job again)."""
    try:
        platform.downlink(job_file(job_id, RESULTS_NAME), pod_name)
    except NotFound:
        return False
    return True


def _pod_state(platform: MeteredPlatform, pod_name: str | None) -> PodState:
    try:
        return platform.pod_status(pod_name)
    except NotFound:
        return PodState({"terminated": {"exitCode": 137, "reason": "Lost", "message": "no pod of that name"}})
