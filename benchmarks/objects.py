"""Object updates over the link: a 64 MiB float32 array, 1 % of its elements changed per update.

Compares bytes uplinked per update by podrun (binary delta against the previous version)
with a full re-upload (flamepy's behaviour), bytes downlinked by a reader holding the
previous version, and seconds per update. Then patches: platform calls and bytes of each
``patch_object`` (1 KiB deltas), of a cached reader's ``get_object`` after it, and of a
``compact_object`` and the read after it. Writes benchmarks/results/objects.json.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import podrun
from podrun.platform.metered import PROCESS_STATS

UPDATES = 10
PATCHES = 20
ELEMENTS = 16 * 1024 * 1024  # 64 MiB of float32
CHANGED = 0.01


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PODRUN_HOME"] = f"{tmp}/writer"
        podrun.configure("local", root=f"{tmp}/platform")
        rng = np.random.default_rng(0)
        array = rng.standard_normal(ELEMENTS, dtype=np.float32)
        full = array.nbytes
        ref = podrun.put_object("_default/bench", array)
        os.environ["PODRUN_HOME"] = f"{tmp}/reader"
        podrun.get_object(ref)
        rows = []
        for i in range(UPDATES):
            idx = rng.choice(ELEMENTS, int(ELEMENTS * CHANGED), replace=False)
            array[idx] = rng.standard_normal(idx.size, dtype=np.float32)
            os.environ["PODRUN_HOME"] = f"{tmp}/writer"
            before = PROCESS_STATS.as_dict()
            started = time.perf_counter()
            ref = podrun.update_object(ref, array)
            seconds = time.perf_counter() - started
            up = PROCESS_STATS.bytes_up - before["bytes_up"]
            calls = PROCESS_STATS.calls - before["calls"]
            os.environ["PODRUN_HOME"] = f"{tmp}/reader"
            before = PROCESS_STATS.as_dict()
            started = time.perf_counter()
            got = podrun.get_object(ref)
            read_seconds = time.perf_counter() - started
            down = PROCESS_STATS.bytes_down - before["bytes_down"]
            read_calls = PROCESS_STATS.calls - before["calls"]
            assert np.array_equal(got, array), "reader rebuilt a wrong version"
            rows.append({"update": i + 1, "version": ref.version, "bytes_up": up, "full_bytes": full,
                         "up_pct_of_full": 100 * up / full, "bytes_down_reader": down,
                         "down_pct_of_full": 100 * down / full, "update_seconds": seconds, "update_calls": calls,
                         "read_seconds": read_seconds, "read_calls": read_calls})
    print(f"{'upd':>3} {'podrun up':>12} {'full (flamepy)':>15} {'up %':>6} {'reader down':>12} {'down %':>7} "
          f"{'s/update':>9} {'s/read':>7} calls")
    for r in rows:
        print(f"{r['update']:>3} {r['bytes_up']:>12,} {r['full_bytes']:>15,} {r['up_pct_of_full']:>6.2f} "
              f"{r['bytes_down_reader']:>12,} {r['down_pct_of_full']:>7.2f} {r['update_seconds']:>9.2f} "
              f"{r['read_seconds']:>7.2f} {r['update_calls']}/{r['read_calls']}")
    summary = {"mean_up_pct": sum(r["up_pct_of_full"] for r in rows) / len(rows),
               "mean_down_pct": sum(r["down_pct_of_full"] for r in rows) / len(rows),
               "mean_update_seconds": sum(r["update_seconds"] for r in rows) / len(rows),
               "mean_read_seconds": sum(r["read_seconds"] for r in rows) / len(rows)}
    print(json.dumps(summary))
    patches = patch_rows()
    print(f"{'step':>8} {'calls':>5} {'bytes up':>9} {'bytes down':>10} {'reader calls':>12} {'reader down':>11}")
    for r in patches:
        print(f"{r['step']:>8} {r['calls']:>5} {r['bytes_up']:>9,} {r['bytes_down']:>10,} {r['read_calls']:>12} "
              f"{r['read_down']:>11,}")
    out = Path(__file__).with_name("results") / "objects.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"elements": ELEMENTS, "changed_fraction": CHANGED, "rows": rows, "summary": summary,
                               "patches": patches}, indent=1))
    return 0


def _measure(action: Callable[[], Any]) -> tuple[dict[str, int], Any]:
    before = PROCESS_STATS.as_dict()
    result = action()
    now = PROCESS_STATS.as_dict()
    return {k: now[k] - before[k] for k in ("calls", "bytes_up", "bytes_down")}, result


def patch_rows() -> list[dict[str, Any]]:
    """Per step: the writer's calls and bytes, then a cached reader's (another home) get."""
    def merge(base: list, deltas: list) -> list:
        return base + [x for d in deltas for x in d]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        homes = {"writer": f"{tmp}/writer", "reader": f"{tmp}/reader"}
        os.environ["PODRUN_HOME"] = homes["writer"]
        podrun.configure("local", root=f"{tmp}/platform")
        ref = podrun.put_object("_default/bench", [bytes(1024)])
        os.environ["PODRUN_HOME"] = homes["reader"]
        podrun.get_object(ref, deserializer=merge)
        steps: list[tuple[str, Callable[[], Any]]] = [
            (f"patch {i + 1}", functools.partial(podrun.patch_object, ref, [bytes([i]) * 1024])) for i in range(PATCHES)]
        steps.append(("compact", functools.partial(podrun.compact_object, ref, merge)))
        steps.append(("patch", functools.partial(podrun.patch_object, ref, [bytes(1024)])))
        expected = [bytes(1024)]
        for name, action in steps:
            os.environ["PODRUN_HOME"] = homes["writer"]
            wrote, _ = _measure(action)
            expected += [] if name == "compact" else action.args[1]  # type: ignore[attr-defined]
            os.environ["PODRUN_HOME"] = homes["reader"]
            read, value = _measure(functools.partial(podrun.get_object, ref, deserializer=merge))
            assert value == expected, "reader rebuilt a wrong version"
            rows.append({"step": name, **wrote, "read_calls": read["calls"], "read_down": read["bytes_down"],
                         "read_up": read["bytes_up"]})
    return rows


if __name__ == "__main__":
    sys.exit(main())
