"""The emulator is CG2 for DPhi's own client: the flows of DPhi's example script
(``em-api-interface.py``, summarised in ../shared/reference/em-api.md §4) run over HTTP against
``podrun emulator``, the way that script speaks: form login, Bearer header with a fresh login
on 401, multipart uplinks of basenames with ``dest_path``, JSON bodies for build/run/delete,
GET with query parameters for list/downlink/status, and the downlinked file named by its
``Content-Disposition``. Written here in the project's own words; no code of the script.

The emulator runs its default pod driver (the isolating one: pods inside their image). Images:
the script's ``python:3.11-alpine`` is not one this machine can make, ``python:3.11`` (which also
has ``wget``) stands in for it; ``alpine`` is the busybox stand-in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from .conftest import require_image
from .em_server import EmulatorProcess

PYTHON_IMAGE = "python:3.11"
ECHO_SCRIPT = b"""#!/bin/sh
echo "is it this simple to run in space? $(date -u +%Y)" > /data/downlink.txt
"""
DOCKERFILE = b"""FROM fpga.dphi.space:5000/alpine
COPY echo-test.sh /app/echo-test.sh
RUN chmod +x /app/echo-test.sh
WORKDIR /app
ENTRYPOINT ["/app/echo-test.sh"]
"""


class DphiStyleClient:
    """What DPhi's example client does on the wire, restated: log in with a form, send the
    access token, log in again once on a 401."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base = base_url.rstrip("/") + "/"  # the script's BASE_URL ends with a slash
        self.username, self.password = username, password
        self.http = httpx.Client(timeout=120)
        self.token: str | None = None

    def _login(self) -> None:
        answer = self.http.post(self.base + "auth/", data={"username": self.username, "password": self.password})
        assert answer.status_code == 200, answer.text
        self.token = answer.json()["access"]

    def _send(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        if self.token is None:
            self._login()
        for _attempt in range(2):
            answer = self.http.request(method, self.base + route, headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
            if answer.status_code != 401:
                return answer
            self._login()
        return answer

    def get(self, route: str, **params: Any) -> httpx.Response:
        return self._send("GET", route, params={k: v for k, v in params.items() if v is not None})

    def post(self, route: str, body: dict[str, Any]) -> httpx.Response:
        return self._send("POST", route, json={k: v for k, v in body.items() if v is not None})

    def uplink(self, files: dict[str, bytes], dest_path: str = "", pod_name: str = "") -> httpx.Response:
        return self._send(
            "POST",
            "/em/files/uplink",
            files=[("files", (name, data)) for name, data in files.items()],
            data={"dest_path": dest_path, "pod_name": pod_name},
        )

    def run(self, image: str, node: str = "FPGA", max_duration: int = 1, **fields: Any) -> httpx.Response:
        return self.post("em/pod/run", {"image": image, "node": node, "max_duration": max_duration, **fields})

    def downlink(self, filepath: str, pod_name: str | None = None) -> tuple[str, bytes]:
        answer = self.get("/em/files/downlink", filepath=filepath, pod_name=pod_name)
        assert answer.status_code == 200, answer.text
        return filename_of(answer.headers["content-disposition"]), answer.content

    def wait(self, pod_name: str | None = None, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = self.get("em/pod/status", pod_name=pod_name)
            assert answer.status_code == 200, answer.text
            state = answer.json()["data"]["state"]
            if "terminated" in state or state.get("waiting", {}).get("reason") in ("ImagePullBackOff", "ErrImagePull"):
                return state
            time.sleep(0.2)
        raise AssertionError(f"pod {pod_name} did not end: {state}")

    def names(self, pod_name: str | None = None) -> set[str]:
        answer = self.get("/em/files/list", pod_name=pod_name)
        assert answer.status_code == 200, answer.text

        def walk(entries: list[dict[str, Any]], prefix: str = "") -> Iterator[str]:
            for entry in entries:
                yield prefix + entry["name"]
                yield from walk(entry.get("contents") or [], prefix + entry["name"] + "/")

        return set(walk(answer.json()["data"]))


def filename_of(disposition: str) -> str:
    """RFC 6266: ``filename*=UTF-8''...`` wins over ``filename="..."``."""
    extended = re.search(r"filename\*=UTF-8''([^;]+)", disposition)
    if extended:
        return unquote(extended.group(1))
    return disposition.split("filename=", 1)[1].split(";", 1)[0].strip('"')


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DphiStyleClient]:
    for image in ("busybox", PYTHON_IMAGE):  # the script's alpine and python images
        require_image(image)
    with EmulatorProcess(tmp_path_factory.mktemp("dphi"), users=("client1:space-pw",)) as em:
        dphi = DphiStyleClient(em.url, "client1", "space-pw")
        yield dphi
        for name in dphi.post("em/pvc/list", {}).json()["data"]:  # stops the user's pods
            dphi.post("em/pvc/delete", {"pvc_name": name})


def completed(state: dict[str, Any]) -> None:
    assert "terminated" in state and state["terminated"]["exitCode"] == 0 and state["terminated"]["reason"] == "Completed", state


def test_simple_operations(client):
    """Nodes, list, uplink a Dockerfile and its ENTRYPOINT script, build, run with the image's
    own entrypoint, run on the GPU with a command, a scheduled run, downlinks, deletes."""
    nodes = client.get("em/nodes/status").json()
    assert {n["name"] for n in nodes["data"]} == {"fpga", "gpu", "mpu1"}
    assert client.get("/em/files/list").json()["message"] == "Successfully listed files"
    up = client.uplink({"Dockerfile": DOCKERFILE, "echo-test.sh": ECHO_SCRIPT}, dest_path="echo-test")
    assert up.status_code == 200 and up.json()["data"]["file_count"] == 2
    build = client.post(
        "em/pod/image/build", {"dockerfile": "./echo-test/Dockerfile", "image": "echo-test", "context": "./echo-test"}
    )
    assert build.status_code == 200, build.text
    assert any("echo-test" in str(image) for image in client.get("em/pod/image/list").json()["data"])

    assert client.run("echo-test").json() == {"message": "Docker run scheduled successfully"}
    completed(client.wait())
    name, content = client.downlink("downlink.txt")
    assert name == "downlink.txt" and content.startswith(b"is it this simple to run in space? 20")

    gpu = client.run(
        "echo-test",
        node="GPU",
        command="/bin/sh",
        args=["-c", "echo 'if knowledge can create problems' > /data/gpu-downlink.txt"],
    )
    assert gpu.status_code == 200
    completed(client.wait())
    assert client.downlink("gpu-downlink.txt")[1] == b"if knowledge can create problems\n"

    when = (
        datetime.now(timezone(timedelta(hours=2))) + timedelta(seconds=3)
    ).isoformat()  # the script's +02:00, with microseconds
    scheduled = client.run("echo-test", scheduled_time=when, command="/bin/sh", args=["-c", "date +%s > /data/time.txt"])
    assert scheduled.status_code == 200
    completed(client.wait())
    ran_at = int(client.downlink("time.txt")[1])
    assert ran_at >= int(datetime.fromisoformat(when).timestamp())  # not before its time

    for path in ("downlink.txt", "gpu-downlink.txt", "time.txt", "/echo-test/Dockerfile", "echo-test"):
        assert client.post("em/files/delete", {"filepath": path}).json() == {"message": "File deleted successfully"}
    assert client.names() == set()


def test_pod_volumes(client):
    run = client.run(
        PYTHON_IMAGE,
        pod_name="pod-a",
        command="/bin/sh",
        args=["-c", "echo 'Is this the final frontier?' > /data/hello-space.txt"],
    )
    assert run.status_code == 200
    completed(client.wait("pod-a"))
    assert client.uplink({"hello-world.txt": b"hello world\n"}, pod_name="pod-a").status_code == 200
    assert {"hello-space.txt", "hello-world.txt"} <= client.names("pod-a")
    assert not {"hello-space.txt", "hello-world.txt"} & client.names()  # the default volume does not see them
    wrong = client.post("em/files/delete", {"filepath": "hello-world.txt"})  # without pod_name: the default volume
    assert wrong.status_code == 400 and wrong.json()["error"] == "FILE_DELETE_FAILED"
    assert client.post("em/files/delete", {"filepath": "hello-world.txt", "pod_name": "pod-a"}).status_code == 200
    assert client.downlink("hello-space.txt", pod_name="pod-a") == ("hello-space.txt", b"Is this the final frontier?\n")


def test_pod_intercommunication(client):
    server = client.run(PYTHON_IMAGE, pod_name="server", max_duration=2, ports=[80], command="python -m http.server 80")
    assert server.status_code == 200
    deadline = time.monotonic() + 120
    while "running" not in client.get("em/pod/status", pod_name="server").json()["data"]["state"]:
        assert time.monotonic() < deadline, "the server pod never ran"
        time.sleep(0.2)
    for _attempt in range(30):  # the server needs a moment to listen once its pod runs
        client.run(PYTHON_IMAGE, pod_name="client", command="/usr/bin/wget", args=["server:80/", "-O", "/data/server-data.txt"])
        state = client.wait("client")
        if state["terminated"]["exitCode"] == 0:
            break
        time.sleep(1)
    completed(state)
    assert "server-data.txt" in client.names("client")
    name, listing = client.downlink("server-data.txt", pod_name="client")
    assert name == "server-data.txt" and b"Directory listing" in listing
    assert client.post("em/files/delete", {"filepath": "server-data.txt", "pod_name": "client"}).status_code == 200


def test_env_and_args(client):
    run = client.run(
        PYTHON_IMAGE,
        pod_name="args",
        command="/bin/sh -c",
        args=["echo testing args $DURATION $SIZE > /data/argument-test.txt"],
        envs={"DURATION": 60, "SIZE": 1024},
    )
    assert run.status_code == 200
    completed(client.wait("args"))
    assert client.downlink("argument-test.txt", pod_name="args")[1] == b"testing args 60 1024\n"


def test_error_examples(client):
    missing = client.get("/em/files/downlink", filepath="not-a-real-file.txt")
    assert missing.status_code == 404 and missing.json()["error"] == "FILE_MISSING"
    bad_context = client.post(
        "em/pod/image/build", {"dockerfile": "./echo-test/Dockerfile", "image": "echo-test", "context": "./nowhere"}
    )
    assert bad_context.status_code == 400 and bad_context.json()["error"] == "BUILD_FAILED" and bad_context.json()["log_tail"]
    assert "/clients/" in "".join(bad_context.json()["log_tail"]) or bad_context.json()["log_tail"]
    ghost = client.run("client1-echo-test12", node="GPU", pod_name="ghost")
    assert ghost.status_code == 200  # accepted; the pod then cannot pull its image, as on CG2
    waiting = client.wait("ghost")
    assert waiting.get("waiting", {}).get("reason") in ("ImagePullBackOff", "ErrImagePull"), waiting
    odd = client.get("em/pod/status", pod_name="Hey no whitespaces")
    assert odd.status_code == 400 and odd.json()["error"] == "INVALID_PARAMETERS"
