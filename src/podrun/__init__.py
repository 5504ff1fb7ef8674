"""podrun: offload Python functions to pods.

    @podrun.remote(node="GPU")
    def detect(frame): ...

    fut = detect.remote(frame)      # ObjectFuture, returns at once
    boxes = fut.get(timeout=600)

Only what a pod needs is imported eagerly (``data_dir``, errors); the client API loads on
first use, so ``python -m podrun.runtime`` in a pod never imports the HTTP client. A pod's
zipapp carries no client at all (``runtime/pack.py``): there the client's names resolve to
their pod-side versions or to stand-ins that say why they cannot work (``runtime/pod_api.py``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    BuildFailed,
    CallTimeout,
    Cancelled,
    Closed,
    CodecUnavailable,
    ConfigError,
    Conflict,
    ContainerUnavailable,
    EnvironmentMismatch,
    IllegalPath,
    ImageStoreError,
    IntegrityError,
    InvalidKey,
    InvalidRequest,
    Locked,
    MissingFile,
    NameTaken,
    NoContainerEngine,
    NotFound,
    PlatformError,
    PodBusy,
    PodFailed,
    PodrunError,
    PrepareError,
    RemoteError,
    RemoteFailure,
    RemoteTraceback,
    SerializationError,
    UsageError,
    UsageTypeError,
    WaitTimeout,
    WheelError,
    WireFormatError,
    WriteUnsettled,
)

__version__ = "0.1.0"


def data_dir() -> Path:
    """Inside a pod: the pod's volume (``/data`` on CG2; ``$PODRUN_DATA`` where it is elsewhere)."""
    return Path(os.environ.get("PODRUN_DATA", "/data"))


if TYPE_CHECKING:  # type checkers see the real objects; at run time they load on first use (below)
    from .client.accounting import reset_stats, stats
    from .client.attach import attach
    from .client.config import configure
    from .client.executor import Executor
    from .client.future import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        ObjectFuture,
        as_completed,
        get,
        iter_results,
        wait,
    )
    from .client.object_access import (
        compact_object,
        delete_objects,
        download_object,
        get_object,
        latest,
        patch_object,
        put_object,
        register_blobs,
        update_object,
        upload_object,
    )
    from .client.remote import RemoteFunction, remote
    from .client.resreq import ResourceRequirement
    from .client.runner import Runner
    from .client.stop import cancel
    from .platform.base import Platform
    from .platform.local import LocalPlatform
    from .platform.types import PodSpec, PodState
    from .runtime.session import method
    from .store.refs import ObjectKey, ObjectRef

_LAZY = {
    "remote": "podrun.client.remote",
    "RemoteFunction": "podrun.client.remote",
    "Executor": "podrun.client.executor",
    "ObjectFuture": "podrun.client.future",
    "get": "podrun.client.future",
    "wait": "podrun.client.future",
    "as_completed": "podrun.client.future",
    "iter_results": "podrun.client.future",
    "FIRST_COMPLETED": "podrun.client.future",
    "FIRST_EXCEPTION": "podrun.client.future",
    "ALL_COMPLETED": "podrun.client.future",
    "configure": "podrun.client.config",
    "attach": "podrun.client.attach",
    "cancel": "podrun.client.stop",
    "Runner": "podrun.client.runner",
    "ResourceRequirement": "podrun.client.resreq",
    "method": "podrun.runtime.session",
    "stats": "podrun.client.accounting",
    "reset_stats": "podrun.client.accounting",
    "PodSpec": "podrun.platform.types",
    "PodState": "podrun.platform.types",
    "LocalPlatform": "podrun.platform.local",
    "Platform": "podrun.platform.base",
    "ObjectRef": "podrun.store.refs",
    "ObjectKey": "podrun.store.refs",
    "put_object": "podrun.client.object_access",
    "get_object": "podrun.client.object_access",
    "latest": "podrun.client.object_access",
    "update_object": "podrun.client.object_access",
    "patch_object": "podrun.client.object_access",
    "upload_object": "podrun.client.object_access",
    "download_object": "podrun.client.object_access",
    "delete_objects": "podrun.client.object_access",
    "compact_object": "podrun.client.object_access",
    "register_blobs": "podrun.client.object_access",
}


# In a pod, which has no client package: the pod-side module that stands in for a client one.
_IN_POD = {"podrun.client.remote": "podrun.runtime.pod_api", "podrun.client.object_access": "podrun.store.object_api"}
_POD_SIDE = ("podrun.runtime.", "podrun.store.", "podrun.wire.")
_client: bool | None = None


def _has_client() -> bool:
    """False in a pod: the zipapp carries the pod package alone, whatever the image holds."""
    global _client
    if _client is None:
        import importlib.util

        _client = importlib.util.find_spec("podrun.client") is not None
    return _client


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'podrun' has no attribute {name!r}")
    if not _has_client():
        module = _IN_POD.get(module, module)
        if not module.startswith(_POD_SIDE):
            from .runtime.pod_api import ClientOnly

            globals()[name] = ClientOnly(name)
            return globals()[name]
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


# Spelled out (not built from _LAZY) so linters and type checkers see every public name.
__all__ = [
    # errors (podrun.errors: the hierarchy is drawn there)
    "AuthError", "BuildFailed", "CallTimeout", "Cancelled", "Closed", "CodecUnavailable", "ConfigError", "Conflict",
    "ContainerUnavailable",
    "EnvironmentMismatch", "IllegalPath", "ImageStoreError", "IntegrityError", "InvalidKey", "InvalidRequest", "Locked",
    "MissingFile", "NameTaken", "NoContainerEngine", "NotFound", "PlatformError", "PodBusy", "PodFailed", "PodrunError",
    "PrepareError",
    "RemoteError", "RemoteFailure", "RemoteTraceback", "SerializationError", "UsageError", "UsageTypeError",
    "WaitTimeout", "WheelError", "WireFormatError", "WriteUnsettled",
    "data_dir", "remote", "RemoteFunction", "Executor",
    "ObjectFuture", "get", "wait", "as_completed", "iter_results", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    "configure", "attach", "cancel", "Runner", "ResourceRequirement", "method", "stats", "reset_stats", "PodSpec", "PodState",
    "LocalPlatform",
    "Platform", "ObjectRef", "ObjectKey", "put_object", "get_object", "latest", "update_object", "patch_object",
    "upload_object", "download_object", "delete_objects", "compact_object", "register_blobs",
]
