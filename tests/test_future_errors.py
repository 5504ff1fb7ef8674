"""A future says clearly why it has no value: the platform's own error when its job failed
there, and a TimeoutError that says how long it waited (and that the call goes on) when
``get(timeout=...)`` runs out. Real platforms: local pods, and the emulator over HTTP."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import time
from pathlib import Path

import pytest

import podrun
from podrun.errors import AuthError, PodFailed, WaitTimeout
from podrun.platform.local import LocalPlatform

from .platforms import shared_emulator


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_get_timeout_says_how_long_it_waited_and_that_the_call_keeps_running() -> None:
    future = podrun.remote(nap, max_duration=1).remote(1.5)
    with pytest.raises(WaitTimeout) as info:
        future.get(timeout=0.25)
    error = info.value
    assert podrun.WaitTimeout is WaitTimeout
    assert isinstance(error, TimeoutError) and isinstance(error, cf.TimeoutError)
    assert error.waited == 0.25 and "waited 0.25 s" in str(error) and "keeps running" in str(error)
    if error.job_id is not None:  # sent by then (the usual case): it says how to re-attach
        assert f"podrun.attach({error.job_id!r})" in str(error) and f"podrun jobs attach {error.job_id}" in str(error)
    with pytest.raises(WaitTimeout):
        future.exception(timeout=0.01)
    assert future.get(timeout=60) == 1.5  # the call went on


def test_a_call_timeout_stays_the_calls_outcome() -> None:
    future = podrun.remote(nap, max_duration=1, timeout=0.2).remote(5)
    with pytest.raises(podrun.CallTimeout):  # a TimeoutError too, but the call's, not the wait's
        future.get(timeout=60)


def test_a_platform_failure_of_another_kind_is_pod_failed_naming_it(podrun_home: Path) -> None:
    platform = LocalPlatform(podrun_home / "local")
    podrun.configure(platform)
    volume = platform.volume_path("broken")
    shutil.rmtree(volume, ignore_errors=True)
    volume.parent.mkdir(parents=True, exist_ok=True)
    volume.write_text("a file where the volume's directory should be")  # every uplink now fails with an OSError
    future = podrun.remote(nap, max_duration=1, pod_name="broken").remote(0)
    with pytest.raises(PodFailed, match="failed on the platform: (NotADirectoryError|FileExistsError)") as info:
        future.get(timeout=60)
    assert isinstance(info.value.__cause__, OSError)


def test_refused_credentials_are_the_futures_error(request: pytest.FixtureRequest) -> None:
    server = shared_emulator(request)
    user, _password = server.add_user()
    podrun.configure(platform="em", url=server.url, username=user, password="not-the-password")
    future = podrun.remote(nap, max_duration=1).remote(0)
    with pytest.raises(AuthError):
        future.get(timeout=60)
