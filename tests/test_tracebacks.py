"""Remote tracebacks name the user's real files and show their lines, on every pod driver.

The pod never has the user's source (in a container it cannot see the client's files; with
cloudpickle 3.1.3 and later by-value code names no file at all), so these tests also look at
the record the pod sent: by-value frames carry a code id and no source line, and the client
renders them from its own files. Runs on each local driver this machine has (process,
container); a driver that cannot run here is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import given
from hypothesis import strategies as st

import podrun
from podrun.errors import WireFormatError
from podrun.platform.local import LocalPlatform
from podrun.wire.tracebacks import ORIGINS, ExceptionEntry, Frame, TraceRecord, code_id

from . import traceback_helper
from .platforms import container_platform, require_engine

HERE = str(Path(__file__).resolve())
HELPER = str(Path(traceback_helper.__file__).resolve())
IMAGE = f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim"


@pytest.fixture(params=["process", "container"])
def driver_platform(request: pytest.FixtureRequest, podrun_home: Path):
    if request.param == "container":
        require_engine()
    platform = (container_platform(podrun_home / "local", "local") if request.param == "container"
                else LocalPlatform(podrun_home / "local", driver=request.param))
    podrun.configure(platform)
    yield platform
    platform.shutdown()


class CalibrationError(Exception):
    def __init__(self, sensor: str, drift: float) -> None:
        super().__init__(f"sensor {sensor} drifted by {drift}")
        self.sensor = sensor
        self.drift = drift


def _inner(readings: list[float]) -> float:
    checked = [traceback_helper.check_reading(r) for r in readings]  # line: shipped module frame below
    return sum(checked)


def calibrate(readings: list[float]) -> float:
    try:
        return _inner(readings)
    except ValueError as exc:
        raise CalibrationError("gyro-2", readings[0]) from exc


def parse(text: str) -> object:
    return json.loads(text)


def _run(fn, *args):
    return podrun.remote(fn, image=IMAGE, max_duration=2).remote(*args)


def _line_of(path: str, text: str) -> int:
    return next(n for n, line in enumerate(Path(path).read_text().splitlines(), 1) if text in line)


def test_by_value_and_shipped_frames_render_from_the_client_source(driver_platform: LocalPlatform) -> None:
    future = _run(calibrate, [-1.5, 2.0])
    with pytest.raises(CalibrationError) as info:
        future.get(timeout=180)
    text = info.value.remote_traceback  # type: ignore[attr-defined]
    assert (info.value.sensor, info.value.drift) == ("gyro-2", -1.5)
    # The chain, as Python prints it: the cause first, in the shipped module, then the raise.
    cause, _, effect = text.partition("The above exception was the direct cause of the following exception:")
    assert effect, text
    assert f'File "{HERE}", line {_line_of(HERE, "return _inner(readings)")}, in calibrate' in cause
    assert f'File "{HERE}", line {_line_of(HERE, "checked = [traceback_helper")}, in ' in cause
    assert f'File "{HELPER}", line {_line_of(HELPER, "raise ValueError")}, in check_reading\n' in cause
    assert 'raise ValueError(f"negative reading {value}")' in cause and "ValueError: negative reading -1.5" in cause
    assert f'File "{HERE}", line {_line_of(HERE, "raise CalibrationError")}, in calibrate' in effect
    assert 'raise CalibrationError("gyro-2", readings[0]) from exc' in effect
    assert "executor.py" not in text and "<dynamic-code>" not in text

    # What the pod sent: no source for by-value code (it has none), a code id the client knows.
    record = TraceRecord.from_wire(future._record.error["tb"])
    own = [f for e in record.exceptions for f in e.frames if f.qualname in ("calibrate", "_inner")]
    assert own and all(f.source is None and ORIGINS.get(f.code_id) == (HERE, f.first_line) for f in own)
    shipped = [f for e in record.exceptions for f in e.frames if f.name == "check_reading"]
    assert shipped and shipped[0].shipped and shipped[0].module == "tests.traceback_helper"
    assert not shipped[0].file.startswith(str(Path(HERE).parent))  # the pod's path of it, not the client's


def test_image_frames_show_the_line_the_pod_read(driver_platform: LocalPlatform) -> None:
    with pytest.raises(json.JSONDecodeError) as info:
        _run(parse, "{").get(timeout=180)
    text = info.value.remote_traceback  # type: ignore[attr-defined]
    assert f'File "{HERE}", line {_line_of(HERE, "return json.loads(text)")}, in parse\n    return json.loads(text)' in text
    decoder = [line for line in text.splitlines() if "json/decoder.py" in line]
    assert decoder, text
    # The pod's own path of the standard library (in a container: the image's, not the host's).
    if driver_platform.effective_driver == "container":
        assert not any(str(Path(json.__file__).parent) in line for line in decoder), decoder
    assert "    obj, end = self.scan_once(s, idx)\n" in text  # read by the pod from its own json/decoder.py


# --- the record itself -------------------------------------------------------------------------

texts = st.text(max_size=40)
frames = st.builds(Frame, texts, st.integers(0, 10**6), texts, texts, st.integers(0, 10**6),
                   st.none() | texts, st.none() | texts, st.none() | texts, st.booleans(), st.integers(1, 10**6))
links = st.sampled_from([None, "cause", "context"])
entries = st.builds(ExceptionEntry, texts, texts, st.lists(frames, max_size=5).map(tuple), links)
records = st.builds(TraceRecord, st.lists(entries, min_size=1, max_size=4).map(tuple))


@given(records)
def test_record_round_trips_through_msgpack(record: TraceRecord) -> None:
    import msgpack

    assert TraceRecord.from_wire(msgpack.unpackb(msgpack.packb(record.to_wire()))) == record


keys = st.sampled_from(["v", "x", "t", "s", "l", "f"])
wire_like = st.recursive(st.none() | st.integers() | st.text(max_size=5) | st.booleans(),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6), max_leaves=30)


@given(wire_like)
def test_a_malformed_record_is_a_wire_format_error(data: object) -> None:
    try:
        record = TraceRecord.from_wire(data)
    except WireFormatError:
        return
    assert isinstance(record, TraceRecord) and record.exceptions  # only a well-formed record decodes


def test_code_id_survives_cloudpickle_and_another_hash_seed(tmp_path: Path) -> None:
    def sample(values, scale=2.5):
        table = {"a": 1, "b": frozenset({"x", "y", "z"})}
        return [lambda v=v: v * scale + table["a"] for v in values]

    payload = tmp_path / "fn.pkl"
    payload.write_bytes(cloudpickle.dumps(sample))
    program = ("import sys, cloudpickle; from podrun.wire.tracebacks import code_id; "
               "fn = cloudpickle.loads(open(sys.argv[1], 'rb').read()); "
               "inner = [c for c in fn.__code__.co_consts if hasattr(c, 'co_code')][0]; "
               "print(code_id(fn.__code__), code_id(inner))")
    for seed in ("0", "12345"):
        done = subprocess.run([sys.executable, "-c", program, str(payload)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        inner = next(c for c in sample.__code__.co_consts if hasattr(c, "co_code"))
        assert done.stdout.split() == [code_id(sample.__code__), code_id(inner)]
    other = sample.__code__.replace(co_firstlineno=sample.__code__.co_firstlineno + 1)
    assert code_id(other) != code_id(sample.__code__)  # the first line is part of the identity


def test_repeated_frames_collapse_as_python_prints_them() -> None:
    from podrun.client.tracebacks import render

    frame = Frame("/pod/lib/deep.py", 3, "deep", "deep", 1, None, None, "return deep(n - 1)")
    for frames in [(frame,) * 10, (replace(frame, repeat=4), replace(frame, repeat=6)), (replace(frame, repeat=10),)]:
        text = render(TraceRecord((ExceptionEntry("builtins.RecursionError", "RecursionError: too deep\n", frames),)))
        assert text.count('File "/pod/lib/deep.py", line 3, in deep') == 3
        assert "[Previous line repeated 7 more times]" in text and text.endswith("RecursionError: too deep\n")
    text = render(TraceRecord((ExceptionEntry("builtins.RecursionError", "x\n", (replace(frame, repeat=4),)),)))
    assert text.count("line 3, in deep") == 3 and "[Previous line repeated 1 more time]" in text


def test_by_value_code_another_process_pickled_renders_from_its_loaded_module() -> None:
    # A re-attached job: this process never pickled the code (its id is unknown here), but it
    # has the function's module loaded, and the function starts on the line the pod reports.
    from podrun.client.tracebacks import render

    code = calibrate.__code__
    line = _line_of(HERE, "raise CalibrationError")
    frame = Frame("<dynamic-code>", line, "calibrate", "calibrate", code.co_firstlineno, "0" * 32, __name__, None)
    elsewhere = Frame("<dynamic-code>", line, "calibrate", "calibrate", code.co_firstlineno + 1, "0" * 32, __name__, None)
    entry = ExceptionEntry("tests.test_tracebacks.CalibrationError", "CalibrationError: x\n", (frame, elsewhere))
    text = render(TraceRecord((entry,)))
    assert f'File "{HERE}", line {line}, in calibrate\n    raise CalibrationError("gyro-2", readings[0]) from exc\n' in text
    assert f'File "<dynamic-code>", line {line}, in calibrate\n' in text  # not that function there: not attributed


def recurse(n: int) -> int:
    return recurse(n + 1)


def test_a_recursion_error_travels_small_and_renders_as_python_prints_it(podrun_home: Path) -> None:
    podrun.configure(LocalPlatform(podrun_home / "local", driver="process"))
    future = _run(recurse, 0)
    with pytest.raises(RecursionError) as info:
        future.get(timeout=180)
    text = info.value.remote_traceback  # type: ignore[attr-defined]
    line = _line_of(HERE, "return recurse(n + 1)")
    assert text.count(f'File "{HERE}", line {line}, in recurse\n    return recurse(n + 1)\n') == 3
    assert "[Previous line repeated" in text
    import msgpack

    assert len(msgpack.packb(future._record.error["tb"])) < 2000  # ~1000 frames, sent as one with a count
