"""Images are images: the local store, stock images made from Debian packages, offline builds,
checked loads.

The first group needs nothing installed. The rest use the session's prepared image store
(``tests/conftest.py``: ``PODRUN_TEST_IMAGE_STORE``, prepared by ``.ci/run``) and real podman;
an image that is not prepared skips with the command that prepares it (and fails in CI).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podrun.errors import InvalidRequest
from podrun.platform.local import LocalPlatform, stock
from podrun.platform.local.builds import BuildFailed, name_matches, rewrite_from, tar_identity
from podrun.platform.local.images import Image, ImageStore, normalize, pod_arch, stock_ref, user_ref
from podrun.platform.types import PodSpec

from .conftest import TEST_IMAGE_STORE, require_image
from .platforms import wait_terminal

REGISTRY = "fpga.dphi.space:5000/"
_MACHINE = {"arm64": "aarch64", "amd64": "x86_64"}
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}(/[a-z0-9][a-z0-9._-]{0,10})?(:[a-z0-9][a-z0-9.-]{0,10})?", fullmatch=True)


# --- names and Dockerfiles, without an engine ------------------------------------------------

@given(names)
def test_every_spelling_of_a_name_normalises_to_one(name: str) -> None:
    plain = normalize(name)
    assert normalize(plain) == plain
    for spelled in (REGISTRY + name, "docker.io/library/" + name, "localhost/" + name):
        assert normalize(spelled) == plain
    assert normalize(plain + ":latest") == plain if ":" not in plain.rsplit("/", 1)[-1] else True


@given(names, st.sampled_from(["alice", "bob", "alice-bob"]), st.sampled_from(["bob", "x", "bob-x"]))
def test_store_names_never_collide_across_users_or_with_stock(name: str, user: str, other: str) -> None:
    assert user_ref(user, name) != stock_ref(name, "arm64")
    if user != other:
        assert user_ref(user, name) != user_ref(other, name)
    assert user_ref(user, REGISTRY + name) == user_ref(user, name)


def _resolver(known: dict[str, str]):
    def resolve(name: str) -> Image | None:
        key = normalize(name)
        return Image(id=known[key], names=(key,), arch="amd64") if key in known else None
    return resolve


def test_from_lines_name_store_ids_args_expand_and_stages_stay() -> None:
    text = ("# comment\nARG BASE=python:3.11-slim\nARG TAG\nFROM ${BASE} AS build\nRUN echo a \\\n  && echo b\n"
            f"FROM {REGISTRY}busybox:latest\nCOPY --from=build /x /x\nFROM build\n")
    out = rewrite_from(text, _resolver({"python:3.11-slim": "a" * 64, "busybox": "b" * 64}))
    assert f"FROM {'a' * 64} AS build" in out and f"FROM {'b' * 64}" in out and out.rstrip().endswith("FROM build")
    assert "RUN echo a \\\n  && echo b\n" in out and out.startswith("# comment\n")  # the rest stays byte for byte


@pytest.mark.parametrize("base", ["python:3.10-slim", f"{REGISTRY}python:3.12-alpine", "$MISSING", "UPPER/case"])
def test_unknown_base_fails_the_build_in_buildkit_words(base: str) -> None:
    with pytest.raises(BuildFailed) as info:
        rewrite_from(f"FROM {base}\nRUN true\n", _resolver({"python:3.11-slim": "a" * 64}))
    assert "failed to resolve source metadata" in info.value.lines[-1]


@pytest.mark.parametrize(("image", "tags", "ok"), [
    ("echo", ["echo:latest"], True), ("echo", ["docker.io/library/echo:latest"], True), ("echo", ["localhost/echo"], True),
    ("echo", ["alice-echo:latest"], True), ("echo:v2", ["echo:v2"], True), ("echo", ["echo:v2"], False),
    ("echo", ["other:latest"], False), ("echo", [], False), ("echo", ["bob-echo"], False),
])
def test_a_tar_loads_only_under_a_name_its_tags_give(image: str, tags: list[str], ok: bool) -> None:
    assert name_matches(image, tags, "alice") is ok


def test_preparable_names_and_what_cannot_be_made() -> None:
    assert {"python:3.11-slim", "python:3.11", "dphi-embedded-ml-armv8-py311", "alpine", "busybox"} <= set(stock.PREPARABLE)
    assert not {"python:3.10-slim", "python:3.12", "python:3.12-alpine"} & set(stock.PREPARABLE)
    ml = stock.RECIPES["dphi-embedded-ml-armv8-py311"]
    assert {"python3-numpy", "python3-cloudpickle", "python3-msgpack", "python3-zstandard"} <= set(ml.packages)
    assert "onnxruntime" in ml.note and "torch" in ml.note  # what is missing is said
    assert "python3" not in stock.RECIPES["busybox"].packages
    with pytest.raises(stock.PrepareError, match="preparable: .*python:3.11-slim"):
        stock.recipe_for("python:3.12-slim")


# --- the store and stock images ------------------------------------------------------------

@pytest.fixture
def store() -> ImageStore:
    return ImageStore(TEST_IMAGE_STORE)


@pytest.fixture
def container(podrun_home: Path):
    require_image("busybox")
    platform = LocalPlatform(podrun_home / "local", driver="container")
    yield platform
    platform.shutdown()


def _run(platform: LocalPlatform, image: str, script: str, pod_name: str = "p", **kw) -> str:
    """Run ``script`` with the image's /bin/sh; its stdout goes to the volume (CG2 keeps none)."""
    platform.run_pod(PodSpec(image=image, node="MPU", max_duration=1, pod_name=pod_name, command="/bin/sh",
                             args=["-c", f"({script}) > /data/out.txt 2>&1"], **kw))
    state = wait_terminal(platform, pod_name)
    out = (platform.volume_path(pod_name) / "out.txt").read_text() if state.is_terminal else ""
    assert state.is_terminal and state.exit_code == 0, (state, out)
    return out


