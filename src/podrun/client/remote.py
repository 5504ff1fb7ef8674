"""``@podrun.remote``: a function that runs in a pod when called with ``.remote()``."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import SerializationError, UsageError, UsageTypeError
from ..platform.types import normalize_node, validate_max_duration, validate_pod_name
from ..runtime.pod_api import plain_function
from ..wire.bundle import python_version
from ..wire.serialize import Meter, dumps, find_unpicklable
from . import config, future_args, map_window, preflight
from . import wheels as shipped_wheels
from .dispatch import dispatcher_for
from .future import ObjectFuture, pickling_arguments
from .gc_pause import BULK, paused_gc
from .jobs.key import JobKey, PendingGroup, PickledCallable
from .jobs.pack import estimate_uplink
from .manifest import Manifest
from .map_window import Call
from .modules import closure, pickle_callable

DEFAULT_NODE = "MPU"
DEFAULT_MAX_DURATION = 10.0  # minutes


def default_image() -> str:
    """The stock CG2 image of the client's own Python minor version (pickled code needs it)."""
    return f"python:{python_version()}-slim"


@dataclass(frozen=True)
class RemoteOptions:
    node: str = DEFAULT_NODE
    max_duration: float = DEFAULT_MAX_DURATION
    image: str | None = None
    pod_name: str | None = None
    envs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None  # seconds, per call, enforced in the pod (TIMEOUT record)
    workers: int | None = None  # worker processes in the pod for these calls (None: the node's cores; 1: in-process)
    keep_warm: float = 0.0  # seconds a warm pod waits for the next job before it stops (0: cold pods)
    modules: tuple[str, ...] = ()  # user modules to ship beyond those found automatically
    wheels: tuple[str, ...] = ()  # requirements or .whl paths shipped with each job (client/wheels.py)

    def validated(self) -> RemoteOptions:
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise UsageError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise UsageError(f"workers must be a number of worker processes >= 1 (or None: the node's cores), "
                             f"not {self.workers!r}")
        if isinstance(self.keep_warm, bool) or not isinstance(self.keep_warm, (int, float)) or self.keep_warm < 0:
            raise UsageError(f"keep_warm must be a number of seconds >= 0 (0: a pod per job), not {self.keep_warm!r}")
        if not isinstance(self.envs, dict):
            raise UsageError(f"envs must be a dict of environment variables, not {type(self.envs).__name__}")
        if isinstance(self.modules, str) or not all(isinstance(m, str) for m in self.modules):
            raise UsageError(f"modules must be a list of module names, not {self.modules!r}")
        return replace(self, envs=dict(self.envs), modules=tuple(self.modules), wheels=shipped_wheels.validate(self.wheels),
                       node=normalize_node(self.node), max_duration=validate_max_duration(self.max_duration),
                       pod_name=validate_pod_name(self.pod_name))

    def job_key(self) -> JobKey:
        envs = tuple(sorted((str(k), str(v)) for k, v in self.envs.items()))
        return JobKey(self.node, self.image or default_image(), self.max_duration, envs, float(self.keep_warm))


