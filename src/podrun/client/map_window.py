"""``f.map`` over an iterable of any length, holding a bounded window of argument bytes.

The map's calls are taken from its iterable as the pickler asks for them (``Window``: a call
table that pickles as a plain list, item by item), so an item is pickled as it comes and the
table stops growing once its pickled bytes, in the stream and out of band, reach
``PODRUN_MAP_WINDOW`` (default ``DEFAULT_WINDOW``). A map that fits one window is one group, one
job, one round trip, as ever. A bigger one becomes successive groups of the same job key, each
submitted once full; a window is begun only once the one before it has left its lane (it is in
a job), so the client holds at most two windows' argument bytes: the one its job keeps until it
ends (for a re-send, should the volume lose its blobs) and the one being filled.

Why 64 MiB: any ordinary map (100,000 small calls pickle to a few MB; a thousand 50 kB frames
to 50 MB) stays one job; it is little next to a client's memory, and to the pod's, which loads
a group's call table whole; and on CG2's link it is already minutes of uplink, so a window is a
substantial job of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from ..wire.serialize import Meter
from .dispatch import LANE_THREAD_PREFIX
from .future import ObjectFuture
from .jobs.key import PendingGroup

ENV_WINDOW = "PODRUN_MAP_WINDOW"
DEFAULT_WINDOW = 64 * 2**20  # bytes of pickled arguments per window

Call = tuple[tuple[Any, ...], dict[str, Any]]


def window_bytes() -> int:
    """``PODRUN_MAP_WINDOW``: the pickled argument bytes a map's window holds at most."""
    raw = os.environ.get(ENV_WINDOW)
    if not raw:
        return DEFAULT_WINDOW
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{ENV_WINDOW}={raw!r}: give a number of bytes above 0 (default {DEFAULT_WINDOW})")
    return value


class Window:
    """One window's call table, taken from ``calls`` while it pickles (as a list: the pod loads
    a list). It stops before a call once ``meter`` reached ``limit`` (a window holds one call
    at least; the pickler takes the first two calls of each batch of 1,000 before it writes
    the first, so a window may pass its bound by two calls), at the calls' end
    (``exhausted``), or at a call with an ObjectFuture argument (``future_call``: such a map
    is sent whole by ``client/future_args.py``). ``calls`` keeps the window's calls, to name an
    argument that cannot be pickled."""

    def __init__(self, calls: Iterator[Call], limit: int) -> None:
        self.source = calls
        self.limit = limit
        self.meter = Meter()
        self.calls: list[Call] = []
        self.exhausted = False
        self.future_call: Call | None = None

    def __reduce_ex__(self, _protocol: object) -> tuple[Any, ...]:
        return (list, (), None, self._take())

    def _take(self) -> Iterator[Call]:
        """The calls, one per ``next`` of the pickler (the map's hot loop: kept lean)."""
        calls, meter, limit, future = self.calls, self.meter, self.limit, ObjectFuture
        tell = meter.stream.tell
        for call in self.source:
            for value in call[0]:  # top-level positional arguments, as client/future_args.py resolves them
                if isinstance(value, future):
                    self.future_call = call
                    return
            calls.append(call)
            yield call
            if tell() + meter.blob_bytes >= limit:  # run when the pickler asks for the next call
                return
        self.exhausted = True


def wait_taken(group: PendingGroup) -> None:
    """Until ``group`` has left its lane: sent in a job, or ended without one (cancelled, or
    failed with its lane). Not on a lane's own thread (a map started from a done-callback,
    which runs there): that lane would wait for itself, so there the map's windows go to the
    lane at once, and the two-window bound on the client's argument bytes does not hold."""
    if threading.current_thread().name.startswith(LANE_THREAD_PREFIX):
        return
    last = group.futures[-1]
    taken = threading.Event()
    last.on_sent(taken.set)
    last.add_done_callback(lambda _future: taken.set())
    taken.wait()
