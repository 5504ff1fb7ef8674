"""EMPlatform against the emulator: settings, secrecy of the password, token renewal,
streaming within bounded memory, uplink splitting, and the error mapping."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from podrun.errors import AuthError, ConfigError, Conflict, IllegalPath, InvalidRequest, Locked, NotFound, PlatformError
from podrun.platform.em import EMPlatform, error_from_response, run_body
from podrun.platform.types import PodSpec, walk_entries

from .em_server import NO_PODS, EmulatorProcess, free_port

SECRET = "hunter2-Sup3rSecret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("em-client"), users=(f"dave:{SECRET}",), token_lifetime=2) as em:
        yield em


@pytest.fixture
def em(server: EmulatorProcess) -> Iterator[EMPlatform]:
    with EMPlatform(server.url, *server.add_user("c"), timeout=30, retry_deadline=20) as platform:
        yield platform


def test_from_settings_reads_the_environment_and_names_what_is_missing(monkeypatch, server):
    monkeypatch.setenv("PODRUN_EM_URL", server.url)
    monkeypatch.setenv("PODRUN_EM_USERNAME", "dave")
    with pytest.raises(ConfigError, match="PODRUN_EM_PASSWORD"):
        EMPlatform.from_settings()
    monkeypatch.setenv("PODRUN_EM_PASSWORD", SECRET)
    monkeypatch.setenv("PODRUN_EM_MAX_UPLINK_BYTES", "5000000")
    with EMPlatform.from_settings() as platform:
        assert platform.identity() == f"em:{server.url}:dave"
        assert platform.max_uplink_bytes == 5_000_000 and platform.kind == "em"
        assert platform.nodes_status()
    monkeypatch.delenv("PODRUN_EM_URL")
    with pytest.raises(ConfigError, match="PODRUN_EM_URL"):
        EMPlatform.from_settings()
    with EMPlatform.from_settings(url=server.url, max_uplink_bytes=123) as explicit:
        assert explicit.max_uplink_bytes == 123
    assert EMPlatform(server.url, "x", "y", poll_interval=(1.0, 30.0)).poll_interval == (1.0, 30.0)


def test_password_never_shows(server, caplog):
    caplog.set_level(logging.DEBUG)
    with EMPlatform(server.url, "dave", SECRET, timeout=10, retry_deadline=5) as platform:
        platform.uplink([("x", b"1")])
        platform.list_files()
        assert SECRET not in repr(platform) and SECRET not in str(vars(platform))
    with EMPlatform(server.url, "dave", SECRET + "-wrong", timeout=10, retry_deadline=5) as wrong:
        with pytest.raises(AuthError) as info:
            wrong.list_files()
        assert SECRET not in str(info.value) and SECRET not in repr(info.value) and "dave" in str(info.value)
    with EMPlatform(f"http://127.0.0.1:{free_port()}", "dave", SECRET, timeout=2, retry_deadline=0.5) as unreachable:
        with pytest.raises(PlatformError) as info:
            unreachable.list_files()
        assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


def test_expired_tokens_are_renewed_transparently(server):
    with EMPlatform(server.url, "dave", SECRET, timeout=10, retry_deadline=5) as platform:
        platform.uplink([("before", b"1")], pod_name="renew")
        time.sleep(2.3)  # the module's emulator issues 2-second tokens (1 s expired the renewed one too on a loaded machine)
        platform.uplink([("after", b"2")], pod_name="renew")  # 401, fresh login, replayed body
        assert {"before", "after"} <= set(walk_entries(platform.list_files("renew")))


def test_large_uplink_and_downlink_stream_in_bounded_memory(em, tmp_path):
    size = 48 * 1024 * 1024
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for i in range(size // (1024 * 1024)):
            handle.write(bytes([i % 251]) * (1024 * 1024))
    moved: list[int] = []
    tracemalloc.start()
    try:
        em.uplink([("big.bin", source)], dest_path="data", pod_name="big", progress=moved.append)
        up_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        received: list[int] = []
        with open(tmp_path / "back.bin", "wb") as sink:
            assert em.downlink_into("data/big.bin", sink, "big", progress=received.append) == size
        down_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(moved) == size and sum(received) == size
    assert up_peak < 12 * 1024 * 1024 and down_peak < 12 * 1024 * 1024, (up_peak, down_peak)
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_unseekable_stream_uplinks_with_chunked_encoding(em):
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.left = [b"abc" * 1000, b"def" * 1000]

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.left.pop(0) if self.left else b""

        def seekable(self) -> bool:
            return False

        def tell(self) -> int:
            raise OSError("not seekable")

    assert em.uplink([("piped", Pipe())], pod_name="pipe")["file_count"] == 1
    assert em.downlink("piped", "pipe") == b"abc" * 1000 + b"def" * 1000


def test_uplink_is_split_under_the_flight_model_limit(tmp_path):
    with EmulatorProcess(tmp_path / "fm", "--max-uplink-bytes", "5000000", users=("fm:pw",), driver=NO_PODS) as server:
        with EMPlatform(server.url, "fm", "pw", max_uplink_bytes=5_000_000, timeout=30) as fm:
            files = [(f"part-{i}", bytes([i]) * 2_000_000) for i in range(5)]  # 10 MB: at least 3 calls of <= 5 MB
            result = fm.uplink(files, dest_path="split")
            assert result["file_count"] == 5
            listed = walk_entries(fm.list_files())
            assert {f"split/part-{i}" for i in range(5)} == set(listed)
            assert fm.downlink("split/part-3") == bytes([3]) * 2_000_000
            with pytest.raises(InvalidRequest) as info:
                fm.uplink([("huge", b"x" * 5_000_001)])
            assert info.value.code == "MAX_UPLINK_SIZE_EXCEEDED" and "huge" in str(info.value)
        with EMPlatform(server.url, "fm", "pw", timeout=30) as unsplit:  # client believes 2 GB: the server refuses
            with pytest.raises(InvalidRequest) as info:
                unsplit.uplink(files)
            assert info.value.code == "MAX_UPLINK_SIZE_EXCEEDED" and info.value.status == 400


def test_typed_errors_from_the_emulator(em):
    with pytest.raises(NotFound):
        em.pod_status("never-ran")
    with pytest.raises(NotFound):
        em.delete("nothing-here", "pod-e")
    with pytest.raises(InvalidRequest):
        em.delete("/", "pod-e")
    with pytest.raises(IllegalPath):
        em.downlink("../../etc/passwd")
    with pytest.raises(InvalidRequest) as info:
        em.image_build("nope/Dockerfile", "img", "nope/")
    assert info.value.code == "BUILD_FAILED" and info.value.log_tail
    with pytest.raises(ValueError):
        em.list_files("Not A Name")


@pytest.mark.parametrize(
    "status, body, route, kind, code",
    [
        (
            400,
            b'{"error": "NO_FILES", "message": "No files were provided for uplink!"}',
            "/em/files/uplink",
            InvalidRequest,
            "NO_FILES",
        ),
        (
            400,
            b'{"error": "FILE_DELETE_FAILED", "message": "File delete failed"}',
            "/em/files/delete",
            NotFound,
            "FILE_DELETE_FAILED",
        ),
        (
            400,
            b'{"error": "IMAGE_LOAD_FAILED", "message": "x", "log_tail": ["sh: 1\\n"]}',
            "/em/pod/image/load",
            InvalidRequest,
            "IMAGE_LOAD_FAILED",
        ),
        (401, b'{"detail": "Given token not valid for any token type"}', "/em/files/list", AuthError, "AUTH_FAILED"),
        (
            403,
            b'{"error": "ILLEGAL_PATH", "message": "Illegal path provided"}',
            "/em/files/downlink",
            IllegalPath,
            "ILLEGAL_PATH",
        ),
        (404, b"", "/em/files/downlink", NotFound, "NOT_FOUND"),
        (423, b"<html>busy</html>", "/em/pod/run", Locked, "LOCKED"),
        (409, b'{"error": "FILE_DELETE_FAILED", "message": "kept changing"}', "/em/files/delete", Conflict, "FILE_DELETE_FAILED"),
        (500, b'{"error": "INTERNAL_ERROR", "message": "SCP failed"}', "/em/pod/run", PlatformError, "INTERNAL_ERROR"),
    ],
)
def test_error_bodies_map_to_typed_errors(status, body, route, kind, code):
    error = error_from_response(status, body, route)
    assert type(error) is kind and error.code == code and error.status == status
    assert route in str(error)
    if b"log_tail" in body:
        assert error.log_tail == ["sh: 1\n"]


def test_run_body_sends_whole_minutes_as_int():
    assert run_body(PodSpec(image="alpine", node="gpu", max_duration=3.0))["max_duration"] == 3
    assert isinstance(run_body(PodSpec(image="alpine", node="MPU", max_duration=3.0))["max_duration"], int)
    assert run_body(PodSpec(image="alpine", node="MPU", max_duration=0.5))["max_duration"] == 1  # a real EM: whole minutes
    assert run_body(PodSpec(image="alpine", node="MPU", max_duration=2.1))["max_duration"] == 3
    assert run_body(PodSpec(image="alpine", node="MPU", max_duration=0.5), fractional=True)["max_duration"] == 0.5
    body = run_body(PodSpec(image="alpine", node="mpu", max_duration=1, envs={"N": 3}, args=["-c", 1], ports=[80]))  # type: ignore[list-item]
    assert body["node"] == "MPU" and body["envs"] == {"N": 3} and body["args"] == ["-c", "1"] and body["ports"] == [80]


@pytest.mark.parametrize(
    "url", [f"http://127.0.0.1:{free_port()}", "http://podrun-no-such-host.invalid:8000"], ids=["refused", "unresolvable"]
)
def test_a_server_that_never_answered_fails_the_first_call_at_once(url):
    """No retries for a wrong URL: the first call fails naming the URL and the cause, long
    before the retry deadline (120 s here)."""
    transport = CountingTransport()
    with EMPlatform(url, "u", "p", timeout=30, retry_deadline=120, transport=transport) as platform:
        started = time.monotonic()
        with pytest.raises(PlatformError) as info:
            platform.nodes_status()
        took = time.monotonic() - started
    assert info.value.code == "UNREACHABLE" and url in str(info.value)
    assert "refused" in str(info.value).lower() or "name" in str(info.value).lower()  # the cause, in the OS's words
    assert transport.sent == ["/auth/"]  # one attempt, no retries
    print(f"{url}: failed after {took:.3f} s")
    assert took < 5  # the bound; a retried call would take the 120 s deadline


def test_a_server_that_answered_once_is_retried_when_its_connection_breaks(tmp_path):
    with EmulatorProcess(tmp_path / "em", users=("gone:pw",), driver=NO_PODS) as server:
        platform = EMPlatform(server.url, "gone", "pw", timeout=2, retry_deadline=1.5, backoff=(0.05, 0.2))
        assert platform.nodes_status()
    attempts: list[str] = []
    platform._retrying = _counting(platform._retrying, attempts)  # type: ignore[method-assign]
    with pytest.raises(PlatformError) as info:
        platform.nodes_status()  # the server is gone now: transient, retried until the deadline
    assert info.value.code == "CONNECTION_FAILED" and len(attempts) >= 2
    platform.close()


class CountingTransport(httpx.HTTPTransport):
    """A real transport that counts the requests it sends, by path."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url.path)
        return super().handle_request(request)


