"""``network.remover_held``: the platform's shutdown stops a lingering network remover by the
pid it writes into its lock file, also when it looks in the moment between the remover taking
the lock and writing its pid (it used to find no pid, then wait out the remover's whole linger).

The remover here is a stand-in with a remover's command line (``supervisor.py --linger``, which
is what shutdown checks before it signals a pid): it takes the lock, waits a moment, writes its
pid, then lingers for a minute unless stopped. No container engine is needed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from podrun.platform.local import network

STAND_IN = """
import fcntl, os, sys, time
holder = open(sys.argv[2], "a+")
fcntl.flock(holder, fcntl.LOCK_EX)
open(sys.argv[2] + ".locked", "w").close()
time.sleep(float(sys.argv[3]))  # the window: locked, no pid written yet
holder.truncate(0)
holder.write(str(os.getpid()))
holder.flush()
time.sleep(60)
"""


def test_shutdown_stops_a_remover_that_has_locked_but_not_yet_written_its_pid(tmp_path: Path) -> None:
    script = tmp_path / "supervisor.py"
    script.write_text(STAND_IN)
    lock = network.linger_path(tmp_path, "alice")
    remover = subprocess.Popen([sys.executable, str(script), "--linger", str(lock), "0.5"])
    try:
        while not Path(f"{lock}.locked").exists():
            assert remover.poll() is None
            time.sleep(0.01)
        with network.remover_held(tmp_path, "alice"):
            assert remover.poll() == -signal.SIGTERM  # stopped by its pid, not waited out
    finally:
        remover.kill()
        remover.wait()
