"""Pod networks: pods of one user reach each other by name, nothing else is reachable.

Real pods under the container driver on real podman networks (netavark, aardvark-dns). DPhi's
inter-pod example runs as written (busybox's wget); the other clients use Python's urllib.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from podrun.platform.local import LocalPlatform
from podrun.platform.local import container as _container
from podrun.platform.local import network as _network
from podrun.platform.types import PodSpec

from .platforms import needs_engine, two_tenants, wait_terminal

IMAGE = "python:3.11-slim"
pytestmark = needs_engine

# Fetch each URL (retrying while the server starts), write {url: body or error} to /data/fetched.json.
FETCH = """
import json, sys, time, urllib.request
out = {}
for url in sys.argv[2:]:
    for attempt in range(int(sys.argv[1])):
        try:
            out[url] = urllib.request.urlopen(url, timeout=3).read().decode()
            break
        except OSError as exc:
            out[url] = "error: " + type(exc).__name__ + ": " + str(getattr(exc, "reason", exc))
            time.sleep(0.2)
json.dump(out, open("/data/fetched.json", "w"))
"""


@pytest.fixture
def tenants(podrun_home: Path) -> Iterator[dict[str, LocalPlatform]]:
    with two_tenants(podrun_home / "local", stop_grace=1) as made:
        yield made


def _serve(platform: LocalPlatform, text: str, args: tuple[str, ...] = ("--directory", "/data")) -> None:
    """DPhi's server pod (``python -m http.server 80``, ``ports=[80]``), serving its volume."""
    platform.uplink([("index.txt", text.encode())], pod_name="server")
    platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=2, pod_name="server", ports=[80],
                             command="python -m http.server 80", args=list(args)))


def _fetch(platform: LocalPlatform, urls: list[str], attempts: int = 100) -> dict[str, str]:
    platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="client", command="python3",
                             args=["-c", FETCH, str(attempts), *urls]))
    state = wait_terminal(platform, "client")
    assert state.detail["reason"] == "Completed", (platform._pod_dir("client") / "stdout.log").read_text()
    return json.loads((platform.volume_path("client") / "fetched.json").read_text())


def test_dphi_inter_pod_example_by_pod_name_and_user_name(tenants: dict[str, LocalPlatform]) -> None:
    alice = tenants["alice"]
    _serve(alice, "alice's data", args=())  # as in DPhi's example: it lists its working directory, the image's /
    for host in ("server", "alice-server"):  # DPhi's client pod, with busybox's wget, by both names
        alice.run_pod(PodSpec(image="busybox", node="MPU", max_duration=1, pod_name="client", command="/bin/sh",
                              args=["-c", f"for i in $(seq 50); do /usr/bin/wget {host}:80/ -O /data/server-data.txt && exit 0; "
                                          "sleep 0.2; done; exit 1"]))
        state = wait_terminal(alice, "client")
        assert state.detail["reason"] == "Completed", (alice._pod_dir("client") / "stdout.log").read_text()
        listing = (alice.volume_path("client") / "server-data.txt").read_text()
        assert "Directory listing for /" in listing and 'href="usr/"' in listing


def test_two_users_serve_port_80_and_never_reach_each_other(tenants: dict[str, LocalPlatform]) -> None:
    alice, bob = tenants["alice"], tenants["bob"]
    _serve(alice, "alice's data")
    _serve(bob, "bob's data")
    assert _fetch(bob, ["http://server/index.txt"])["http://server/index.txt"] == "bob's data"
    engine = _container.find_engine(alice.images)
    bob_ip = engine.run("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                        json.loads((bob._pod_dir("server") / "spec.json").read_text())["container"]).stdout.strip()
    assert bob_ip.count(".") == 3
    urls = ["http://server/index.txt", "http://bob-server/index.txt", f"http://{bob_ip}/index.txt"]
    fetched = _fetch(alice, urls, attempts=2)
    assert fetched[urls[0]] == "alice's data"
    assert fetched[urls[1]].startswith("error:")  # bob's names do not resolve on alice's network
    assert fetched[urls[2]].startswith("error:")  # and bob's address is not routed from it


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"host service")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="the host firewall for pod networks is set by root podrun")
def test_pods_are_air_gapped_from_the_host_and_beyond(tenants: dict[str, LocalPlatform]) -> None:
    alice = tenants["alice"]
    engine = _container.find_engine(alice.images)
    name = _network.ensure_network(engine, alice.root, "alice").name
    gateway = json.loads(engine.run("network", "inspect", name).stdout)[0]["subnets"][0]["gateway"]
    # A host service on the bridge's own address: only the host and the pods could reach it.
    server = HTTPServer((gateway, 0), _Hello, bind_and_activate=False)
    server.socket.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND: the bridge appears with the first pod
    server.server_bind()
    server.server_activate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        urls = [f"http://{gateway}:{port}/", "http://192.0.2.1/", "http://1.1.1.1/"]
        fetched = _fetch(alice, urls, attempts=1)
    finally:
        server.shutdown()
        server.server_close()
    assert all(fetched[url].startswith("error:") for url in urls), fetched
