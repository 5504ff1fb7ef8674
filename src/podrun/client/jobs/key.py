"""What a job is made of: the calls submitted together, and the key that says which calls can share a pod."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ...wire.hashing import content_hash
from ...wire.serialize import Pickled
from ..future import ObjectFuture
from ..wheels import ShippedWheel

MAX_ATTEMPTS = 2  # a group whose blobs vanished from the volume is re-sent once, with them


@dataclass(frozen=True)
class JobKey:
    """Calls can share a job only if they need the same pod."""

    node: str
    image: str
    max_duration: float
    envs: tuple[tuple[str, str], ...] = ()
    keep_warm: float = 0.0  # seconds a warm pod waits for more jobs; 0: one pod per job
    wheels: tuple[str, ...] = ()  # hashes of the shipped wheels: a pod imports one set of versions


@dataclass
class PickledCallable:
    name: str
    payload: bytes
    modules: frozenset[str] = frozenset()  # modules its pickle imports in the pod (shipping, preflight)
    optional_modules: frozenset[str] = frozenset()  # imported inside try blocks: shipped, not required
    wheels: tuple[ShippedWheel, ...] = ()  # shipped with the job, unpacked onto the pod's sys.path

    @property
    def hash(self) -> str:
        return content_hash(self.payload)


@dataclass
class PendingGroup:
    """Calls of one function submitted together (one ``.remote()`` or one ``.map()``)."""

    function: PickledCallable
    args: Pickled
    futures: list[ObjectFuture]
    key: JobKey
    timeout: float | None = None
    workers: int | None = None  # pod worker processes for these calls (None: the node's cores); see CallGroup
    attempts: int = 0
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return not all(f.cancelled() for f in self.futures)

    def drop_arguments(self) -> None:
        """Let the pickled arguments go (their job is over, not to be re-sent): futures keep
        their job, and a long map's must not keep every window's bytes (``client/map_window.py``)."""
        self.args = Pickled(b"")


def new_job_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)
