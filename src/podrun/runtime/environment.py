"""The pod's environment manifest: what pickled code can rely on in this image on this node.

Written to the volume (``.podrun/env/<key>.json``) on every run and sent back in the job's
start record only when it differs from what the client already knows (its hash travels in
the bundle), so the client's preflight learns each (image, node) once and checks later calls
before a byte is uplinked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..wire.compression import available_codecs

ENV_DIR = ".podrun/env"
GPU_DEVICES = ("/dev/nvidia0", "/dev/nvhost-gpu", "/dev/nvhost-ctrl-gpu", "/dev/dri/renderD128")


def _distributions() -> dict[str, str]:
    from importlib import metadata  # imported here: it costs ~20 ms, and most jobs never collect

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(str(name).lower().replace("_", "-"), dist.version)
    return found


def _gpu() -> dict[str, Any]:
    """Cheap evidence only: device nodes and nvidia-smi (importing torch costs seconds)."""
    return {
        "devices": [path for path in GPU_DEVICES if os.path.exists(path)],
        "nvidia_smi": _which("nvidia-smi"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def collect() -> dict[str, Any]:
    """Python version, platform, arch, importable top-level modules, distributions, GPU."""
    import pkgutil  # once per environment manifest, not in every pod start

    modules = {info.name for info in pkgutil.iter_modules() if not info.name.startswith("_")}
    modules |= set(sys.builtin_module_names)
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "python_full": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sys.platform,
        "machine": platform.machine(),
        "modules": sorted(modules),
        "distributions": _distributions(),
        "gpu": _gpu(),
        "codecs": available_codecs(),
        "node": os.environ.get("PODRUN_NODE"),
    }


def digest(env: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]


def env_key(image: str | None, node: str | None) -> str:
    """File name of an (image, node) pair's manifest inside the volume."""
    return hashlib.sha256(f"{image or '?'}|{node or '?'}".encode()).hexdigest()[:16]


def known_in_volume(data_dir: Path, image: str | None, known: str | None) -> bool:
    """True when the volume's copy of this (image, node) manifest is the one the client knows:
    then a cold pod skips collecting it again (tens of ms of module scanning per job)."""
    if not known:
        return False
    try:
        text = (data_dir / ENV_DIR / f"{env_key(image, os.environ.get('PODRUN_NODE'))}.json").read_text()
        return digest(json.loads(text)) == known
    except (OSError, ValueError):
        return False


def record(data_dir: Path, image: str | None, known: str | None) -> dict[str, Any]:
    """Collect, write the volume's copy, and return the start-record fields: always the hash,
    the whole manifest only when the client's ``known`` hash differs."""
    env = collect()
    env["image"] = image
    env_hash = digest(env)
    with contextlib.suppress(OSError):  # a read-only volume must not fail the job; the start record still carries it
        atomic_write(data_dir / ENV_DIR / f"{env_key(image, env['node'])}.json", json.dumps(env, sort_keys=True))
    fields: dict[str, Any] = {"env_hash": env_hash}
    if known != env_hash:
        fields["env"] = env
    return fields


def _which(program: str) -> bool:
    """``shutil.which(program) is not None`` without importing shutil into every pod."""
    paths = (os.path.join(folder, program) for folder in os.environ.get("PATH", os.defpath).split(os.pathsep) if folder)
    return any(os.path.isfile(path) and os.access(path, os.X_OK) for path in paths)
