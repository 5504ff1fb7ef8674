"""The Platform contract (DESIGN.md), run against every implementation in platforms.py."""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podrun.errors import IllegalPath, InvalidRequest, NotFound
from podrun.platform.types import PodSpec, walk_entries

from .conftest import require_image
from .platforms import escapes_volume, wait_terminal


def sh(script: str, pod_name: str | None = None, **kw) -> PodSpec:
    return PodSpec(image="alpine", node=kw.pop("node", "MPU"), max_duration=kw.pop("max_duration", 1),
                   command="/bin/sh", args=["-c", script], pod_name=pod_name, **kw)


# files -------------------------------------------------------------------------------------

def test_uplink_list_downlink_round_trip(platform, tmp_path):
    local_file = tmp_path / "from-path.bin"
    local_file.write_bytes(b"path content")
    result = platform.uplink(
        [("a.txt", b"hello"), ("b.bin", local_file), ("c.dat", io.BytesIO(b"stream content"))],
        dest_path="exp-1/inputs", pod_name="pod-a",
    )
    assert result["file_count"] == 3
    files = walk_entries(platform.list_files("pod-a"))
    assert {"exp-1/inputs/a.txt", "exp-1/inputs/b.bin", "exp-1/inputs/c.dat"} <= set(files)
    entry = files["exp-1/inputs/a.txt"]
    assert entry.size == 5 and isinstance(entry.hash, int) and -(2**63) <= entry.hash < 2**63
    assert len(entry.time) == len("2025-11-20-12-31")
    assert platform.downlink("exp-1/inputs/a.txt", "pod-a") == b"hello"
    assert platform.downlink("/exp-1/inputs/b.bin", "pod-a") == b"path content"
    assert platform.downlink("./exp-1/inputs/c.dat", "pod-a") == b"stream content"
    sink = io.BytesIO()
    assert platform.downlink_into("exp-1/inputs/a.txt", sink, "pod-a") == 5 and sink.getvalue() == b"hello"


def test_same_content_same_hash_and_overwrite(platform):
    platform.uplink([("x", b"same"), ("y", b"same")], pod_name="pod-h")
    files = walk_entries(platform.list_files("pod-h"))
    assert files["x"].hash == files["y"].hash
    platform.uplink([("x", b"changed")], pod_name="pod-h")
    assert platform.downlink("x", "pod-h") == b"changed"
    assert walk_entries(platform.list_files("pod-h"))["x"].hash != files["y"].hash


def test_uplink_without_files_is_no_files(platform):
    with pytest.raises(InvalidRequest) as info:
        platform.uplink([], pod_name="pod-a")
    assert info.value.code == "NO_FILES"


def test_volumes_are_isolated_per_pod_name(platform):
    platform.uplink([("secret.txt", b"a")], pod_name="pod-a")
    platform.uplink([("default.txt", b"d")])
    assert "secret.txt" not in walk_entries(platform.list_files("pod-b"))
    assert "secret.txt" not in walk_entries(platform.list_files())
    assert "default.txt" in walk_entries(platform.list_files())
    with pytest.raises(NotFound):
        platform.downlink("secret.txt", "pod-b")


def test_delete_file_and_folder(platform):
    platform.uplink([("one", b"1"), ("two", b"2")], dest_path="dir/sub", pod_name="pod-d")
    platform.uplink([("keep", b"k")], pod_name="pod-d")
    platform.delete("dir/sub/one", "pod-d")
    assert set(walk_entries(platform.list_files("pod-d"))) == {"dir/sub/two", "keep"}
    platform.delete("/dir", "pod-d")
    assert set(walk_entries(platform.list_files("pod-d"))) == {"keep"}
    with pytest.raises(NotFound):
        platform.delete("dir", "pod-d")


def test_missing_file_is_not_found(platform):
    with pytest.raises(NotFound):
        platform.downlink("nope.txt", "pod-a")


@pytest.mark.parametrize("bad", ["../escape", "a/../../escape", "..", "x/\x00y"])
def test_traversal_is_refused(platform, bad):
    with pytest.raises(IllegalPath):
        platform.downlink(bad, "pod-a")
    with pytest.raises(IllegalPath):
        platform.uplink([("f", b"x")], dest_path=bad, pod_name="pod-a")
    with pytest.raises(IllegalPath):
        platform.delete(bad, "pod-a")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["..", ".", "a", "b", "", "c.txt"]), min_size=1, max_size=6))
def test_generated_paths_never_escape(platform, parts):
    """Whatever a path is made of, it resolves inside the volume or is refused."""
    path = "/".join(parts)
    escapes = escapes_volume(parts)
    try:
        platform.uplink([("probe", b"p")], dest_path=path, pod_name="pod-g")
    except IllegalPath:
        assert escapes
    else:
        assert not escapes
        assert any(p.endswith("probe") for p in walk_entries(platform.list_files("pod-g")))