def test_a_prepared_image_is_found_under_every_spelling(store: ImageStore) -> None:
    image = require_image("python:3.11-slim")
    for name in ("python:3.11-slim", f"{REGISTRY}python:3.11-slim", "docker.io/library/python:3.11-slim:latest"[:-7]):
        found = store.resolve(name)
        assert found is not None and found.id == image.id
    assert image.cmd == ["python3"] and image.env["PATH"].startswith("/usr/local/sbin")
    assert store.resolve("python:3.11-slim", user="nobody-here").id == image.id  # no user image: the stock one
    assert store.resolve("python:3.12-slim") is None and store.resolve("../etc") is None


def test_prepare_again_is_a_no_op(store: ImageStore) -> None:
    require_image("busybox")
    done = stock.prepare(store, "busybox", pod_arch("host"))
    assert done.done == "present" and done.seconds == 0.0


def test_stock_python_image_is_python_and_nothing_else(container: LocalPlatform) -> None:
    require_image("python:3.11-slim")
    out = _run(container, "python:3.11-slim", "python -c 'import sys, platform; print(sys.version_info[:2], sys.executable)'; "
               "python -c 'import numpy' || echo no-numpy; python -c 'import podrun' || echo no-podrun; "
               "ls /work /root/.local 2>&1 | head -2")
    assert "(3, 11) /usr/local/bin/python" in out and "no-numpy" in out and "no-podrun" in out
    assert "No such file or directory" in out  # nothing of this machine's trees


def test_busybox_and_alpine_have_a_shell_and_no_python(container: LocalPlatform) -> None:
    for image in ("busybox", "alpine"):
        out = _run(container, image, "which wget sh; python3 -c pass || echo no-python", pod_name=image)
        assert "/usr/bin/wget" in out and "no-python" in out


def test_an_image_that_cannot_be_made_here_waits_as_on_cg2(container: LocalPlatform) -> None:
    container.run_pod(PodSpec(image=f"{REGISTRY}python:3.12-alpine", node="MPU", max_duration=1, pod_name="p312"))
    state = container.pod_status("p312")
    assert state.phase == "waiting" and state.reason == "ImagePullBackOff"
    assert "podrun images prepare" in state.detail["message"] and "dphi-embedded-ml-armv8-py311" in state.detail["message"]


