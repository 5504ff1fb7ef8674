"""What a pod process keeps between jobs: loaded callables, the environment manifest, and
the resident objects of stateful services. A cold pod runs one job and has one session; a
warm pod (``serve.py``) runs many jobs in one session, which is what makes it warm."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import NotFound


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


@dataclass(frozen=True)
class ServiceMethod:
    """The callable a stateful service's method call ships: it finds (or creates) the
    service's pod-resident object and calls the method on it. Lives in the runtime so a pod
    can unpickle it by reference; the service's constructor or instance travels once as an
    object in the volume (``spec_key``), not inside every method."""

    service_id: str
    method: str  # a method name, or CHECKPOINT / TOUCH
    spec_key: str  # object holding ("class", cls, args, kwargs) or ("instance", obj)
    state_key: str | None = None  # where checkpoints go (None: the service keeps no checkpoint)
    label: str = ""  # "Model.predict"

    def __repr__(self) -> str:
        """How the journal and errors name its calls (a callable object has no __qualname__)."""
        return self.label or f"{type(self).__name__}.{self.method}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        obj = resident(self.service_id, self._create, self._save if self.state_key else None)
        if self.method == CHECKPOINT:
            return self._save(obj)
        if self.method == TOUCH:
            return None
        return getattr(obj, self.method)(*args, **kwargs)

    def _create(self) -> Any:
        if self.state_key:
            try:  # a restarted pod resumes from the last checkpoint
                return _store().fetch_value(self.state_key)
            except NotFound:
                pass
        spec = _store().fetch_value(self.spec_key)
        if spec[0] == "class":
            _, cls, args, kwargs = spec
            return cls(*args, **kwargs)
        return spec[1]

    def _save(self, obj: Any) -> Any:
        """Write the object's state as a new version of its checkpoint (in the volume: no link bytes)."""
        if not self.state_key:
            raise RuntimeError(f"service {self.service_id} was created without checkpoint=True")
        return _store().save_value(self.state_key, obj)


class _VolumeObjects:
    """The pod's own volume as an object store (the runtime reads and writes it directly)."""

    def __init__(self) -> None:
        from .. import data_dir
        from ..store.objects import DirectoryVolume, ObjectStore

        self.store = ObjectStore(DirectoryVolume(data_dir()))

    def fetch_value(self, key: str) -> Any:
        from ..store.objects import materialize
        from ..store.refs import ObjectKey

        return materialize(self.store.fetch(ObjectKey.parse(key)), key)

    def save_value(self, key: str, obj: Any) -> Any:
        """A new full version of ``key`` (created at version 1 when absent); returns its ref."""
        from ..store.refs import ObjectKey, ObjectRef
        from ..wire import object_image

        parsed = ObjectKey.parse(key)
        version = self.store.update(parsed, object_image.encode(obj, what="the service's state"), state=self.store.state(parsed))
        return ObjectRef(key, version)


def _store() -> _VolumeObjects:
    return _VolumeObjects()


def method(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``@podrun.method``: mark a method as remotely callable; a service class with marks
    exposes only its marked methods. Here, in the runtime, because a class's module runs in
    the pod too."""
    fn.__podrun_method__ = True  # type: ignore[attr-defined]
    return fn


def noop() -> None:
    """A call that only starts a pod (a runner's warm-up)."""


CHECKPOINT = "__checkpoint__"
TOUCH = "__touch__"