def test_bad_uplink_file_name_is_refused(platform):
    with pytest.raises(IllegalPath):
        platform.uplink([("../evil", b"x")], pod_name="pod-a")


# pods --------------------------------------------------------------------------------------

def test_pod_writes_to_data_and_completes(platform):
    platform.run_pod(sh("echo hi > /data/hello.txt; echo $GREETING > /data/env.txt", "pod-r", envs={"GREETING": "space", "N": 3}))
    state = wait_terminal(platform, "pod-r")
    assert state.phase == "terminated" and state.exit_code == 0 and state.reason == "Completed"
    assert state.detail["startedAt"] and state.detail["finishedAt"]
    assert platform.downlink("hello.txt", "pod-r") == b"hi\n"
    assert platform.downlink("env.txt", "pod-r") == b"space\n"


def test_default_pod_uses_default_volume(platform):
    platform.run_pod(sh("echo default > /data/d.txt"))
    assert wait_terminal(platform).exit_code == 0
    assert platform.downlink("d.txt") == b"default\n"


def test_failing_pod_reports_exit_code(platform):
    platform.run_pod(sh("exit 3", "pod-f"))
    state = wait_terminal(platform, "pod-f")
    assert (state.exit_code, state.reason) == (3, "Error")


def test_max_duration_kills_the_pod(platform):
    started = time.monotonic()
    platform.run_pod(sh("sleep 60", "pod-k", max_duration=0.02))  # 1.2 seconds
    state = wait_terminal(platform, "pod-k", timeout=20)
    assert state.reason == "DeadlineExceeded"
    assert time.monotonic() - started < 15


def test_new_run_replaces_the_running_pod(platform):
    platform.run_pod(sh("sleep 2; echo old > /data/old.txt", "pod-x"))
    time.sleep(0.3)
    platform.run_pod(sh("echo new > /data/new.txt", "pod-x"))
    assert wait_terminal(platform, "pod-x").exit_code == 0
    time.sleep(2.5)
    files = walk_entries(platform.list_files("pod-x"))
    assert "new.txt" in files and "old.txt" not in files


def test_scheduled_time_is_honoured(platform):
    at = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    platform.run_pod(sh("date +%s > /data/t.txt", "pod-s", scheduled_time=at.isoformat()))
    first = platform.pod_status("pod-s")
    assert first.phase == "waiting"
    assert wait_terminal(platform, "pod-s").exit_code == 0
    ran_at = int(platform.downlink("t.txt", "pod-s"))
    assert ran_at >= int(at.timestamp()) - 1


def test_unknown_image_waits_in_image_pull_backoff(platform):
    platform.run_pod(PodSpec(image="no-such-image-xyz", node="GPU", max_duration=1, pod_name="pod-i"))
    state = platform.pod_status("pod-i")
    assert state.phase == "waiting" and state.reason == "ImagePullBackOff" and state.is_stuck


def test_status_of_a_pod_never_run_is_not_found(platform):
    with pytest.raises(NotFound):
        platform.pod_status("never-ran")


def test_nodes_status_shape(platform):
    nodes = platform.nodes_status()
    assert {n["name"] for n in nodes} == {"fpga", "gpu", "mpu1"}
    assert all(n["status"] == "True" for n in nodes)


def test_only_the_gpu_node_sees_the_gpu(platform):
    platform.run_pod(sh('echo "[$CUDA_VISIBLE_DEVICES]" > /data/cuda.txt', "pod-m", node="MPU"))
    wait_terminal(platform, "pod-m")
    assert platform.downlink("cuda.txt", "pod-m") == b"[]\n"


# images ------------------------------------------------------------------------------------

def test_image_build_then_run(platform, pod_architecture):
    # FROM it: builds run against the image store
    require_image("python:3.11-slim", "arm64" if pod_architecture == "arm64" else "host")
    dockerfile = b"FROM fpga.dphi.space:5000/python:3.11-slim\nCOPY . /app\n"
    platform.uplink([("Dockerfile", dockerfile)], dest_path="echo-test", pod_name="pod-b")
    platform.image_build("echo-test/Dockerfile", "echo-test", "echo-test/", pod_name="pod-b")
    assert any("echo-test" in item["Repository"] for item in platform.image_list())
    platform.run_pod(PodSpec(image="echo-test", node="FPGA", max_duration=1, command="/bin/sh",
                             args=["-c", "echo built > /data/b"], pod_name="pod-b"))
    assert wait_terminal(platform, "pod-b").exit_code == 0


def test_image_build_failure_carries_log_tail(platform):
    with pytest.raises(InvalidRequest) as info:
        platform.image_build("missing/Dockerfile", "img", "missing/", pod_name="pod-b")
    assert info.value.code == "BUILD_FAILED" and info.value.log_tail


