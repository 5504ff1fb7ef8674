"""Link accounting: a Platform wrapper that counts every call and every byte.

Counts go to the process totals and to whatever ``LinkStats`` the current context charges
(a job's), so ``podrun.stats()`` and ``fut.job.stats`` come from the same counters.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, BinaryIO

from ..errors import NotFound
from .base import Platform, Progress, UplinkFile, Watch, content_size
from .types import FileEntry, PodSpec, PodState


@dataclass
class LinkStats:
    """Platform calls (status polls included), status polls alone, downlinks of files (status
    reads left out: they are polls), and bytes each way."""

    calls: int = 0
    polls: int = 0
    downlinks: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_polled: int = 0  # of bytes_down, those of status reads (a warm pod's status file)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def reset(self) -> None:
        with self._lock:
            self.calls = self.polls = self.downlinks = self.bytes_up = self.bytes_down = self.bytes_polled = 0

    def __getitem__(self, key: str) -> int:
        return self.as_dict()[key]


PROCESS_STATS = LinkStats()
_charged: contextvars.ContextVar[tuple[LinkStats, ...]] = contextvars.ContextVar("podrun_charged", default=())


@contextlib.contextmanager
def charge_to(stats: LinkStats) -> Iterator[None]:
    """Also count platform calls made in this context into ``stats`` (a job's)."""
    token = _charged.set(_charged.get() + (stats,))
    try:
        yield
    finally:
        _charged.reset(token)


_polling: contextvars.ContextVar[bool] = contextvars.ContextVar("podrun_polling", default=False)


@contextlib.contextmanager
def polling() -> Iterator[None]:
    """Count the platform calls made in this context as status polls too (a warm pod's
    status file is read by downlink, yet it is a poll, not a transfer of results)."""
    token = _polling.set(True)
    try:
        yield
    finally:
        _polling.reset(token)


_probing: contextvars.ContextVar[bool] = contextvars.ContextVar("podrun_probing", default=False)


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """A downlink made in this context that finds no file counts as a status poll (asking
    for a job's next result segment is asking "anything new?"); one that finds it is a transfer."""
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)


def _count(**counts: int) -> None:
    if _polling.get() and "polls" not in counts:
        counts["polls"] = counts.get("calls", 0)
        counts["bytes_polled"] = counts.get("bytes_down", 0)
    PROCESS_STATS.add(**counts)
    for stats in _charged.get():
        stats.add(**counts)


class MeteredPlatform(Platform):
    """Delegates to ``inner``, counting. Bytes are payload bytes (file contents), the figure
    the link budget is charged on; HTTP framing is not included."""

    def __init__(self, inner: Platform) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.max_uplink_bytes = inner.max_uplink_bytes
        self.poll_interval = inner.poll_interval

    def identity(self) -> str:
        return self.inner.identity()

    def environment_scope(self) -> str:
        return self.inner.environment_scope()

    def uplink(
        self, files: Sequence[UplinkFile], dest_path: str = "", pod_name: str | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        size = sum(content_size(content) or 0 for _, content in files)
        result = self.inner.uplink(files, dest_path, pod_name, progress)
        _count(calls=1, bytes_up=size)
        return result

    def downlink_into(self, path: str, sink: BinaryIO, pod_name: str | None = None, progress: Progress | None = None) -> int:
        try:
            moved = self.inner.downlink_into(path, sink, pod_name, progress)
        except NotFound:
            if _polling.get() or _probing.get():
                _count(calls=1, polls=1)
            else:
                _count(calls=1, downlinks=1)
            raise
        except Exception:
            _count(calls=1, downlinks=int(not _polling.get()))
            raise
        _count(calls=1, downlinks=int(not _polling.get()), bytes_down=moved)
        return moved

    def list_files(self, pod_name: str | None = None) -> list[FileEntry]:
        _count(calls=1)
        return self.inner.list_files(pod_name)

    def delete(self, path: str, pod_name: str | None = None) -> None:
        _count(calls=1)
        self.inner.delete(path, pod_name)

    def image_build(self, dockerfile: str, image: str, context: str = ".", pod_name: str | None = None) -> None:
        _count(calls=1)
        self.inner.image_build(dockerfile, image, context, pod_name)

    def image_load(self, tarfile: str, image: str, pod_name: str | None = None) -> None:
        _count(calls=1)
        self.inner.image_load(tarfile, image, pod_name)

    def image_list(self) -> list[dict[str, Any]]:
        _count(calls=1)
        return self.inner.image_list()

    def run_pod(self, spec: PodSpec) -> None:
        _count(calls=1)
        self.inner.run_pod(spec)

    def run_pod_at_most_once(self, spec: PodSpec, started: Callable[[], bool]) -> None:
        _count(calls=1)
        self.inner.run_pod_at_most_once(spec, started)

    def pod_status(self, pod_name: str | None = None) -> PodState:
        _count(calls=1, polls=1)
        return self.inner.pod_status(pod_name)

    def watch(self, folders: Sequence[str], pod_name: str | None = None) -> Watch:
        return self.inner.watch(folders, pod_name)  # no platform call: not counted

    def nodes_status(self) -> list[dict[str, str]]:
        _count(calls=1)
        return self.inner.nodes_status()

    def pvc_list(self) -> list[str]:
        _count(calls=1)
        return self.inner.pvc_list()

    def default_volume(self) -> str | None:
        return self.inner.default_volume()

    def pvc_delete(self, pvc_name: str) -> None:
        _count(calls=1)
        self.inner.pvc_delete(pvc_name)

    def close(self) -> None:
        self.inner.close()
