"""What a pod process keeps between jobs: loaded callables, the environment manifest, and
the resident objects of stateful services. A cold pod runs one job and has one session; a
warm pod (``serve.py``) runs many jobs in one session, which is what makes it warm."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Session:
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)  # blob hash -> callable
    env: dict[str, Any] | None = None  # the environment fields, collected once per process
    resident: dict[str, Any] = field(default_factory=dict)  # service id -> live object
    checkpoints: dict[str, Callable[[], Any]] = field(default_factory=dict)  # service id -> checkpoint action
    lock: threading.RLock = field(default_factory=threading.RLock)


CURRENT = Session()


def resident(service_id: str, create: Callable[[], Any], checkpoint: Callable[[Any], Any] | None = None) -> Any:
    """The pod-resident object of a stateful service, created on first use; ``checkpoint``
    (if given) is run on it when the pod shuts down, so its state outlives the pod."""
    with CURRENT.lock:
        if service_id not in CURRENT.resident:
            obj = CURRENT.resident[service_id] = create()
            if checkpoint is not None:
                CURRENT.checkpoints[service_id] = lambda: checkpoint(obj)
        return CURRENT.resident[service_id]


def checkpoint_all() -> list[str]:
    """Run every registered checkpoint (at shutdown); returns the services that failed."""
    failed = []
    for service_id, action in list(CURRENT.checkpoints.items()):
        try:
            action()
        except Exception:  # noqa: BLE001 - one failed checkpoint must not stop the others
            failed.append(service_id)
    return failed