def test_a_full_disk_is_507_and_not_sent_again(tmp_path):
    """The emulator's root on an 8 MB tmpfs: the upload that does not fit answers 507, the
    client reports it once (no blind re-sends), nothing half-written stays, and once space is
    freed the same upload goes through."""
    with EmulatorProcess(tmp_path / "em", users=("full:pw",), disk_bytes=8 * 1024 * 1024, driver=NO_PODS) as server:
        transport = CountingTransport()
        with EMPlatform(server.url, "full", "pw", timeout=30, retry_deadline=30, transport=transport) as em:
            em.uplink([("first.bin", b"1" * 3_000_000)])
            with pytest.raises(PlatformError) as info:
                em.uplink([("second.bin", b"2" * 3_000_000)])
            assert info.value.status == 507 and info.value.code == "INSUFFICIENT_STORAGE", info.value
            assert "full" in info.value.message and str(server.root) not in str(info.value)
            assert transport.sent.count("/em/files/uplink") == 2  # one call each: the 507 was not re-sent
            assert set(walk_entries(em.list_files())) == {"first.bin"}  # no torn second.bin, no .part file
            em.delete("first.bin")
            em.uplink([("second.bin", b"2" * 3_000_000)])
            assert em.downlink("second.bin") == b"2" * 3_000_000


