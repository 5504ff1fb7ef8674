"""One error vocabulary: usage, platform and remote failures are three families.

A table of bad inputs, each noticed in a different layer, must raise a member of the usage
family that is also the builtin exception Python would raise, before any platform call;
hypothesis checks that no key, pod_name or node string escapes the family.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import inspect
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import podrun
from podrun import errors
from podrun.platform.em import EMPlatform
from podrun.platform.types import normalize_node, validate_pod_name

SRC = Path(podrun.__file__).parent
FAMILIES = (errors.UsageError, errors.PlatformError, errors.RemoteFailure)


def plain(x):
    return x


def _closed_runner():
    runner = podrun.Runner("closed-runner")
    runner.close()
    runner.put_object(1)


def _shut_executor():
    executor = podrun.Executor()
    executor.shutdown()
    executor.submit(plain, 1)


BAD_INPUTS = [
    # (what, call, the builtin Python would raise, the podrun class)
    ("unknown node", lambda: podrun.remote(plain, node="moon"), ValueError, errors.UsageError),
    ("bad pod_name", lambda: podrun.remote(plain, pod_name="Not_A_Label"), ValueError, errors.UsageError),
    ("bad max_duration", lambda: podrun.remote(plain, max_duration=-1), ValueError, errors.UsageError),
    ("bad timeout", lambda: podrun.remote(plain, timeout=0), ValueError, errors.UsageError),
    ("bad envs", lambda: podrun.remote(plain, envs="A=1"), ValueError, errors.UsageError),
    ("bad wheels", lambda: podrun.remote(plain, wheels=[3]), ValueError, errors.UsageError),
    ("not a callable", lambda: podrun.remote(42), TypeError, errors.UsageTypeError),
    ("unknown option", lambda: podrun.remote(plain).options(colour="red"), TypeError, errors.UsageTypeError),
    ("malformed key", lambda: podrun.ObjectRef("no slashes"), ValueError, errors.InvalidKey),
    ("prefix as ref", lambda: podrun.ObjectRef("pod/ns"), ValueError, errors.InvalidKey),
    ("traversal in key", lambda: podrun.put_object("../up", 1), ValueError, errors.InvalidKey),
    ("full key to put", lambda: podrun.put_object("pod/ns/id", 1), ValueError, errors.InvalidKey),
    ("negative version", lambda: podrun.ObjectRef("pod/ns/id", -1), ValueError, errors.InvalidKey),
    ("not a ref", lambda: podrun.get_object("pod/ns/id"), TypeError, errors.UsageTypeError),
    ("bad if_version", lambda: podrun.update_object(podrun.ObjectRef("pod/ns/id", 1), 2, if_version=-3), ValueError,
     errors.UsageError),
    ("missing file", lambda: podrun.upload_object("_default/files", "/nonexistent/file.bin"), FileNotFoundError,
     errors.MissingFile),
    ("unknown platform", lambda: podrun.configure("moon"), ValueError, errors.ConfigError),
    ("bad EM url", lambda: EMPlatform("ftp://example", "u", "p"), ValueError, errors.ConfigError),
    ("bad local driver", lambda: podrun.LocalPlatform(driver="teleport"), ValueError, errors.UsageError),
    ("empty image", lambda: podrun.PodSpec(image="", node="MPU", max_duration=1), ValueError, errors.UsageError),
    ("runner without name", lambda: podrun.Runner("Bad Name"), ValueError, errors.UsageError),
    ("runner used after close", _closed_runner, RuntimeError, errors.Closed),
    ("executor used after shutdown", _shut_executor, RuntimeError, errors.Closed),
    ("bad chunksize", lambda: podrun.Executor().map(plain, [1], chunksize=0), ValueError, errors.UsageError),
]


@pytest.mark.parametrize("what, call, builtin, cls", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_a_usage_error_and_the_builtin(what, call, builtin, cls):
    podrun.reset_stats()
    with pytest.raises(builtin) as info:
        call()
    error = info.value
    assert isinstance(error, cls) and isinstance(error, errors.UsageError), f"{what}: {type(error).__mro__}"
    assert not isinstance(error, (errors.PlatformError, errors.RemoteFailure))
    assert str(error), f"{what}: the message must name the problem"
    if what not in ("runner used after close",):  # that one made its volume first, on purpose
        assert podrun.stats()["bytes_up"] == 0, f"{what} was noticed only after an uplink"


def test_a_well_formed_key_that_does_not_exist_is_a_platform_error_not_a_usage_error():
    with pytest.raises(errors.NotFound) as info:
        podrun.get_object(podrun.ObjectRef("_default/ns/absent", 1))
    assert isinstance(info.value, errors.PlatformError) and not isinstance(info.value, ValueError)


@given(st.text(max_size=40))
def test_any_key_string_is_a_ref_or_an_invalid_key(text):
    try:
        ref = podrun.ObjectRef(text)
    except errors.InvalidKey:
        return
    assert ref.key == text and len(text.split("/")) == 3


def _is_label(value):
    return value is None or (isinstance(value, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value) is not None)


LABELS = st.from_regex(r"[a-z0-9][-a-z0-9]{0,5}[a-z0-9]", fullmatch=True)


@given(st.one_of(st.text(max_size=70), LABELS, st.none(), st.integers()))
def test_any_pod_name_is_accepted_or_a_usage_error(value):
    if _is_label(value):
        assert validate_pod_name(value) == value
    else:
        with pytest.raises(errors.UsageError, match="invalid pod_name"):
            validate_pod_name(value)


@given(st.one_of(st.text(max_size=8), st.sampled_from(["gpu", " Mpu1 ", "FPGA", "fpga2"]), st.integers()))
def test_any_node_is_a_node_or_a_usage_error(value):
    known = isinstance(value, str) and value.strip().upper() in ("FPGA", "GPU", "MPU", "MPU1")
    if known:
        assert normalize_node(value) in ("FPGA", "GPU", "MPU")
    else:
        with pytest.raises(errors.UsageError, match="unknown node"):
            normalize_node(value)


def test_remote_failures_keep_the_builtin_meaning():
    assert issubclass(errors.CallTimeout, TimeoutError)
    assert issubclass(errors.Cancelled, cf.CancelledError)
    for cls in (errors.RemoteError, errors.PodFailed, errors.CallTimeout, errors.Cancelled):
        assert issubclass(cls, errors.RemoteFailure)


def test_the_families_do_not_overlap_and_every_class_is_drawn_and_exported():
    classes = [getattr(errors, name) for name in errors.__all__]
    drawing = errors.__doc__ or ""
    for cls in classes:
        assert getattr(podrun, cls.__name__) is cls, f"podrun.{cls.__name__} is not exported"
        assert cls.__name__ in drawing, f"{cls.__name__} is missing from the hierarchy in errors.py"
        assert sum(issubclass(cls, family) for family in FAMILIES) <= 1, cls
        if cls is not errors.RemoteTraceback:
            assert issubclass(cls, errors.PodrunError), cls
    defined = {name for name, value in inspect.getmembers(errors, inspect.isclass)
               if issubclass(value, BaseException) and value.__module__ == errors.__name__ and not name.startswith("_")}
    assert defined == set(errors.__all__)


def test_no_exception_class_is_defined_outside_errors_py():
    """Private control-flow exceptions (``_Stopped``) and the emulator server's own, which
    become HTTP answers and never reach a user, are the exceptions."""
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py" or "emulator" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base).split(".")[-1] for base in node.bases}
                if any(base.endswith(("Error", "Exception")) or base in errors.__all__ for base in bases):
                    found.append(f"{path.relative_to(SRC)}:{node.name}")
    assert found == []


def test_classes_moved_into_errors_py_stay_reachable_where_they_were():
    from podrun.client import images, wheels
    from podrun.client.jobs import resolve
    from podrun.platform.local import container

    assert wheels.WheelError is errors.WheelError and images.NoContainerEngine is errors.NoContainerEngine
    assert container.ContainerUnavailable is errors.ContainerUnavailable and resolve.RemoteTraceback is errors.RemoteTraceback
