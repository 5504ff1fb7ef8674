"""The onboard telemetry service: DPhi's endpoints and shapes, plausible values, and pods reach it.

The server runs as a real subprocess on a free loopback port for the shape tests; the pod tests
run DPhi's echo-test and fisheye flows (in the project's own words) in real pods of the container
driver, which reach it as ``satellite-telemetry.dphi-tm`` on their user's network.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podrun.platform.local import LocalPlatform, container, network, telemetry
from podrun.platform.types import PodSpec

from .platforms import cleanup_engine, container_platform, engine_leftovers, needs_engine, wait_terminal

sgp4 = pytest.importorskip("sgp4.api", reason="the telemetry service needs sgp4 (in the test extra)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-E", "-s", str(telemetry.SERVER), str(port), "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _get(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def _post(url: str, body: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


WRAPPER = {"success", "data", "count", "error"}
RECORD = {"id", "timestamp", "original_timestamp", "data_type", "data", "created_at"}


def test_every_endpoint_answers_in_dphis_wrapper(service: str) -> None:
    assert _get(service + "/health")["success"] is True
    types = _get(service + "/api/telemetry/types")
    assert set(types) == WRAPPER and {"position", "velocity", "attitude", "power", "temperature"} <= set(types["data"])
    latest = _get(service + "/api/telemetry/latest")
    assert latest["count"] == len(types["data"]) and all(set(r) == RECORD for r in latest["data"])
    only = _get(service + "/api/telemetry/latest?data_type=position")["data"]
    assert [r["data_type"] for r in only] == ["position"] and set(only[0]["data"]) == {"x", "y", "z"}
    stats = _get(service + "/api/telemetry/stats")["data"]
    assert stats["data_types_count"] == len(types["data"]) and stats["total_records"] > 1000
    assert stats["earliest_timestamp"] < stats["latest_timestamp"]
    listed = _get(service + "/api/images/list")
    assert listed["count"] == len(listed["data"]) > 0 and all(n.endswith(".png") for n in listed["data"])
    power = _get(service + "/api/telemetry/power?limit=3")["data"]
    assert len(power) == 3 and {r["data_type"] for r in power} == {"power"}
    missing = urllib.request.Request(service + "/api/nothing")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(missing, timeout=10)
    assert err.value.code == 404 and json.loads(err.value.read())["success"] is False


def test_the_tle_is_valid_and_the_positions_follow_it(service: str) -> None:
    from sgp4.api import Satrec, jday

    text = urllib.request.urlopen(service + "/api/telemetry/tle", timeout=10).read().decode()
    name, line1, line2 = text.splitlines()
    for line in (line1, line2):  # the TLE checksum: digits summed, '-' counts one, modulo 10
        assert int(line[68]) == sum(int(c) if c.isdigit() else c == "-" for c in line[:68]) % 10
    sat = Satrec.twoline2rv(line1, line2)
    record = _get(service + "/api/telemetry/latest?data_type=position")["data"][0]
    moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    jd, fr = jday(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    _, expected, _ = sat.sgp4(jd, fr)
    got = record["data"]
    assert math.dist(expected, (got["x"], got["y"], got["z"])) < 1.0  # km: the same orbit, propagated


@settings(max_examples=25, deadline=None)
@given(minutes_ago=st.integers(min_value=0, max_value=23 * 60), limit=st.integers(min_value=1, max_value=40))
def test_queries_respect_time_window_type_and_limit_with_plausible_values(service: str, minutes_ago: int, limit: int) -> None:
    end = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    start = end - timedelta(minutes=30)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    body = _get(f"{service}/api/telemetry?starttime={start.strftime(fmt)}&endtime={end.strftime(fmt)}"
                f"&datatype=position&limit={limit}")
    records = body["data"]
    assert body["count"] == len(records) == min(limit, len(records)) and 0 < len(records) <= limit
    for record in records:
        stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert start - timedelta(seconds=1) <= stamp <= end and record["data_type"] == "position"
        radius = math.sqrt(sum(record["data"][k] ** 2 for k in "xyz"))
        assert 6700 < radius < 7100  # km from Earth's centre: a ~500 km low Earth orbit
    velocity = _get(f"{service}/api/telemetry?datatype=velocity&limit=1")["data"][0]["data"]
    assert 7.0 < math.sqrt(sum(v * v for v in velocity.values())) < 8.0  # km/s


def test_images_come_as_a_png_or_a_stored_zip_and_bad_requests_are_400(service: str) -> None:
    names = _get(service + "/api/images/list")["data"]
    status, kind, body = _post(service + "/api/images", json.dumps({"images": [names[0]]}).encode())
    assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG\r\n\x1a\n")
    status, kind, body = _post(service + "/api/images", json.dumps({"limit": 3}).encode())
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert status == 200 and archive.namelist() == names[:3]
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())  # STORED, as onboard
    assert _post(service + "/api/images", json.dumps({"images": ["nope.png"]}).encode())[0] == 404
    for bad in (b"[1, 2]", b"{not json", json.dumps({"images": "x.png"}).encode(), json.dumps({"limit": "ten"}).encode()):
        status, kind, body = _post(service + "/api/images", bad)
        assert status == 400 and json.loads(body)["success"] is False, bad


# --- from pods -------------------------------------------------------------------------------



@pytest.fixture
def alice(podrun_home: Path) -> Iterator[LocalPlatform]:
    platform = container_platform(podrun_home / "local", "alice", stop_grace=1)
    try:
        yield platform
    finally:
        platform.shutdown()
        left = engine_leftovers(platform.root)
        cleanup_engine(platform.root)
        assert not left, f"left in the engine: {left}"


ECHO_TEST = """#!/bin/sh
echo "Hello from the container !"
echo "Is this the final frontier?" >/data/downlink.txt
until wget -q -O - http://satellite-telemetry.dphi-tm/health >>/data/downlink.txt; do sleep 0.2; done
wget -q -O - http://satellite-telemetry.dphi-tm/api/telemetry/latest >>/data/orbital.json
"""

FISHEYE = """
import io, json, os, time, urllib.request, zipfile
api = "http://satellite-telemetry.dphi-tm/api/images"
for _ in range(100):
    try:
        names = json.loads(urllib.request.urlopen(api + "/list", timeout=5).read())["data"]
        break
    except OSError:
        time.sleep(0.2)
