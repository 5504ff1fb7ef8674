"""``podrun.Runner``: flamepy's Runner on pods. A runner's name is its pod_name, so its
volume holds its objects, and its services run on one warm pod.

    with podrun.Runner("detector", node="GPU") as runner:
        model = runner.service(Model, "weights.pt", checkpoint=True)   # a class: built in the pod
        fut = model.predict(frame)                                     # ObjectFuture
        print(runner.get([fut]))

Service kinds follow flamepy: a function is stateless; a class is constructed in the pod
(with the given arguments) and its instance stays resident; an instance is shipped once and
stays resident. Methods exposed: those marked ``@podrun.method`` if any are, else the
public methods the class defines. ``close()`` removes exactly what the runner created.

A stateful service's identity is stable across sessions: the runner's name, the class's
qualified name and an optional ``name=``. Its checkpoint object is named by it, so
``close(keep_state=True)`` and a new Runner of the same name resume that state.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from ..errors import Closed, Conflict, NameTaken, NotFound, UsageError, UsageTypeError
from ..platform.types import validate_pod_name
from ..runtime.session import CHECKPOINT, TOUCH, ServiceMethod, noop
from ..store.refs import ObjectRef
from ..wire.bundle import python_version
from ..wire.layout import INBOX, STOP_NAME, job_dir
from ..wire.serialize import dumps
from . import config
from . import wheels as shipped_wheels
from .dispatch import release_lease
from .future import ObjectFuture, as_completed, get, wait
from .modules import is_shippable
from .object_access import delete_objects, get_object, put_object
from .remote import RemoteFunction, RemoteOptions
from .resreq import ResourceRequirement, parse_resreq
from .warm import read_status

DEFAULT_KEEP_WARM = 300.0  # seconds a runner's pod waits for the next call
DEFAULT_MAX_DURATION = 60.0  # minutes
STOP_WAIT = 30.0  # seconds close() waits for the warm pod to checkpoint and stop
HOLDER = ("runner", "holder")  # namespace and id of the fail_if_exists marker object
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_python_version(version: str) -> str:
    """flamepy's ``python_version``: on podrun it must be the client's own minor version."""
    ours = python_version()
    if not isinstance(version, str) or ".".join(version.strip().split(".")[:2]) != ours:
        raise UsageError(f"python_version={version!r}, but this client runs Python {ours}: pods must run the client's minor "
                         f"version (pickled code is bytecode); run the client on that Python, or pass {ours!r}")
    return ours


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {when})"


def _service_kind(target: Any) -> str:
    if inspect.isclass(target):
        return "class"
    if inspect.isfunction(target) or inspect.isbuiltin(target) or isinstance(target, RemoteFunction):
        return "function"
    return "instance"


def _concurrency(kind: str, autoscale: bool | None) -> int | None:
    """flamepy's rules: a function or class may scale (default yes); an instance never."""
    if autoscale is not None and not isinstance(autoscale, bool):
        raise UsageTypeError(f"autoscale must be True, False or None, not {autoscale!r}")
    if kind == "instance":
        if autoscale:
            raise UsageError("autoscale=True: an instance service is one resident object; its calls run one at a time")
        return 1
    return None if autoscale in (None, True) else 1


def service_identity(runner: str, cls: type, name: str | None) -> str:
    """The id of a stateful service, the same in every session: readable (the class's name)
    and unique (a hash of runner, module-qualified class name and ``name``)."""
    if name is not None and (not isinstance(name, str) or not _SERVICE_NAME.match(name)):
        raise UsageError(f"service name={name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    digest = hashlib.sha256(f"{runner}\0{qualified}\0{name or ''}".encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", cls.__qualname__)[:48]
    return f"{readable}-{name}-{digest}" if name else f"{readable}-{digest}"