def test_a_preparable_image_not_prepared_says_the_command(podrun_home: Path, store: ImageStore) -> None:
    require_image("busybox")
    missing = next(name for name in stock.RECIPES if store.resolve(name, arch="arm64") is None)
    platform = LocalPlatform(podrun_home / "local", driver="container", arch="arm64")
    platform.run_pod(PodSpec(image=missing, node="MPU", max_duration=1, pod_name="p"))
    state = platform.pod_status("p")
    assert state.reason == "ErrImagePull" and f"podrun images prepare {missing} --arch arm64" in state.detail["message"]


# --- builds -------------------------------------------------------------------------------

FULL_DOCKERFILE = """\
FROM fpga.dphi.space:5000/python:3.11-slim
ARG GREETING=hello
ENV APP_HOME=/app MODE=test
WORKDIR /app
COPY entry.sh ./
ADD data/ ./data/
RUN echo "$GREETING from RUN" > /app/run.txt && python -c "import sys; print(sys.version)" > /app/version.txt
USER nobody
ENTRYPOINT ["/bin/sh", "/app/entry.sh"]
CMD ["default-arg"]
"""


def _uplink_context(platform: LocalPlatform, dockerfile: str, pod_name: str = "b") -> None:
    platform.uplink([("Dockerfile", dockerfile.encode()), ("entry.sh", b'echo "$MODE $*" > /data/entry.txt\n')],
                    dest_path="app", pod_name=pod_name)
    platform.uplink([("input.txt", b"context data")], dest_path="app/data", pod_name=pod_name)


def test_build_runs_every_instruction_offline(container: LocalPlatform) -> None:
    require_image("python:3.11-slim")
    _uplink_context(container, FULL_DOCKERFILE)
    container.image_build("app/Dockerfile", "full", "app/", pod_name="b")
    built = container.resolve_image("full")
    assert built is not None and built.workdir == "/app" and built.user == "nobody"
    assert built.entrypoint == ["/bin/sh", "/app/entry.sh"] and built.cmd == ["default-arg"]
    assert built.env["MODE"] == "test" and built.env["APP_HOME"] == "/app"
    container.volume_path("b").chmod(0o777)  # USER nobody writes the volume (a PVC with a group that lets it)
    out = _run(container, "full", "cat /app/run.txt /app/data/input.txt; id -u; sh /app/entry.sh x", pod_name="b")
    assert "hello from RUN" in out and "context data" in out and "65534" in out
    assert (container.volume_path("b") / "entry.txt").read_text() == "test x\n"
    rows = container.image_list()
    assert [row["Repository"] for row in rows] == ["local-full"] and rows[0]["ID"] == built.short_id


def test_run_has_no_network_so_pip_install_fails_the_build(container: LocalPlatform) -> None:
    require_image("python:3.11-slim")
    # No retries: pip's default five, with backoff, took 9 s to say the same.
    container.uplink([("Dockerfile", b"FROM python:3.11-slim\nRUN pip install --retries 0 numpy\n")], dest_path="pip",
                     pod_name="b")
    with pytest.raises(InvalidRequest) as info:
        container.image_build("pip/Dockerfile", "pip", "pip/", pod_name="b")
    assert info.value.code == "BUILD_FAILED"
    tail = "".join(info.value.log_tail)
    assert "No matching distribution found for numpy" in tail and "RUN pip install --retries 0 numpy" in tail
    assert container.resolve_image("pip") is None


def test_build_logs_show_no_host_path(container: LocalPlatform, podrun_home: Path) -> None:
    require_image("busybox")
    container.uplink([("Dockerfile", b"FROM busybox\nCOPY missing.txt /\n")], dest_path="bad", pod_name="b")
    with pytest.raises(InvalidRequest) as info:
        container.image_build("bad/Dockerfile", "bad", "bad/", pod_name="b")
    tail = "".join(info.value.log_tail)
    assert "missing.txt" in tail and str(podrun_home) not in tail and str(TEST_IMAGE_STORE) not in tail


