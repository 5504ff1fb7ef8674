"""Peak memory for one large result, in the client and in the pod.

A call returns an incompressible array of SIZE bytes (``--mb``, default 256); the pod writes
its peak RSS (``ru_maxrss``) at exit, the client measures its own around ``fut.get()``. The
figures are multiples of the result's size above each process's baseline (ideal: 1x, the
result itself). Local platform, process driver: the pod is a plain process we can measure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from _common import print_table, write_json

CLIENT = r"""
import resource, sys
import numpy as np
import podrun

size = int(sys.argv[1])

@podrun.remote(node="MPU", max_duration=10)
def big(n):
    import atexit, os, resource
    import numpy as np
    import podrun
    out = os.path.join(podrun.data_dir(), "pod-rss")
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the runtime loaded, nothing made yet
    atexit.register(lambda: open(out, "w").write(f"{start} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}"))
    return np.frombuffer(os.urandom(n), dtype=np.uint8)

podrun.configure("local", driver="process")
assert big.remote(1024).get(timeout=120).nbytes == 1024  # warm: imports, runtime, manifests
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
value = big.remote(size).get(timeout=600)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
assert value.nbytes == size
volume = podrun.client.config.current_platform().inner.volume_path(None)
print(before, after, (volume / "pod-rss").read_text())
"""


def measure(size: int) -> dict[str, float]:
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="podrun-bench-") as home:
        done = subprocess.run([sys.executable, "-c", CLIENT, str(size)], capture_output=True, text=True,
                              env={**os.environ, "PODRUN_HOME": home}, timeout=900)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        before, after, pod_start, pod_peak = (int(x) for x in done.stdout.split())
    return {"client_peak_mb": after / 2**20, "client_over_result": (after - before) / size,
            "pod_peak_mb": pod_peak / 2**20, "pod_over_result": (pod_peak - pod_start) / size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()
    size = args.mb * 2**20
    result = measure(size)
    print_table(f"peak memory for one {args.mb} MB result", ["where", "peak RSS MB", "x result size"],
                [["client", result["client_peak_mb"], result["client_over_result"]],
                 ["pod", result["pod_peak_mb"], result["pod_over_result"]]])
    write_json("memory", {"result_mb": args.mb, **result})


if __name__ == "__main__":
    main()
