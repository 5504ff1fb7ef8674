"""ObjectFutures as arguments of ``.remote()`` calls, passed by reference (flamepy's
``svc.add(fut)``).

* Upstream on the same pod_name: the call is sent once its upstream is *sent* (not finished)
  with an ``UpstreamResult`` in its place. A lane runs its jobs one after another, so the
  dependent call's job runs after the upstream's and its pod reads the upstream result from
  the volume: zero link bytes, and a chain ``c(b(a()))`` submitted at once runs without the
  client waiting for any result in between.
* Upstream on another pod_name (or submitted by another process and not finished): the
  client waits for it, fetches the value once and sends it with the call.
* An upstream that failed, or was cancelled, fails the dependent call with its error; the
  pod re-raises an upstream failure it finds in the volume, with its type.

Only top-level arguments are resolved, as for ObjectRef arguments. A dependent call that
must wait for its upstream waits in one short-lived thread per submitted group.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from ..errors import Cancelled
from ..runtime.upstream import UpstreamResult
from .future import ObjectFuture

Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


def upstreams(calls: Calls) -> list[ObjectFuture]:
    """The distinct ObjectFutures among the calls' top-level arguments, in order."""
    seen: dict[int, ObjectFuture] = {}
    kwargs_seen: set[int] = set()  # a map's calls share one kwargs dict: looked through once
    for args, kwargs in calls:
        for value in args:
            if isinstance(value, ObjectFuture):
                seen.setdefault(id(value), value)
        if kwargs and id(kwargs) not in kwargs_seen:
            kwargs_seen.add(id(kwargs))
            for value in kwargs.values():
                if isinstance(value, ObjectFuture):
                    seen.setdefault(id(value), value)
    return list(seen.values())


def _by_reference(upstream: ObjectFuture, target: tuple[str, str | None]) -> bool:
    """Whether the pod can read ``upstream``'s result itself: same volume, and either this
    process submitted it (its lane for that volume runs it before the dependent call) or it
    has finished (a future attached from another process)."""
    if upstream.target is not None:  # set only by this process's submissions
        return upstream.target == target
    job = upstream.job
    return upstream.done() and job is not None and (job.platform.identity(), job.pod_name) == target


def _ready(upstream: ObjectFuture, by_reference: bool) -> bool:
    return upstream.done() or (by_reference and upstream.sent)


def _failure(upstream: ObjectFuture) -> BaseException | None:
    if not upstream.done():
        return None
    if upstream.cancelled():
        return Cancelled(f"an argument of this call, {upstream!r}, was cancelled")
    return upstream.exception()


def _substitute(calls: Calls, values: dict[int, Any]) -> Calls:
    def swap(value: Any) -> Any:
        return values[id(value)] if isinstance(value, ObjectFuture) else value

    return [(tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}) for args, kwargs in calls]


def submit_after(calls: Calls, futures: list[ObjectFuture], target: tuple[str, str | None],
                 send: Callable[[Calls, list[ObjectFuture]], object]) -> None:
    """Send ``calls`` (whose futures are ``futures``) through ``send`` once their upstream
    futures allow: at once when they do already, else from a waiting thread."""
    ups = upstreams(calls)
    modes = {id(u): _by_reference(u, target) for u in ups}

    def resolve_and_send() -> None:
        values: dict[int, Any] = {}
        for upstream in ups:
            failure = _failure(upstream)
            if failure is not None:
                _fail(futures, failure)
                return
            job = upstream.job
            if modes[id(upstream)] and job is not None and upstream.index is not None:
                values[id(upstream)] = UpstreamResult(job.job_id, upstream.index)
            else:
                values[id(upstream)] = upstream.result()  # fetched once (DeferredValue), re-sent by value
        send(_substitute(calls, values), futures)

    if all(_ready(u, modes[id(u)]) for u in ups):
        resolve_and_send()  # a bad argument fails here, in the caller
        return
    woken = threading.Event()
    for upstream in ups:
        upstream.add_done_callback(lambda _: woken.set())
        if modes[id(upstream)]:
            upstream.on_sent(woken.set)

    def wait_then_send() -> None:
        while True:
            woken.clear()
            if all(_ready(u, modes[id(u)]) for u in ups) or any(_failure(u) for u in ups):
                break
            woken.wait()
        try:
            resolve_and_send()
        except BaseException as exc:  # noqa: BLE001 - the calls' outcome, never a silent thread death
            _fail(futures, exc)

    threading.Thread(target=wait_then_send, name="podrun-future-args", daemon=True).start()


def _fail(futures: list[ObjectFuture], error: BaseException) -> None:
    for future in futures:
        with contextlib.suppress(cf.InvalidStateError):  # cancelled meanwhile
            future.set_exception(error)