def test_a_symlink_in_the_context_cannot_copy_a_host_file(container: LocalPlatform) -> None:
    require_image("busybox")
    context = container.volume_path("b") / "link"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM busybox\nCOPY secret /secret\n")
    (context / "secret").symlink_to("/etc/hostname")
    try:
        container.image_build("link/Dockerfile", "link", "link/", pod_name="b")
    except InvalidRequest as failed:
        assert failed.code == "BUILD_FAILED"
        return
    host = Path("/etc/hostname").read_text()
    assert _run(container, "link", "cat /secret || true", pod_name="b") != host


def test_a_built_image_is_its_users_alone(container: LocalPlatform, podrun_home: Path) -> None:
    require_image("busybox")
    container.uplink([("Dockerfile", b"FROM busybox\nRUN echo mine > /mine\n")], dest_path="own", pod_name="b")
    container.image_build("own/Dockerfile", "own", "own/", pod_name="b")
    other = LocalPlatform(podrun_home / "local", user="bob", driver="container")
    try:
        assert other.image_list() == [] and other.resolve_image("own") is None
        other.run_pod(PodSpec(image="own", node="MPU", max_duration=1, pod_name="p"))
        assert other.pod_status("p").reason == "ImagePullBackOff"
        other.uplink([("Dockerfile", b"FROM local-own\n")], dest_path="x", pod_name="q")
        with pytest.raises(InvalidRequest):
            other.image_build("x/Dockerfile", "x", "x/", pod_name="q")
    finally:
        other.shutdown()
    # Its owner builds on it by either name.
    container.uplink([("Dockerfile", b"FROM own\nRUN cat /mine\n")], dest_path="on", pod_name="b")
    container.image_build("on/Dockerfile", "on-own", "on/", pod_name="b")


# --- loads ---------------------------------------------------------------------------------

def _save(store: ImageStore, image: Image, name: str, out: Path, fmt: str = "docker-archive") -> Path:
    """A real ``docker save`` (or OCI) tar of ``image`` tagged ``name``, as a ground build makes it."""
    store.tag(image, f"localhost/{name}")
    try:
        store.run("save", "--format", fmt, "-o", str(out), f"localhost/{name}", check=True)
    finally:
        store.untag(image, f"localhost/{name}")
    return out


def test_a_saved_image_loads_under_its_name_and_runs(container: LocalPlatform, store: ImageStore, tmp_path: Path) -> None:
    busybox = require_image("busybox")
    for fmt in ("docker-archive", "oci-archive"):
        tar = _save(store, busybox, "exp-2", tmp_path / f"{fmt}.tar", fmt)
        image_id, tags = tar_identity(tar)
        assert image_id == busybox.id and any("exp-2" in tag for tag in tags)
        container.uplink([(tar.name, tar)], dest_path="images", pod_name="l")
        with pytest.raises(InvalidRequest) as info:
            container.image_load(f"images/{tar.name}", "other-name", pod_name="l")
        assert info.value.code == "IMAGE_LOAD_FAILED" and "do not match" in info.value.log_tail[-1]
        assert container.resolve_image("other-name") is None  # nothing was loaded
        container.image_load(f"images/{tar.name}", "exp-2", pod_name="l")
        assert container.resolve_image("exp-2").id == busybox.id
    assert "local-exp-2" in [row["Repository"] for row in container.image_list()]
    assert "ok" in _run(container, "exp-2", "echo ok", pod_name="l")