def _counting(retrying, attempts):
    def wrapped(attempt):
        def counted():
            attempts.append("x")
            return attempt()

        return retrying(counted)

    return wrapped


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        EMPlatform("ftp://x", "u", "p")
    with pytest.raises(ConfigError):
        EMPlatform("http://x", "", "p")


class RecordingTransport(CountingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


def _runs(transport: RecordingTransport) -> list[httpx.Request]:
    return [r for r in transport.requests if r.url.path == "/em/pod/run"]


def test_fractional_minutes_travel_only_to_a_server_that_advertises_them(server):
    transport = RecordingTransport()
    with EMPlatform(server.url, *server.add_user("f"), timeout=30, transport=transport) as em:
        em.run_pod(PodSpec(image="alpine", node="MPU", max_duration=0.5, command="true", pod_name="frac"))
        assert em.extensions == {"fractional-minutes"}
        [run] = _runs(transport)
        assert json.loads(run.content)["max_duration"] == 0.5 and run.headers["x-podrun-extensions"] == "fractional-minutes"


class _PlainEM(BaseHTTPRequestHandler):
    """Stands in for a real EM (which we cannot reach from a test): answers login and run, and
    advertises nothing; records what it was sent."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.startswith("/em/pod/run"):
            self.received.append({"body": json.loads(body), "extensions": self.headers.get("x-podrun-extensions")})
        answer = b'{"access": "t", "refresh": "r"}' if self.path.startswith("/auth") else b'{"message": "ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_without_the_extension_never_gets_a_fractional_max_duration(caplog):
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _PlainEM)
    thread = threading.Thread(target=plain.serve_forever, daemon=True)
    thread.start()
    try:
        with EMPlatform(f"http://127.0.0.1:{plain.server_port}", "u", "p", timeout=10) as em:
            em.run_pod(PodSpec(image="alpine", node="MPU", max_duration=0.5))
            em.run_pod(PodSpec(image="alpine", node="MPU", max_duration=2.25))
            assert em.extensions == frozenset()
    finally:
        plain.shutdown()
        plain.server_close()
        thread.join(timeout=10)
    sent = [r["body"]["max_duration"] for r in _PlainEM.received]
    assert sent == [1, 3] and all(type(m) is int for m in sent)
    assert all(r["extensions"] is None for r in _PlainEM.received)
    assert "whole minutes" in caplog.text


def _slow_uplink(url: str, token: str) -> socket.socket:
    """A raw connection that starts an uplink and keeps its body open: the user is busy."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        (
            f"POST /em/files/uplink HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="files"; filename="slow"\r\n\r\n'
        ).encode()
    )
    return sock


