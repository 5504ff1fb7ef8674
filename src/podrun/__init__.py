"""podrun: offload Python functions to pods.

    @podrun.remote(node="GPU")
    def detect(frame): ...

    fut = detect.remote(frame)      # ObjectFuture, returns at once
    boxes = fut.get(timeout=600)

Only what a pod needs is imported eagerly (``data_dir``, errors); the client API loads on
first use, so ``python -m podrun.runtime`` in a pod never imports the HTTP client.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from .errors import (
    AuthError,
    CallTimeout,
    Cancelled,
    ConfigError,
    Conflict,
    EnvironmentMismatch,
    IllegalPath,
    IntegrityError,
    InvalidRequest,
    Locked,
    NotFound,
    PlatformError,
    PodFailed,
    PodrunError,
    RemoteError,
    SerializationError,
    WireFormatError,
)

__version__ = "0.1.0"


def data_dir() -> Path:
    """Inside a pod: the pod's volume (``/data`` on CG2; ``$PODRUN_DATA`` where it is elsewhere)."""
    return Path(os.environ.get("PODRUN_DATA", "/data"))


_LAZY = {
    "remote": "podrun.client.remote",
    "RemoteFunction": "podrun.client.remote",
    "ObjectFuture": "podrun.client.future",
    "get": "podrun.client.future",
    "wait": "podrun.client.future",
    "as_completed": "podrun.client.future",
    "FIRST_COMPLETED": "podrun.client.future",
    "FIRST_EXCEPTION": "podrun.client.future",
    "ALL_COMPLETED": "podrun.client.future",
    "configure": "podrun.client.config",
    "attach": "podrun.client.attach",
    "Runner": "podrun.client.runner",
    "method": "podrun.runtime.session",
    "stats": "podrun.client.accounting",
    "reset_stats": "podrun.client.accounting",
    "PodSpec": "podrun.platform.types",
    "PodState": "podrun.platform.types",
    "LocalPlatform": "podrun.platform.local",
    "Platform": "podrun.platform.base",
    "ObjectRef": "podrun.store.refs",
    "ObjectKey": "podrun.store.refs",
    "put_object": "podrun.client.objects",
    "get_object": "podrun.client.objects",
    "update_object": "podrun.client.objects",
    "patch_object": "podrun.client.objects",
    "upload_object": "podrun.client.objects",
    "download_object": "podrun.client.objects",
    "delete_objects": "podrun.client.objects",
    "compact_object": "podrun.client.objects",
    "register_blobs": "podrun.client.objects",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'podrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuthError", "CallTimeout", "Cancelled", "ConfigError", "Conflict", "EnvironmentMismatch", "IllegalPath", "IntegrityError",
    "InvalidRequest", "Locked", "NotFound", "PlatformError", "PodFailed", "PodrunError", "RemoteError",
    "SerializationError", "WireFormatError", "data_dir", *_LAZY,
]
