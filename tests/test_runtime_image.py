"""The runtime image helpers: what can be checked without a container engine or a network."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podrun.client import images
from podrun.platform.local import LocalPlatform
from podrun.runtime.pack import build_zipapp

from .conftest import require_image


def test_context_holds_dockerfile_zipapp_and_wheels(tmp_path: Path) -> None:
    wheel = tmp_path / "zstandard-0.25.0-cp311-cp311-manylinux2014_aarch64.whl"
    wheel.write_bytes(b"wheel")
    context = images.prepare_context(tmp_path / "ctx", [wheel])
    text = (context / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in text and "FROM ${BASE}" in text and "--no-index" in text
    assert (context / "podrun-runtime.pyz").read_bytes() == build_zipapp().data
    assert zipfile.is_zipfile(context / "podrun-runtime.pyz")
    assert (context / "wheels" / wheel.name).read_bytes() == b"wheel"


def test_build_commands_target_arm64(tmp_path: Path) -> None:
    docker = images.build_command("docker", "podrun-rt", images.ONBOARD_BASE, tmp_path, tmp_path / "rt.tar")
    assert docker[0][:5] == ["docker", "buildx", "build", "--platform", "linux/arm64"]
    assert f"BASE={images.ONBOARD_BASE}" in docker[0] and f"type=docker,dest={tmp_path / 'rt.tar'}" in docker[0]
    podman = images.build_command("podman", "podrun-rt", "python:3.11-slim", tmp_path, tmp_path / "rt.tar")
    assert podman[0][:4] == ["podman", "build", "--platform", "linux/arm64"] and podman[1][:2] == ["podman", "save"]


def test_no_engine_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(images.NoContainerEngine, match="install podman"):
        images.find_engine()


def test_onboard_build_uplinks_context_and_builds(local_platform: LocalPlatform) -> None:
    require_image(images.ONBOARD_BASE.rsplit("/", 1)[1])
    images.build_onboard("podrun-rt", platform=local_platform)
    assert "podrun-rt" in {row["Repository"].split("-", 1)[1] for row in local_platform.image_list()}
    folder = local_platform.volume_path(None) / images.IMAGES_DIR / "podrun-rt"
    assert f"FROM {images.ONBOARD_BASE}" in (folder / "Dockerfile").read_text()
    assert (folder / "podrun-runtime.pyz").stat().st_size == build_zipapp().size


def test_wheel_cache_hit_runs_no_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / "zstandard-0.25.0-cp311-cp311-manylinux2014_aarch64.whl").write_bytes(b"x")
    (cache / "zstandard-0.25.0-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"x")

    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a cache hit must not run pip")

    monkeypatch.setattr(subprocess, "run", no_network)
    hit = images.fetch_wheel("zstandard==0.25.0", cache)
    assert hit.name.endswith("manylinux2014_aarch64.whl")  # an older glibc's wheel fits a manylinux_2_28 pod
    assert images.cached_wheel("zstandard==0.26.0", cache) is None
    assert images.cached_wheel("zstandard", cache, python_version="3.12") is None
    command = images.pip_download_command("zstandard==0.25.0", cache)
    assert command[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in command and "--no-deps" in command
    tags = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert tags[:2] == ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64"] and tags[-1] == "manylinux1_aarch64"
    assert tags.index("manylinux2014_aarch64") == tags.index("manylinux_2_17_aarch64") + 1
    assert command[command.index("--python-version") + 1] == "3.11"
    assert os.fspath(cache) in command


@given(pod_glibc=st.integers(17, 40), wheel_glibc=st.integers(5, 40), arch=st.sampled_from(["aarch64", "x86_64"]),
       wheel_arch=st.sampled_from(["aarch64", "x86_64"]), legacy=st.booleans())
def test_a_cached_wheel_fits_a_pod_of_its_arch_and_a_glibc_at_least_as_new(
        tmp_path_factory: pytest.TempPathFactory, pod_glibc: int, wheel_glibc: int, arch: str, wheel_arch: str,
        legacy: bool) -> None:
    cache = tmp_path_factory.mktemp("wheels")
    tag = f"manylinux2014_{wheel_arch}" if legacy else f"manylinux_2_{wheel_glibc}_{wheel_arch}"
    (cache / f"demo-1.0-cp311-cp311-{tag}.whl").write_bytes(b"x")
    fits = wheel_arch == arch and (17 if legacy else wheel_glibc) <= pod_glibc
    assert (images.cached_wheel("demo==1.0", cache, "3.11", f"manylinux_2_{pod_glibc}_{arch}") is not None) == fits
    assert images.compatible_tags(f"musllinux_1_2_{arch}") == [f"musllinux_1_2_{arch}"]
