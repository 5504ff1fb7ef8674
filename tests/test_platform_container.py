"""The ``container`` driver of LocalPlatform: pods run a real image under podman or docker.

The first group checks the commands the driver builds and needs no engine. The second starts
real containers; it runs where an engine can start the prepared ``python:3.X-slim`` base
(``podrun images prepare``, which ``.ci/run`` does, in the session's image store) and is skipped
elsewhere with the command that was tried and its error.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

import podrun
from podrun.platform.local import LocalPlatform
from podrun.platform.local import container as _container
from podrun.platform.local.images import ImageStore
from podrun.platform.types import PodSpec

from .platforms import cleanup_engine, engine_leftovers, image_store, needs_engine
from .platforms import container_platform as make_container_platform

MINOR = f"{sys.version_info[0]}.{sys.version_info[1]}"
IMAGE = f"python:{MINOR}-slim"
FAKE = _container.Engine("/usr/bin/podman", "podman", ("--runtime", "runc"))


# --- without an engine ---------------------------------------------------------------------

def _argv(tmp_path: Path, command: list[str], args: list[str], gpu: bool = False) -> list[str]:
    return _container.run_argv(FAKE, name="podrun-x", image=IMAGE, volume=tmp_path, network="podrun-alice",
                               hostnames=["alice-web", "web"], labels={"podrun.node": "MPU"}, env_file=tmp_path / "pod.env",
                               gpu=gpu, command=command, args=args)


def test_run_argv_mounts_volume_labels_network_and_hardens(tmp_path: Path) -> None:
    argv = _argv(tmp_path, ["python", "-c", "pass"], [])
    assert argv[:6] == ["/usr/bin/podman", "run", "--rm", "--init", "--pull=never", "--name"]
    assert argv[7:9] == ["--runtime", "runc"]
    joined = " ".join(argv)
    assert f"--volume {tmp_path}:/data:rw,nosuid,nodev" in joined and "--workdir" not in joined  # the image's WORKDIR
    assert "--network podrun-alice --hostname alice-web --network-alias alice-web --network-alias web" in joined
    assert "--label podrun.node=MPU" in joined
    assert "--cap-drop=all" in argv and "no-new-privileges" in argv and "--pids-limit" in argv
    assert "--ipc private" in joined and "--tmpfs /tmp:rw,nosuid,nodev,mode=1777" in joined
    assert f"--env-file {tmp_path / 'pod.env'}" in joined and "--env" not in argv  # values never on a command line
    if os.geteuid() == 0:  # root podman: the pod's root is an unprivileged host uid
        assert f"--uidmap 0:{_container.POD_UID_BASE}:{_container.POD_UID_COUNT}" in joined
        assert ":/data:rw,nosuid,nodev,U" in joined


def test_command_and_args_override_entrypoint_and_cmd_as_in_kubernetes(tmp_path: Path) -> None:
    with_command = _argv(tmp_path, ["/bin/sh", "-c"], ["echo hi"])
    assert with_command[with_command.index("--entrypoint") + 1] == "/bin/sh" and with_command[-3:] == [IMAGE, "-c", "echo hi"]
    only_args = _argv(tmp_path, [], ["--debug"])
    assert "--entrypoint" not in only_args and only_args[-2:] == [IMAGE, "--debug"]  # the image's ENTRYPOINT, new CMD
    neither = _argv(tmp_path, [], [])
    assert "--entrypoint" not in neither and neither[-1] == IMAGE  # the image's ENTRYPOINT and CMD


def test_env_file_is_private_and_refuses_what_it_cannot_carry(tmp_path: Path) -> None:
    from podrun.errors import InvalidRequest

    path = _container.write_env_file(tmp_path / "pod.env", {"GREETING": "hello world", "A.B-c": "x=y"})
    assert path.read_text() == "GREETING=hello world\nA.B-c=x=y\n" and (path.stat().st_mode & 0o777) == 0o600
    for bad in ({"X": "two\nlines"}, {"1X": "v"}, {"A B": "v"}, {"": "v"}, {"#X": "v"}):
        with pytest.raises(InvalidRequest, match="env"):
            _container.write_env_file(tmp_path / "bad.env", bad)


def test_gpu_devices_only_on_the_gpu_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_container, "gpu_args", lambda engine: ["--device", "/dev/nvidia0"])
    assert "/dev/nvidia0" in _argv(tmp_path, ["true"], [], gpu=True)
    assert "/dev/nvidia0" not in _argv(tmp_path, ["true"], [], gpu=False)


def test_container_names_differ_per_root_and_run(tmp_path: Path) -> None:
    a = _container.container_name(tmp_path / "a", "local", "local-pvc", "0" * 16)
    b = _container.container_name(tmp_path / "b", "local", "local-pvc", "0" * 16)
    c = _container.container_name(tmp_path / "a", "local", "local-pvc", "1" * 16)
    assert len({a, b, c}) == 3 and all(n.startswith("podrun-") for n in (a, b, c))


def test_unavailable_engine_is_a_typed_error_and_auto_says_it_falls_back(podrun_home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from podrun.platform.local import drivers

    monkeypatch.setattr(_container, "HOST_PATH", str(podrun_home))  # no podman, no docker on the fixed PATH
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the caller's PATH is never searched
    monkeypatch.setattr(_container, "_probed", {})
    monkeypatch.setattr(drivers, "_notes", set())
    with pytest.raises(_container.ContainerUnavailable, match="podman: not installed.*apt-get install podman"):
        LocalPlatform(podrun_home / "local", driver="container")
    with pytest.warns(drivers.HostPodsWarning, match="fall back to the host-process driver, which is not CG2-like"):
        assert LocalPlatform(podrun_home / "local", driver="auto").effective_driver == "process"


# --- with an engine ------------------------------------------------------------------------

STORE = ImageStore(image_store())


def _containers(platform: LocalPlatform) -> list[dict]:
    """The platform's pod containers (its telemetry service is not a pod)."""
    engine = _container.find_engine(STORE)
    done = engine.run("ps", "--all", "--filter", f"label=podrun.root={platform.root}", "--filter", "label=podrun.pod",
                      "--format", "json")
    text = done.stdout.strip()
    return json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]


