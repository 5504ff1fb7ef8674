"""ObjectFutures as arguments of other remote calls, resolved by reference.

Same pod_name: the pod reads the upstream result from its volume, and the link carries none
of it (counted with ``podrun.stats()``). Another pod_name: the client fetches it once and
sends it on. A failed upstream fails the dependent call with its own error type.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import time

import numpy as np
import pytest

import podrun

MB = 1_000_000


@podrun.remote(pod_name="near", max_duration=1)
def noise(n, delay=0.0):
    time.sleep(delay)
    return os.urandom(n)


@podrun.remote(pod_name="near", max_duration=1)
def digest(data, salt=b""):
    return hashlib.sha256(salt + data).hexdigest()


@podrun.remote(pod_name="near", max_duration=1)
def echo(x):
    return x


@podrun.remote(pod_name="near", max_duration=1)
def inc(x):
    return x + 1


@podrun.remote(pod_name="near", max_duration=1)
def array(n):
    return np.frombuffer(os.urandom(n), dtype=np.uint8)


@podrun.remote(pod_name="far", max_duration=1)
def digest_far(data):
    return hashlib.sha256(bytes(data)).hexdigest()


class Upstream(Exception):
    pass


@podrun.remote(pod_name="near", max_duration=1)
def explode(message):
    raise Upstream(message)


@podrun.remote(pod_name="far", max_duration=1)
def explode_far(message):
    raise Upstream(message)


def test_same_pod_name_moves_no_result_bytes():
    podrun.reset_stats()
    data = noise.remote(3 * MB)
    check = digest.remote(data, salt=b"s")
    value = check.result(timeout=60)
    moved = podrun.stats()
    assert moved["bytes_down"] < 100_000 and moved["bytes_up"] < MB, moved  # 3 MB result stayed in the volume
    assert value == hashlib.sha256(b"s" + data.result()).hexdigest()  # fetching it here costs the 3 MB
    assert podrun.stats()["bytes_down"] - moved["bytes_down"] >= 3 * MB


def test_keyword_and_small_results_resolve_too():
    assert inc.remote(x=inc.remote(1)).result(timeout=60) == 3


def test_a_chain_submitted_at_once_runs_in_order_without_the_client_waiting():
    podrun.reset_stats()
    first = noise.remote(2 * MB, delay=1.0)
    last = digest.remote(echo.remote(echo.remote(first)))  # 2 MB passed along three times, in the pod
    counted = inc.remote(inc.remote(inc.remote(40)))
    assert not first.done()  # every call above was submitted while the first one still ran
    digest_value = last.result(timeout=60)
    assert counted.result(timeout=60) == 43
    assert podrun.stats()["bytes_down"] < 100_000  # no result crossed the link on the way
    assert digest_value == hashlib.sha256(first.result()).hexdigest()


def test_another_pod_name_fetches_once_and_sends_once():
    source = array.remote(MB)  # an array: its buffer travels as one content-addressed blob
    source.wait(timeout=60)
    podrun.reset_stats()
    results = [digest_far.remote(source), digest_far.remote(source)]
    assert results[0].result(timeout=60) == results[1].result(timeout=60)
    moved = podrun.stats()
    assert MB <= moved["bytes_down"] < 2 * MB, moved  # fetched once for both calls
    assert MB <= moved["bytes_up"] < 2 * MB, moved  # and uplinked once (a content-addressed blob)
    assert results[0].result() == hashlib.sha256(source.result().tobytes()).hexdigest()


@pytest.mark.parametrize("make_upstream", [explode.remote, explode_far.remote], ids=["same-pod", "other-pod"])
def test_a_failed_upstream_fails_the_dependent_with_its_type(make_upstream):
    dependent = digest.remote(make_upstream("no data"))
    with pytest.raises(Upstream, match="no data") as info:
        dependent.result(timeout=60)
    assert "raise Upstream(message)" in info.value.remote_traceback  # the upstream call's own traceback


def test_a_failure_travels_down_a_chain_with_its_type():
    last = inc.remote(echo.remote(echo.remote(explode.remote("deep"))))
    with pytest.raises(Upstream, match="deep"):
        last.result(timeout=60)


def test_an_upstream_known_to_have_failed_fails_the_call_before_sending():
    upstream = explode.remote("early")
    upstream.wait(timeout=60)
    podrun.reset_stats()
    dependent = digest.remote(upstream)
    assert dependent.done() and isinstance(dependent.exception(), Upstream)
    assert podrun.stats()["bytes_up"] == 0


@pytest.mark.parametrize("nest", [lambda f: [f], lambda f: {"x": f}, lambda f: (1, [f])])
def test_a_future_nested_inside_an_argument_is_refused_before_sending_naming_the_fix(nest):
    """Only top-level futures are resolved; a nested one would reach the pod as a handle it
    cannot load (the pod has no client), so it is refused here, and nothing is sent."""
    upstream = inc.remote(1)
    upstream.get(timeout=30)
    podrun.reset_stats()
    with pytest.raises(podrun.errors.SerializationError, match=r"positional argument 0 .*nested inside an argument.*fut.get\(\)"):
        echo.remote(nest(upstream))
    assert podrun.stats()["bytes_up"] == 0
    assert echo.remote(upstream).get(timeout=30) == 2  # at the top level it resolves


def test_a_cancelled_upstream_cancels_the_dependent_call():
    busy = noise.remote(10, delay=1.0)
    while not busy.running():
        time.sleep(0.01)
    upstream = noise.remote(10)  # waits in the lane behind `busy`
    dependent = digest.remote(upstream)
    assert upstream.cancel()
    with pytest.raises(cf.CancelledError):
        dependent.result(timeout=60)
    assert isinstance(dependent.exception(), podrun.Cancelled)
    busy.result(timeout=60)


def test_a_runner_service_takes_its_own_futures():
    def double(x):
        return 2 * x

    with podrun.Runner("future-args", keep_warm=10) as runner:
        service = runner.service(double)
        assert service(service(service(1))).result(timeout=60) == 8
