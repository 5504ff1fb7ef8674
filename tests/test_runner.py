"""podrun.Runner: services on a warm pod, stateful instances, checkpoints, close()."""

from __future__ import annotations

import pytest

import podrun
from podrun.platform.local import LocalPlatform


class Counter:
    def __init__(self, start=0):
        self.count = start

    def add(self, n=1):
        self.count += n
        return self.count

    def value(self):
        return self.count

    def _private(self):
        return "hidden"


class Marked:
    @podrun.method
    def visible(self):
        return "yes"

    def not_exposed(self):
        return "no"


def double(x):
    return 2 * x


def test_function_service_and_batch_helpers():
    with podrun.Runner("run-fn", keep_warm=20) as runner:
        svc = runner.service(double)
        futures = [svc(i) for i in range(3)] + svc.map([10, 20])
        assert runner.get(futures, timeout=60) == [0, 2, 4, 20, 40]
        assert sorted(f.get() for f in runner.select(futures, timeout=60)) == [0, 2, 4, 20, 40]
        runner.wait(futures, timeout=60)
        refs = runner.ref(futures[:1])
        assert podrun.get_object(refs[0]) == 0


def test_class_service_keeps_state_across_calls_in_the_warm_pod():
    with podrun.Runner("run-cls", keep_warm=20) as runner:
        counter = runner.service(Counter, 100)
        assert counter.add(1).get(timeout=60) == 101
        assert counter.add(5).get(timeout=60) == 106
        assert counter.value().get(timeout=60) == 106
        with pytest.raises(AttributeError, match="add, value"):
            _ = counter._private


def test_instance_service_and_checkpoint_survive_a_pod_restart():
    with podrun.Runner("run-inst", keep_warm=20) as runner:
        counter = runner.service(Counter(7), checkpoint=True)
        assert counter.add(3).get(timeout=60) == 10
        ref = counter.checkpoint().get(timeout=60)
        assert ref.key == counter.state_ref().key
        assert podrun.get_object(counter.state_ref()).count == 10
        assert counter.add(1).get(timeout=60) == 11
        # A cold call on the runner's pod_name replaces the warm pod: state comes back from
        # the checkpoint taken at the replaced pod's shutdown.
        podrun.remote(double, pod_name="run-inst", max_duration=1).remote(1).get(timeout=60)
        assert counter.value().get(timeout=60) in (10, 11)


def test_marked_methods_only():
    with podrun.Runner("run-mark", keep_warm=20) as runner:
        svc = runner.service(Marked)
        assert svc.visible().get(timeout=60) == "yes"
        with pytest.raises(AttributeError, match="visible"):
            _ = svc.not_exposed


def test_close_removes_what_the_runner_created():
    platform = LocalPlatform()
    with podrun.Runner("run-close", keep_warm=20) as runner:
        svc = runner.service(double, warmup=1)
        assert svc(4).get(timeout=60) == 8
        assert "run-close" in platform.pvc_list()
    assert "run-close" not in platform.pvc_list()  # it made the volume: the volume goes

    platform.uplink([("keep.txt", b"mine")], pod_name="run-shared")
    runner = podrun.Runner("run-shared", keep_warm=20)
    ref = runner.put_object({"weights": [1, 2]})
    assert runner.service(double)(5).get(timeout=60) == 10
    runner.close()
    assert platform.downlink("keep.txt", "run-shared") == b"mine"  # not the runner's: kept
    with pytest.raises(podrun.NotFound):
        podrun.get_object(podrun.ObjectRef(ref.key, 0))
    with pytest.raises(RuntimeError, match="closed"):
        runner.put_object(1)


def test_fail_if_exists():
    LocalPlatform().uplink([("x", b"1")], pod_name="run-taken")
    with pytest.raises(podrun.Conflict, match="fail_if_exists"):
        podrun.Runner("run-taken", fail_if_exists=True)