def test_a_tar_naming_a_store_name_or_garbage_is_refused(container: LocalPlatform, store: ImageStore, tmp_path: Path) -> None:
    busybox = require_image("busybox")
    python = stock_ref("python:3.11-slim", "amd64")
    store.run("save", "--format", "docker-archive", "-o", str(tmp_path / "evil.tar"), busybox.id, check=True)
    with tarfile.open(tmp_path / "evil.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    manifest[0]["RepoTags"] = [python]
    with tarfile.open(tmp_path / "evil.tar", "a") as archive:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    container.uplink([("evil.tar", tmp_path / "evil.tar"), ("junk.tar", tmp_path / "junk.tar")], pod_name="l")
    before = store.inspect(python)
    for tar, name in (("evil.tar", python), ("junk.tar", "junk")):
        with pytest.raises(InvalidRequest) as info:
            container.image_load(tar, name if "/" not in name else "python", pod_name="l")
        assert info.value.code == "IMAGE_LOAD_FAILED"
    after = store.inspect(python)
    assert (before.id if before else None) == (after.id if after else None)


@pytest.mark.parametrize("arch", ["host", pytest.param("arm64", marks=pytest.mark.slow)])
def test_a_ground_build_loads_back_and_runs(arch: str, podrun_home: Path, tmp_path: Path) -> None:
    """``podrun images build`` with podman: offline, from the prepared base; the tar it writes
    is a real ``docker save`` that ``images push`` loads and a pod runs (arm64: CG2's target)."""
    from podrun.client import images

    require_image("busybox")
    require_image("python:3.11-slim", arch)
    container = LocalPlatform(podrun_home / "local", driver="container", arch=arch)
    tar = images.build("podrun-rt", tmp_path / "rt.tar", engine="podman", arch=arch)
    ImageStore(TEST_IMAGE_STORE).remove_all(user_ref("ground", "podrun-rt"))  # the tar holds it now
    assert tar_identity(tar)[1] == ["localhost/podrun-rt:latest"]
    images.push(tar, "podrun-rt", platform=container, pod_name="rt")
    loaded = container.resolve_image("podrun-rt")
    assert loaded is not None and loaded.cmd == ["python", "-m", "podrun.runtime"] and loaded.workdir == "/data"
    assert loaded.arch == pod_arch(arch)
    out = _run(container, "podrun-rt", "python -c 'import podrun.runtime, cloudpickle, platform; "
               "print(podrun.runtime.__file__, platform.machine())'", pod_name="rt")
    assert out.startswith("/opt/podrun/podrun-runtime.pyz/") and out.split()[-1] == _MACHINE[pod_arch(arch)]


def _plus_one(x: int) -> int:
    return x + 1


def test_a_313_pods_own_report_refuses_a_311_client_before_any_byte(container: LocalPlatform) -> None:
    """The image's name says nothing of its Python (a user's build on Debian trixie's 3.13): the
    first job reaches the pod, whose runtime reports its environment; from then on a call is
    refused at ``.remote()`` with nothing uplinked."""
    import podrun
    from podrun.errors import EnvironmentMismatch

    require_image("python:3.13-slim")
    container.uplink([("Dockerfile", b"FROM python:3.13-slim\n")], dest_path="t", pod_name="b")
    container.image_build("t/Dockerfile", "mystery", "t/", pod_name="b")
    podrun.configure(container)
    fn = podrun.remote(_plus_one, image="mystery", max_duration=1)
    with pytest.raises((EnvironmentMismatch, podrun.PodFailed, podrun.RemoteError)) as first:
        fn.remote(1).get(timeout=120)
    assert "3.13" in str(first.value)
    before = podrun.stats()["bytes_up"]
    with pytest.raises(EnvironmentMismatch, match=r"Python 3\.1[01].*runs Python 3\.13 \(as its pod reported"):
        fn.remote(2)
    assert podrun.stats()["bytes_up"] == before


def test_rootfs_is_the_images_own_tree(store: ImageStore) -> None:
    busybox = require_image("busybox")
    root = store.rootfs(busybox)
    try:
        assert (root / "bin" / "busybox").is_file() and (root / "usr" / "bin" / "wget").is_symlink()
        assert not (root / "usr" / "bin" / "python3").exists()
    finally:
        store.release(busybox)


def test_a_context_that_is_a_symlink_out_of_the_volume_is_refused(container: LocalPlatform) -> None:
    require_image("busybox")
    container.uplink([("Dockerfile", b"FROM busybox\nCOPY hostname /stolen\n")], dest_path="df", pod_name="b")
    (container.volume_path("b") / "etc-link").symlink_to("/etc")
    with pytest.raises(InvalidRequest):
        container.image_build("df/Dockerfile", "stolen", "etc-link/", pod_name="b")
    assert container.resolve_image("stolen") is None