def test_concurrent_calls_of_one_user_get_423_and_the_client_rides_through(server):
    user, password = server.add_user("l")
    token = httpx.post(f"{server.url}/auth/", data={"username": user, "password": password}).json()["access"]
    other = server.add_user("o")
    busy = _slow_uplink(server.url, token)
    try:
        deadline = time.monotonic() + 10

        def probe() -> httpx.Response:  # a fresh token each time: this server's tokens live 1 s
            fresh = httpx.post(f"{server.url}/auth/", data={"username": user, "password": password}).json()["access"]
            return httpx.get(f"{server.url}/em/files/list", headers={"Authorization": f"Bearer {fresh}"})

        while (locked := probe()).status_code != 423:
            assert time.monotonic() < deadline, locked.text  # the slow uplink has reached its handler
            time.sleep(0.05)
        assert locked.json() == {"error": "LOCKED", "message": "CG2 is busy with another request of this user; try again"}
        with EMPlatform(server.url, *other, timeout=10) as neighbour:  # another user is not locked out
            assert neighbour.nodes_status()
        with EMPlatform(server.url, user, password, timeout=10, retry_deadline=30, backoff=(0.05, 0.2)) as em:
            result: list[object] = []
            rider = threading.Thread(target=lambda: result.append(em.list_files()))
            rider.start()
            time.sleep(0.5)  # it meets 423s meanwhile
            busy.sendall(b"x" * (100000 - 68 - 8 - 2) + b"\r\n--b--\r\n")
            busy.recv(65536)
            rider.join(timeout=30)
            assert result and [e.name for e in result[0]] == ["slow"]  # type: ignore[attr-defined]
    finally:
        busy.close()


def test_the_busy_lock_can_be_switched_off(tmp_path):
    with EmulatorProcess(tmp_path / "em", "--no-busy-lock", users=("free:pw",), driver=NO_PODS) as em:
        token = httpx.post(f"{em.url}/auth/", data={"username": "free", "password": "pw"}).json()["access"]
        busy = _slow_uplink(em.url, token)
        try:
            time.sleep(0.3)
            assert httpx.get(f"{em.url}/em/files/list", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        finally:
            busy.close()