class RemoteFunction:
    """A function offloaded to pods. Calling it directly runs it here, unchanged."""

    def __init__(self, fn: Callable[..., Any], options: RemoteOptions, pickled: PickledCallable | None = None) -> None:
        if not callable(fn):
            raise UsageTypeError(f"podrun.remote needs a callable, got {type(fn).__name__}")
        self._fn = fn
        self._options = options.validated()
        self._pickled = pickled
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        o = self._options
        return f"<RemoteFunction {getattr(self._fn, '__qualname__', self._fn)} node={o.node} pod_name={o.pod_name}>"

    def __reduce__(self) -> Any:
        # Inside a pod a RemoteFunction referenced by the function's globals is just its function
        # (unpickled by a pod-side function: a pod has no podrun.client).
        return (plain_function, (self._fn,))

    def options(self, **overrides: Any) -> RemoteFunction:
        """A copy with some options changed (any argument of ``podrun.remote``)."""
        unknown = set(overrides) - set(RemoteOptions.__dataclass_fields__)
        if unknown:
            raise UsageTypeError(f"unknown option(s) {sorted(unknown)}: choose from {sorted(RemoteOptions.__dataclass_fields__)}")
        # The pickled callable records the modules and wheels it ships: new ones need a new pickle.
        pickled = None if {"modules", "wheels"} & overrides.keys() else self._pickled
        return RemoteFunction(self._fn, replace(self._options, **overrides), pickled)

    def _callable(self) -> PickledCallable:
        if self._pickled is None:
            name = getattr(self._fn, "__qualname__", repr(self._fn))
            closure([], self._options.modules)  # named modules must exist and be shippable
            try:
                payload, modules, optional = pickle_callable(self._fn)
            except Exception as exc:
                raise SerializationError(f"cannot pickle the function {name}: {type(exc).__name__}: {exc}") from exc
            shipped = shipped_wheels.resolve(self._options.wheels, config.current_platform().kind)
            self._pickled = PickledCallable(name, payload, modules | frozenset(self._options.modules), optional, shipped)
        return self._pickled

    def _group(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
               futures: list[ObjectFuture] | None = None, target: tuple[str, str | None] | None = None) -> PendingGroup:
        """Pickle the calls now (so a bad argument fails here, and later mutation of an
        argument cannot change what runs)."""
        return self._pickled_group(calls, calls, futures, target)

    def _pickled_group(self, table: Any, calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
                       futures: list[ObjectFuture] | None, target: tuple[str, str | None] | None,
                       meter: Meter | None = None) -> PendingGroup:
        """The group of ``calls``, pickled from ``table`` (the calls, or a map's ``Window`` that
        takes them as it pickles, counting its bytes in ``meter``)."""
        function = self._callable()
        with pickling_arguments():
            try:
                args = dumps(table, what=f"the arguments of {function.name}", meter=meter)
            except SerializationError as exc:
                named = (find_unpicklable(a, k) for a, k in calls)
                culprit = next((name for name in named if name != "the arguments"), "the arguments")
                raise SerializationError(f"cannot pickle {culprit} of {function.name}: {exc.__cause__}") from exc.__cause__
        futures = futures or [ObjectFuture(function.name, target) for _ in calls]
        key = replace(self._options.job_key(), wheels=tuple(sorted(wheel.hash for wheel in function.wheels)))
        group = PendingGroup(function, args, futures, key, self._options.timeout, self._options.workers)
        from_wheels = {name for wheel in function.wheels for name in wheel.top_level}
        preflight.check(config.current_platform(), group.key.image, group.key.node, function.name,
                        {m for m in function.modules | args.modules if m.split(".")[0] not in from_wheels})
        return group

    def _submit(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[ObjectFuture]:
        target = (config.current_platform().identity(), self._options.pod_name)
        if future_args.upstreams(calls):  # ObjectFuture arguments: sent by reference (client/future_args.py)
            # this process's lane for target orders them: they can be upstreams too
            futures = [ObjectFuture(self._callable().name, target) for _ in calls]
            future_args.submit_after(calls, futures, target, self._send)
            return futures
        return self._send(calls)

    def _send(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
              futures: list[ObjectFuture] | None = None) -> list[ObjectFuture]:
        with paused_gc(len(calls)):
            group = self._group(calls, futures, (config.current_platform().identity(), self._options.pod_name))
            dispatcher_for(config.current_platform(), config.home()).submit(self._options.pod_name, group)
        return group.futures

    def estimate(self, *args: Any, **kwargs: Any) -> int:
        """Bytes ``self.remote(*args, **kwargs)`` would uplink if sent alone now: the job bundle,
        with only the blobs the volume is not known to hold. Sends nothing."""
        platform = config.current_platform()
        manifest = Manifest(config.home(), platform, self._options.pod_name)
        return estimate_uplink([self._group([(args, kwargs)])], platform, self._options.job_key(), manifest)

    @property
    def remote(self) -> _Submitter:
        """``f.remote(*args, **kwargs)`` runs ``fn`` in a pod and returns an ObjectFuture at
        once; ``await f.remote.aio(*args, **kwargs)`` does the same in asyncio and gives the result."""
        return _Submitter(self)

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any], **shared_kwargs: Any) -> list[ObjectFuture]:
        """``fn(x)`` for each ``x`` (or ``fn(x, y)`` over zipped iterables, like ``map``), in one
        job while the pickled arguments fit one window (``client/map_window.py``), else in a
        job per window, holding at most two windows' argument bytes: a map bigger than that
        returns once its earlier windows have been sent. The iterable is taken lazily.
        ``shared_kwargs`` go to every call and are pickled once."""
        # ((x, y), shared_kwargs) per row, made in C (zip, like map, ends with the shortest iterable)
        calls: Iterator[Call] = zip(zip(iterable, *iterables, strict=False), itertools.repeat(shared_kwargs), strict=False)
        first = next(calls, None)
        if first is None:
            return []
        calls = itertools.chain([first], calls)
        if future_args.upstreams([((), shared_kwargs)]):  # futures shared by every call: sent whole, after them
            return self._submit(list(calls))
        limit, futures = map_window.window_bytes(), list[ObjectFuture]()
        target = (config.current_platform().identity(), self._options.pod_name)
        previous: PendingGroup | None = None
        while True:
            if previous is not None:
                map_window.wait_taken(previous)  # a window at a time waits in the lane
            with paused_gc(BULK):  # a window is a burst, however long the iterable turns out to be
                window = map_window.Window(calls, limit)
                group = self._pickled_group(window, window.calls, None, target, window.meter)
                if window.future_call is not None:  # ObjectFuture arguments: the rest is sent whole, after them
                    rest = [*window.calls, window.future_call, *calls]
                    return futures + self._submit(rest)
                if window.calls:
                    dispatcher_for(config.current_platform(), config.home()).submit(self._options.pod_name, group)
                    futures += group.futures
            if window.exhausted:
                return futures
            previous = group


