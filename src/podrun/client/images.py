"""The podrun runtime image: build it on the ground, push it, or have CG2 build it onboard.

Plain functions behind ``podrun images build|push`` (the CLI wires them):

* :func:`build` — ``docker buildx --platform linux/arm64``, or with podman an offline build in
  the local image store from its prepared stock base (``podrun images prepare``; no registry),
  from ``runtime_image/Dockerfile`` with the runtime zipapp packed here, written as a tar.
* :func:`push` — uplink that tar and ``image_load`` it (large: prefer preloading before launch).
* :func:`build_onboard` — uplink the Dockerfile and its small context (zipapp, wheels) in one
  call and ``image_build`` onboard from an embedded base (``fpga.dphi.space:5000/...``).
* :func:`fetch_wheel` — a C-extension wheel for the pod's platform into a local cache
  (``pip download --only-binary=:all: --platform manylinux_2_28_aarch64 ...``), for the image's
  ``wheels/`` folder; pods cannot pip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import NoContainerEngine, PodrunError
from ..platform.base import Platform, Progress
from ..platform.local import builds
from ..platform.local.images import ImageStore, pod_arch
from ..runtime.pack import build_zipapp
from . import config
from .wheels import WHEEL_PLATFORM

DEFAULT_BASE = "python:3.11-slim"
ONBOARD_BASE = "fpga.dphi.space:5000/dphi-embedded-ml-armv8-py311"
POD_PLATFORM = "linux/arm64"
IMAGES_DIR = ".podrun/images"


def dockerfile_text() -> str:
    """``runtime_image/Dockerfile`` (the repository's, or the copy packaged with podrun)."""
    for candidate in (Path(__file__).resolve().parents[3] / "runtime_image" / "Dockerfile",
                      Path(__file__).resolve().parents[1] / "runtime_image" / "Dockerfile"):
        if candidate.is_file():
            return candidate.read_text()
    raise PodrunError("runtime_image/Dockerfile is missing from this podrun installation; reinstall podrun")


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_engine() -> str:
    """``docker`` (buildx and a reachable daemon) or ``podman``; else a clear error."""
    if shutil.which("docker") and _works(["docker", "buildx", "version"]) and _works(["docker", "info"]):
        return "docker"
    if shutil.which("podman") and _works(["podman", "version"]):
        return "podman"
    found = [name for name in ("docker", "podman") if shutil.which(name)]
    detail = f" ({', '.join(found)} found but not usable: no daemon, or docker without buildx)" if found else ""
    raise NoContainerEngine(
        f"building the runtime image needs a container engine{detail}: install podman (apt install podman "
        "qemu-user-static for arm64 emulation), or Docker with the buildx plugin and a running daemon; or skip the "
        "build: any onboard python:3.X image runs podrun's zipapp as is, or use build_onboard()")


def prepare_context(directory: Path, wheels: Sequence[Path] = ()) -> Path:
    """Write the build context: Dockerfile, the runtime zipapp, and ``wheels/``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile_text())
    (directory / "podrun-runtime.pyz").write_bytes(build_zipapp().data)
    (directory / "wheels").mkdir(exist_ok=True)
    (directory / "wheels" / ".keep").write_text("")  # COPY needs the folder even when empty
    for wheel in wheels:
        shutil.copy2(wheel, directory / "wheels" / Path(wheel).name)
    return directory


def build_command(engine: str, tag: str, base: str, context: Path, tar: Path,
                  pod_platform: str = POD_PLATFORM) -> list[list[str]]:
    """The engine commands that build ``tag`` for the pod's platform and save it as ``tar``."""
    arg = ["--build-arg", f"BASE={base}"]
    if engine == "docker":
        return [["docker", "buildx", "build", "--platform", pod_platform, *arg, "-t", tag,
                 "--output", f"type=docker,dest={tar}", str(context)]]
    return [["podman", "build", "--platform", pod_platform, *arg, "-t", tag, str(context)],
            ["podman", "save", "--format", "docker-archive", "-o", str(tar), tag]]


def build(tag: str, tar: Path, base: str = DEFAULT_BASE, wheels: Sequence[Path] = (), engine: str | None = None,
          arch: str = "arm64") -> Path:
    """Build the runtime image for ``arch`` (CG2's linux/arm64 by default) and write it to
    ``tar`` as ``docker save`` would (for :func:`push`)."""
    engine = engine or find_engine()
    with tempfile.TemporaryDirectory(prefix="podrun-image-") as tmp:
        context = prepare_context(Path(tmp), wheels)
        if engine == "podman":
            return _build_in_store(tag, Path(tar), base, context, pod_arch(arch))
        for argv in build_command(engine, tag, base, context, Path(tar).absolute()):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise PodrunError(f"{' '.join(argv[:3])} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return Path(tar)


def _build_in_store(tag: str, tar: Path, base: str, context: Path, arch: str) -> Path:
    """Build in the local image store (FROM its stock ``base`` for ``arch``, RUN offline), then
    save the image under ``tag`` alone: the tar loads as ``tag`` anywhere."""
    store = ImageStore()
    text = (context / "Dockerfile").read_text().replace(f"ARG BASE={DEFAULT_BASE}", f"ARG BASE={base}")
    try:
        image = builds.build(store, scope="ground", resolve=lambda name: store.resolve(name, arch=arch),
                             dockerfile=text, context=context, image=tag, hide={str(context): "."})
    except builds.BuildFailed as failed:
        raise PodrunError(f"building {tag} from {base} ({arch}) failed:\n{''.join(failed.lines[-20:])}") from None
    name = f"localhost/{tag}"
    store.tag(image, name)
    try:
        store.run("save", "--format", "docker-archive", "-o", str(tar.absolute()), name, check=True)
    finally:
        store.untag(image, name)
    return tar


def push(tar: Path, image: str, platform: Platform | None = None, pod_name: str | None = None,
         progress: Progress | None = None) -> None:
    """Uplink a built image tar and load it as ``image`` (one uplink, one image_load);
    ``progress`` is called with the bytes just sent (the CLI's progress bar)."""
    platform = platform or config.current_platform()
    name = f"{_safe(image)}.tar"
    platform.uplink([(name, Path(tar))], dest_path=IMAGES_DIR, pod_name=pod_name, progress=progress)
    platform.image_load(f"{IMAGES_DIR}/{name}", image, pod_name=pod_name)


def build_onboard(image: str, base: str = ONBOARD_BASE, platform: Platform | None = None, pod_name: str | None = None,
                  wheels: Sequence[Path] = ()) -> None:
    """Uplink Dockerfile + context (tens of KB) and let CG2 build the image from an embedded base."""
    platform = platform or config.current_platform()
    # FROM names the base literally: onboard builds must name the onboard registry's image.
    text = dockerfile_text().replace(f"ARG BASE={DEFAULT_BASE}", f"ARG BASE={base}").replace("FROM ${BASE}", f"FROM {base}")
    folder = f"{IMAGES_DIR}/{_safe(image)}"
    files: list[tuple[str, bytes | Path]] = [("Dockerfile", text.encode()), ("podrun-runtime.pyz", build_zipapp().data)]
    platform.uplink(files, dest_path=folder, pod_name=pod_name)
    if wheels:
        platform.uplink([(Path(w).name, Path(w)) for w in wheels], dest_path=f"{folder}/wheels", pod_name=pod_name)
    else:
        platform.uplink([(".keep", b"")], dest_path=f"{folder}/wheels", pod_name=pod_name)
    platform.image_build(f"{folder}/Dockerfile", image, context=folder, pod_name=pod_name)


def _safe(image: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", image)


# --- wheels for the pod's platform -------------------------------------------------------

def pip_download_command(requirement: str, dest: Path, python_version: str = "3.11",
                         wheel_platform: str = WHEEL_PLATFORM) -> list[str]:
    """``pip download`` of one binary wheel for the pod (never an sdist: pods cannot compile).
    pip takes ``--platform`` tags literally, so every tag the pod accepts is named."""
    platforms = [arg for tag in compatible_tags(wheel_platform) for arg in ("--platform", tag)]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
            *platforms, "--python-version", python_version, "--dest", str(dest), requirement]


def compatible_tags(wheel_platform: str) -> list[str]:
    """The platform tags a pod of ``wheel_platform`` loads, newest first: a glibc
    ``manylinux_2_Y`` pod loads every ``manylinux_2_X`` with X <= Y, and the legacy aliases
    (manylinux2014 = 2_17, manylinux2010 = 2_12, manylinux1 = 2_5); any other tag (musllinux,
    a user's override) only itself."""
    found = re.fullmatch(r"manylinux_2_(\d+)_(\w+)|manylinux(2014|2010|1)_(\w+)", wheel_platform)
    if found is None:
        return [wheel_platform]
    glibc, arch = (int(found[1]), found[2]) if found[1] else (_LEGACY_GLIBC[found[3]], found[4])
    tags = []
    for minor in range(glibc, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        tags += [f"manylinux{name}_{arch}" for name, legacy in _LEGACY_GLIBC.items() if legacy == minor]
    return tags


_LEGACY_GLIBC = {"2014": 17, "2010": 12, "1": 5}  # PEP 600's aliases of the older manylinux tags


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def cached_wheel(requirement: str, cache: Path, python_version: str = "3.11",
                 wheel_platform: str = WHEEL_PLATFORM) -> Path | None:
    """A wheel in ``cache`` that satisfies ``name`` or ``name==version`` for the pod's tags."""
    name, _, version = requirement.partition("==")
    abi = f"cp{python_version.replace('.', '')}"
    accepted = {*compatible_tags(wheel_platform), "any"}
    for wheel in sorted(cache.glob("*.whl")):
        parts = wheel.name[:-4].split("-")
        if len(parts) < 5 or _normalize(parts[0]) != _normalize(name.strip()):
            continue
        if version and parts[1] != version.strip():
            continue
        if (abi in parts[-3] or parts[-3].startswith("py3")) and accepted.intersection(parts[-1].split(".")):
            return wheel
    return None


def fetch_wheel(requirement: str, cache: Path | None = None, python_version: str = "3.11",
                wheel_platform: str = WHEEL_PLATFORM) -> Path:
    """The pod-platform wheel for ``requirement`` from the local cache, downloading it once."""
    cache = cache or config.home() / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    hit = cached_wheel(requirement, cache, python_version, wheel_platform)
    if hit:
        return hit
    command = pip_download_command(requirement, cache, python_version, wheel_platform)
    done = subprocess.run(command, capture_output=True, text=True)
    hit = cached_wheel(requirement, cache, python_version, wheel_platform)
    if done.returncode != 0 or hit is None:
        raise PodrunError(f"no {wheel_platform} wheel of {requirement!r} for Python {python_version} could be fetched "
                          f"(pip exit {done.returncode}): {done.stderr[-800:]}; pods cannot compile an sdist, so pick a "
                          "version that publishes that wheel, or use an image that has the package")
    return hit
