"""``podrun.Executor``: a ``concurrent.futures.Executor`` whose workers are pods.

    with podrun.Executor(node="GPU", pod_name="detector") as ex:
        boxes = list(ex.map(detect, frames))
        fut = ex.submit(detect, frame)              # an ObjectFuture

Code written for ``ThreadPoolExecutor`` or ``ProcessPoolExecutor`` switches by changing the
constructor. It takes the options of ``@podrun.remote`` and sends calls through the same
dispatch: calls submitted close together share one job, every ``map`` is one job.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import Closed, UsageError
from .future import ObjectFuture
from .remote import DEFAULT_MAX_DURATION, DEFAULT_NODE, RemoteFunction, RemoteOptions
from .wheels import validate as validate_wheels


class Executor(cf.Executor):
    """Runs callables in pods; ``submit`` and ``map`` give ObjectFutures.

    Options are those of ``@podrun.remote``: node, image, pod_name, keep_warm, max_duration
    (minutes), envs, timeout (seconds per call, in the pod), workers (worker processes in the
    pod running calls at once; default None: the node's core count; 1: in the pod's own
    process), modules, wheels.
    """

    def __init__(self, *, node: str = DEFAULT_NODE, max_duration: float = DEFAULT_MAX_DURATION, image: str | None = None,
                 pod_name: str | None = None, envs: dict[str, Any] | None = None, timeout: float | None = None,
                 workers: int | None = None, keep_warm: float = 0.0, modules: Iterable[str] = (),
                 wheels: Iterable[str] = ()) -> None:
        self.options = RemoteOptions(node=node, max_duration=max_duration, image=image, pod_name=pod_name,
                                     envs={} if envs is None else envs, timeout=timeout, workers=workers, keep_warm=keep_warm,
                                     modules=tuple([modules] if isinstance(modules, str) else modules),
                                     wheels=validate_wheels(wheels)).validated()
        self._lock = threading.RLock()  # re-entered when a future fails at once (its done-callback)
        self._closed = False
        self._functions: dict[Any, RemoteFunction] = {}  # one pickled callable per function
        self._outstanding: set[ObjectFuture] = set()

    def __repr__(self) -> str:
        o = self.options
        return f"<podrun.Executor node={o.node} pod_name={o.pod_name} outstanding={len(self._outstanding)} closed={self._closed}>"

    def _remote(self, fn: Callable[..., Any]) -> RemoteFunction:
        """``fn`` with this executor's options; the pickle is made once per function."""
        plain = fn._fn if isinstance(fn, RemoteFunction) else fn
        try:
            cached = self._functions.get(plain)
        except TypeError:  # an unhashable callable: pickled per call
            return RemoteFunction(plain, self.options)
        if cached is None:
            cached = self._functions[plain] = RemoteFunction(plain, self.options)
        return cached

    def _track(self, futures: list[ObjectFuture]) -> None:
        self._outstanding.update(futures)
        for future in futures:
            future.add_done_callback(self._forget)

    def _forget(self, future: cf.Future) -> None:
        with self._lock:
            self._outstanding.discard(future)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("cannot schedule new calls after shutdown(): make a new podrun.Executor")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ObjectFuture:
        """Run ``fn(*args, **kwargs)`` in a pod; the ObjectFuture returns at once."""
        with self._lock:
            self._check_open()
            future = self._remote(fn).remote(*args, **kwargs)
            self._track([future])
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``fn`` over zipped ``iterables`` as one job; results in order, each yielded as soon
        as it (and those before it) arrived. ``timeout`` (seconds, from this call) bounds the
        whole iteration (TimeoutError). ``chunksize`` > 1 runs that many items per remote
        call, as ProcessPoolExecutor does: fewer records for many tiny calls."""
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise UsageError(f"chunksize must be an integer >= 1, not {chunksize!r}")
        if not iterables:
            raise UsageError("map needs at least one iterable")
        deadline = None if timeout is None else time.monotonic() + timeout
        rows = list(zip(*iterables, strict=False))  # as map(): the shortest iterable ends it
        with self._lock:
            self._check_open()
            if chunksize == 1:
                futures = self._remote(fn).map(*zip(*rows, strict=True)) if rows else []
            else:
                chunks = [rows[i:i + chunksize] for i in range(0, len(rows), chunksize)]
                futures = RemoteFunction(_chunked(fn), self.options).map(chunks)
            self._track(futures)
        return _in_order(futures, deadline, chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls from now on. ``cancel_futures``: cancel every call not yet sent, and
        ask pods to skip sent ones not yet started (they end as ``podrun.Cancelled``).
        ``wait``: return once every call of this executor has its outcome."""
        with self._lock:
            self._closed = True
            outstanding = list(self._outstanding)
        if cancel_futures:
            for future in outstanding:
                future.cancel()
        if wait:
            cf.wait(outstanding)


def _chunked(fn: Callable[..., Any]) -> Callable[..., list[Any]]:
    """One remote call over a chunk of argument rows (pickled by value, as a closure)."""
    plain = fn._fn if isinstance(fn, RemoteFunction) else fn

    def run_chunk(rows: list[tuple[Any, ...]]) -> list[Any]:
        return [plain(*row) for row in rows]

    return run_chunk


def _in_order(futures: list[ObjectFuture], deadline: float | None, chunked: bool) -> Iterator[Any]:
    """Each future's result in submission order; on early exit the rest are cancelled."""
    index = 0
    try:
        while index < len(futures):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = futures[index].result(remaining)
            index += 1
            if chunked:
                yield from value
            else:
                yield value
    finally:
        for future in futures[index:]:
            future.cancel()