def test_image_load_of_missing_tar_fails(platform):
    with pytest.raises(InvalidRequest) as info:
        platform.image_load("images/none.tar", "img", pod_name="pod-b")
    assert info.value.code == "IMAGE_LOAD_FAILED" and info.value.log_tail


# volumes -----------------------------------------------------------------------------------

def test_pvc_list_and_delete(platform):
    platform.uplink([("f", b"1")], pod_name="pod-v")
    assert "pod-v" in platform.pvc_list()
    platform.pvc_delete("pod-v")
    assert "pod-v" not in platform.pvc_list()


def test_spec_validation_lists_what_is_allowed():
    with pytest.raises(ValueError, match="FPGA, GPU, MPU"):
        PodSpec(image="alpine", node="TPU", max_duration=1)
    with pytest.raises(ValueError, match="positive"):
        PodSpec(image="alpine", node="MPU", max_duration=0)
    with pytest.raises(ValueError, match="lowercase"):
        PodSpec(image="alpine", node="MPU", max_duration=1, pod_name="Hey no whitespaces")


def test_a_file_replaced_while_downlinked_is_still_served(local_platform):
    """A warm pod rewrites its status file by rename while clients read it: a reader that
    opened the old file gets that whole file, never an error."""
    local_platform.uplink([("status", b"old")], dest_path="d", pod_name="pod-z")
    handle = local_platform.open_file("d/status", "pod-z")
    local_platform.uplink([("status", b"new")], dest_path="d", pod_name="pod-z")  # replaced by rename
    with handle:
        assert handle.read() == b"old"
    with local_platform.open_file("d/status", "pod-z") as again:
        assert again.read() == b"new"


def test_a_symlink_out_of_the_volume_is_refused(local_platform, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    volume = local_platform.volume_path("pod-y")
    (volume / "link").symlink_to(secret)
    with pytest.raises(IllegalPath):
        local_platform.downlink("link", "pod-y")


# watches -----------------------------------------------------------------------------------

def test_a_watch_wakes_as_a_file_lands_where_the_platform_can_tell(platform):
    """``Platform.watch``: a wait between polls that a file landing in a watched folder ends
    early where the platform can tell (local: inotify), and that sleeps its timeout out where it
    cannot (the EM API), so polls keep their backoff there. A folder made after the watch is
    watched from the next wait on (the local watch makes it: see below)."""
    platform.uplink([("bundle", b"1")], dest_path="jobs/one", pod_name="pod-w")
    with platform.watch(["jobs/one", "jobs/later"], "pod-w") as watch:
        assert watch.wakes is (platform.kind == "local")
        assert watch.wait(0.01) is False  # nothing landed
        platform.uplink([("results.0", b"2")], dest_path="jobs/one", pod_name="pod-w")
        assert watch.wait(60 if watch.wakes else 0.01) is watch.wakes
        platform.uplink([("results.0", b"3")], dest_path="jobs/later", pod_name="pod-w")  # makes the folder
        watch.wait(0.01)  # from here the new folder is watched
        platform.uplink([("results.1", b"4")], dest_path="jobs/later", pod_name="pod-w")
        assert watch.wait(60 if watch.wakes else 0.01) is watch.wakes
    assert platform.downlink("jobs/later/results.1", "pod-w") == b"4"  # a watch changes nothing in the volume


def test_a_local_watch_makes_a_folder_not_there_yet_and_wakes_on_its_first_file(local_platform):
    """A warm job's folder is made by its pod only as the pod takes the job: the watch makes it,
    so the segment landing in it a moment later ends the very first wait."""
    with local_platform.watch(["jobs/warm-one"], "pod-m") as watch:
        assert (local_platform.volume_path("pod-m") / "jobs" / "warm-one").is_dir()
        local_platform.uplink([("results.0", b"1")], dest_path="jobs/warm-one", pod_name="pod-m")
        assert watch.wait(60) is True
    assert local_platform.downlink("jobs/warm-one/results.0", "pod-m") == b"1"


def test_a_watch_never_follows_a_symlink_out_of_the_volume(local_platform, tmp_path):
    """A pod may swap a watched folder for a symlink: the watch then watches nothing outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    volume = local_platform.volume_path("pod-y")
    (volume / "jobs").mkdir()
    (volume / "jobs" / "evil").symlink_to(outside)
    local_platform.uplink([("x", b"1")], dest_path="jobs/real", pod_name="pod-y")
    with local_platform.watch(["jobs/evil", "jobs/real"], "pod-y") as watch:
        (tmp_path / "part").write_bytes(b"host")
        (tmp_path / "part").rename(outside / "results.0")  # renamed in, as a segment lands, but outside: no wake
        assert watch.wait(0.05) is False
        local_platform.uplink([("results.0", b"2")], dest_path="jobs/real", pod_name="pod-y")
        assert watch.wait(60) is True  # the real folder is watched
