"""Preflight: a call that cannot load in the pod fails before a single byte is uplinked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import podrun
from podrun.client import config, preflight
from podrun.platform.local import LocalPlatform

from .conftest import require_image
from .platforms import needs_engine

CLIENT = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER = "3.10" if CLIENT != "3.10" else "3.12"
IMAGE = f"python:{CLIENT}-slim"


@pytest.fixture
def platform(podrun_home: Path) -> LocalPlatform:
    platform = LocalPlatform(podrun_home / "local")
    podrun.configure(platform)
    return platform


def _pod_env(python: str, modules: list[str]) -> dict:
    return {"python": python, "machine": "aarch64", "modules": sorted(set(modules) | set(sys.stdlib_module_names)),
            "distributions": {}, "codecs": ["zlib", "raw"]}


def add(x: int) -> int:
    return x + 1


def uses_numpy(n: int) -> float:
    import numpy

    return float(numpy.arange(n).sum())


def optional_numpy(n: int) -> int:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return -n
    return n


def test_cached_manifest_with_other_python_fails_before_uplink(platform: LocalPlatform) -> None:
    preflight.remember(config.current_platform(), IMAGE, "MPU", _pod_env(OTHER, []), "h1")
    before = podrun.stats()
    with pytest.raises(podrun.EnvironmentMismatch) as info:
        podrun.remote(add).remote(1)
    message = str(info.value)
    assert f"Python {CLIENT}" in message and f"Python {OTHER}" in message and "as its pod reported" in message
    assert f"image='python:{CLIENT}-slim'" in message
    assert podrun.stats()["bytes_up"] == before["bytes_up"]
    assert podrun.stats()["calls"] == before["calls"]


def test_image_name_implies_python_without_a_manifest(platform: LocalPlatform) -> None:
    before = podrun.stats()["bytes_up"]
    with pytest.raises(podrun.EnvironmentMismatch, match=f"runs Python {OTHER} \\(going by the image name\\)"):
        podrun.remote(add, image=f"python:{OTHER}-alpine").remote(1)
    assert podrun.stats()["bytes_up"] == before


@pytest.mark.parametrize("image, python", [
    ("python:3.12-slim", "3.12"), ("fpga.dphi.space:5000/python:3.10", "3.10"),
    ("fpga.dphi.space:5000/dphi-embedded-ml-armv8-py311", "3.11"), ("l4t-pytorch-r36-4-0", "3.10"),
    ("my-custom-image", None),
])
def test_image_python(image: str, python: str | None) -> None:
    assert preflight.image_python(image) == python


def test_missing_module_names_it_and_the_fix(platform: LocalPlatform) -> None:
    preflight.remember(config.current_platform(), IMAGE, "MPU", _pod_env(CLIENT, []), "h2")
    before = podrun.stats()["bytes_up"]
    with pytest.raises(podrun.EnvironmentMismatch) as info:
        podrun.remote(uses_numpy).remote(3)
    assert "numpy" in str(info.value) and "modules=[...]" in str(info.value)
    assert podrun.stats()["bytes_up"] == before


def test_guarded_import_and_present_module_pass(platform: LocalPlatform) -> None:
    preflight.remember(config.current_platform(), IMAGE, "MPU", _pod_env(CLIENT, ["numpy"]), "h3")
    preflight.check(config.current_platform(), IMAGE, "MPU", "uses_numpy", {"numpy", "os"})
    preflight.remember(config.current_platform(), IMAGE, "MPU", _pod_env(CLIENT, []), "h4")
    assert podrun.remote(optional_numpy).remote(2).get(timeout=120) == 2  # host pod has numpy


def test_runtime_reports_environment_once(platform: LocalPlatform) -> None:
    fn = podrun.remote(add)
    before = podrun.stats()["bytes_down"]
    assert fn.remote(1).get(timeout=120) == 2
    first_down = podrun.stats()["bytes_down"] - before
    entry = preflight.cached(config.current_platform(), IMAGE, "MPU")
    assert entry is not None and entry["env"]["python"] == CLIENT and "json" in entry["env"]["modules"]
    before = podrun.stats()["bytes_down"]
    assert fn.remote(2).get(timeout=120) == 3
    assert podrun.stats()["bytes_down"] - before < first_down - 500, "an unchanged manifest is not sent again"


def test_a_manifest_learned_again_is_read_again(platform: LocalPlatform) -> None:
    """The cache's entry is parsed once per version of its file: a manifest the runtime reports
    anew (another client, another run) is what the next call checks against."""
    here = config.current_platform()
    preflight.remember(here, IMAGE, "MPU", _pod_env(CLIENT, []), "h1")
    assert preflight.known_hash(here, IMAGE, "MPU") == "h1"
    assert preflight.known_hash(here, IMAGE, "MPU") == "h1"
    preflight.remember(here, IMAGE, "MPU", _pod_env(OTHER, []), "h2")
    assert preflight.known_hash(here, IMAGE, "MPU") == "h2"
    with pytest.raises(podrun.EnvironmentMismatch):
        podrun.remote(add).remote(1)
    preflight.cache_path(here, IMAGE, "MPU").unlink()
    assert preflight.cached(here, IMAGE, "MPU") is None


@needs_engine
def test_what_a_host_process_pod_reported_never_stands_for_a_container_pod(podrun_home: Path) -> None:
    """The same volumes serve host-process pods (the host's Python, with zstandard) and
    container pods (the image's, without): a client that ran on the process driver and then
    on the container driver must not send the image's pod zstd frames it cannot read."""
    require_image(IMAGE)
    root = podrun_home / "local"
    podrun.configure(LocalPlatform(root, driver="process"))
    assert podrun.remote(add).remote(1).get(timeout=120) == 2
    on_host = preflight.cached(config.current_platform(), IMAGE, "MPU")
    assert on_host is not None and "zstd" in on_host["env"]["codecs"]
    podrun.configure(LocalPlatform(root, driver="container"))
    assert preflight.cached(config.current_platform(), IMAGE, "MPU") is None
    assert podrun.remote(add).remote(2).get(timeout=120) == 3
    in_image = preflight.cached(config.current_platform(), IMAGE, "MPU")
    assert in_image is not None and "zstd" not in in_image["env"]["codecs"]
    podrun.configure(LocalPlatform(root, driver="process", python=sys.executable))
    assert preflight.cached(config.current_platform(), IMAGE, "MPU") is None  # another pod interpreter


@needs_engine
def test_a_stale_manifest_promising_zstd_costs_one_resend_and_is_corrected(podrun_home: Path) -> None:
    """A manifest that claims a codec the pod cannot read (an image replaced under its name by
    one without zstandard): the pod reports its codecs with its refusal, the client sends the
    job once more with one it reads, and the next call goes right the first time."""
    require_image(IMAGE)
    podrun.configure(LocalPlatform(podrun_home / "local", driver="container"))
    here = config.current_platform()
    preflight.remember(here, IMAGE, "MPU", dict(_pod_env(CLIENT, []), codecs=["zstd", "zlib", "raw"]), "stale")
    assert podrun.remote(add).remote(1).get(timeout=120) == 2
    learned = preflight.cached(here, IMAGE, "MPU")
    assert learned is not None and learned["hash"] != "stale" and "zstd" not in learned["env"]["codecs"]
    assert podrun.remote(add).remote(2).get(timeout=120) == 3
