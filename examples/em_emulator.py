"""podrun over HTTP: start the EM API emulator, point podrun at it, run remote functions.

The same code runs against a real EM: set PODRUN_EM_URL, PODRUN_EM_USERNAME and
PODRUN_EM_PASSWORD to the values DPhi Space gives you and skip the emulator.

    python examples/em_emulator.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(root: str, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "podrun.emulator", "--host", "127.0.0.1", "--port", str(port), "--root", root]
    # Accounts never go on the command line (every local user can read it): a users file or this variable.
    env = {**os.environ, "PODRUN_EMULATOR_USERS": "demo:demo-password"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    raise SystemExit("the emulator did not answer within 30 s")


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="podrun-em-example-") as root:
        emulator = start_emulator(root, port)
        try:
            os.environ.update({
                "PODRUN_PLATFORM": "em",
                "PODRUN_EM_URL": f"http://127.0.0.1:{port}",
                "PODRUN_EM_USERNAME": "demo",
                "PODRUN_EM_PASSWORD": "demo-password",
            })
            import podrun

            @podrun.remote(node="MPU", max_duration=1)
            def square(x: int) -> int:
                return x * x

            @podrun.remote(node="GPU", max_duration=1)
            def where_am_i() -> str:
                return f"node {os.environ.get('PODRUN_NODE')}, volume at {podrun.data_dir()}"

            futures = [square.remote(i) for i in range(4)]
            print("squares over HTTP:", [f.get(timeout=120) for f in futures])
            print("pod says:", where_am_i.remote().get(timeout=120))
            print("link:", podrun.stats())
        finally:
            os.kill(emulator.pid, signal.SIGTERM)
            try:
                emulator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(emulator.pid, signal.SIGKILL)
                emulator.wait()


if __name__ == "__main__":
    main()
