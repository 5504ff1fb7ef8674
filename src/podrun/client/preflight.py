"""Preflight: refuse a call whose pickled code cannot load in the pod, before any uplink.

On a satellite a failed unpickle wastes a contact window, so the client decides up front from
what it knows about the pod's environment:

* a manifest the runtime reported (Python version, importable modules, arch, GPU), cached per
  (platform, image, node) under ``$PODRUN_HOME/environments``; or, without one,
* the image name: ``python:3.X*`` runs Python 3.X, ``...-py311`` 3.11, L4T images 3.10.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import EnvironmentMismatch
from ..files import atomic_write
from ..platform.base import Platform
from ..runtime.environment import env_key
from ..wire import records as rec
from ..wire.bundle import python_version
from . import config
from .modules import is_shippable

# Carried by the runtime zipapp itself, so never missing in a pod.
SHIPPED_WITH_RUNTIME = frozenset({"podrun", "cloudpickle", "msgpack", "__main__", "builtins"})
_IMAGE_PYTHON = (
    (re.compile(r"(?:^|/)python:(3\.\d+)"), None),
    (re.compile(r"py(3)(1\d)(?:\b|$|:)"), None),
    (re.compile(r"(?:^|/)(?:[\w-]*-)?l4t-"), "3.10"),  # L4T r36 = Ubuntu 22.04 (em-api.md §5)
)


def _scope(platform: Platform) -> str:
    return hashlib.sha256(platform.environment_scope().encode()).hexdigest()[:16]


def cache_path(platform: Platform, image: str, node: str) -> Path:
    return config.home() / "environments" / _scope(platform) / f"{env_key(image, node)}.json"


_parsed: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}  # path -> (its stat, its entry)


def cached(platform: Platform, image: str, node: str) -> dict[str, Any] | None:
    """The last environment manifest the runtime reported for this (platform, image, node).
    Parsed once per version of the file (a call asks for it two or three times, and the
    manifest lists every module of the image): a changed file has a new inode, size or time."""
    path = cache_path(platform, image, node)
    try:
        info = os.stat(path)
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        known = _parsed.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        entry = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if isinstance(entry, dict):
        _parsed[path] = (stamp, entry)
    return entry


def known_hash(platform: Platform, image: str, node: str) -> str | None:
    entry = cached(platform, image, node)
    return entry.get("hash") if entry else None


def remember(platform: Platform, image: str, node: str, env: dict[str, Any], env_hash: str) -> None:
    entry = {"hash": env_hash, "env": env, "learned": time.time()}
    atomic_write(cache_path(platform, image, node), json.dumps(entry, sort_keys=True))


def learn(platform: Platform, image: str, node: str, records: Iterable[rec.Record]) -> None:
    """Cache the environment a job's runtime reported (sent only when it changed)."""
    for record in records:
        if isinstance(record, rec.EnvRecord):
            env, env_hash = record.fields.get("env"), record.fields.get("env_hash")
            if isinstance(env, dict) and env_hash:
                remember(platform, image, node, env, env_hash)


def image_python(image: str) -> str | None:
    """The Python minor version an image name implies, where it implies one."""
    for pattern, fixed in _IMAGE_PYTHON:
        match = pattern.search(image)
        if match:
            return fixed or (match.group(1) if match.lastindex == 1 else f"{match.group(1)}.{match.group(2)}")
    return None


def needed_modules(names: Iterable[str]) -> set[str]:
    """Top-level modules the pod must provide itself: not stdlib, not shipped user code,
    not carried by the runtime."""
    needed: set[str] = set()
    for name in names:
        top = name.split(".")[0]
        if not top or top in SHIPPED_WITH_RUNTIME or top in sys.stdlib_module_names or top in sys.builtin_module_names:
            continue
        if is_shippable(name) or is_shippable(top):
            continue
        needed.add(top)
    return needed


def check(platform: Platform, image: str, node: str, what: str, modules: Iterable[str]) -> None:
    """Raise EnvironmentMismatch when ``what`` (pickled here, needing ``modules``) cannot load
    in ``image`` on ``node``; silent when it can or when nothing is known against it."""
    client = python_version()
    entry = cached(platform, image, node)
    env = entry["env"] if entry else None
    if env and entry:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.get("learned", 0)))
        source = f"as its pod reported on {when}"
        pod_python = env.get("python")
    else:
        source = "going by the image name"
        pod_python = image_python(image)
    if pod_python and pod_python != client:
        raise EnvironmentMismatch(
            f"{what} is pickled by Python {client}, but image {image!r} on node {node} runs Python {pod_python} "
            f"({source}); pickled code loads only on the same minor version. Fix: use an image with Python {client} "
            f"(e.g. image='python:{client}-slim'), or run this client on Python {pod_python}.")
    if not env:
        return
    available = set(env.get("modules") or ())
    available |= {name.replace("-", "_") for name in (env.get("distributions") or {})}
    missing = sorted(needed_modules(modules) - available)
    if missing:
        raise EnvironmentMismatch(
            f"{what} needs module(s) {', '.join(missing)}, which image {image!r} on node {node} does not have ({source}). "
            "Fix: use an image that has them (e.g. one built with 'podrun images build', or "
            "'dphi-embedded-ml-armv8-py311' for the common ML stack); ship an installed package as a wheel with "
            "@podrun.remote(wheels=['NAME==VERSION']); for your own pure-Python code, ship it with "
            "@podrun.remote(modules=[...]).")
