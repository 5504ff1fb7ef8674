"""CG2's stock images, made offline from Debian's packages with ``mmdebstrap``.

Why: no registry is reachable from an air-gapped machine (nor from CG2), yet a local pod must
run the image CG2 would run, not this machine's Python. Each :class:`Recipe` says which Debian
packages stand in for one stock image; :func:`prepare` bootstraps them into a root file system
tar (cached under the store, keyed by the recipe, so a re-prepare only imports) and imports it
into the :class:`~.images.ImageStore` with the image's configuration (ENV, WORKDIR, CMD) and
architecture. ``arm64`` images run under qemu-user through binfmt_misc, as CG2's Cortex-A53
and Jetson nodes run them natively.

Debian bookworm has Python 3.11 (trixie 3.13), so the ``python:3.10``/``3.12`` images cannot be
made here: a pod of one waits in ``ImagePullBackOff`` as CG2 does for an image it cannot pull.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import PrepareError
from .images import ImageStore, host_arch, stock_ref

Progress = Callable[[str], None]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEBIAN_ARCH = {"amd64": "amd64", "arm64": "arm64"}
# Docs, manuals and translations are left out, as the official slim images leave them out.
_SLIM = ("--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/locale/locale.alias")
# The official images have python at /usr/local/bin; Debian's pip refuses to install into a
# "system" Python (PEP 668) where the official image's pip would try (and, offline, fail).
_PYTHON_HOOK = ('mkdir -p "$1/usr/local/bin" && for n in python python3 python{v}; do '
                'ln -sf /usr/bin/python{v} "$1/usr/local/bin/$n"; done && rm -f "$1"/usr/lib/python{v}/EXTERNALLY-MANAGED')
# The extract variant unpacks busybox and the C library only (no dpkg, no shell): the hook adds
# the applets' links and what a root file system needs.
_BUSYBOX_HOOK = ('mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin" && '
                 'mkdir -p "$1/etc" "$1/root" "$1/proc" "$1/sys" "$1/dev" && '
                 'mkdir -p -m 1777 "$1/tmp" && '
                 'printf "root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/false\\n" > "$1/etc/passwd" && '
                 'printf "root:x:0:\\nnogroup:x:65534:\\n" > "$1/etc/group" && '
                 'for a in $(chroot "$1" /bin/busybox --list-full); do '
                 '[ -e "$1/$a" ] || [ -L "$1/$a" ] || ln -s /bin/busybox "$1/$a"; done')
_ML_PACKAGES = ("python3-numpy", "python3-scipy", "python3-pandas", "python3-sklearn", "python3-skimage",
                "python3-statsmodels", "python3-joblib", "python3-cloudpickle", "python3-sympy", "python3-pil",
                "python3-lz4", "python3-zstandard", "python3-msgpack", "python3-sqlalchemy", "python3-sgp4",
                "python3-pyorbital", "python3-pyproj", "python3-requests", "python3-httpx", "python3-fastapi",
                "python3-uvicorn", "python3-pydantic")
# Of dphi-embedded-ml-armv8-py311's list (em-api.md §5): what Debian bookworm does not package,
# and what it packages but the stand-in leaves out for size (each is hundreds of MB, and hours
# of dpkg under qemu).
ML_NOT_IN_DEBIAN = ("onnxruntime", "tflite-runtime", "keras", "pyarrow", "duckdb", "orjson")
ML_LEFT_OUT = ("torch", "torchvision", "numba", "onnx", "opencv-python-headless")


@dataclass(frozen=True)
class Recipe:
    """How one stock image is made: a Debian suite, a variant, packages, hooks, configuration."""

    name: str
    suite: str
    packages: tuple[str, ...]
    variant: str = "essential"
    hooks: tuple[str, ...] = ()
    hook_stage: str = "customize"  # mmdebstrap runs no customize hook for the extract variant
    cmd: tuple[str, ...] = ("python3",)
    env: tuple[tuple[str, str], ...] = (("PATH", PATH), ("LANG", "C.UTF-8"))
    workdir: str = ""
    aliases: tuple[str, ...] = ()
    note: str = ""
    extra: bool = field(default=False, compare=False)  # not one of CG2's images

    def key(self, arch: str) -> str:
        """Changes whenever what the recipe makes would change: names the cached tar."""
        spec = [self.suite, self.variant, sorted(self.packages), self.hook_stage, list(self.hooks), arch, list(_SLIM)]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]

    def changes(self, key: str) -> list[str]:
        """``podman import --change`` instructions: the image's own configuration."""
        out = [f"CMD {json.dumps(list(self.cmd))}", f"LABEL podrun.recipe={key}"]
        out += [f"ENV {k}={v}" for k, v in self.env]
        if self.workdir:
            out.append(f"WORKDIR {self.workdir}")
        return out


