"""Which platform podrun talks to: ``podrun.configure(...)`` or ``PODRUN_*`` variables.

Local is the default, so a user with no account and no server runs the real protocol on
their own machine. Explicit ``configure`` arguments win over the environment.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..platform.base import Platform
from ..platform.local import LocalPlatform, default_home
from ..platform.metered import MeteredPlatform

PLATFORMS = ("local", "em")

_lock = threading.RLock()
_settings: dict[str, Any] = {}
_platform: MeteredPlatform | None = None


def configure(platform: str | Platform | None = None, **options: Any) -> None:
    """Select the platform for subsequent calls.

    ``platform="local"`` (default; options ``root``, ``user``, ``driver``), ``"em"``
    (options ``url``, ``username``, ``password``, ...) or a ready ``Platform`` instance.
    Calls already submitted keep the platform they were submitted on.
    """
    global _platform
    if isinstance(platform, str) and platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: choose one of {', '.join(PLATFORMS)}, or pass a Platform")
    with _lock:
        _settings.clear()
        _settings["platform"] = platform
        _settings.update(options)
        _platform = None


def home() -> Path:
    """podrun's local state (volumes of the local platform, manifests, caches, journal)."""
    return default_home()


def _build(choice: str | Platform | None, options: dict[str, Any]) -> Platform:
    if isinstance(choice, Platform):
        return choice
    kind = choice or os.environ.get("PODRUN_PLATFORM") or "local"
    if kind == "local":
        return LocalPlatform(**options)
    if kind == "em":
        from ..platform.em import EMPlatform

        return EMPlatform.from_settings(**options)
    raise ValueError(f"PODRUN_PLATFORM={kind!r} is not a platform: choose one of {', '.join(PLATFORMS)}")


def current_platform() -> MeteredPlatform:
    """The configured platform, metered; built on first use."""
    global _platform
    with _lock:
        if _platform is None:
            options = {k: v for k, v in _settings.items() if k != "platform"}
            _platform = MeteredPlatform(_build(_settings.get("platform"), options))
        return _platform


def reset() -> None:
    """Forget the configuration (tests use it between cases)."""
    global _platform
    with _lock:
        _settings.clear()
        _platform = None