request = urllib.request.Request(api, data=json.dumps({"limit": 10}).encode(), headers={"Content-Type": "application/json"})
archive = zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(request, timeout=30).read()))
insights = {"total_images_processed": 0, "images": {}}
for name in archive.namelist():
    data = archive.read(name)
    open(os.path.join("/data", name), "wb").write(data)
    insights["images"][name] = {"size_bytes": len(data), "png": data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"}
insights["total_images_processed"] = len(insights["images"])
json.dump(insights, open("/data/insights.json", "w"), indent=2)
"""


@needs_engine
def test_dphis_echo_test_reaches_the_service_from_a_pod(alice: LocalPlatform) -> None:
    alice.uplink([("echo-test.sh", ECHO_TEST.encode())], pod_name="echo")
    alice.run_pod(PodSpec(image="busybox", node="FPGA", max_duration=1, pod_name="echo", command="/bin/sh",
                          args=["/data/echo-test.sh"]))
    assert wait_terminal(alice, "echo").detail["reason"] == "Completed", (alice._pod_dir("echo") / "stdout.log").read_text()
    first, health = (alice.volume_path("echo") / "downlink.txt").read_text().split("\n", 1)
    assert first == "Is this the final frontier?" and json.loads(health)["success"] is True
    orbital = json.loads((alice.volume_path("echo") / "orbital.json").read_text())
    assert orbital["success"] and {r["data_type"] for r in orbital["data"]} >= {"position", "attitude", "power"}


@needs_engine
def test_dphis_fisheye_flow_gets_images_from_a_pod(alice: LocalPlatform) -> None:
    alice.run_pod(PodSpec(image="python:3.11-slim", node="FPGA", max_duration=1, pod_name="fisheye", command="python3",
                          args=["-c", FISHEYE]))
    assert wait_terminal(alice, "fisheye").detail["reason"] == "Completed", (alice._pod_dir("fisheye") / "stdout.log").read_text()
    insights = json.loads((alice.volume_path("fisheye") / "insights.json").read_text())
    assert insights["total_images_processed"] == 10 and all(v["png"] for v in insights["images"].values())
    assert len(list(alice.volume_path("fisheye").glob("*.png"))) == 10


def _telemetry_id(platform: LocalPlatform) -> str | None:
    engine = container.find_engine(platform.images)
    found = engine.run("container", "inspect", "--format", "{{.Id}}", telemetry.container_name(platform.root, platform.user))
    return found.stdout.strip() if found.returncode == 0 else None


def _run_true(platform: LocalPlatform, pod_name: str) -> None:
    platform.run_pod(PodSpec(image="busybox", node="FPGA", max_duration=1, pod_name=pod_name, command="/bin/true"))
    assert wait_terminal(platform, pod_name).detail["reason"] == "Completed"


@needs_engine
def test_the_network_and_telemetry_outlive_the_last_pod_by_the_linger_only(podrun_home: Path) -> None:
    """A program that never calls shutdown (make demo's quickstart) leaves nothing running: the
    last pod's supervisor removes the network and the telemetry service once no pod has run for
    ``network_linger`` seconds; a pod started within it reuses them."""
    platform = container_platform(podrun_home / "local", "alice", stop_grace=1, network_linger=2)
    try:
        _run_true(platform, "first")
        service = _telemetry_id(platform)
        assert service is not None
        _run_true(platform, "second")  # within the linger: the same service
        assert _telemetry_id(platform) == service
        deadline = time.monotonic() + 60
        while engine_leftovers(platform.root) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert engine_leftovers(platform.root) == []
        _run_true(platform, "third")  # after removal: a new pod gets a network and a service again
        assert _telemetry_id(platform) not in (None, service)
    finally:
        platform.shutdown()
        left = engine_leftovers(platform.root)
        cleanup_engine(platform.root)
    assert not left, f"left in the engine: {left}"
    remover = network.linger_path(platform.root, platform.user)
    with open(remover, "a") as holder:  # shutdown ended the waiting remover: nobody holds its lock
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
