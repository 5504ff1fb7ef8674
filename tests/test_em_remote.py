"""``@podrun.remote`` end to end over HTTP: the client layer on EMPlatform, pods on the
emulator's LocalPlatform; and the example that does the same from a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import podrun
from podrun.platform.types import walk_entries

from .em_server import EmulatorProcess
from .platforms import needs_engine
from .services import Tally

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    # Host pods: these tests' services live in this module, which imports pytest (no image has it).
    with EmulatorProcess(tmp_path_factory.mktemp("em-remote"), driver="process") as em:
        yield em


@podrun.remote(node="MPU", max_duration=1)
def double(x: int) -> int:
    return 2 * x


@podrun.remote(node="FPGA", max_duration=1)
def fails() -> None:
    raise KeyError("from the pod")


def test_remote_functions_run_through_the_emulator(server):
    user, password = server.add_user("r")
    podrun.configure(platform="em", url=server.url, username=user, password=password)
    assert double.remote(2).get(timeout=60) == 4
    assert [f.get(timeout=60) for f in [double.remote(i) for i in range(3)]] == [0, 2, 4]
    with pytest.raises(KeyError, match="from the pod"):
        fails.remote().get(timeout=60)
    # The jobs went through the user's volumes on the emulator, not the local platform.
    assert (server.root / "volumes" / user).is_dir()
    from podrun.platform.em import EMPlatform

    with EMPlatform(server.url, user, password) as em:
        assert any(walk_entries(em.list_files(name)) for name in em.pvc_list())


def test_a_warm_call_through_the_emulator_polls_with_backoff(server):
    """Over HTTP nothing can wake the client (the EM API has no watch): a warm call's result is
    found by polls, and it still arrives."""
    user, password = server.add_user("w")
    podrun.configure(platform="em", url=server.url, username=user, password=password)
    warm = double.options(keep_warm=2, pod_name="warm")
    assert warm.remote(1).get(timeout=60) == 2
    future = warm.remote(5)
    assert future.get(timeout=60) == 10
    assert future.job.finished.wait(60)
    assert future.job.woken == 0  # every wait slept its backoff out
    assert future.job.stats.calls - future.job.stats.polls == 1 + future.job.stream.segments  # the warm pod served it


def test_remote_configured_from_the_environment(server, monkeypatch):
    user, password = server.add_user("v")
    monkeypatch.setenv("PODRUN_PLATFORM", "em")
    monkeypatch.setenv("PODRUN_EM_URL", server.url)
    monkeypatch.setenv("PODRUN_EM_USERNAME", user)
    monkeypatch.setenv("PODRUN_EM_PASSWORD", password)
    assert double.remote(21).get(timeout=60) == 42


def test_example_runs(podrun_home):
    from .platforms import container_reason

    # The example's emulator isolates its pods (the container driver) where podman runs; elsewhere it
    # needs the loudly named opt-in to host pods.
    env = {k: v for k, v in os.environ.items() if k != "PODRUN_LOCAL_DRIVER"}
    if container_reason() is not None:
        env["PODRUN_UNSAFE_HOST_PODS"] = "1"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "em_emulator.py")], capture_output=True, text=True,
                          timeout=180, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "squares over HTTP: [0, 1, 4, 9]" in done.stdout
    assert "pod says: node GPU" in done.stdout


def test_cli_refuses_bad_options():
    env = {**os.environ, "PODRUN_EMULATOR_USERS": "a:b"}
    for argv, extra_env, says in (
        (["--user", "a:b"], {}, "command line"),  # a password on argv is refused, with the way to do it instead
        ([], {}, "PODRUN_EMULATOR_USERS"),
        ([], {"PODRUN_EMULATOR_USERS": "no-password"}, "NAME:PASSWORD"),
        (["--chaos-error-rate", "2"], env, "chaos"),
        (["--log-level", "loud"], env, "log-level"),
        (["--host", "0.0.0.0"], env, "--allow-remote"),
    ):
        done = subprocess.run([sys.executable, "-m", "podrun.cli", "emulator", *argv], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **extra_env})
        assert done.returncode != 0 and says in done.stderr, (argv, done.stderr[-500:])


def test_warm_pods_runner_and_refs_over_http(server):
    """The warm-pod protocol (inbox, status file), a stateful Runner service and fut.ref()
    chaining work through the EM API exactly as on the local platform."""
    user, password = server.add_user("w")
    podrun.configure(platform="em", url=server.url, username=user, password=password)
    with podrun.Runner("em-runner", keep_warm=20) as runner:
        tally = runner.service(Tally)
        assert [tally.add(n).get(timeout=60) for n in (1, 2, 3)] == [1, 3, 6]
        warm = tally.add(4)
        assert warm.get(timeout=60) == 10
        assert warm.job.finished.wait(60)
        assert warm.job.stats.calls - warm.job.stats.polls == 1 + warm.job.stream.segments  # uplink + segments: no pod start
        produced = runner.service(double)(21)
        assert runner.get([runner.service(double)(produced.ref(timeout=60))], timeout=60) == [84]
    assert "em-runner" not in podrun.client.config.current_platform().pvc_list()


@needs_engine
def test_a_warm_pod_in_its_image_takes_jobs_uplinked_while_it_runs(tmp_path: Path) -> None:
    """The emulator's own driver runs pods in their image as an unprivileged uid, and its files
    are private (umask 077): a job uplinked to a warm pod that is already running must still be
    the pod's to read (it was refused: PermissionError on the inbox bundle)."""
    with EmulatorProcess(tmp_path / "em") as em:
        user, password = em.add_user("w")
        podrun.configure(platform="em", url=em.url, username=user, password=password)

        def triple(x: int) -> int:  # defined here, so it travels by value: the image has no pytest
            return 3 * x

        with podrun.Runner("em-warm-image", keep_warm=30) as runner:
            service = runner.service(triple)
            assert service(1).get(timeout=120) == 3
            warm = service(2)
            assert warm.get(timeout=120) == 6
            assert warm.job.finished.wait(60)
            assert warm.job.stats.calls - warm.job.stats.polls == 1 + warm.job.stream.segments  # no pod start
