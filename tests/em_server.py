"""Start the EM emulator as a real subprocess on a free loopback port, for tests.

The process is always stopped by its PID (SIGTERM, then SIGKILL), also when a test fails."""

from __future__ import annotations

import contextlib
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


class EmulatorProcess:
    """``python -m podrun.emulator`` with a users file; ``add_user()`` makes a fresh account."""

    def __init__(self, workdir: Path, *extra: str, token_lifetime: float = 300.0, users: tuple[str, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "root"
        self.users_file = self.workdir / "users.txt"
        self.users_file.write_text("".join(f"{u}\n" for u in users))
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
            argv = [sys.executable, "-m", "podrun.emulator", "--host", "127.0.0.1", "--port", str(port),
                    "--root", str(self.root), "--users-file", str(self.users_file),
                    "--token-lifetime", str(self.token_lifetime), *_driver_flags(), *self.extra]
            self.image_store = os.environ.get("PODRUN_IMAGE_STORE")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ})
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"the emulator did not start; its log:\n{self.log_path.read_text()[-3000:]}")

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


def _driver_flags() -> list[str]:
    """The emulator's tenants get isolated pods (the container driver) where podman runs here;
    elsewhere host pods, which the emulator only accepts when told so out loud."""
    from .platforms import container_reason

    return ["--driver", "container"] if container_reason() is None else ["--driver", "process", "--unsafe-host-pods"]
