"""A hostile tenant against a real emulator subprocess: forged, expired and wrong-user tokens,
traversal, pod_name injection, malformed JSON, forms and multipart, oversized bodies and
headers, non-UTF-8 bytes, slowloris. Every case asserts the answer's status and the EM's error
shape (no host path in it), that the server stays up, and that nothing changed: neither the
emulator's root nor a canary folder beside it."""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .em_server import EmulatorProcess

SECRET = "hostile-suite-known-signing-key-0123456789"  # the test knows it, to forge tokens a leak would allow
LIMIT = 1_000_000  # the emulator's uplink limit in this suite
GUESSED_KEY = "a-guessed-signing-key-of-full-length-0123456789"


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    workdir = tmp_path_factory.mktemp("hostile")
    canary = workdir / "canary"
    canary.mkdir()
    (canary / "secret.txt").write_text("outside every volume")
    with EmulatorProcess(
        workdir,
        "--max-uplink-bytes",
        str(LIMIT),
        "--header-timeout",
        "2",
        "--body-timeout",
        "2",
        users=("alice:alice-pw", "bob:bob-pw"),
        env={"PODRUN_EMULATOR_SECRET": SECRET},
    ) as server:
        alice = login(server.url, "alice", "alice-pw")
        up = alice.post("/em/files/uplink", files=[("files", ("mine.txt", b"alice's"))], data={"pod_name": "victim"})
        assert up.status_code == 200, up.text
        alice.close()
        yield server


