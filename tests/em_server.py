"""Start the EM emulator as a real subprocess on a free loopback port, for tests.

The process is always stopped by its PID (SIGTERM, then SIGKILL), also when a test fails."""

from __future__ import annotations

import contextlib
import inspect
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from podrun.platform.local.images import ImageStore, ImageStoreError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_disk(root: Path, size: int) -> list[str]:
    """An argv prefix that runs a command with ``root`` on a tmpfs of ``size`` bytes, in a mount
    namespace of its own: a real full disk, gone with the process (user namespace when not root)."""
    root.mkdir(parents=True, exist_ok=True)
    namespaces = ["--mount", "--propagation", "private"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    return ["unshare", *namespaces, "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(root)]


# The driver of an emulator for a test that runs no pod: the process driver starts without probing
# the container engine (the probe runs a container: 1-2 s of every start).
NO_PODS = "process"


class EmulatorProcess:
    """``python -m podrun.emulator`` with a users file (mode 0600; accounts never on its command
    line); ``add_user()`` makes a fresh account. ``disk_bytes`` puts its root on a tmpfs that
    small (a real full disk); ``driver`` picks the pod driver (None: the emulator's default)."""

    def __init__(
        self,
        workdir: Path,
        *extra: str,
        token_lifetime: float = 300.0,
        users: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        disk_bytes: int | None = None,
        driver: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "root"
        self.users_file = self.workdir / "users.txt"
        self.users_file.write_text("".join(f"{u}\n" for u in users))
        self.users_file.chmod(0o600)
        self.env = dict(env or {})
        self.disk_bytes = disk_bytes
        self.driver = driver  # None: the emulator's own default (its isolating driver)
        self.extra = list(extra)
        self.token_lifetime = token_lifetime
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.workdir / "emulator.log"
        self.image_store: str | None = None  # the store the emulator was started with (PODRUN_IMAGE_STORE)

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        for _attempt in range(3):  # a free port can be taken between probe and bind: try another
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            argv = [
                sys.executable,
                "-m",
                "podrun.emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--root",
                str(self.root),
                "--users-file",
                str(self.users_file),
                "--token-lifetime",
                str(self.token_lifetime),
                *self._driver_options(),
                *self.extra,
            ]
            if self.disk_bytes is not None:
                argv = small_disk(self.root, self.disk_bytes) + argv
            self.image_store = {**os.environ, **self.env}.get("PODRUN_IMAGE_STORE")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **self.env}
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"the emulator did not start; its log:\n{self.log_path.read_text()[-3000:]}")

    def _driver_options(self) -> list[str]:
        """``--driver``; the process driver isolates nothing, which an emulator that guards its
        tenants refuses unless told so explicitly."""
        if not self.driver:
            return _default_driver_options()
        from podrun.emulator.command import emulator

        unsafe = self.driver == "process" and "unsafe_host_pods" in inspect.signature(emulator).parameters
        return ["--driver", self.driver, *(["--unsafe-host-pods"] if unsafe else [])]

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return False

    def add_user(self, prefix: str = "t") -> tuple[str, str]:
        name, password = f"{prefix}{secrets.token_hex(5)}", secrets.token_urlsafe(12)
        with open(self.users_file, "a") as handle:
            handle.write(f"{name}:{password}\n")
        return name, password

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            self._stop(proc)
        finally:
            remove_images(self.root, self.image_store)
            _clear_engine(self.root)

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGTERM)  # uvicorn shuts down gracefully: the app stops its pods
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def remove_images(root: Path, store: str | None) -> None:
    """Images a platform root's users built or loaded leave the shared store with the root
    (LocalPlatform names their prefix in ``<root>/images.scope``)."""
    marker = root / "images.scope"
    if marker.is_file():
        with contextlib.suppress(ImageStoreError):
            ImageStore(store).remove_all(marker.read_text().strip())


def _default_driver_options() -> list[str]:
    """The emulator's tenants get isolated pods (the container driver) where podman runs here;
    elsewhere host pods, which the emulator only accepts when told so out loud."""
    from .platforms import container_reason

    return ["--driver", "container"] if container_reason() is None else ["--driver", "process", "--unsafe-host-pods"]


def _clear_engine(root: Path) -> None:
    """What the emulator's pods left in the container engine when it could not stop them itself
    (killed after 15 s with many pods, a telemetry service and a network were left running)."""
    from .platforms import cleanup_engine, container_reason

    if container_reason() is None:
        cleanup_engine(root)