class _Submitter:
    __slots__ = ("_function",)

    def __init__(self, function: RemoteFunction) -> None:
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> ObjectFuture:
        return self._function._submit([(args, kwargs)])[0]

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return await self(*args, **kwargs)


def remote(
    fn: Callable[..., Any] | None = None,
    *,
    node: str = DEFAULT_NODE,
    max_duration: float = DEFAULT_MAX_DURATION,
    image: str | None = None,
    pod_name: str | None = None,
    envs: dict[str, Any] | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    keep_warm: float = 0.0,
    modules: Iterable[str] = (),
    wheels: Iterable[str] = (),
) -> Any:
    """Offload a function to pods: ``@podrun.remote(node="GPU")`` or ``podrun.remote(fn, ...)``.

    node: ``"MPU"`` (default), ``"GPU"`` or ``"FPGA"``. max_duration: the pod's limit in
    minutes. image: the pod image (default: ``python:<client's X.Y>-slim``). pod_name: the pod
    and its volume (default: the user's default volume). envs: environment of the pod.
    timeout: seconds per call, enforced in the pod. workers: how many worker processes in the
    pod run this function's calls at once (default None: the node's core count, as the pod
    sees it; 1: one after another in the pod's own process, as a stateful function may need).
    keep_warm: seconds a pod stays up after a
    job, serving the next ones from its volume's inbox (a warm pod: no pod start per job).
    modules: your project's modules to ship (by source, one blob each) beyond those the
    function is seen to import. wheels: wheels the pod imports (C extensions too):
    ``"name==version"`` fetched for the pod's platform, or a ``.whl`` path; each crosses the
    link once per volume.
    """
    options = RemoteOptions(node=node, max_duration=max_duration, image=image, pod_name=pod_name,
                            envs={} if envs is None else envs, timeout=timeout, workers=workers, keep_warm=keep_warm,
                            modules=tuple([modules] if isinstance(modules, str) else modules),
                            wheels=shipped_wheels.validate(wheels))
    if fn is None:
        options.validated()
        return lambda f: RemoteFunction(f, options)
    return RemoteFunction(fn, options)
