"""podrun's client API as a pod sees it.

The pod zipapp carries the pod package alone (runtime, wire, store, errors: ``runtime/pack.py``),
never the client: a pod is air-gapped, with no EM API to submit to and no client to answer.
User modules shipped to a pod still run their module-level ``@podrun.remote(...)`` and may
name any of podrun's client API, so in a pod ``podrun/__init__.py`` resolves:

* ``podrun.remote`` / ``podrun.RemoteFunction`` to this module's: the decorated function stays
  a plain function, callable in the pod as it is; offloading from a pod (``.remote()``,
  ``.map()``, ``.estimate()``) raises :class:`~podrun.errors.UsageError` saying why.
* ``podrun.get_object`` & co. to ``store/object_api.py``, on the pod's own volume.
* every other client name (``Runner``, ``ObjectFuture``, ``configure``, ``LocalPlatform``, ...)
  to a :class:`ClientOnly` stand-in: importing it works (``from podrun import Runner`` at the
  top of a shipped module, an annotation), using it raises UsageError naming why.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

from ..errors import UsageError, UsageTypeError

AIR_GAPPED = "pods are air-gapped (no EM API and no podrun client inside a pod)"


def plain_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What a pickled RemoteFunction (client's or pod's) unpickles to: its function."""
    return fn


class RemoteFunction:
    """A ``@podrun.remote`` function inside a pod: calling it runs the function here."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise UsageTypeError(f"podrun.remote needs a callable, got {type(fn).__name__}")
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<RemoteFunction {getattr(self._fn, '__qualname__', self._fn)} (in a pod: runs here)>"

    def __reduce__(self) -> Any:
        return (plain_function, (self._fn,))

    def options(self, **overrides: Any) -> RemoteFunction:
        """The same function: options say how to offload it, and a pod offloads nothing."""
        return self

    def _refuse(self, what: str) -> NoReturn:
        name = getattr(self._fn, "__qualname__", "the function")
        raise UsageError(f"{name}.{what} inside a pod: {AIR_GAPPED}, so a pod cannot offload calls. Call {name}(...) to "
                         "run it in this pod, or return the work to the client and submit it from there")

    @property
    def remote(self) -> NoReturn:
        self._refuse("remote()")

    def map(self, *iterables: Any, **kwargs: Any) -> NoReturn:
        self._refuse("map()")

    def estimate(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("estimate()")


def remote(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@podrun.remote`` / ``@podrun.remote(node=..., ...)`` in a pod. The options were
    checked where they matter, on the client that imported the module to submit from it."""
    if fn is None:
        return RemoteFunction
    return RemoteFunction(fn)


class ClientOnly:
    """Stands in a pod for a name of podrun's client API: any use raises UsageError."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise UsageError(f"podrun.{self._name} is the client's API and this code runs in a pod: {AIR_GAPPED}, so a pod "
                         "cannot submit jobs, wait on futures or configure platforms. Use it on the client; in a pod, call "
                         "the functions themselves, and use podrun.get_object & co., podrun.data_dir() and the errors")

    __call__ = _refuse
    __instancecheck__ = _refuse
    __subclasscheck__ = _refuse
    __mro_entries__ = _refuse
    __setattr__ = _refuse

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # protocol probes (copy, typing, inspect) get the usual answer
            raise AttributeError(attr)
        self._refuse()

    def __repr__(self) -> str:
        return f"<podrun.{self._name}: client API, unavailable in a pod>"