def _python(v: str, packages: tuple[str, ...]) -> tuple[str, ...]:
    """What every Python image has. libstdc++6 as in the official images (their apt needs it):
    PEP 600 lets manylinux wheels assume it, and numpy >= 2.3's aarch64 wheels load it."""
    return ("python3", f"python{v}", "python-is-python3", "netbase", "ca-certificates", "libstdc++6", *packages)


def _py_env(version: str) -> tuple[tuple[str, str], ...]:
    return (("PATH", PATH), ("LANG", "C.UTF-8"), ("PYTHON_VERSION", version))


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("python:3.11-slim", "bookworm", _python("3.11", ("python3-pip",)), hooks=(_PYTHON_HOOK.format(v="3.11"),),
           env=_py_env("3.11.2"), aliases=("python:3.11.2-slim",),
           note="Debian's python3.11 and pip, nothing else"),
    Recipe("python:3.11", "bookworm", _python("3.11", ("python3-pip", "python3-venv", "python3-dev", "wget", "curl",
                                                        "procps", "tzdata")),
           hooks=(_PYTHON_HOOK.format(v="3.11"),), env=_py_env("3.11.2"),
           note="python:3.11-slim plus venv, headers, wget, curl, procps, tzdata (no compiler)"),
    Recipe("dphi-embedded-ml-armv8-py311", "bookworm", _python("3.11", ("python3-pip", *_ML_PACKAGES)),
           hooks=(_PYTHON_HOOK.format(v="3.11"),), env=_py_env("3.11.2"), cmd=("python",), workdir="/workspace",
           note="Python 3.11 with Debian's " + ", ".join(p.removeprefix("python3-") for p in _ML_PACKAGES)
                + f"; not in Debian: {', '.join(ML_NOT_IN_DEBIAN)}; left out for size: {', '.join(ML_LEFT_OUT)}"),
    Recipe("busybox", "bookworm", ("busybox",), variant="extract", hooks=(_BUSYBOX_HOOK,), hook_stage="extract", cmd=("sh",),
           env=(("PATH", PATH),), aliases=("alpine",),
           note="Debian's busybox and its applets, no Python (also answers as alpine)"),
    Recipe("python:3.13-slim", "trixie", _python("3.13", ()), hooks=(_PYTHON_HOOK.format(v="3.13"),),
           env=_py_env("3.13"), extra=True,
           note="not on CG2: Debian trixie's python3.13, for testing a Python mismatch with a real pod"),
)}
# Names of the prepared images: each recipe's name and its aliases.
PREPARABLE = {alias: r.name for r in RECIPES.values() for alias in (r.name, *r.aliases)}
DEFAULT_SET = tuple(r.name for r in RECIPES.values() if not r.extra)


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did: ``present``, ``imported`` (from the cached bootstrap) or
    ``bootstrapped``; seconds it took; the image's size in the store."""

    image: str
    arch: str
    done: str
    seconds: float
    size: int = 0


def recipe_for(name: str) -> Recipe:
    try:
        return RECIPES[PREPARABLE[name]]
    except KeyError:
        raise PrepareError(f"{name!r} cannot be prepared here; preparable: {', '.join(sorted(PREPARABLE))}") from None


