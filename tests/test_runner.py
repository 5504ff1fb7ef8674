"""podrun.Runner: services on a warm pod, stateful instances, checkpoints, close()."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import podrun
from podrun.client.resreq import ResourceRequirement, parse_resreq
from podrun.platform.local import LocalPlatform
from podrun.wire.bundle import python_version

from .conftest import ROOT, run_python
from .services import Counter, Marked, Slow


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


# -- flamepy's keywords: autoscale, warmup, resreq; the constructor's options ----------------

def pod_env():
    import os

    return {name: os.environ.get(name) for name in ("PODRUN_NODE", "PODRUN_CPU", "PODRUN_MEMORY", "PODRUN_GPU")}


def _pod_starts(platform, name, within=60.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "running" in platform.pod_status(name).to_dict():
                return True
        except podrun.NotFound:
            pass  # not run yet
        time.sleep(0.05)
    return False


def test_flamepy_keywords_are_the_runners_not_the_constructors():
    platform = LocalPlatform()
    with podrun.Runner("run-kw", keep_warm=20) as runner:
        counter = runner.service(Counter, 100, autoscale=False, warmup=1, resreq="cpu=2,mem=512m")
        assert _pod_starts(platform, "run-kw")  # warmup: the pod starts with no call made
        assert counter.add(1).get(timeout=60) == 101  # 100 reached the constructor; the keywords did not
        assert counter.concurrency == 1 and counter.warmup == 1
        env = runner.service(pod_env)
        assert env.concurrency is None  # a function may scale (flamepy's default)
        assert env().get(timeout=60) == {"PODRUN_NODE": "MPU", "PODRUN_CPU": "2", "PODRUN_MEMORY": str(512 * 1024**2),
                                         "PODRUN_GPU": None}


def test_a_gpu_resreq_picks_the_gpu_node():
    with podrun.Runner("run-gpu", keep_warm=5) as runner:
        env = runner.service(pod_env, resreq={"gpu": 1, "mem": "1g"})
        assert env().get(timeout=60) == {"PODRUN_NODE": "GPU", "PODRUN_CPU": None, "PODRUN_MEMORY": str(1024**3),
                                         "PODRUN_GPU": "1"}
        with pytest.raises(podrun.UsageError, match="runs one pod"):
            runner.service(double, resreq="gpu=0")


def test_service_keywords_are_checked_as_flamepy_checks_them():
    runner = podrun.Runner("run-checks")
    try:
        with pytest.raises(ValueError, match="autoscale=True"):
            runner.service(Counter(), autoscale=True)
        with pytest.raises(ValueError, match="warmup=2"):
            runner.service(Counter(), warmup=2)
        with pytest.raises(ValueError, match="warmup"):
            runner.service(double, warmup=-1)
        with pytest.raises(TypeError, match="autoscale"):
            runner.service(double, autoscale="yes")
        with pytest.raises(ValueError, match="cpu=1,mem=1g"):
            runner.service(double, resreq="cpu=lots")
        with pytest.raises(podrun.UsageError, match="node='GPU'"):
            podrun.Runner("run-mpu", node="MPU").service(double, resreq="gpu=1")
        assert runner.service(double, autoscale=False).concurrency == 1
        assert runner.service(Counter).concurrency is None
    finally:
        runner.close()


def test_constructor_takes_flamepys_options():
    runner = podrun.Runner("run-ctor", False, ["six==1.16.0"], python_version())
    try:
        assert runner.options.wheels == ("six==1.16.0",)
        assert runner.options.image == f"python:{python_version()}-slim"
    finally:
        runner.close()
    with pytest.raises(podrun.UsageError, match="python_version='2.7'"):
        podrun.Runner("run-old", python_version="2.7")
    LocalPlatform().uplink([("x", b"1")], pod_name="run-taken-2")
    with pytest.raises(podrun.Conflict):
        podrun.Runner("run-taken-2", True)


# -- resreq strings -----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("cpu=1,mem=1g,gpu=0", ResourceRequirement(1.0, 1024**3, 0)),
    ("cpu=0.5", ResourceRequirement(cpu=0.5)),
    (" mem = 256Mi , gpu=2 ", ResourceRequirement(memory=256 * 1024**2, gpu=2)),
    ("memory=1024", ResourceRequirement(memory=1024)),
    ("MEM=2GB", ResourceRequirement(memory=2 * 1024**3)),
    ("", ResourceRequirement()),
])
def test_resreq_strings_parse_as_flamepy_writes_them(text, expected):
    assert ResourceRequirement.from_string(text) == expected


@pytest.mark.parametrize("text", ["cpu", "cpu=", "cpu=lots", "cpu=0", "cpu=nan", "cpu=inf", "mem=1q", "mem=0", "gpu=-1",
                                  "gpu=1.5", "disk=1g", "cpu=1,cpu=2", "cpu=1;mem=1g"])
def test_bad_resreq_strings_are_usage_errors_naming_the_format(text):
    with pytest.raises(podrun.UsageError, match="cpu=1,mem=1g"):
        ResourceRequirement.from_string(text)


def test_resreq_objects_and_other_types():
    class FlamepyStyle:  # flamepy's ResourceRequirement has these three attributes
        cpu, memory, gpu = 2, 1024, 1

    assert parse_resreq(FlamepyStyle()) == ResourceRequirement(2, 1024, 1)
    assert parse_resreq(None) is None
    with pytest.raises(TypeError):
        parse_resreq(5)
    with pytest.raises(podrun.UsageError, match="unknown key"):
        parse_resreq({"disk": 1})


@given(st.builds(ResourceRequirement,
                 cpu=st.none() | st.floats(min_value=0.01, max_value=512, allow_nan=False),
                 memory=st.none() | st.integers(min_value=1, max_value=2**50),
                 gpu=st.none() | st.integers(min_value=0, max_value=16)))
def test_resreq_round_trips_through_its_string(resreq):
    again = ResourceRequirement.from_string(str(resreq))
    assert again.memory == resreq.memory and again.gpu == resreq.gpu
    assert (again.cpu is None) == (resreq.cpu is None)
    if resreq.cpu is not None:
        assert abs(again.cpu - resreq.cpu) <= 1e-5 * resreq.cpu


# -- services that resume; close() settles its calls; fail_if_exists reserves the name ---------

def _object_files(platform, runner_name, namespace):
    folder = platform.volume_path(runner_name) / ".podrun" / "objects" / runner_name / namespace
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _no_pod_running(platform, name):
    try:
        return platform.pod_status(name).is_terminal
    except podrun.NotFound:
        return True


def test_a_checkpointed_service_resumes_in_a_new_runner_after_keep_state():
    platform = LocalPlatform()
    with podrun.Runner("run-resume", keep_warm=20) as first:
        counter = first.service(Counter, 5, checkpoint=True)
        assert counter.add(3).get(timeout=60) == 8
        key = counter.state_ref().key
        first.close(keep_state=True)  # the pod checkpoints at its shutdown; the state stays
    assert "run-resume" in platform.pvc_list()
    second = podrun.Runner("run-resume", keep_warm=20)
    again = second.service(Counter, 5, checkpoint=True)
    assert again.state_ref().key == key  # the same identity in a new session
    assert again.value().get(timeout=60) == 8  # resumed, not rebuilt from Counter(5)
    other = second.service(Counter, 100, checkpoint=True, name="other")  # a second Counter needs its own name
    assert other.value().get(timeout=60) == 100
    with pytest.raises(podrun.UsageError, match="name="):
        second.service(Counter, checkpoint=True)
    second.close()
    # The volume existed before this runner: it stays, but every state object it wrote is gone.
    assert "run-resume" in platform.pvc_list()
    assert _object_files(platform, "run-resume", "services") == []
    assert _no_pod_running(platform, "run-resume")


def test_close_without_keep_state_removes_the_state_objects_of_a_shared_volume():
    platform = LocalPlatform()
    platform.uplink([("keep.txt", b"mine")], pod_name="run-state")
    with podrun.Runner("run-state", keep_warm=20) as runner:
        counter = runner.service(Counter, checkpoint=True)
        assert counter.add(2).get(timeout=60) == 2
        assert counter.checkpoint().get(timeout=60).version >= 1
        assert _object_files(platform, "run-state", "services")
    assert _object_files(platform, "run-state", "services") == []
    assert platform.downlink("keep.txt", "run-state") == b"mine"


def test_fail_if_exists_reserves_the_name_at_construction():
    platform = LocalPlatform()
    holder = podrun.Runner("run-held", fail_if_exists=True)  # no call yet: the marker is the reservation
    assert "run-held" in platform.pvc_list()
    with pytest.raises(podrun.NameTaken, match=f"pid {os.getpid()} on ") as caught:
        podrun.Runner("run-held", fail_if_exists=True)
    assert caught.value.holder["pid"] == os.getpid()
    other = run_python("import podrun\ntry:\n    podrun.Runner('run-held', fail_if_exists=True)\n"
                       "except podrun.NameTaken as exc:\n    print('taken', exc.holder['pid'])\n")
    assert other.stdout.split() == ["taken", str(os.getpid())], other.stderr
    holder.close()
    assert "run-held" not in platform.pvc_list()  # it made the volume: the volume goes, the name is free
    podrun.Runner("run-held", fail_if_exists=True).close()


def test_two_processes_reserving_one_name_at_once_never_both_win():
    code = ("import sys, time, podrun\n"
            "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
            "try:\n    r = podrun.Runner('run-race', fail_if_exists=True)\n"
            "except podrun.Conflict as exc:\n    print('lost', type(exc).__name__)\n"
            "else:\n    print('won'); sys.stdout.flush(); time.sleep(3); r.close()\n")
    start = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(4)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    words = [out.split() for out, _ in outputs]
    assert all(w and w[0] in ("won", "lost") for w in words), outputs
    assert sum(w[0] == "won" for w in words) <= 1, words


def test_close_waits_for_a_call_in_flight_and_leaves_no_pod_or_volume():
    platform = LocalPlatform()
    runner = podrun.Runner("run-inflight", keep_warm=20)
    slow = runner.service(Slow)
    future = slow.nap(1.0)
    runner.close()
    assert future.done() and future.result() == 1.0
    assert _no_pod_running(platform, "run-inflight")
    time.sleep(1.0)  # nothing re-sends the call into a re-created volume
    assert "run-inflight" not in platform.pvc_list()


def test_close_with_cancel_cancels_calls_not_yet_running():
    platform = LocalPlatform()
    runner = podrun.Runner("run-cancel", keep_warm=20)
    slow = runner.service(Slow)
    assert slow.nap(0).get(timeout=60) == 0  # the pod serves
    futures = slow.nap.map([0.5] * 6)
    runner.close(cancel=True)
    assert all(f.done() for f in futures)
    # Each call either ran (its value) or was cancelled: before it was sent, or in the pod before it ran.
    outcomes = ["cancelled" if f.cancelled() or isinstance(f.exception(), podrun.Cancelled) else f.result()
                for f in futures]
    assert set(outcomes) <= {"cancelled", 0.5} and "cancelled" in outcomes, outcomes
    assert _no_pod_running(platform, "run-cancel")
    assert "run-cancel" not in platform.pvc_list()


def test_a_service_module_importing_client_code_is_refused_in_the_pod_naming_why(tmp_path, monkeypatch):
    """A service's class travels by reference and its module is imported in the pod, which has
    podrun's pod package only: an import of the client's modules there names the module and the fix."""
    (tmp_path / "client_bound.py").write_text("from podrun.client import config  # client-only\n\n\n"
                                              "class Echo:\n    def say(self, x):\n        return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from client_bound import Echo

    with podrun.Runner("run-client-bound", keep_warm=5) as runner:
        error = runner.service(Echo).say(1).exception(timeout=60)
    assert isinstance(error, ModuleNotFoundError) and error.name == "podrun.client"
    assert "shipped module client_bound" in str(error) and "pod package only" in str(error)
