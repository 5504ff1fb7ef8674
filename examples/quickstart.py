"""podrun quickstart: Python functions offloaded to MPU and GPU pods of the embedded local
platform (no server, no account). Run with ``make demo``."""

from __future__ import annotations

import time

import podrun


@podrun.remote(node="MPU", max_duration=5)
def orbit_period_minutes(altitude_km: float) -> float:
    """Period of a circular orbit, computed on the satellite's MPU."""
    import math

    mu, earth_radius = 398600.4418, 6371.0  # km^3/s^2, km
    radius = earth_radius + altitude_km
    return 2 * math.pi * math.sqrt(radius**3 / mu) / 60


@podrun.remote(node="GPU", max_duration=5)
def brightest_pixel(width: int, height: int) -> dict:
    """Stands in for an image kernel on the GPU node (uses CUDA where the node has it)."""
    import os

    pixels = [((x * 31 + y * 17) % 251) for y in range(height) for x in range(width)]
    best = max(range(len(pixels)), key=pixels.__getitem__)
    return {"x": best % width, "y": best // width, "value": pixels[best], "node": os.environ.get("PODRUN_NODE")}


@podrun.remote(node="MPU", max_duration=5)
def square(x: int) -> int:
    return x * x


@podrun.remote(node="MPU", max_duration=5)
def checked_ratio(a: float, b: float) -> float:
    print(f"dividing {a} by {b} on the pod")
    if b == 0:
        raise ZeroDivisionError(f"cannot divide {a} by zero")
    return a / b


def main() -> None:
    started = time.perf_counter()
    period = orbit_period_minutes.remote(550.0)
    pixel = brightest_pixel.remote(64, 48)
    print(f"MPU: a 550 km orbit takes {period.get(timeout=120):.1f} minutes")
    print(f"GPU: brightest pixel {pixel.get(timeout=120)}")

    t0 = time.perf_counter()
    squares = square.map(range(1000))
    total = sum(podrun.get(squares, timeout=300))
    print(f"map: 1,000 calls in {len({f.job.job_id for f in squares})} job(s), sum of squares = {total} "
          f"({time.perf_counter() - t0:.2f} s)")

    ratio = checked_ratio.remote(1.0, 4.0)
    print(f"stdout of a call: {ratio.stdout if ratio.wait(120) else ''!r} -> result {ratio.get()}")

    try:
        checked_ratio.remote(1.0, 0.0).get(timeout=120)
    except ZeroDivisionError as error:
        print(f"caught the remote exception: {error!r}")
        print("its remote traceback:")
        print("    " + error.remote_traceback.strip().replace("\n", "\n    "))

    stats = podrun.stats()
    print(f"link: {stats['calls']} platform calls ({stats['polls']} status polls), "
          f"{stats['bytes_up']:,} bytes up, {stats['bytes_down']:,} bytes down; "
          f"{time.perf_counter() - started:.2f} s in all")


if __name__ == "__main__":
    main()