def exposed_methods(cls: type) -> list[str]:
    """The methods a service proxy offers: the ``@podrun.method`` ones, else every public
    method the class (not ``object``) defines; properties and attributes are never exposed."""
    members = {}
    for klass in reversed(cls.__mro__[:-1]):  # base classes first, subclasses override
        for name, value in vars(klass).items():
            members[name] = value
    marked = [n for n, v in members.items() if getattr(v, "__podrun_method__", False)]
    if marked:
        return sorted(marked)
    return sorted(n for n, v in members.items()
                  if not n.startswith("_") and (inspect.isfunction(v) or isinstance(v, (staticmethod, classmethod))))


class MethodProxy:
    """``proxy(*args)`` → ObjectFuture (runs in the pod); ``proxy.map(xs)``; ``await proxy.aio(*args)``."""

    def __init__(self, remote_fn: RemoteFunction, on_future: Callable[[ObjectFuture], None]) -> None:
        self._remote = remote_fn
        self._on_future = on_future

    def __call__(self, *args: Any, **kwargs: Any) -> ObjectFuture:
        future = self._remote.remote(*args, **kwargs)
        self._on_future(future)
        return future

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any], **shared: Any) -> list[ObjectFuture]:
        futures = self._remote.map(iterable, *iterables, **shared)
        for future in futures:
            self._on_future(future)
        return futures

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return await self(*args, **kwargs)


class Service:
    """The client-side proxy of a service; attribute access gives method proxies."""

    def __init__(self, runner: Runner, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], checkpoint: bool,
                 name: str | None = None, workers: int | None = None) -> None:
        self.runner = runner
        self._methods: dict[str, MethodProxy] = {}
        self.concurrency: int | None = None  # calls that may run at once in the pod (None: no limit); see Runner.service
        self.warmup = 0
        self.kind = _service_kind(target)
        if self.kind == "function":
            if args or kwargs:
                raise UsageTypeError("a function service takes no constructor arguments; bind them with functools.partial")
            function = target._fn if isinstance(target, RemoteFunction) else target
            self._call = runner._proxy(function, workers=workers)
            return
        if self.kind == "instance" and (args or kwargs):
            raise UsageTypeError("an instance service takes no constructor arguments: it is already constructed")
        cls = target if self.kind == "class" else type(target)
        self.service_id = service_identity(runner.name, cls, name)
        runner._claim_service(self.service_id, cls, name)
        spec = ("class", target, args, kwargs) if self.kind == "class" else ("instance", target)
        self.spec_ref = runner.put_object(spec, namespace="services")
        self.state_key = f"{runner.name}/services/{self.service_id}-state" if checkpoint else None
        if self.state_key:
            runner._state_keys.append(self.state_key)
        # The spec travels as an object, so the code of its class must travel with the calls.
        ship = tuple(sorted(name for name in dumps(spec, what="the service").modules if is_shippable(name)))
        self.method_names = exposed_methods(cls)
        if not self.method_names:
            raise UsageTypeError(f"{cls.__qualname__} has no public methods to serve; mark some with @podrun.method")
        for name in [*self.method_names, CHECKPOINT, TOUCH]:
            method = ServiceMethod(self.service_id, name, self.spec_ref.key, self.state_key, f"{cls.__qualname__}.{name}")
            self._methods[name] = runner._proxy(method, ship, workers=1)

    def __call__(self, *args: Any, **kwargs: Any) -> ObjectFuture:
        if self.kind != "function":
            raise UsageTypeError(f"a {self.kind} service is called through its methods: {', '.join(self.method_names)}")
        return self._call(*args, **kwargs)

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any], **shared: Any) -> list[ObjectFuture]:
        if self.kind != "function":
            raise UsageTypeError(f"map a method instead: service.{self.method_names[0]}.map(...)")
        return self._call.map(iterable, *iterables, **shared)

    def __getattr__(self, name: str) -> MethodProxy:
        methods = self.__dict__.get("_methods", {})
        if name in methods and not name.startswith("__"):
            return methods[name]
        exposed = ", ".join(self.__dict__.get("method_names", [])) or "none (a function service is called directly)"
        raise AttributeError(f"service has no remote method {name!r}; exposed: {exposed}")

    def warm_up(self) -> ObjectFuture:
        """Start the pod (and build the resident object) now, so the first real call is fast."""
        if self.kind == "function":
            return self.runner._proxy(noop)()
        return self._methods[TOUCH]()

    def checkpoint(self) -> ObjectFuture:
        """Save the resident object's state as a new version of its checkpoint object (in the
        pod, zero link bytes); the future's value is the checkpoint's ObjectRef."""
        if self.kind == "function" or not self.state_key:
            raise UsageTypeError("only a class or instance service created with checkpoint=True has state to save")
        return self._methods[CHECKPOINT]()

    def state_ref(self) -> ObjectRef:
        """The checkpoint object's ref (``podrun.get_object`` it from anywhere)."""
        if not self.state_key:
            raise UsageTypeError("this service was created without checkpoint=True")
        return ObjectRef(self.state_key, 0)


