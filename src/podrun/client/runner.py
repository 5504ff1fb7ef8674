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
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from ..errors import Closed, Conflict, NotFound, UsageError, UsageTypeError
from ..platform.types import validate_pod_name
from ..runtime.session import CHECKPOINT, TOUCH, ServiceMethod, noop
from ..store.refs import ObjectRef
from ..wire.layout import INBOX, STOP_NAME, job_dir
from ..wire.serialize import dumps
from . import config
from .future import ObjectFuture, as_completed, get, wait
from .modules import is_shippable
from .objects import delete_objects, put_object
from .remote import RemoteFunction, RemoteOptions
from .warm import read_status

DEFAULT_KEEP_WARM = 300.0  # seconds a runner's pod waits for the next call
DEFAULT_MAX_DURATION = 60.0  # minutes
STOP_WAIT = 30.0  # seconds close() waits for the warm pod to checkpoint and stop


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

    def __init__(self, runner: Runner, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], checkpoint: bool) -> None:
        self.runner = runner
        self.service_id = f"{uuid.uuid4().hex[:12]}"
        self._methods: dict[str, MethodProxy] = {}
        if inspect.isfunction(target) or inspect.isbuiltin(target) or isinstance(target, RemoteFunction):
            if args or kwargs:
                raise UsageTypeError("a function service takes no constructor arguments; bind them with functools.partial")
            function = target._fn if isinstance(target, RemoteFunction) else target
            self.kind = "function"
            self._call = runner._proxy(function)
            return
        self.kind = "class" if inspect.isclass(target) else "instance"
        if self.kind == "instance" and (args or kwargs):
            raise UsageTypeError("an instance service takes no constructor arguments: it is already constructed")
        cls = target if self.kind == "class" else type(target)
        spec = ("class", target, args, kwargs) if self.kind == "class" else ("instance", target)
        self.spec_ref = runner.put_object(spec, namespace="services")
        self.state_key = f"{runner.name}/services/{self.service_id}-state" if checkpoint else None
        # The spec travels as an object, so the code of its class must travel with the calls.
        ship = tuple(sorted(name for name in dumps(spec, what="the service").modules if is_shippable(name)))
        self.method_names = exposed_methods(cls)
        if not self.method_names:
            raise UsageTypeError(f"{cls.__qualname__} has no public methods to serve; mark some with @podrun.method")
        for name in [*self.method_names, CHECKPOINT, TOUCH]:
            self._methods[name] = runner._proxy(ServiceMethod(self.service_id, name, self.spec_ref.key, self.state_key), ship)

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
    def __init__(self, name: str, *, node: str = "MPU", fail_if_exists: bool = False, max_duration: float = DEFAULT_MAX_DURATION,
                 keep_warm: float = DEFAULT_KEEP_WARM, image: str | None = None, envs: dict[str, Any] | None = None) -> None:
        self.name = validate_pod_name(name)  # type: ignore[assignment]
        if self.name is None:
            raise UsageError("a Runner needs a name: it is its pod_name and volume")
        self.options = RemoteOptions(node=node, max_duration=max_duration, image=image, pod_name=name,
                                     envs=dict(envs or {}), keep_warm=keep_warm).validated()
        platform = config.current_platform()
        exists = name in platform.pvc_list()
        if exists and fail_if_exists:
            raise Conflict(f"runner {name!r}: a volume of that name already exists; choose another name or pass fail_if_exists=False")
        self.created_volume = not exists
        self.platform = platform
        self._objects: list[str] = []
        self._jobs: set[str] = set()
        self.closed = False

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Runner {self.name} node={self.options.node} closed={self.closed}>"

    # services ------------------------------------------------------------------------------
    def service(self, target: Any, *args: Any, warmup: int = 0, checkpoint: bool = False, **kwargs: Any) -> Service:
        """Serve a function, a class (constructed in the pod with ``*args, **kwargs``) or an
        instance. ``warmup=1`` starts the pod and builds the object now. ``checkpoint=True``:
        the object's state is saved to the volume on ``service.checkpoint()`` and at shutdown."""
        self._check_open()
        service = Service(self, target, args, kwargs, checkpoint)
        if warmup:
            service.warm_up()
        return service

    def _proxy(self, fn: Callable[..., Any], modules: tuple[str, ...] = ()) -> MethodProxy:
        options = replace(self.options, modules=modules) if modules else self.options
        return MethodProxy(RemoteFunction(fn, options), self._track)

    def _track(self, future: ObjectFuture) -> None:
        future.add_done_callback(lambda f: f.job is not None and self._jobs.add(f.job.job_id))

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

    def close(self, keep_state: bool = False) -> None:
        """Stop the runner's warm pod (its services checkpoint first) and remove exactly what
        this runner created: the whole volume if it made it (unless ``keep_state``), else its
        jobs and objects. Blobs stay: they are shared by content and may serve others."""
        if self.closed:
            return
        self.closed = True
        self._stop_pod()
        if self.created_volume and not keep_state:
            try:
                self.platform.pvc_delete(self.name)
            except NotFound:
                pass
            return
        for key in self._objects:
            try:
                delete_objects(key)
            except NotFound:
                pass
        for job_id in sorted(self._jobs):
            try:
                self.platform.delete(job_dir(job_id), self.name)
            except NotFound:
                pass

    def _stop_pod(self) -> None:
        """Ask a serving pod to checkpoint and exit, and wait (bounded) until it has."""
        status = read_status(self.platform, self.name)
        if status is None or status.get("state") == "stopped":
            return
        try:
            if self.platform.pod_status(self.name).is_terminal:
                return  # it died without saying so: a STOP would only wait for nobody
        except NotFound:
            return
        self.platform.uplink([(STOP_NAME, b"")], dest_path=INBOX, pod_name=self.name)
        deadline = time.monotonic() + STOP_WAIT
        delay = self.platform.poll_interval[0]
        while time.monotonic() < deadline:
            time.sleep(delay)
            status = read_status(self.platform, self.name)
            if status is None or status.get("state") == "stopped":
                return
            delay = min(self.platform.poll_interval[1], delay * 1.5)
