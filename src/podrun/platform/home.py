"""Where podrun keeps its local state on this machine (local volumes, image store, journal,
caches). Its own module so that code running in a pod can name it without the local platform."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """``$PODRUN_HOME``, else ``$XDG_DATA_HOME/podrun``, else ``~/.local/share/podrun``."""
    if os.environ.get("PODRUN_HOME"):
        return Path(os.environ["PODRUN_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "podrun"
