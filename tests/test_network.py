"""Pod networks: pods of one user reach each other by name on the ports they declare, nothing
else is reachable.

Real pods under the container driver on real podman networks (netavark, aardvark-dns). DPhi's
inter-pod example runs as written (busybox's wget); the other clients use Python's urllib and
sockets. The firewall hook (``pod_firewall.py``) also runs by itself, as the OCI runtime runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
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


# --- each pod's inbound firewall: the declared ports only -----------------------------------------
# The server pod first tries to undo its own firewall as an attacker would (its capabilities, the
# raw socket iptables-legacy needs, nftables' netlink as iptables-nft uses it, an interface
# change), writes what happened to /data/tamper.json, then serves TCP and UDP on 80 (declared)
# and 8080 (not), answering "<proto>:<port>"; /data/ready says it listens.
SERVE_TCP_UDP = r"""
import ctypes, errno, fcntl, json, socket, struct, threading

def caps():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {key: int(status[key], 16) for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}

def attempt(fn):
    try:
        fn()
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def raw_socket():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()

def nft_delete_table():
    # One nfnetlink batch deleting the ip family's table "filter" (NFT_MSG_DELTABLE), as `iptables -F` over nft.
    def msg(kind, flags, family, payload=b"", res_id=0):
        body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload
        return struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body
    attr = struct.pack("=HH", 4 + 7, 1) + b"filter\0" + b"\0"  # NFTA_TABLE_NAME, padded to 4 bytes
    batch = msg(0x10, 1, 0, res_id=10) + msg((10 << 8) | 2, 1 | 4, socket.AF_INET, attr) + msg(0x11, 1, 0, res_id=10)
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    nl.settimeout(5)
    nl.send(batch)
    reply = nl.recv(65536)
    code = struct.unpack("=i", reply[16:20])[0] if struct.unpack("=H", reply[4:6])[0] == 2 else 0  # NLMSG_ERROR
    if code:
        raise OSError(-code, "nftables refused")

def lo_down():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0))  # SIOCSIFFLAGS: lo's flags cleared

def in_new_user_namespace(fn):
    def run():
        if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:  # CLONE_NEWUSER
            raise OSError(ctypes.get_errno(), "unshare")
        fn()
    return run

tamper = {"caps": caps(), "raw_socket": attempt(raw_socket), "nft_delete_table": attempt(nft_delete_table),
          "lo_down": attempt(lo_down), "userns_nft_delete_table": attempt(in_new_user_namespace(nft_delete_table))}
json.dump(tamper, open("/data/tamper.json", "w"))

def tcp(port):
    server = socket.create_server(("0.0.0.0", port))
    while True:
        conn, _ = server.accept()
        conn.sendall(b"tcp:%d" % port)
        conn.close()

def udp(port):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", port))
    while True:
        data, peer = server.recvfrom(100)
        server.sendto(b"udp:%d" % port, peer)

for target, port in ((tcp, 80), (tcp, 8080), (udp, 80), (udp, 8080)):
    threading.Thread(target=target, args=(port,), daemon=True).start()
open("/data/ready", "w").close()
threading.Event().wait()
"""

# The client: for each host, try every (proto, port) and write {"host proto port": answer or error}
# to /data/reached.json.
REACH = r"""
import json, socket, sys

def tcp(host, port):
    with socket.create_connection((host, port), timeout=3) as conn:
        return conn.recv(100).decode()

