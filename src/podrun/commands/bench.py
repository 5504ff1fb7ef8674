"""``podrun bench NAME [--quick]``: runs the repository's benchmark scripts (``benchmarks/NAME.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from ..client import config
from ..errors import PodrunError

# What --quick passes to each script: a smoke run in seconds, not a measurement.
QUICK = {
    "overhead": ["--quick"],
    "link": ["--calls", "100", "--mb", "5", "--chain-mb", "10", "--naive-sample", "2"],
    "objects": [],
    "peers": ["--quick"],
    "executor": ["--quick"],
    "pods": ["--quick"],
    "pool": ["--quick"],
    "streaming": ["--calls", "50", "--slow", "0.5"],
    "storage": [],
    "memory": ["--mb", "16", "--calls", "2000", "--map-mb", "16"],
}


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source tree podrun runs from (they are not packaged in a wheel)."""
    folder = Path(__file__).resolve().parents[3] / "benchmarks"
    if not (folder / "overhead.py").is_file():
        raise PodrunError(f"no benchmarks/ next to this podrun ({folder}): run 'podrun bench' from a source checkout")
    return folder


def bench(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"which benchmark: {', '.join(QUICK)}"),
    quick: bool = typer.Option(False, "--quick", help="a short smoke run"),
) -> None:
    """Run a benchmark script (its table on stdout, JSON in benchmarks/results/); arguments
    after the name go to the script, e.g. podrun bench link --calls 50."""
    if name not in QUICK:
        raise typer.BadParameter(f"unknown benchmark {name!r}: choose one of {', '.join(QUICK)}")
    argv = [sys.executable, str(benchmarks_dir() / f"{name}.py"), *(QUICK[name] if quick else []), *ctx.args]
    context = config.effective().context  # the script configures itself: hand it --context
    env = {**os.environ, config.ENV_CONTEXT: context} if context else None
    if _real_streams():
        code = subprocess.run(argv, env=env).returncode  # the script prints straight to this terminal
    else:  # under a test runner, whose streams are not files: relay what the script printed
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        code = done.returncode
    if code != 0:
        raise PodrunError(f"benchmark {name} failed (exit {code})")


def _real_streams() -> bool:
    try:
        sys.stdout.fileno()
        sys.stderr.fileno()
        return True
    except (OSError, ValueError, AttributeError):
        return False