def _wait(platform: LocalPlatform, pod_name: str, phase: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = platform.pod_status(pod_name)
        if state.phase == phase or state.is_terminal:
            return state
        time.sleep(0.05)
    raise AssertionError(f"pod {pod_name} did not reach {phase}: {platform.pod_status(pod_name)}")


@pytest.fixture
def container_platform(podrun_home: Path):
    platform = make_container_platform(podrun_home / "local", "local", stop_grace=3)
    yield platform
    platform.shutdown()
    leftover = engine_leftovers(platform.root)  # pods, the telemetry service, the network
    cleanup_engine(platform.root)  # never leave anything behind, even when the test failed
    assert not leftover, f"left in the engine: {leftover}"


@needs_engine
def test_raw_pod_runs_the_image_with_the_volume_at_data(container_platform: LocalPlatform) -> None:
    code = ("import sys, os; open('/data/out.txt', 'w')"
            ".write(sys.executable + ' ' + os.environ['PODRUN_NODE'] + ' ' + os.environ['GREETING'])")
    container_platform.run_pod(PodSpec(image=IMAGE, node="FPGA", max_duration=1, pod_name="raw",
                                       command="python", args=["-c", code], envs={"GREETING": "hello"}))
    state = _wait(container_platform, "raw", "terminated")
    assert state.detail["reason"] == "Completed", (container_platform._pod_dir("raw") / "stdout.log").read_text()
    # The image's interpreter (Debian's), not the client's: this is the real image.
    assert (container_platform.volume_path("raw") / "out.txt").read_text() == "/usr/local/bin/python FPGA hello"


@needs_engine
def test_labels_and_stop_really_stop_the_container(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image=IMAGE, node="GPU", max_duration=1, pod_name="sleeper", command="sleep",
                                       args=["300"]))
    assert _wait(container_platform, "sleeper", "running").phase == "running"
    deadline = time.monotonic() + 30
    while not (running := _containers(container_platform)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running and running[0]["Labels"]["podrun.node"] == "GPU" and running[0]["Labels"]["podrun.pod"] == "sleeper"
    started = time.monotonic()
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="sleeper", command="true"))
    # `sleep` as PID 1 ignores SIGTERM; --init forwards it, so replacement is prompt, not a kill after the grace.
    assert time.monotonic() - started < 2.9
    assert _wait(container_platform, "sleeper", "terminated").detail["exitCode"] == 0
    assert not _containers(container_platform)