def prepared(store: ImageStore, recipe: Recipe, arch: str) -> bool:
    """Whether the store holds this recipe's current image for ``arch``."""
    image = store.inspect(stock_ref(recipe.name, arch))
    if image is None:
        return False
    found = store.run("image", "inspect", "--format", '{{index .Labels "podrun.recipe"}}', image.id)
    return found.stdout.strip() == recipe.key(arch)


def check_tools(arch: str) -> None:
    """mmdebstrap, and for a foreign architecture qemu-user under binfmt_misc, or a clear error."""
    if not shutil.which("mmdebstrap"):
        raise PrepareError("preparing images needs mmdebstrap: apt-get install mmdebstrap")
    if arch == host_arch():
        return
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64" if arch == "arm64" else "/proc/sys/fs/binfmt_misc/qemu-x86_64")
    if not entry.is_file() or "enabled" not in entry.read_text():
        raise PrepareError(f"{arch} images run under qemu-user, which binfmt_misc does not enable here: apt-get install "
                           "qemu-user-static binfmt-support; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
                           f"update-binfmts --enable {entry.name}")


def _bootstrap(recipe: Recipe, arch: str, out: Path, progress: Progress) -> None:
    argv = ["mmdebstrap", f"--arch={_DEBIAN_ARCH[arch]}", f"--variant={recipe.variant}", "--format=tar",
            f"--include={','.join(recipe.packages)}", *_SLIM, *(f"--{recipe.hook_stage}-hook={h}" for h in recipe.hooks),
            recipe.suite, str(out)]
    env = {"PATH": PATH, "LANG": "C.UTF-8", "TMPDIR": str(out.parent), "HOME": str(out.parent)}
    tail: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                          stdin=subprocess.DEVNULL) as child:
        assert child.stderr is not None
        for line in child.stderr:
            line = line.rstrip()
            tail = [*tail[-19:], line]
            if line.startswith(("I: ", "E: ", "W: ")):
                progress(line)
    if child.returncode != 0:
        raise PrepareError(f"mmdebstrap of {recipe.name} ({arch}) failed (exit {child.returncode}): "
                           + " | ".join(tail[-5:]))


def prepare(store: ImageStore, name: str, arch: str, *, force: bool = False,
            progress: Progress = lambda _line: None) -> Prepared:
    """Make stock image ``name`` for ``arch`` in ``store`` unless it is there already.
    Returns what was done and how long it took (seconds), for the CLI and the benchmarks."""
    recipe = recipe_for(name)
    started = time.monotonic()
    key = recipe.key(arch)
    if not force and prepared(store, recipe, arch):
        return Prepared(recipe.name, arch, "present", 0.0)
    cache = store.root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"{recipe.name.replace(':', '_')}-{arch}-{key}.tar"
    bootstrapped = False
    if force or not tar.is_file():
        check_tools(arch)
        progress(f"bootstrapping {recipe.name} for {arch} from Debian {recipe.suite} (minutes under qemu)")
        partial = tar.with_name(f".{tar.name}.{os.getpid()}.part")
        try:
            _bootstrap(recipe, arch, partial, progress)
            os.replace(partial, tar)
        finally:
            partial.unlink(missing_ok=True)
        for stale in cache.glob(f"{recipe.name.replace(':', '_')}-{arch}-*.tar"):  # earlier recipes' bootstraps
            if stale != tar:
                stale.unlink(missing_ok=True)
        bootstrapped = True
    progress(f"importing {recipe.name} ({arch}) into the image store")
    changes = [arg for change in recipe.changes(key) for arg in ("--change", change)]
    refs = [stock_ref(alias, arch) for alias in (recipe.name, *recipe.aliases)]
    old = store.inspect(refs[0])
    store.run("import", "--arch", arch, "--os", "linux", *changes, str(tar), refs[0], check=True)
    if refs[1:]:
        store.tag(refs[0], *refs[1:])
    made = store.inspect(refs[0])
    if old is not None and made is not None and old.id != made.id:
        store.remove(old.id)  # the previous recipe's image, now without names (fails harmlessly if in use)
    return Prepared(recipe.name, arch, "bootstrapped" if bootstrapped else "imported",
                    round(time.monotonic() - started, 1), made.size if made else 0)