def login(url: str, user: str, password: str) -> httpx.Client:
    token = httpx.post(f"{url}/auth/", data={"username": user, "password": password}).json()["access"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def forge(**claims: Any) -> str:
    now = time.time()
    body = {"sub": "alice", "token_type": "access", "iat": int(now), "exp": now + 300, "jti": "x", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


def snapshot(*roots: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under the roots: kind, mode, size and content digest (and a folder's mtime,
    except the upload spool's, whose temporary files come and go)."""
    seen: dict[str, tuple[Any, ...]] = {}
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            here = Path(folder)
            stat = here.lstat()
            seen[str(here)] = ("dir", stat.st_mode, None if here.name == ".spool" else stat.st_mtime_ns)
            for name in files:
                path = here / name
                st_ = path.lstat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
                seen[str(path)] = ("file", st_.st_mode, st_.st_size, digest)
    return seen


def host_paths(em: EmulatorProcess) -> list[str]:
    return [str(em.root), str(em.workdir), sys.prefix]


def assert_error(em: EmulatorProcess, response: httpx.Response, status: int, code: str | None) -> None:
    text = response.text
    assert response.status_code == status, (response.status_code, text[:500])
    body = response.json()
    if status == 401:
        assert set(body) <= {"detail", "code"} and isinstance(body["detail"], str)
    elif code is not None:
        assert set(body) <= {"error", "message", "log_tail"} and body["error"] == code and isinstance(body["message"], str), body
    for path in host_paths(em):
        assert path not in text, f"host path {path} in {text[:300]}"


def assert_alive(em: EmulatorProcess) -> None:
    assert httpx.get(f"{em.url}/healthz", timeout=5).status_code == 200
    with login(em.url, "bob", "bob-pw") as bob:
        assert bob.get("/em/nodes/status").status_code == 200


# the cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str | None
    request: Callable[[EmulatorProcess, dict[str, str]], httpx.Response]  # (server, alice's auth header) -> answer


def _get(path: str, **params: Any) -> Callable[[EmulatorProcess, dict[str, str]], httpx.Response]:
    return lambda em, auth: httpx.get(em.url + path, params=params, headers=auth, timeout=15)


def _post(
    path: str, *, headers: dict[str, str] | None = None, auth: bool = True, **kwargs: Any
) -> Callable[[EmulatorProcess, dict[str, str]], httpx.Response]:
    return lambda em, a: httpx.post(em.url + path, headers={**(a if auth else {}), **(headers or {})}, timeout=15, **kwargs)


def _token(token: str, path: str = "/em/files/list") -> Callable[[EmulatorProcess, dict[str, str]], httpx.Response]:
    return lambda em, _auth: httpx.get(em.url + path, headers={"Authorization": token}, params={"pod_name": "victim"})


def _raw_json(path: str, text: bytes) -> Callable[[EmulatorProcess, dict[str, str]], httpx.Response]:
    return _post(path, content=text, headers={"Content-Type": "application/json"})


def _run(**fields: Any) -> Callable[[EmulatorProcess, dict[str, str]], httpx.Response]:
    return _post("/em/pod/run", json={"image": "alpine", "node": "MPU", "max_duration": 1, "pod_name": "victim", **fields})


def _multipart(
    body: bytes, content_type: str = "multipart/form-data; boundary=zz"
) -> Callable[[EmulatorProcess, dict[str, str]], httpx.Response]:
    return _post("/em/files/uplink", content=body, headers={"Content-Type": content_type})


def _part(name: str = "files", filename: str | None = "a.txt", data: bytes = b"data", extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--zz\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + data + b"\r\n"


def _huge_headers(em: EmulatorProcess, auth: dict[str, str]) -> httpx.Response:
    return httpx.get(em.url + "/em/nodes/status", headers={**auth, "X-Padding": "p" * 100_000}, timeout=15)


NESTED = b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NOT_UTF8 = b'{"image": "\xff\xfe", "node": "MPU", "max_duration": 1}'

CASES = [
    # tokens
    Case("no-token", 401, None, _token("")),
    Case("basic-scheme", 401, None, _token("Basic YWxpY2U6YWxpY2UtcHc=")),
    Case("garbage-token", 401, None, _token("Bearer not.a.jwt")),
    Case(
        "forged-other-key",
        401,
        None,
        _token(
            "Bearer " + jwt.encode({"sub": "alice", "token_type": "access", "exp": time.time() + 300}, GUESSED_KEY, "HS256")
        ),
    ),
    Case("alg-none", 401, None, _token("Bearer " + jwt.encode({"sub": "alice", "token_type": "access"}, None, "none"))),
    Case("expired", 401, None, _token("Bearer " + forge(exp=time.time() - 10))),
    Case("no-expiry", 401, None, _token("Bearer " + forge(exp=None))),
    Case("unknown-user", 401, None, _token("Bearer " + forge(sub="mallory"))),
    Case("user-traversal", 401, None, _token("Bearer " + forge(sub="../bob"))),
    Case("refresh-as-access", 401, None, _token("Bearer " + forge(token_type="refresh"))),
    # login
    Case(
        "login-not-utf8",
        400,
        None,
        _post(
            "/auth/",
            auth=False,
            content=b"username=\xff&password=\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ),
    Case("login-json-array", 400, None, _post("/auth/", auth=False, json=["alice", "alice-pw"])),
    Case("login-huge-body", 400, None, _post("/auth/", auth=False, json={"username": "a" * 2_000_000, "password": "x"})),
    # paths
    Case(
        "downlink-dotdot", 403, "ILLEGAL_PATH", _get("/em/files/downlink", filepath="../../canary/secret.txt", pod_name="victim")
    ),
    Case("downlink-other-user", 403, "ILLEGAL_PATH", _get("/em/files/downlink", filepath="../../bob/bob-pvc/x")),
    Case("downlink-absolute", 404, "FILE_MISSING", _get("/em/files/downlink", filepath="/etc/passwd", pod_name="victim")),
    Case("downlink-nul", 403, "ILLEGAL_PATH", _get("/em/files/downlink", filepath="mine.txt\x00.png", pod_name="victim")),
    Case("downlink-backslash", 403, "ILLEGAL_PATH", _get("/em/files/downlink", filepath="..\\..\\canary", pod_name="victim")),
    Case("downlink-overlong", 400, "INVALID_PATH", _get("/em/files/downlink", filepath="a/" * 2500, pod_name="victim")),
    Case("downlink-long-name", 400, "INVALID_PATH", _get("/em/files/downlink", filepath="n" * 300, pod_name="victim")),
    Case(
        "downlink-path-list",
        400,
        "INVALID_PATH",
        _post("/em/files/downlink", json={"filepath": ["mine.txt"], "pod_name": "victim"}),
    ),
    Case("delete-root", 400, "FILE_DELETE_FAILED", _post("/em/files/delete", json={"filepath": "/", "pod_name": "victim"})),
    Case("delete-dotdot", 403, "ILLEGAL_PATH", _post("/em/files/delete", json={"filepath": "x/../../..", "pod_name": "victim"})),
    Case("delete-missing", 400, "FILE_DELETE_FAILED", _post("/em/files/delete", json={"filepath": "nope", "pod_name": "victim"})),
    Case(
        "uplink-dest-dotdot",
        403,
        "ILLEGAL_PATH",
        _post("/em/files/uplink", files=[("files", ("x", b"x"))], data={"dest_path": "../../../canary", "pod_name": "victim"}),
    ),
    Case("uplink-name-dotdot", 403, "ILLEGAL_PATH", _multipart(_part(filename="../evil") + b"--zz--\r\n")),
    Case("uplink-name-long", 403, "ILLEGAL_PATH", _multipart(_part(filename="n" * 300) + b"--zz--\r\n")),
    Case(
        "build-dockerfile-dotdot",
        403,
        "ILLEGAL_PATH",
        _post(
            "/em/pod/image/build",
            json={"dockerfile": "../../canary/secret.txt", "image": "img", "context": ".", "pod_name": "victim"},
        ),
    ),
    Case(
        "load-tar-dotdot",
        403,
        "ILLEGAL_PATH",
        _post("/em/pod/image/load", json={"tarfile": "/../../etc/shadow", "image": "img", "pod_name": "victim"}),
    ),
    # pod names
    Case("pod-name-upper", 400, "INVALID_PARAMETERS", _get("/em/files/list", pod_name="Victim")),
    Case("pod-name-traversal", 400, "INVALID_PARAMETERS", _get("/em/files/list", pod_name="../bob")),
    Case("pod-name-shell", 400, "INVALID_PARAMETERS", _get("/em/pod/status", pod_name="a;rm -rf /")),
    Case("pod-name-too-long", 400, "INVALID_PARAMETERS", _get("/em/files/list", pod_name="a" * 64)),
    Case("pod-name-object", 400, "INVALID_PARAMETERS", _post("/em/files/list", json={"pod_name": {"$ne": ""}})),
    Case("pod-name-twice", 400, "INVALID_PARAMETERS", _post("/em/files/list", json={"pod_name": "victim", "pvc_name": "other"})),
    # JSON bodies and fields
    Case("json-invalid", 400, "INVALID_PARAMETERS", _raw_json("/em/pod/run", b'{"image": ')),
    Case("json-array", 400, "INVALID_PARAMETERS", _raw_json("/em/pod/run", b'["alpine"]')),
    Case("json-nested", 400, "INVALID_PARAMETERS", _raw_json("/em/pod/run", NESTED)),
    Case("json-not-utf8", 400, "INVALID_PARAMETERS", _raw_json("/em/pod/run", NOT_UTF8)),
    Case("json-too-large", 413, "REQUEST_TOO_LARGE", _raw_json("/em/pod/run", b'{"image": "' + b"a" * 2_000_000 + b'"}')),
    Case("unknown-field", 400, "INVALID_PARAMETERS", _run(namespace=True)),
    Case(
        "duration-nan", 400, "INVALID_PARAMETERS", _raw_json("/em/pod/run", b'{"image":"alpine","node":"MPU","max_duration":NaN}')
    ),
    Case(
        "duration-infinite",
        400,
        "INVALID_PARAMETERS",
        _raw_json("/em/pod/run", b'{"image":"alpine","node":"MPU","max_duration":1e400}'),
    ),
    Case("duration-inf-text", 400, "INVALID_PARAMETERS", _run(max_duration="inf")),
    Case("duration-over-max", 400, "INVALID_PARAMETERS", _run(max_duration=10**9)),
    Case("duration-zero", 400, "INVALID_PARAMETERS", _run(max_duration=0)),
    Case("duration-bool", 400, "INVALID_PARAMETERS", _run(max_duration=True)),
    Case("duration-fraction-unasked", 400, "INVALID_PARAMETERS", _run(max_duration=0.5)),
    Case("node-unknown", 400, "INVALID_PARAMETERS", _run(node="TPU")),
    Case("envs-list", 400, "INVALID_PARAMETERS", _run(envs=["A=1"])),
    Case("envs-bad-name", 400, "INVALID_PARAMETERS", _run(envs={"LD_PRELOAD=x": "1", "A B": "2"})),
    Case("envs-nul-value", 400, "INVALID_PARAMETERS", _run(envs={"A": "x\x00y"})),
    Case("envs-nested", 400, "INVALID_PARAMETERS", _run(envs={"A": {"b": 1}})),
    Case("ports-out-of-range", 400, "INVALID_PARAMETERS", _run(ports=[70000])),
    Case("ports-text", 400, "INVALID_PARAMETERS", _run(ports=["eighty"])),
    Case("args-object", 400, "INVALID_PARAMETERS", _run(args={"a": 1})),
    Case("command-nul", 400, "INVALID_PARAMETERS", _run(command="/bin/sh\x00-c")),
    Case("command-number", 400, "INVALID_PARAMETERS", _run(command=42)),
    Case("schedule-garbage", 400, "INVALID_PARAMETERS", _run(scheduled_time="tomorrow at noon")),
    Case("schedule-no-timezone", 400, "INVALID_PARAMETERS", _run(scheduled_time="2030-01-01T00:00:00")),
    Case(
        "build-bad-image-name",
        400,
        "INVALID_PARAMETERS",
        _post("/em/pod/image/build", json={"dockerfile": "Dockerfile", "image": "Not An Image", "pod_name": "victim"}),
    ),
    # forms and multipart
    Case(
        "form-not-utf8",
        400,
        "INVALID_PARAMETERS",
        _post("/em/files/list", content=b"pod_name=\xff", headers={"Content-Type": "application/x-www-form-urlencoded"}),
    ),
    Case(
        "body-unknown-type",
        400,
        "INVALID_PARAMETERS",
        _post("/em/files/list", content=b"pod_name victim", headers={"Content-Type": "text/plain"}),
    ),
    Case("multipart-no-boundary", 400, "BAD_REQUEST", _multipart(_part() + b"--zz--\r\n", "multipart/form-data")),
    Case("multipart-truncated", 400, "BAD_REQUEST", _multipart(_part()[:-10])),
    Case("multipart-garbage", 400, "BAD_REQUEST", _multipart(b"\x00\xff" * 500)),
    Case(
        "multipart-no-name",
        400,
        "BAD_REQUEST",
        _multipart(b'--zz\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n--zz--\r\n'),
    ),
    Case("multipart-stray-file", 400, "INVALID_PARAMETERS", _multipart(_part() + _part(name="other") + b"--zz--\r\n")),
    Case(
        "multipart-huge-part-header",
        400,
        "BAD_REQUEST",
        _multipart(_part(extra="X-Pad: " + "p" * 20_000 + "\r\n") + b"--zz--\r\n"),
    ),
    Case("uplink-no-files", 400, "NO_FILES", _post("/em/files/uplink", data={"pod_name": "victim"})),
    Case(
        "uplink-declared-too-large",
        400,
        "MAX_UPLINK_SIZE_EXCEEDED",
        _multipart(_part(data=b"x" * (LIMIT + 2_000_000)) + b"--zz--\r\n"),
    ),
    Case(
        "uplink-files-over-limit",
        400,
        "MAX_UPLINK_SIZE_EXCEEDED",
        _multipart(_part(filename="a", data=b"x" * 600_000) + _part(filename="b", data=b"y" * 600_000) + b"--zz--\r\n"),
    ),
    # HTTP itself
    Case("unknown-route", 404, "NOT_FOUND", _get("/em/files/../../etc/passwd")),
    Case("wrong-method", 405, "METHOD_NOT_ALLOWED", lambda em, auth: httpx.delete(em.url + "/em/files/list", headers=auth)),
    Case(
        "query-not-utf8",
        400,
        "INVALID_PARAMETERS",
        lambda em, auth: httpx.get(em.url + "/em/files/list?pod_name=%ff%fe", headers=auth),
    ),
    Case("huge-headers", 431, "HEADERS_TOO_LARGE", _huge_headers),
]


def test_there_are_at_least_forty_distinct_cases():
    assert len({c.name for c in CASES}) == len(CASES) >= 40
    print(f"{len(CASES)} table cases")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_is_refused_and_changes_nothing(em, case):
    with login(em.url, "alice", "alice-pw") as alice:
        auth = {"Authorization": alice.headers["Authorization"]}
    before = snapshot(em.root, em.workdir / "canary")
    response = case.request(em, auth)
    assert_error(em, response, case.status, case.code)
    assert_alive(em)
    assert snapshot(em.root, em.workdir / "canary") == before


def test_a_wrong_users_token_sees_only_its_own_volumes(em):
    with login(em.url, "bob", "bob-pw") as bob:
        assert bob.get("/em/files/list", params={"pod_name": "victim"}).json()["data"] == []
        assert_error(
            em, bob.get("/em/files/downlink", params={"filepath": "mine.txt", "pod_name": "victim"}), 404, "FILE_MISSING"
        )


# raw sockets -------------------------------------------------------------------------------------


def _connect(em: EmulatorProcess) -> socket.socket:
    host, port = em.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (b"" if it never does in time)."""
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return data or b"<reset>"
            if not chunk:
                return data or b"<closed>"
            data += chunk
    return b""


def _answer_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_a_garbage_request_line_gets_the_em_shape(em):
    before = snapshot(em.root, em.workdir / "canary")
    with _connect(em) as sock:
        sock.sendall(b"\x16\x03\x01 HELLO\r\n\r\n")
        status, body = _answer_of(_read_all(sock, 10))
    assert status == 400 and body["error"] == "BAD_REQUEST"
    assert_alive(em)
    assert snapshot(em.root, em.workdir / "canary") == before


def test_slowloris_connections_are_dropped_and_others_served(em):
    """50 connections that send a request head one byte at a time: the server answers each 408
    and closes it once the header timeout (2 s here) passes, and serves a normal request
    meanwhile."""
    slow = [_connect(em) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET /em/nodes/status HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with login(em.url, "bob", "bob-pw") as bob:
            bob.timeout = httpx.Timeout(5)
            assert bob.get("/em/nodes/status").status_code == 200  # served while the slow ones hang
        outcomes: dict[str, int] = {}
        open_ones = list(slow)
        deadline = time.monotonic() + 15
        while open_ones and time.monotonic() < deadline:
            for sock in list(open_ones):
                try:
                    sock.sendall(b"X")  # one more byte of header, forever
                except OSError:
                    outcomes["reset"] = outcomes.get("reset", 0) + 1
                    open_ones.remove(sock)
                    continue
                ready, _, _ = select.select([sock], [], [], 0)
                if ready:
                    raw = _read_all(sock, 2)
                    key = "408" if raw.startswith(b"HTTP/1.1 408") else raw[:12].decode(errors="replace")
                    outcomes[key] = outcomes.get(key, 0) + 1
                    open_ones.remove(sock)
            time.sleep(0.2)
        took = time.monotonic() - started
        print(f"slowloris: 50 connections, outcomes {outcomes}, all dropped after {took:.1f} s, still open: {len(open_ones)}")
        assert not open_ones
        assert outcomes.get("408", 0) >= 45, outcomes
    finally:
        for sock in slow:
            sock.close()
    assert_alive(em)


def test_a_stalled_body_is_answered_408(em):
    with login(em.url, "alice", "alice-pw") as alice:
        token = alice.headers["Authorization"]
    with _connect(em) as sock:
        sock.sendall(
            f"POST /em/files/list HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        raw = _read_all(sock, 10)
    status, body = _answer_of(raw)
    assert status == 408 and body["error"] == "REQUEST_TIMEOUT"
    assert_alive(em)


def test_a_chunked_upload_over_the_limit_is_refused_while_it_streams(em):
    """A chunked upload of up to 100 MB against a 1 MB limit: the answer comes after a little
    over the limit has been sent, and nothing of it stays in the spool or the volume."""
    with login(em.url, "alice", "alice-pw") as alice:
        token = alice.headers["Authorization"]
    before = snapshot(em.root, em.workdir / "canary")
    sent, chunk = 0, b"z" * 65536
    with _connect(em) as sock:
        sock.sendall(
            f"POST /em/files/uplink HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        head = _part(data=b"")[:-2]

        def send_chunk(data: bytes) -> None:
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        send_chunk(head)
        raw = b""
        try:
            while sent < 100_000_000:
                send_chunk(chunk)
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break
        except OSError:
            pass  # the server closed the connection after answering
        raw = _read_all(sock, 10)
    status, body = _answer_of(raw)
    print(f"chunked upload refused after {sent} bytes were sent (limit {LIMIT})")
    assert status == 400 and body["error"] == "MAX_UPLINK_SIZE_EXCEEDED"
    assert sent < 10 * LIMIT  # refused near the limit (socket buffers hold the rest), not after 100 MB
    assert snapshot(em.root, em.workdir / "canary") == before
    assert not any((em.root / ".spool").iterdir())
    assert_alive(em)


# generated inputs ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=80))
def test_generated_pod_names_are_accepted_only_as_dns_labels_and_create_nothing(em, name):
    before = snapshot(em.root)
    with login(em.url, "bob", "bob-pw") as bob:
        response = bob.post("/em/files/list", json={"pod_name": name})
        valid = (
            bool(name)
            and len(name) <= 63
            and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
            and name[0] != "-"
            and name[-1] != "-"
        )
    if valid or name in ("", "bob-pvc"):
        assert response.status_code == 200 and response.json()["data"] in ([], response.json()["data"])
    else:
        assert_error(em, response, 400, "INVALID_PARAMETERS")
    assert snapshot(em.root) == before  # listing a never-used pod_name creates nothing


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["image", "node", "max_duration", "envs", "ports", "args", "command", "scheduled_time", "pod_name", "junk"]
        ),
        _json_values,
        max_size=6,
    )
)
def test_generated_run_bodies_never_fault_the_server(em, fields):
    """Any JSON object for /em/pod/run with an unknown node: a 4xx naming a field, never a 5xx."""
    fields = {**fields, "node": "nowhere"}
    with login(em.url, "bob", "bob-pw") as bob:
        response = bob.post(
            "/em/pod/run", content=json.dumps(fields, allow_nan=True), headers={"Content-Type": "application/json"}
        )
    assert_error(em, response, 400, "INVALID_PARAMETERS")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=300),
    kind=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz"]),
)
def test_generated_bodies_are_4xx_and_change_nothing(em, raw, kind):
    before = snapshot(em.root, em.workdir / "canary")
    with login(em.url, "bob", "bob-pw") as bob:
        response = bob.post("/em/files/delete", content=raw, headers={"Content-Type": kind})
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) <= {"error", "message", "log_tail"}
    assert snapshot(em.root, em.workdir / "canary") == before