@needs_engine
def test_max_duration_stops_the_container(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=0.03, pod_name="long", command="sleep",
                                       args=["300"]))
    state = _wait(container_platform, "long", "terminated", timeout=30)
    assert state.detail["reason"] == "DeadlineExceeded"
    assert not _containers(container_platform)


@needs_engine
def test_killed_supervisor_leaves_no_container(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="orphan", command="sleep", args=["300"]))
    _wait(container_platform, "orphan", "running")
    deadline = time.monotonic() + 30
    while not _containers(container_platform) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int((container_platform._pod_dir("orphan") / "supervisor.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the engine client lives on in its own group; the container too
    assert _wait(container_platform, "orphan", "terminated").detail["reason"] == "Lost"
    container_platform.shutdown()
    assert not _containers(container_platform)


@needs_engine
def test_missing_image_waits_with_a_fix(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image="python:3.10-alpine", node="MPU", max_duration=1, pod_name="noimg", command="true"))
    state = container_platform.pod_status("noimg")
    assert state.phase == "waiting" and state.reason == "ImagePullBackOff"
    assert "podrun images prepare" in state.detail["message"] and "python:3.11-slim" in state.detail["message"]


@needs_engine
def test_pods_of_a_user_reach_each_other_by_name(container_platform: LocalPlatform) -> None:
    container_platform.uplink([("hello.txt", b"hi from server")], pod_name="server")
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="server", ports=[80],
                                       command="python3", args=["-m", "http.server", "80", "--directory", "/data"]))
    code = ("import sys, time, urllib.request\n"
            "for _ in range(100):\n"
            "    try:\n"
            "        body = [urllib.request.urlopen(f'http://{h}:80/hello.txt', timeout=5).read() for h in sys.argv[1:]]\n"
            "        break\n"
            "    except OSError: time.sleep(0.1)\n"
            "open('/data/got', 'wb').write(b'|'.join(body))")
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="client",
                                       command="python3", args=["-c", code, "server", "local-server"]))
    assert _wait(container_platform, "client", "terminated").detail["exitCode"] == 0
    assert (container_platform.volume_path("client") / "got").read_bytes() == b"hi from server|hi from server"


@needs_engine
def test_remote_function_runs_in_the_image(container_platform: LocalPlatform) -> None:
    podrun.configure(container_platform)

    def where(x: int) -> dict:
        import os
        import sys

        import cloudpickle

        return {"x": x + 1, "exe": sys.executable, "data": os.environ["PODRUN_DATA"], "cp": cloudpickle.__file__,
                "files": sorted(os.listdir("/data/.podrun"))}

    fn = podrun.remote(where, image=IMAGE)
    out = fn.remote(1).get(timeout=120)
    assert out["x"] == 2 and out["exe"] == "/usr/local/bin/python" and out["data"] == "/data"
    assert out["cp"].startswith("/data/.podrun/"), "cloudpickle came from the zipapp: the image has none"
    assert [f.get(timeout=120)["x"] for f in fn.map([10, 20])] == [11, 21]


@needs_engine
def test_c_extension_wheel_loads_in_the_real_image(container_platform: LocalPlatform, tmp_path: Path) -> None:
    from .test_wheels import _c_wheel, use_ctriple

    podrun.configure(container_platform)
    wheel = _c_wheel(tmp_path)
    value, where = podrun.remote(use_ctriple, image=IMAGE, wheels=[str(wheel)]).remote(5).get(timeout=120)
    assert value == 15 and where.startswith("/data/.podrun/site/") and where.endswith(".so")


# --- graceful stops ----------------------------------------------------------------------------

TERM_HANDLER = """
import signal, sys, time
def stop(signum, frame):
    open("/data/term.txt", "w").write("got SIGTERM, saved my work")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop if sys.argv[1] == "handle" else signal.SIG_IGN)
open("/data/ready", "w").write("ready")
time.sleep(600)
"""


def _wait_file(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@needs_engine
def test_max_duration_sends_sigterm_first_and_the_handler_writes_the_volume(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=0.05, pod_name="grace", command="python3",
                                       args=["-c", TERM_HANDLER, "handle"]))
    state = _wait(container_platform, "grace", "terminated", timeout=60)
    assert state.detail["reason"] == "DeadlineExceeded" and state.detail["exitCode"] == 0
    assert "max_duration" in state.detail["message"]
    assert (container_platform.volume_path("grace") / "term.txt").read_text() == "got SIGTERM, saved my work"


