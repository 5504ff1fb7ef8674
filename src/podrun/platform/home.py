"""Where podrun keeps its local state on this machine (local volumes, image store, journal,
caches). Its own module so that code running in a pod can name it without the local platform."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


def default_home() -> Path:
    """``$PODRUN_HOME``, else ``$XDG_DATA_HOME/podrun``, else ``~/.local/share/podrun``."""
    return _home(os.environ.get("PODRUN_HOME") or None, os.environ.get("XDG_DATA_HOME") or None, os.environ.get("HOME"))


@lru_cache(maxsize=16)
def _home(podrun_home: str | None, data_home: str | None, _user_home: str | None) -> Path:
    """Built once per setting of the variables (a call's path asks for it several times)."""
    if podrun_home:
        return Path(podrun_home)
    base = data_home or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "podrun"
