"""``podrun bench peers``: a smoke run of benchmarks/peers.py on podrun and ProcessPoolExecutor
with tiny sizes. It checks what the run writes and prints (the JSON's shape, the tables), never
the numbers: speed belongs to the benchmark, not to a test. ``make test-slow`` and CI run it."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podrun.client.remote import remote

ROOT = Path(__file__).resolve().parents[1]
SIZES = (50, 120)


def workers_supported() -> bool:
    return "workers" in inspect.signature(remote).parameters


def columns() -> set[str]:
    return {"cold_p50_ms", "cold_p95_ms", "warm_p50_ms", "warm_p95_ms", *(f"map_{n}_calls_per_s" for n in SIZES),
            "cpu_s", "cpu_x_ideal", "shared_s", "client_peak_mb", "workers_peak_mb"}


@pytest.mark.slow  # 20-50 s here: two podrun rows of cold and warm pods, and the pool's
def test_a_quick_run_measures_podrun_and_the_process_pool(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    done = subprocess.run(
        [sys.executable, "-m", "podrun.cli", "bench", "peers", "--quick", "--systems", "podrun,pool",
         "--sizes", ",".join(map(str, SIZES)), "--cpu-calls", "4", "--shared-mb", "1", "--shared-calls", "3",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "podrun and its peers" in done.stdout and "ratios to ProcessPoolExecutor" in done.stdout
    data = json.loads(out.read_text())
    assert {"machine", "commit", "plan", "wall_s", "systems"} <= set(data)
    assert data["plan"]["mode"] == "quick" and data["plan"]["sizes"] == list(SIZES) and data["plan"]["rounds"] == 1
    systems = data["systems"]
    rows = {"podrun-w1", f"podrun-w{os.cpu_count()}", "pool-submit", "pool-map"}
    measured = [name for name, entry in systems.items() if "note" not in entry]
    if workers_supported():  # the workers= rows are measured, and they replace the plain podrun row
        assert set(systems) == rows and set(measured) == rows
    else:  # plain podrun is measured; the workers= rows say why they are not
        assert set(systems) == rows | {"podrun"} and set(measured) == {"podrun", "pool-submit", "pool-map"}
    for name in measured:
        entry = systems[name]
        assert entry["rounds"] == 1 and "errors" not in entry, entry.get("errors")
        figures = entry["figures"]
        expected = columns() - ({"cold_p50_ms", "cold_p95_ms", "warm_p50_ms", "warm_p95_ms"} if name == "pool-map" else set())
        assert set(figures) == expected
        assert all(isinstance(v, float) and v > 0 for v in figures.values()), figures
        assert set(entry["ratios"]) >= columns() and set(entry["rss_mb"]) >= {"map-50", "map-120", "cpu", "shared"}
        assert len(entry.get("cold_s", {"samples": [0]})["samples"]) >= 1
    assert all(systems["pool-map"]["ratios"][f"map_{n}_calls_per_s"] == 1.0 for n in SIZES)
    assert str(systems["pool-map"]["map"][str(SIZES[0])]["chunksize"]) in systems["pool-map"]["map"][str(SIZES[0])]["sweep_s"]
    assert all(entry["note"] == "n/a (workers= not available)" for entry in systems.values() if "note" in entry)
