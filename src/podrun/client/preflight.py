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
from ..files import atomic_write, version_stamp
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


_paths: dict[tuple[Path, str, str, str], Path] = {}  # (home, scope, image, node) -> the manifest's path


def cache_path(platform: Platform, image: str, node: str) -> Path:
    """Where the manifest of (platform, image, node) is cached; made once (every call asks)."""
    where = (config.home(), platform.environment_scope(), image, node)
    path = _paths.get(where)
    if path is None:
        if len(_paths) >= 256:
            _paths.clear()
        scope = hashlib.sha256(where[1].encode()).hexdigest()[:16]
        path = _paths[where] = where[0] / "environments" / scope / f"{env_key(image, node)}.json"
    return path


_parsed: dict[Path, tuple[tuple[int, int, int, int], dict[str, Any]]] = {}  # path -> (its stat, its entry)


def cached(platform: Platform, image: str, node: str) -> dict[str, Any] | None:
    """The last environment manifest the runtime reported for this (platform, image, node).
    Parsed once per version of the file (a call asks for it two or three times, and the
    manifest lists every module of the image)."""
    path = cache_path(platform, image, node)
    try:
        info = os.stat(path)
        stamp = version_stamp(info)
        known = _parsed.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        entry = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if isinstance(entry, dict):
        _parsed[path] = (stamp, entry)
    return entry


_importables: dict[int, tuple[dict[str, Any], frozenset[str]]] = {}  # id(env) -> (env, its names)


def _importable(env: dict[str, Any]) -> frozenset[str]:
    """The top-level names a manifest says import in the pod: built once per parsed manifest
    (hundreds of names; a call that needs a module checks against them)."""
    known = _importables.get(id(env))
    if known is None or known[0] is not env:
        if len(_importables) >= 64:  # manifests replaced by newer ones: let them go
            _importables.clear()
        names = set(env.get("modules") or ()) | {name.replace("-", "_") for name in (env.get("distributions") or {})}
        known = _importables[id(env)] = (env, frozenset(names))
    return known[1]


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


def _source(entry: dict[str, Any] | None) -> str:
    """Where what a refusal goes by comes from (only a refusal needs it said)."""
    if not (entry and entry.get("env")):
        return "going by the image name"
    return f"as its pod reported on {time.strftime('%Y-%m-%d %H:%M', time.localtime(entry.get('learned', 0)))}"


def check(platform: Platform, image: str, node: str, what: str, modules: Iterable[str]) -> None:
    """Raise EnvironmentMismatch when ``what`` (pickled here, needing ``modules``) cannot load
    in ``image`` on ``node``; silent when it can or when nothing is known against it."""
    client = python_version()
    entry = cached(platform, image, node)
    env = entry["env"] if entry else None
    pod_python = env.get("python") if env else image_python(image)
    if pod_python and pod_python != client:
        raise EnvironmentMismatch(
            f"{what} is pickled by Python {client}, but image {image!r} on node {node} runs Python {pod_python} "
            f"({_source(entry)}); pickled code loads only on the same minor version. Fix: use an image with Python {client} "
            f"(e.g. image='python:{client}-slim'), or run this client on Python {pod_python}.")
    needed = needed_modules(modules) if env else None
    if not needed:
        return
    assert env is not None
    missing = sorted(needed - _importable(env))
    if missing:
        raise EnvironmentMismatch(
            f"{what} needs module(s) {', '.join(missing)}, which image {image!r} on node {node} does not have "
            f"({_source(entry)}). "
            "Fix: use an image that has them (e.g. one built with 'podrun images build', or "
            "'dphi-embedded-ml-armv8-py311' for the common ML stack); ship an installed package as a wheel with "
            "@podrun.remote(wheels=['NAME==VERSION']); for your own pure-Python code, ship it with "
            "@podrun.remote(modules=[...]).")
