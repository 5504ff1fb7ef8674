"""Pod drivers of LocalPlatform, and what each one is.

* ``container`` (the CG2 driver, the default wherever podman runs): the pod runs inside its
  image under podman (see ``container.py``): the image's root as ``/``, the volume at
  ``/data``, private ``/tmp``, hostname ``<user>-<pod_name>``, the image's ENV, WORKDIR,
  ENTRYPOINT and CMD, no capabilities, a user namespace under root, an air-gapped network per
  user (``network.py``) with the telemetry service (``telemetry.py``), graceful stops.
* ``process``: an explicit fast host mode: the pod is a process on this machine's own Python,
  with the client user's rights and the host's files. Never silent: the first pod notes once
  that it is not CG2-like; podrun's own runtime (which finds its volume through
  ``PODRUN_DATA``) runs, but a raw command naming ``/data`` is refused, since a program that
  opens ``/data/x`` itself would write the host's ``/data``.

``auto`` is ``container`` where it can run and otherwise ``process`` with a warning saying why.
(A bubblewrap driver existed; it shared the host's network and file system and kept root's
capabilities, and is gone: fewer drivers, each one what it says.)
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from ...errors import InvalidRequest, UsageError
from . import container as _container
from .images import ImageStore, host_arch, pod_arch

DRIVERS = ("auto", "container", "process")
ISOLATING = frozenset({"container"})
_DATA_TOKEN = re.compile(r"(?<![\w./-])/data(?=/|$|[\s'\";|&)>])")
_PYTHON_NAMES = ("python", "python3", "/usr/local/bin/python", "/usr/local/bin/python3", "/usr/bin/python3")
# podrun's own runtime (``python /data/.podrun/blobs/<hash> <bundle>``, ``python -m podrun.runtime <bundle>``)
# names only podrun's area of the volume, and finds the volume itself through PODRUN_DATA.
_PODRUN_AREA = "/data/.podrun/"
_HOST_ENV = ("LANG", "LC_ALL", "TZ")
_notes: set[str] = set()


class HostPodsWarning(UserWarning):
    """Pods run on this host's own Python (the ``process`` driver): not like CG2."""


def _note_once(key: str, message: str) -> None:
    if key not in _notes:
        _notes.add(key)
        warnings.warn(message, HostPodsWarning, stacklevel=3)


def check_driver(driver: str, store: ImageStore | None = None) -> str:
    if driver not in DRIVERS:
        raise UsageError(f"unknown local pod driver {driver!r}: choose one of {', '.join(DRIVERS)}")
    if driver == "container":
        _container.find_engine(store)  # ContainerUnavailable says which engine command failed and how
    return driver


def effective(driver: str, store: ImageStore | None = None) -> str:
    """The driver pods get: ``auto`` is ``container`` where an engine runs, else ``process``
    with a warning (once) saying why and how to get CG2-like pods."""
    if driver != "auto":
        return driver
    reason = _container.reason_unavailable(store)
    if reason is None:
        return "container"
    _note_once("auto", f"podrun: local pods fall back to the host-process driver, which is not CG2-like, because {reason}")
    return "process"


def describe(driver: str, arch: str | None = None) -> str:
    """One line for ``podrun config show``: the driver pods get and their architecture."""
    chosen = effective(driver)
    if chosen == "container":
        engine = _container.find_engine()
        return f"container ({engine.name}: pods run inside their image, {pod_arch(arch)}; isolated)"
    return (f"process (pods on this host's Python {sys.version_info[0]}.{sys.version_info[1]}, {host_arch()}; "
            "NOT isolated, not CG2-like)")


def process_pod(spec: Any, volume: Path, user: str, pod_python: str | None) -> dict[str, Any]:
    """argv, env and cwd of a ``process`` pod."""
    argv = split_command(spec.command) + [str(arg) for arg in spec.args]
    if not argv:
        argv = ["python"]  # the stock Python images' default CMD
    naming = [arg for arg in argv[1:] if _DATA_TOKEN.search(arg)]
    own_runtime = argv[0] in _PYTHON_NAMES and bool(naming) and all(arg.startswith(_PODRUN_AREA) for arg in naming)
    if not own_runtime and any(_DATA_TOKEN.search(arg) for arg in argv):
        raise InvalidRequest(
            "Invalid parameters: this pod's command names /data, but the 'process' driver runs pods on the host, where "
            "/data is the host's own folder (a program opening /data/x itself would write there). Use the 'container' "
            "driver (PODRUN_LOCAL_DRIVER=container) or read the volume's path from $PODRUN_DATA.", status=400)
    _note_once("process", "podrun: local pods run on this host's own Python (driver 'process'): they see the host's "
               "files and packages, unlike CG2. For pods inside real images install podman and prepare them "
               "(podrun images prepare), then use driver 'container'.")
    argv = [_DATA_TOKEN.sub(lambda _m: str(volume), arg) for arg in argv] if own_runtime else argv
    if argv[0] in _PYTHON_NAMES:
        argv[0] = pod_python or sys.executable  # the host's Python (or the configured stand-in)
    resolved = shutil.which(argv[0], path=_container.HOST_PATH) if "/" not in argv[0] else argv[0]
    if resolved is None:
        raise InvalidRequest(f"Invalid parameters: command {argv[0]!r} is not a program on this host", status=400)
    argv[0] = resolved  # found on the fixed PATH here, never on the one the pod's envs may set
    env = {key: os.environ[key] for key in _HOST_ENV if key in os.environ}
    env.update({"PATH": _container.HOST_PATH, "HOME": str(volume), "TMPDIR": os.environ.get("TMPDIR", "/tmp")})
    env.update(pod_env(spec, user))
    if spec.node == "GPU":
        env.update({k: v for k, v in os.environ.items() if k.startswith(("CUDA_", "NVIDIA_"))})
    env["PODRUN_DATA"] = str(volume)
    return {"argv": argv, "env": env, "cwd": str(volume), "driver": "process"}


def pod_env(spec: Any, user: str) -> dict[str, str]:
    """The variables every pod sees: its ``envs``, then podrun's (node, hostname, GPU)."""
    env = {str(k): str(v) for k, v in spec.envs.items()}
    env["PODRUN_NODE"] = spec.node
    if spec.pod_name:
        env["HOSTNAME"] = f"{user}-{spec.pod_name}"
    if spec.node != "GPU":
        env["CUDA_VISIBLE_DEVICES"] = ""  # only the GPU node has the GPU, as on CG2
    return env


def split_command(command: str | list[str] | None) -> list[str]:
    """``command`` as argv, split without a shell as the EM API does."""
    import shlex

    if command is None or command == "":
        return []
    if isinstance(command, list):
        return [str(c) for c in command]
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid parameters: command {command!r} cannot be split: {exc}", status=400) from None
