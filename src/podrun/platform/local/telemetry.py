"""The onboard telemetry service on every user's pod network (``satellite-telemetry.dphi-tm``).

Why: CG2 pods reach DPhi's telemetry service by that name; DPhi's own examples fetch from it.
One small server per user network, started with the network's first pod and stopped with the
network (by the last pod's supervisor, or ``LocalPlatform.shutdown``): a container on the network under the DNS alias
``satellite-telemetry.dphi-tm``, hardened like a pod, running ``telemetry_server.py`` with the
``sgp4`` package mounted read-only beside it (no podrun code and nothing else of the host).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import PlatformError
from .container import Engine, hardening_args
from .images import ImageStore, host_arch
from .network import network_name

IMAGES = ("python:3.11-slim", "python:3.11", "dphi-embedded-ml-armv8-py311")  # any stock Python of this machine's arch

HOSTNAME = "satellite-telemetry.dphi-tm"
SERVER = Path(__file__).with_name("telemetry_server.py")
_warned = False


def container_name(root: Path, user: str) -> str:
    return f"{network_name(root, user)}-telemetry"


def sgp4_dir() -> Path | None:
    try:
        import sgp4
    except ImportError:
        return None
    return Path(sgp4.__file__).resolve().parent


def _warn_once(why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"podrun: no telemetry service for local pods (satellite-telemetry.dphi-tm): {why}", stacklevel=3)


def ensure_telemetry(engine: Engine, root: Path, user: str, network: str, store: ImageStore) -> bool:
    """Start the user's telemetry server unless it runs; False (with one warning) when what it
    needs is missing: the ``sgp4`` package, a stock Python image of this machine's arch."""
    orbit = sgp4_dir()
    if orbit is None:
        _warn_once("it needs the sgp4 package (pip install 'podrun[emulator]' or pip install sgp4)")
        return False
    found = next((image for image in (store.resolve(n, arch=host_arch()) for n in IMAGES) if image), None)
    if found is None:
        _warn_once("it runs on a stock Python image of this machine's arch: "
                   f"podrun images prepare python:3.11-slim --arch {host_arch()}")
        return False
    image = found.id
    name = container_name(root, user)
    running = engine.run("container", "inspect", "--format", "{{.State.Running}}", name)
    if running.returncode == 0 and running.stdout.strip() == "true":
        return True
    if running.returncode == 0:
        engine.run(*engine.cleanup_argv(name)[len(engine.prefix):])
    argv = ["run", "--detach", "--rm", "--init", "--pull=never", "--name", name, *engine.flags,
            "--network", network, "--network-alias", HOSTNAME, "--hostname", HOSTNAME,
            "--label", "podrun.telemetry=1", "--label", f"podrun.root={root}", "--label", f"podrun.user={user}",
            *hardening_args(engine),
            "--volume", f"{SERVER}:/srv/telemetry/server.py:ro", "--volume", f"{orbit}:/srv/telemetry/sgp4:ro",
            "--entrypoint", "python3", image, "-E", "-s", "/srv/telemetry/server.py", "80"]
    started = engine.run(*argv)
    if started.returncode != 0:
        again = engine.run("container", "inspect", "--format", "{{.State.Running}}", name)
        if again.returncode != 0 or again.stdout.strip() != "true":  # not a concurrent starter that won
            raise PlatformError(f"the telemetry service could not start: {started.stderr.strip()[-500:]}")
    return True


def teardown_argv(engine: Engine, root: Path, user: str) -> list[str]:
    return engine.cleanup_argv(container_name(root, user))


def stop_telemetry(engine: Engine, root: Path, user: str) -> None:
    engine.run(*teardown_argv(engine, root, user)[len(engine.prefix):])