class Runner:
    """flamepy's ``Runner(name, fail_if_exists=False, dependencies=None, python_version=None)``,
    plus podrun's pod options (keywords): node, max_duration, keep_warm, image, envs.

    ``dependencies`` are shipped as wheels (``"name"`` or ``"name==version"``; pods cannot
    resolve ranges). ``python_version`` must be the client's own minor version (pickled code
    needs it); it picks the stock ``python:X.Y-slim`` image. ``node`` left as None is chosen
    by the first service's ``resreq`` (``gpu`` > 0: ``"GPU"``), else ``"MPU"``.
    """

    def __init__(self, name: str, fail_if_exists: bool = False, dependencies: Iterable[str] | None = None,
                 python_version: str | None = None, *, node: str | None = None, max_duration: float = DEFAULT_MAX_DURATION,
                 keep_warm: float = DEFAULT_KEEP_WARM, image: str | None = None, envs: dict[str, Any] | None = None) -> None:
        checked = validate_pod_name(name)
        if checked is None:
            raise UsageError("a Runner needs a name: it is its pod_name and volume")
        self.name: str = checked
        if python_version is not None:
            image = image or f"python:{_check_python_version(python_version)}-slim"
        self.node_chosen = node is not None
        self.options = RemoteOptions(node=node or "MPU", max_duration=max_duration, image=image, pod_name=name,
                                     envs={} if envs is None else envs, keep_warm=keep_warm,
                                     wheels=shipped_wheels.validate(dependencies or ())).validated()
        self.resreq: ResourceRequirement | None = None  # the pod's, from the first service that gave one
        platform = config.current_platform()
        exists = name in platform.pvc_list()
        if exists and fail_if_exists:
            holder = self._holder()
            if holder is not None:
                raise NameTaken(f"runner {name!r} is held by {_describe(holder)}; close that Runner, or choose another "
                                "name (or pass fail_if_exists=False to share it)", holder)
            raise Conflict(f"runner {name!r}: a volume of that name already exists; "
                           "choose another name or pass fail_if_exists=False")
        self.created_volume = not exists
        self.platform = platform
        self._objects: list[str] = []
        self._state_keys: list[str] = []  # checkpoint objects of this runner's services
        self._services: dict[str, str] = {}  # service id -> what it serves, for a clear error on a duplicate
        self._jobs: set[str] = set()
        self._in_flight: set[ObjectFuture] = set()
        self.reserved = self._reserve() if fail_if_exists else False
        self.closed = False

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Runner {self.name} node={self.options.node} closed={self.closed}>"

    # services ------------------------------------------------------------------------------
    def service(self, target: Any, *args: Any, autoscale: bool | None = None, warmup: int = 0, resreq: Any = None,
                checkpoint: bool = False, name: str | None = None, workers: int | None = None,
                **kwargs: Any) -> Service:
        """Serve a function, a class (constructed in the pod with ``*args, **kwargs``) or an
        instance. flamepy's keywords, on a pod:

        * ``autoscale``: may calls of this service run at once in the pod (default: yes for a
          function or class, and never for an instance, as in flamepy). Recorded as
          ``service.concurrency`` (None: as many as the pod runs; 1: one at a time).
        * ``workers`` (podrun's): worker processes in the pod that run a function service's calls
          at once (default None: the node's core count; 1, or ``autoscale=False``: one after
          another in the pod's own process). A class or instance service lives as one object in
          the pod's own process, so its calls run there one at a time: it takes only 1.
        * ``warmup``: pods started before the first call. A runner has one pod (its pod_name),
          so any ``warmup`` >= 1 starts it and builds the object now; an instance takes 0 or 1.
        * ``resreq``: ``"cpu=1,mem=1g,gpu=0"`` (or a dict, or flamepy's ResourceRequirement):
          ``gpu`` > 0 needs the GPU node, and the values become the pod's declared limits
          (``PODRUN_CPU``, ``PODRUN_MEMORY``, ``PODRUN_GPU`` in its environment). All services
          of a runner share its pod, so they must agree on both.

        ``checkpoint=True``: the object's state is saved to the volume on
        ``service.checkpoint()`` and at shutdown, under the service's stable identity (the
        runner's name, the class's qualified name and ``name``, which tells apart two services
        of one class), so a later session of this runner resumes it."""
        self._check_open()
        kind = _service_kind(target)
        concurrency = _concurrency(kind, autoscale)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise UsageError(f"warmup must be a number of pods >= 0, not {warmup!r}")
        if kind == "instance" and warmup > 1:
            raise UsageError(f"warmup={warmup}: an instance service has exactly one resident object; use 0 or 1")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise UsageError(f"workers must be a number of worker processes >= 1 (or None: the node's cores), not {workers!r}")
        if kind != "function" and workers not in (None, 1):
            raise UsageError(f"workers={workers}: a {kind} service is one object in the pod's own process, so its calls "
                             "run one at a time there; serve a function for parallel calls, or leave workers out")
        self._apply_resreq(parse_resreq(resreq))
        service = Service(self, target, args, kwargs, checkpoint, name, 1 if concurrency == 1 else workers)
        service.concurrency, service.warmup = concurrency, warmup
        if warmup:
            service.warm_up()
        return service

    def _apply_resreq(self, resreq: ResourceRequirement | None) -> None:
        """A service's resources become the runner's pod's: its node and its declared limits."""
        if resreq is None:
            return
        if self.resreq is not None and resreq != self.resreq:
            raise UsageError(f"runner {self.name!r} runs one pod, declared with resreq '{self.resreq}'; this service asks for "
                             f"'{resreq}': give it the same, or serve it from another Runner")
        node = resreq.node()
        if node is not None and node != self.options.node:
            if self.node_chosen or self.resreq is not None or self._jobs:
                raise UsageError(f"resreq '{resreq}' needs the {node} node, but runner {self.name!r} runs on "
                                 f"{self.options.node}: create the Runner with node={node!r}")
            self.options = replace(self.options, node=node)
        self.node_chosen = True
        self.resreq = resreq
        self.options = replace(self.options, envs={**self.options.envs, **resreq.envs()})

    def _proxy(self, fn: Callable[..., Any], modules: tuple[str, ...] = (), workers: int | None = None) -> MethodProxy:
        options = replace(self.options, modules=modules or self.options.modules, workers=workers)
        return MethodProxy(RemoteFunction(fn, options), self._track)

    def _track(self, future: ObjectFuture) -> None:
        self._in_flight.add(future)

        def remember(done: Any) -> None:
            self._in_flight.discard(done)
            if done.job is not None:
                self._jobs.add(done.job.job_id)

        future.add_done_callback(remember)

    def _claim_service(self, service_id: str, cls: type, name: str | None) -> None:
        """Two services of one identity would share one resident object and one checkpoint."""
        if service_id in self._services:
            raise UsageError(f"runner {self.name!r} already serves {cls.__qualname__}"
                             f"{f' named {name!r}' if name else ''}: give each instance its own name=")
        self._services[service_id] = cls.__qualname__

    # the name's marker (fail_if_exists) ----------------------------------------------------
    def _holder_key(self) -> str:
        return f"{self.name}/{HOLDER[0]}/{HOLDER[1]}"

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = get_object(ObjectRef(self._holder_key(), 0))
        except NotFound:
            return None
        return holder if isinstance(holder, dict) else {"holder": repr(holder)}

    def _reserve(self) -> bool:
        """Write the name's marker as version 1 through the conditional-write protocol
        (``store/objects.py``): of two Runners reserving one name at once, at most one wins."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        try:
            put_object(f"{self.name}/{HOLDER[0]}", me, name=HOLDER[1], if_version=0)
        except Conflict:
            holder = self._holder() or {}
            raise NameTaken(f"runner {self.name!r} was reserved by {_describe(holder)} just now; close that Runner, or "
                            "choose another name (or pass fail_if_exists=False to share it)", holder) from None
        return True

    # objects and futures -------------------------------------------------------------------
    def put_object(self, obj: Any, namespace: str = "shared") -> ObjectRef:
        """Store ``obj`` in the runner's volume (``<name>/shared``); close() deletes it."""
        self._check_open()
        ref = put_object(f"{self.name}/{namespace}", obj)
        self._objects.append(ref.key)
        return ref

    def get(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> list[Any]:
        return get(list(futures), timeout)

    def ref(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> list[ObjectRef]:
        refs = [future.ref(timeout) for future in futures]
        self._objects.extend(ref.key for ref in refs)
        return refs

    def wait(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> None:
        wait(list(futures), timeout)

    def select(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> Iterator[ObjectFuture]:
        """Futures in completion order."""
        return as_completed(list(futures), timeout)

    # life ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise Closed(f"runner {self.name!r} is closed: make a new Runner")

    def close(self, keep_state: bool = False, cancel: bool = False) -> None:
        """Settle the calls in flight (wait for them; with ``cancel``, cancel those not yet
        running first), stop the runner's warm pod (its services checkpoint first), then remove
        exactly what this runner created: the whole volume if it made it, else its jobs, its
        objects and its services' checkpoints. ``keep_state`` keeps the volume and the
        checkpoints, which a new Runner of this name resumes. Blobs stay: they are shared by
        content and may serve others. The name's marker (``fail_if_exists``) is released."""
        if self.closed:
            return
        self.closed = True
        in_flight = list(self._in_flight)
        if cancel:
            for future in in_flight:
                future.cancel()
        wait(in_flight)  # nothing of ours is then re-sent (a retry would re-create the volume)
        self._stop_pod()
        release_lease(self.platform, self.name)  # now, not when the lane idles: that could be after the volume went
        if self.created_volume and not keep_state:
            with contextlib.suppress(NotFound):
                self.platform.pvc_delete(self.name)
            return
        keys = self._objects + ([] if keep_state else self._state_keys) + ([self._holder_key()] if self.reserved else [])
        for key in keys:
            with contextlib.suppress(NotFound):
                delete_objects(key)
        for job_id in sorted(self._jobs):
            with contextlib.suppress(NotFound):
                self.platform.delete(job_dir(job_id), self.name)

    def _stop_pod(self) -> None:
        """Ask a serving pod to checkpoint and exit, and wait (bounded) until it has; a pod
        still running after that is named in a warning, never left silently."""
        status = read_status(self.platform, self.name)
        if status is None or status.get("state") == "stopped":
            return
        if self.platform.pod_ended(self.name):
            return  # it died without saying so: a STOP would only wait for nobody
        self.platform.uplink([(STOP_NAME, b"")], dest_path=INBOX, pod_name=self.name)
        deadline = time.monotonic() + STOP_WAIT
        delay = self.platform.poll_interval[0]
        said_stopped = False
        while time.monotonic() < deadline:
            time.sleep(delay)
            if not said_stopped:  # the small status file first; then the pod itself, until it has ended
                status = read_status(self.platform, self.name)
                said_stopped = status is None or status.get("state") == "stopped"
            if said_stopped and self.platform.pod_ended(self.name):
                return
            delay = min(self.platform.poll_interval[1], delay * 1.5)
        warnings.warn(f"runner {self.name!r}: its pod did not stop within {STOP_WAIT:g} s of being asked (another "
                      "client's job may be running there); it stops at its keep_warm idle time or max_duration",
                      RuntimeWarning, stacklevel=3)

