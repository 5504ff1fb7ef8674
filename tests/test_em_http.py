"""The emulator's HTTP surface, spoken to with raw httpx as the official client did:
shapes and codes per endpoint, auth, token expiry, user isolation, traversal, body
encodings, GET/POST variants and the pvc_name alias."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import require_image
from .em_server import NO_PODS, EmulatorProcess
from .platforms import escapes_volume


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("em-http"), users=("alice:alice-pw", "bob:bob-pw")) as em:
        yield em


def login(url: str, user: str, password: str) -> httpx.Client:
    token = httpx.post(f"{url}/auth/", data={"username": user, "password": password}).json()["access"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture
def alice(server: EmulatorProcess) -> Iterator[httpx.Client]:
    with login(server.url, "alice", "alice-pw") as client:
        yield client


@pytest.fixture
def bob(server: EmulatorProcess) -> Iterator[httpx.Client]:
    with login(server.url, "bob", "bob-pw") as client:
        yield client


@pytest.fixture
def fresh(server: EmulatorProcess) -> Iterator[httpx.Client]:
    """A user of its own, for tests that need an empty account."""
    with login(server.url, *server.add_user("h")) as client:
        yield client


def up(client: httpx.Client, files: dict[str, bytes], **fields: str) -> httpx.Response:
    return client.post("/em/files/uplink", files=[("files", (n, c)) for n, c in files.items()], data=fields)


def wait_done(client: httpx.Client, pod_name: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/em/pod/status", params={"pod_name": pod_name}).json()["data"]["state"]
        if "terminated" in state:
            return state
        time.sleep(0.05)
    raise AssertionError(f"pod {pod_name} did not finish: {state}")


# auth ------------------------------------------------------------------------------------------


def test_login_form_and_json_bodies_and_paths(server):
    for post in (
        lambda p: httpx.post(server.url + p, data={"username": "alice", "password": "alice-pw"}),
        lambda p: httpx.post(server.url + p, json={"username": "alice", "password": "alice-pw"}),
    ):
        for path in ("/auth/", "/auth", "//auth/"):
            response = post(path)
            assert response.status_code == 200, response.text
            assert set(response.json()) == {"access", "refresh"}


def test_login_failures(server):
    wrong = httpx.post(f"{server.url}/auth/", data={"username": "alice", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "No active account found with the given credentials"}
    missing = httpx.post(f"{server.url}/auth/", data={"username": "alice"})
    assert missing.status_code == 400 and missing.json() == {"password": ["This field is required."]}
    assert (
        httpx.post(f"{server.url}/auth/", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    )


def test_em_routes_need_a_valid_bearer_token(server):
    assert httpx.get(f"{server.url}/em/files/list").status_code == 401
    bad = httpx.get(f"{server.url}/em/files/list", headers={"Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401 and bad.json()["code"] == "token_not_valid"
    pair = httpx.post(f"{server.url}/auth/", data={"username": "alice", "password": "alice-pw"}).json()
    as_access = httpx.get(f"{server.url}/em/files/list", headers={"Authorization": f"Bearer {pair['refresh']}"})
    assert as_access.status_code == 401  # a refresh token is not an access token


def test_refresh_gives_a_working_access_token(server):
    pair = httpx.post(f"{server.url}/auth/", data={"username": "bob", "password": "bob-pw"}).json()
    refreshed = httpx.post(f"{server.url}/auth/refresh", json={"refresh": pair["refresh"]})
    assert refreshed.status_code == 200 and set(refreshed.json()) == {"access"}
    token = refreshed.json()["access"]
    assert httpx.get(f"{server.url}/em/nodes/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.post(f"{server.url}/auth/refresh", json={"refresh": pair["access"]}).status_code == 401
    assert httpx.post(f"{server.url}/auth/refresh", data={}).status_code == 400


def test_tokens_expire(tmp_path):
    # 3 s, not 1: on a loaded machine the first request came after a 1 s token had expired.
    with EmulatorProcess(tmp_path / "em", users=("carol:pw",), token_lifetime=3, driver=NO_PODS) as em:
        issued = time.monotonic()
        client = login(em.url, "carol", "pw")
        assert client.get("/em/nodes/status").status_code == 200
        time.sleep(max(0.0, issued + 3.3 - time.monotonic()))
        expired = client.get("/em/nodes/status")
        assert expired.status_code == 401 and expired.json()["detail"] == "Token is invalid or expired"


# files -----------------------------------------------------------------------------------------


def test_uplink_list_downlink_delete_shapes(fresh):
    response = up(fresh, {"a.txt": b"hello", "b.bin": b"x" * 2048}, dest_path="exp-1", pod_name="pod-a")
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully uplinked files", "data": {"file_count": 2, "total_size_kb": 2.0}}
    listing = fresh.get("/em/files/list", params={"pod_name": "pod-a"}).json()
    assert listing["message"] == "Successfully listed files"
    [folder] = listing["data"]
    assert folder["type"] == "directory" and folder["name"] == "exp-1" and isinstance(folder["size"], str)
    assert "hash" not in folder
    entry = {e["name"]: e for e in folder["contents"]}["a.txt"]
    assert set(entry) == {"type", "name", "size", "time", "hash"}
    assert entry["size"] == "5" and isinstance(entry["hash"], int) and -(2**63) <= entry["hash"] < 2**63
    assert len(entry["time"]) == 16 and entry["time"][4] == "-"
    down = fresh.get("/em/files/downlink", params={"filepath": "./exp-1/a.txt", "pod_name": "pod-a"})
    assert down.status_code == 200 and down.content == b"hello"
    assert 'filename="a.txt"' in down.headers["content-disposition"]
    deleted = fresh.post("/em/files/delete", json={"filepath": "/exp-1/a.txt", "pod_name": "pod-a"})
    assert deleted.status_code == 200 and deleted.json() == {"message": "File deleted successfully"}
    gone = fresh.get("/em/files/downlink", params={"filepath": "exp-1/a.txt", "pod_name": "pod-a"})
    assert gone.status_code == 404 and gone.json()["error"] == "FILE_MISSING"
    again = fresh.post("/em/files/delete", data={"filepath": "exp-1/a.txt", "pod_name": "pod-a"})
    assert again.status_code == 400 and again.json()["error"] == "FILE_DELETE_FAILED"  # as the EM answers it, not 404
    assert set(again.json()) == {"error", "message"}


def test_uplink_without_files(fresh):
    for response in (
        fresh.post("/em/files/uplink", data={"pod_name": "pod-a"}),
        fresh.post("/em/files/uplink", files=[("other", ("x", b"1"))]),
        fresh.post("/em/files/uplink", json={"files": []}),
    ):
        assert response.status_code == 400
        assert response.json() == {"error": "NO_FILES", "message": "No files were provided for uplink!"}


def test_pvc_name_alias_and_get_post_variants(fresh):
    assert up(fresh, {"f.txt": b"in pod-p"}, pod_name="pod-p").status_code == 200
    by_pod = fresh.get("/em/files/list", params={"pod_name": "pod-p"}).json()
    assert fresh.post("/em/files/list", data={"pvc_name": "pod-p"}).json() == by_pod  # final CLI: POST + pvc_name
    assert fresh.post("/em/files/list", json={"pod_name": "pod-p"}).json() == by_pod
    assert fresh.get("/em/files/downlink", params={"filepath": "f.txt", "pvc_name": "pod-p"}).content == b"in pod-p"
    for path in ("/em/pod/image/list", "/em/nodes/status", "/em/pvc/list"):
        got, posted = fresh.get(path), fresh.post(path)
        assert got.status_code == posted.status_code == 200 and got.json() == posted.json()
    nodes = fresh.get("/em/nodes/status").json()
    assert nodes["message"] == "Nodes retrieved successfully."
    assert {n["name"] for n in nodes["data"]} == {"fpga", "gpu", "mpu1"} and {n["status"] for n in nodes["data"]} == {"True"}
    assert fresh.post("/em/files/delete", json={"filepath": "f.txt", "pvc_name": "pod-p"}).status_code == 200


def test_double_slashes_and_trailing_slashes(fresh):
    base = str(fresh.base_url).rstrip("/")
    assert fresh.get(base + "//em//files/list").status_code == 200  # the official client's BASE_URL + "/em/..."
    assert fresh.get("/em/nodes/status/").status_code == 200
    unknown = fresh.get("/em/no/such/route")
    assert unknown.status_code == 404 and unknown.json()["error"] == "NOT_FOUND"


# pods ------------------------------------------------------------------------------------------


def test_run_with_json_and_with_form_bodies(fresh):
    run = fresh.post(
        "/em/pod/run",
        json={
            "image": "alpine",
            "node": "MPU",
            "max_duration": 1,
            "pod_name": "pod-j",
            "command": "/bin/sh",
            "args": ["-c", "echo $SIZE > /data/j.txt"],
            "envs": {"SIZE": 1024},
        },
    )
    assert run.status_code == 200 and run.json() == {"message": "Docker run scheduled successfully"}
    state = wait_done(fresh, "pod-j")
    assert state["terminated"]["exitCode"] == 0
    assert fresh.get("/em/files/downlink", params={"filepath": "j.txt", "pod_name": "pod-j"}).content == b"1024\n"
    form = fresh.post(
        "/em/pod/run",
        headers={"X-Podrun-Extensions": "fractional-minutes"},
        data={
            "image": "alpine",
            "node": "fpga",
            "max_duration": "0.5",
            "pvc_name": "pod-k",
            "command": "/bin/sh",
            "args": '["-c", "echo form > /data/k.txt"]',
            "envs": '{"A": "1"}',
        },
    )
    assert form.status_code == 200, form.text
    wait_done(fresh, "pod-k")
    status = fresh.post("/em/pod/status?pod_name=pod-k")  # final CLI: POST with a query parameter
    assert status.json()["message"] == "Successfully fetched DPhi Pod status"
    assert status.json()["data"]["state"]["terminated"]["reason"] == "Completed"
    assert fresh.get("/em/files/downlink", params={"filepath": "k.txt", "pod_name": "pod-k"}).content == b"form\n"


@pytest.mark.parametrize(
    "body",
    [
        {"image": "alpine", "node": "TPU", "max_duration": 1},
        {"image": "alpine", "node": "MPU", "max_duration": "soon"},
        {"image": "alpine", "node": "MPU", "max_duration": -1},
        {"node": "MPU", "max_duration": 1},
        {"image": "alpine", "node": "MPU", "max_duration": 1, "pod_name": "Hey no whitespaces"},
        {"image": "alpine", "node": "MPU", "max_duration": 1, "ports": ["x"]},
        {"image": "alpine", "node": "MPU", "max_duration": 1, "envs": [1, 2]},
        {"image": "alpine", "node": "MPU", "max_duration": 1, "scheduled_time": "tomorrow"},
    ],
)
def test_bad_run_parameters_are_400_and_the_server_stays_up(fresh, body):
    response = fresh.post("/em/pod/run", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "INVALID_PARAMETERS" and response.json()["message"]
    assert fresh.get("/em/nodes/status").status_code == 200


def test_status_of_unknown_pod_is_404(fresh):
    response = fresh.get("/em/pod/status", params={"pod_name": "never-ran"})
    assert response.status_code == 404 and response.json()["error"] == "POD_NOT_FOUND"


def test_image_build_and_load_errors_carry_log_tail(fresh):
    build = fresh.post("/em/pod/image/build", json={"dockerfile": "x/Dockerfile", "image": "img", "context": "x/"})
    assert build.status_code == 400
    body = build.json()
    assert body["error"] == "BUILD_FAILED" and body["message"] == "Docker build failed" and isinstance(body["log_tail"], list)
    load = fresh.post("/em/pod/image/load", data={"tarfile": "t.tar", "image": "img"})
    assert load.status_code == 400 and load.json()["error"] == "IMAGE_LOAD_FAILED" and load.json()["log_tail"]
    require_image("busybox")
    up(fresh, {"Dockerfile": b"FROM fpga.dphi.space:5000/busybox\n"}, dest_path="app")
    ok = fresh.post("/em/pod/image/build", data={"dockerfile": "app/Dockerfile", "image": "app", "context": "app/"})
    assert ok.status_code == 200 and ok.json() == {"message": "Docker Image built successfully"}
    images = fresh.get("/em/pod/image/list").json()
    assert images["message"] == "Successfully loaded list of docker images" and len(images["data"]) == 1


def test_pvc_list_and_delete(fresh):
    up(fresh, {"f": b"1"}, pod_name="vol-1")
    up(fresh, {"f": b"1"})
    names = fresh.post("/em/pvc/list").json()["data"]
    assert "vol-1" in names and any(n.endswith("-pvc") for n in names)
    assert fresh.post("/em/pvc/delete", json={"pvc_name": "vol-1"}).json() == {"message": "Volume deleted successfully"}
    assert "vol-1" not in fresh.post("/em/pvc/list").json()["data"]
    assert fresh.post("/em/pvc/delete", json={"pvc_name": "vol-1"}).status_code == 404
    assert fresh.post("/em/pvc/delete", json={}).status_code == 400


# isolation -------------------------------------------------------------------------------------


def test_users_are_isolated(alice, bob):
    up(alice, {"secret.txt": b"alice only"})
    up(alice, {"secret.txt": b"alice pod"}, pod_name="shared-name")
    assert "secret.txt" not in str(bob.get("/em/files/list").json()["data"])
    assert "secret.txt" not in str(bob.get("/em/files/list", params={"pod_name": "shared-name"}).json()["data"])
    assert bob.get("/em/files/downlink", params={"filepath": "secret.txt", "pod_name": "shared-name"}).status_code == 404
    assert bob.get("/em/files/downlink", params={"filepath": "../alice/alice-pvc/secret.txt"}).status_code == 403
    assert bob.post("/em/files/delete", json={"filepath": "secret.txt", "pod_name": "shared-name"}).status_code == 400
    assert bob.post("/em/pvc/delete", json={"pvc_name": "alice-pvc"}).status_code in (400, 404)
    bob.post(
        "/em/pod/run",
        json={
            "image": "alpine",
            "node": "MPU",
            "max_duration": 1,
            "pod_name": "shared-name",
            "command": "/bin/sh",
            "args": ["-c", "ls /data > /data/seen.txt; rm -f /data/secret.txt"],
        },
    )
    wait_done(bob, "shared-name")
    assert b"secret" not in bob.get("/em/files/downlink", params={"filepath": "seen.txt", "pod_name": "shared-name"}).content
    assert alice.get("/em/files/downlink", params={"filepath": "secret.txt", "pod_name": "shared-name"}).content == b"alice pod"
    assert alice.get("/em/files/downlink", params={"filepath": "secret.txt"}).content == b"alice only"
    assert bob.get("/em/pvc/list").json()["data"] != alice.get("/em/pvc/list").json()["data"]


_segments = st.sampled_from(["..", ".", "a", "", "..%2f", "b.txt", "...", "%2e%2e"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_segments, min_size=1, max_size=6), lead=st.sampled_from(["", "/", "./"]))
def test_generated_traversal_paths_are_403_or_stay_inside(alice, parts, lead):
    path = lead + "/".join(parts)
    escapes = escapes_volume(parts)
    down = alice.get("/em/files/downlink", params={"filepath": path, "pod_name": "trav"})
    dele = alice.post("/em/files/delete", json={"filepath": path, "pod_name": "trav"})
    upl = up(alice, {"probe": b"p"}, dest_path=path, pod_name="trav")
    if escapes:
        assert (down.status_code, dele.status_code, upl.status_code) == (403, 403, 403)
        assert down.json()["error"] == "ILLEGAL_PATH"
    else:
        assert down.status_code in ((403, 404) if path else (400,))  # no filepath at all: a missing field
        assert dele.status_code in (200, 400) and upl.status_code == 200
    assert alice.get("/em/nodes/status").status_code == 200


def test_bad_uplink_file_names_are_403(fresh):
    for name in ("../evil", "a/b", ".."):
        response = up(fresh, {name: b"x"})
        assert response.status_code == 403 and response.json()["error"] == "ILLEGAL_PATH", name


# docs ------------------------------------------------------------------------------------------


def test_openapi_and_docs_list_every_route(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/auth/",
        "/em/files/uplink",
        "/em/files/list",
        "/em/files/downlink",
        "/em/files/delete",
        "/em/pod/image/build",
        "/em/pod/image/load",
        "/em/pod/image/list",
        "/em/pod/run",
        "/em/pod/status",
        "/em/nodes/status",
        "/em/pvc/list",
        "/em/pvc/delete",
    ):
        assert path in spec["paths"]
    assert set(spec["paths"]["/em/files/list"]) == {"get", "post"}
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/em/pod/run" in page.text


def test_flight_model_uplink_limit(tmp_path: Path):
    with EmulatorProcess(tmp_path / "em", "--max-uplink-bytes", "5000000", users=("fm:pw",), driver=NO_PODS) as em:
        client = login(em.url, "fm", "pw")
        too_big = up(client, {"a": b"x" * 3_000_000, "b": b"y" * 3_000_000})
        assert too_big.status_code == 400
        assert too_big.json() == {"error": "MAX_UPLINK_SIZE_EXCEEDED", "message": "Total upload size exceeds 5 MB"}
        assert up(client, {"a": b"x" * 3_000_000}).status_code == 200
        assert client.get("/em/files/list").status_code == 200


# operation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["critical", "error", "warning", "info", "debug", "trace"])
def test_every_log_level_starts_and_serves(tmp_path, level):
    with (EmulatorProcess(tmp_path / "em", "--log-level", level, users=("lv:pw",), driver=NO_PODS) as em,
          login(em.url, "lv", "pw") as client):
        assert client.get("/em/nodes/status").status_code == 200


def test_binding_beyond_loopback_needs_an_explicit_flag_and_warns():
    from podrun.emulator.server import bind_warning

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert bind_warning(host, allow_remote=False) is None
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(ValueError, match="--allow-remote"):
            bind_warning(host, allow_remote=False)
        warning = bind_warning(host, allow_remote=True)
        assert warning and warning.startswith("WARNING") and host in warning and "clear text" in warning


def test_state_under_the_root_is_private(fresh, server):
    up(fresh, {"a.txt": b"1"}, dest_path="deep/er", pod_name="priv")
    up(fresh, {"Dockerfile": b"FROM alpine\n"}, pod_name="priv")
    assert (
        fresh.post("/em/pod/image/build", json={"dockerfile": "Dockerfile", "image": "priv-img", "pod_name": "priv"}).status_code
        == 200
    )
    fresh.post(
        "/em/pod/run",
        json={
            "image": "alpine",
            "node": "MPU",
            "max_duration": 1,
            "pod_name": "priv",
            "command": "/bin/sh",
            "args": ["-c", "mkdir -p /data/made && echo x > /data/made/by-pod"],
        },
    )
    wait_done(fresh, "priv")
    assert (server.root.stat().st_mode & 0o777) == 0o700
    loose = []
    for folder, dirs, files in os.walk(server.root):
        relative = Path(folder).relative_to(server.root)
        if relative.parts[:1] == ("volumes",) and len(relative.parts) >= 3:
            # Inside a volume: what pods write carries the pod's own umask; the volume's own folder
            # and its parents (checked above this depth) are 0700, so no other local user reaches it.
            continue
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if not path.is_symlink() and path.lstat().st_mode & 0o077:
                loose.append(f"{oct(path.lstat().st_mode)} {path.relative_to(server.root)}")
    assert not loose, loose
    uplinked = next(server.root.glob("volumes/*/priv/deep/er/a.txt"))
    assert uplinked.stat().st_mode & 0o777 == 0o600 and uplinked.parent.stat().st_mode & 0o777 == 0o700


def test_passwords_stay_off_the_command_line_and_out_of_the_pods(tmp_path):
    password = "pw-" + "q" * 20
    with EmulatorProcess(tmp_path / "em", env={"PODRUN_EMULATOR_USERS": f"envuser:{password}"}) as em:
        assert em.proc is not None
        assert password.encode() not in Path(f"/proc/{em.proc.pid}/cmdline").read_bytes()
        client = login(em.url, "envuser", password)
        client.post(
            "/em/pod/run",
            json={
                "image": "alpine",
                "node": "MPU",
                "max_duration": 1,
                "pod_name": "env",
                "command": "/bin/sh",
                "args": ["-c", "cat /proc/$PPID/environ /proc/$PPID/cmdline > /data/parent.txt; env >> /data/parent.txt"],
            },
        )
        wait_done(client, "env")
        seen = client.get("/em/files/downlink", params={"filepath": "parent.txt", "pod_name": "env"})
        assert seen.status_code == 200 and len(seen.content) > 20
        assert password.encode() not in seen.content and b"PODRUN_EMULATOR_USERS" not in seen.content


def test_file_names_beyond_latin_1_downlink_with_rfc_6266(fresh):
    name = "naïve-東京-résumé.txt"
    assert up(fresh, {name: b"unicode"}, pod_name="names").status_code == 200
    down = fresh.get("/em/files/downlink", params={"filepath": name, "pod_name": "names"})
    assert down.status_code == 200 and down.content == b"unicode"
    disposition = down.headers["content-disposition"]
    assert "filename*=UTF-8''" in disposition and disposition.isascii()
    encoded = disposition.split("filename*=UTF-8''", 1)[1].split(";", 1)[0]
    assert unquote(encoded) == name
    naive = disposition.split("filename=")[1].strip('"')  # how DPhi's client reads it: a usable ASCII name
    assert naive.isascii() and naive.endswith(".txt")
    fresh.post(
        "/em/pod/run",
        json={
            "image": "alpine",
            "node": "MPU",
            "max_duration": 1,
            "pod_name": "names",
            "command": "/bin/sh",
            "args": ["-c", "printf x > \"/data/$(printf 'a\\r\\nX-Injected: 1')\""],
        },
    )
    wait_done(fresh, "names")
    injected = fresh.get("/em/files/downlink", params={"filepath": "a\r\nX-Injected: 1", "pod_name": "names"})
    assert injected.status_code == 200 and "x-injected" not in injected.headers and injected.content == b"x"
    assert fresh.get("/em/files/list", params={"pod_name": "names"}).status_code == 200


def test_the_scrubber_hides_every_host_path(tmp_path, monkeypatch):
    from podrun.emulator.answers import Scrubber

    store = tmp_path / "store"
    monkeypatch.setenv("PODRUN_IMAGE_STORE", str(store))
    scrub = Scrubber(tmp_path / "root")
    text = scrub(f"open {tmp_path}/root/volumes/alice/pod-a/x: denied; {store}/overlay; {sys.prefix}/lib; {tmp_path}/other")
    assert text == "open /clients/pod-a/x: denied; <host>/overlay; <host>/lib; <host>/other"