@needs_engine
def test_replacement_is_graceful_and_the_state_says_why(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="swap", command="python3",
                                       args=["-c", TERM_HANDLER, "handle"]))
    _wait_file(container_platform.volume_path("swap") / "ready")
    supervisor = int((container_platform._pod_dir("swap") / "supervisor.pid").read_text())
    container_platform._stop_pod(container_platform._pod_dir("swap"))  # what a new run of "swap" does first
    state = container_platform.pod_status("swap")
    assert state.detail["reason"] == "Replaced" and state.detail["exitCode"] == 0, state.detail
    assert not container_platform._supervisor_alive(supervisor)
    assert (container_platform.volume_path("swap") / "term.txt").read_text() == "got SIGTERM, saved my work"


@needs_engine
def test_a_stop_reaches_the_workload_through_the_engine_not_its_clients_signal_proxy(container_platform: LocalPlatform) -> None:
    """The engine client (``podman run``) is frozen, as it is in the window where podman before
    4.4 has started the container but not yet its signal proxy: a stop's SIGTERM still reaches
    the workload, whose handler saves its work; the frozen client is killed after the grace."""
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=1, pod_name="frozen", command="python3",
                                       args=["-c", TERM_HANDLER, "handle"]))
    _wait_file(container_platform.volume_path("frozen") / "ready")
    supervisor = int((container_platform._pod_dir("frozen") / "supervisor.pid").read_text())
    clients = [int(p) for p in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    assert len(clients) == 1, clients
    os.kill(clients[0], signal.SIGSTOP)
    container_platform._stop_pod(container_platform._pod_dir("frozen"))
    assert (container_platform.volume_path("frozen") / "term.txt").read_text() == "got SIGTERM, saved my work"
    assert container_platform.pod_status("frozen").detail["reason"] == "Replaced"
    assert not container_platform._supervisor_alive(supervisor)


@needs_engine
def test_a_workload_ignoring_sigterm_is_killed_after_the_grace(container_platform: LocalPlatform) -> None:
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=0.05, pod_name="stubborn", command="python3",
                                       args=["-c", TERM_HANDLER, "ignore"]))
    state = _wait(container_platform, "stubborn", "terminated", timeout=60)
    assert state.detail["reason"] == "DeadlineExceeded" and state.detail["exitCode"] == 137
    assert not (container_platform.volume_path("stubborn") / "term.txt").exists()
    assert not _containers(container_platform)


def test_stop_grace_is_settable_and_checked(podrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert LocalPlatform(podrun_home / "local", driver="process").stop_grace == 30.0  # Kubernetes' default
    monkeypatch.setenv("PODRUN_STOP_GRACE", "2.5")
    assert LocalPlatform(podrun_home / "local", driver="process").stop_grace == 2.5
    for bad in (-1, 3601):
        with pytest.raises(ValueError, match="stop grace"):
            LocalPlatform(podrun_home / "local", driver="process", stop_grace=bad)


@needs_engine
def test_a_running_pod_owns_what_is_uplinked_after_it_started(container_platform: LocalPlatform) -> None:
    """Under root podman the pod's root is an unprivileged uid that ``:U`` makes owner of the
    volume at start; a folder and a private file (the emulator's umask is 077) uplinked while
    the pod runs must be its own too, as a warm pod's next job is."""
    script = ("import os, time\n"
              "open('/data/ready', 'w').close()\n"
              "while not os.path.exists('/data/later/job.txt'): time.sleep(0.05)\n"
              "text = open('/data/later/job.txt').read()\n"
              "open('/data/later/answer.txt', 'w').write(text.upper())\n")
    container_platform.run_pod(PodSpec(image=IMAGE, node="MPU", max_duration=0.05, pod_name="warmish",
                                       command="python", args=["-c", script]))
    volume = container_platform.volume_path("warmish")
    deadline = time.monotonic() + 60
    while not (volume / "ready").exists() and time.monotonic() < deadline:  # the engine has handed it the volume
        time.sleep(0.05)
    previous = os.umask(0o077)
    try:
        container_platform.uplink([("job.txt", b"second job")], dest_path="later", pod_name="warmish")
    finally:
        os.umask(previous)
    state = _wait(container_platform, "warmish", "terminated")
    assert state.detail["reason"] == "Completed", (container_platform._pod_dir("warmish") / "stdout.log").read_text()
    assert container_platform.downlink("later/answer.txt", "warmish") == b"SECOND JOB"