def udp(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((host, port))
        for _ in range(3):  # a datagram may be lost while the neighbour is resolved
            sock.send(b"hi")
            try:
                return sock.recv(100).decode()
            except socket.timeout:
                continue
        return "error: timeout"

def attempt(fn, host, port):
    try:
        return fn(host, port)
    except OSError as exc:
        return "error: " + type(exc).__name__

out = {}
for host in sys.argv[1:]:
    for name, fn in (("tcp", tcp), ("udp", udp)):
        for port in (80, 8080):
            out[f"{host} {name} {port}"] = attempt(fn, host, port)
json.dump(out, open("/data/reached.json", "w"))
"""


def _serve_tcp_udp(platform: LocalPlatform, ports: list[int]) -> None:
    """Start the server pod and wait until it listens (its /data/ready)."""
    platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=2, pod_name="server", ports=ports, command="python3",
                             args=["-c", SERVE_TCP_UDP]))
    deadline = time.monotonic() + 120
    while not (platform.volume_path("server") / "ready").exists():
        state = platform.pod_status("server")
        assert not state.is_terminal and time.monotonic() < deadline, (
            state, (platform._pod_dir("server") / "stdout.log").read_text())
        time.sleep(0.05)


def _pod_rules(platform: LocalPlatform, pod_name: str, tool: str) -> str:
    """The firewall rules inside a running pod's network namespace, read from the host."""
    engine = _container.find_engine(platform.images)
    container = json.loads((platform._pod_dir(pod_name) / "spec.json").read_text())["container"]
    pid = engine.run("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    assert pid.isdigit() and int(pid) > 1, pid
    return subprocess.run(["/usr/bin/nsenter", f"--net=/proc/{pid}/ns/net", f"/usr/sbin/{tool}", "-S", "INPUT"],
                          capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="each pod's inbound firewall is set by root podman")
def test_pods_reach_only_the_ports_a_pod_declares_and_cannot_open_others(tenants: dict[str, LocalPlatform]) -> None:
    alice = tenants["alice"]
    _serve_tcp_udp(alice, [80])
    alice.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="client", command="python3",
                          args=["-c", REACH, "server", "alice-server"]))
    state = wait_terminal(alice, "client")
    assert state.detail["reason"] == "Completed", (alice._pod_dir("client") / "stdout.log").read_text()
    reached = json.loads((alice.volume_path("client") / "reached.json").read_text())
    for host in ("server", "alice-server"):
        assert reached[f"{host} tcp 80"] == "tcp:80", reached
        assert reached[f"{host} udp 80"] == "udp:80", reached
        # 8080 is served too, but not declared: refused as a closed port is, at once
        assert reached[f"{host} tcp 8080"] == "error: ConnectionRefusedError", reached
        assert reached[f"{host} udp 8080"] == "error: ConnectionRefusedError", reached
    # The server had no way to undo its firewall, and its rules are still there.
    tamper = json.loads((alice.volume_path("server") / "tamper.json").read_text())
    assert tamper["caps"] == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}, tamper
    assert tamper["raw_socket"] == "EPERM" and tamper["lo_down"] == "EPERM", tamper
    assert tamper["nft_delete_table"] == "EPERM", tamper
    assert tamper["userns_nft_delete_table"] == "EPERM", tamper  # a user namespace of its own: still not its netns
    assert not alice.pod_status("server").is_terminal
    for tool in ("iptables", "ip6tables"):
        rules = _pod_rules(alice, "server", tool)
        assert "-P INPUT DROP" in rules and "--dport 80 -j ACCEPT" in rules and "8080" not in rules, rules


@pytest.mark.skipif(os.geteuid() != 0, reason="each pod's inbound firewall is set by root podman")
def test_a_pod_that_declares_no_port_is_reachable_on_none(tenants: dict[str, LocalPlatform]) -> None:
    alice = tenants["alice"]
    _serve_tcp_udp(alice, [])
    fetched = _fetch(alice, ["http://server/", "http://alice-server:8080/"], attempts=1)
    assert all("Connection refused" in answer for answer in fetched.values()), fetched


@pytest.mark.skipif(os.geteuid() != 0, reason="each pod's inbound firewall is set by root podman")
@pytest.mark.parametrize("ports", ["80 8080", "80 http"])
def test_a_container_whose_firewall_cannot_be_set_never_runs(podrun_home: Path, ports: str) -> None:
    """The hook fails closed: podman, given podrun's hooks and a ports annotation that is not
    ports, fails the container before its command runs (the file it would write stays absent;
    with real ports it is written)."""
    from podrun.platform.local.images import ImageStore, host_arch

    from .platforms import image_store

    store = ImageStore(image_store())
    engine = _container.find_engine(store)
    image = store.resolve(IMAGE, arch=host_arch())
    assert image is not None
    out = podrun_home / "out"
    out.mkdir()
    out.chmod(0o777)  # the pod's root is an unprivileged host uid
    name = f"podrun-test-fail-closed-{os.getpid()}"
    argv = [*engine.prefix, "--hooks-dir", str(_network.firewall_hooks(podrun_home / "local")), "run", "--rm",
            "--pull=never", "--name", name, *engine.flags, "--network=none", "--annotation", f"podrun.ports={ports}",
            *_container.hardening_args(engine), "--volume", f"{out}:/out", image.id, "sh", "-c", "echo ran > /out/ran"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=engine.environment())
    finally:
        _container.cleanup(engine.cleanup_argv(name), engine.environment())
    if ports == "80 8080":
        assert done.returncode == 0 and (out / "ran").read_text() == "ran\n", done
    else:
        assert done.returncode != 0 and not (out / "ran").exists(), done
        assert "not a port number: 'http'" in done.stderr, done.stderr
