"""EMPlatform against the emulator: settings, secrecy of the password, token renewal,
streaming within bounded memory, uplink splitting, and the error mapping."""

from __future__ import annotations

import io
import logging
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from podrun.errors import AuthError, ConfigError, IllegalPath, InvalidRequest, Locked, NotFound, PlatformError
from podrun.platform.em import EMPlatform, error_from_response, run_body
from podrun.platform.types import PodSpec, walk_entries

from .em_server import EmulatorProcess, free_port

SECRET = "hunter2-Sup3rSecret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("em-client"), users=(f"dave:{SECRET}",), token_lifetime=1) as em:
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
        time.sleep(1.3)  # the module's emulator issues 1-second tokens
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
    with EmulatorProcess(tmp_path / "fm", "--max-uplink-bytes", "5000000", users=("fm:pw",)) as server:
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


@pytest.mark.parametrize("status, body, route, kind, code", [
    (400, b'{"error": "NO_FILES", "message": "No files were provided for uplink!"}', "/em/files/uplink", InvalidRequest, "NO_FILES"),
    (400, b'{"error": "FILE_DELETE_FAILED", "message": "File delete failed"}', "/em/files/delete", NotFound, "FILE_DELETE_FAILED"),
    (400, b'{"error": "IMAGE_LOAD_FAILED", "message": "x", "log_tail": ["sh: 1\\n"]}', "/em/pod/image/load", InvalidRequest, "IMAGE_LOAD_FAILED"),
    (401, b'{"detail": "Given token not valid for any token type"}', "/em/files/list", AuthError, "AUTH_FAILED"),
    (403, b'{"error": "ILLEGAL_PATH", "message": "Illegal path provided"}', "/em/files/downlink", IllegalPath, "ILLEGAL_PATH"),
    (404, b"", "/em/files/downlink", NotFound, "NOT_FOUND"),
    (423, b"<html>busy</html>", "/em/pod/run", Locked, "LOCKED"),
    (500, b'{"error": "INTERNAL_ERROR", "message": "SCP failed"}', "/em/pod/run", PlatformError, "INTERNAL_ERROR"),
])
def test_error_bodies_map_to_typed_errors(status, body, route, kind, code):
    error = error_from_response(status, body, route)
    assert type(error) is kind and error.code == code and error.status == status
    assert route in str(error)
    if b"log_tail" in body:
        assert error.log_tail == ["sh: 1\n"]


def test_run_body_sends_whole_minutes_as_int():
    assert run_body(PodSpec(image="alpine", node="gpu", max_duration=3.0))["max_duration"] == 3
    assert isinstance(run_body(PodSpec(image="alpine", node="MPU", max_duration=3.0))["max_duration"], int)
    assert run_body(PodSpec(image="alpine", node="MPU", max_duration=0.5))["max_duration"] == 0.5
    body = run_body(PodSpec(image="alpine", node="mpu", max_duration=1, envs={"N": 3}, args=["-c", 1], ports=[80]))  # type: ignore[list-item]
    assert body["node"] == "MPU" and body["envs"] == {"N": 3} and body["args"] == ["-c", "1"] and body["ports"] == [80]


def test_unreachable_server_is_a_typed_error_within_the_deadline():
    with EMPlatform(f"http://127.0.0.1:{free_port()}", "u", "p", timeout=2, retry_deadline=1.0) as platform:
        started = time.monotonic()
        with pytest.raises(PlatformError) as info:
            platform.nodes_status()
        assert info.value.code == "CONNECTION_FAILED"
        assert time.monotonic() - started < 5


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        EMPlatform("ftp://x", "u", "p")
    with pytest.raises(ConfigError):
        EMPlatform("http://x", "", "p")
