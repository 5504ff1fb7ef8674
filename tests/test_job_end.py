"""A job is over at its end record: the runtime writes it after every outcome, so the client
neither waits for the pod's exit nor for a poll to see it; the pod is still stopped and reaped."""

from __future__ import annotations

from pathlib import Path

import podrun
from podrun.platform.local import LocalPlatform
from podrun.platform.local.pods import read_json
from podrun.wire import records as rec


def hang_at_exit(x: int) -> int:
    """Returns at once, leaving a thread that keeps the pod's process from exiting (Python
    waits for its non-daemon threads): the pod hangs after its end record."""
    import threading
    import time

    threading.Thread(target=time.sleep, args=(600,)).start()
    return x + 1


def times_ten(x: int) -> int:
    return 10 * x


def test_a_pod_hanging_after_its_end_record_delivers_and_is_still_stopped_and_reaped(podrun_home):
    platform = LocalPlatform(podrun_home / "local", driver="process", stop_grace=1)
    podrun.configure(platform)
    first = podrun.remote(hang_at_exit, max_duration=1, pod_name="hang", workers=1).remote(1)
    assert first.get(timeout=60) == 2
    assert first.job.finished.wait(60)  # the job is over...
    assert first.job.state is None  # ... by its records, not by a pod state
    assert platform.pod_status("hang").phase == "running"  # ... while its pod still runs
    pod_pid = next(r.pid for r in first.job.stream.records if isinstance(r, rec.StartRecord))
    supervisor_pid = read_json(platform._pod_dir("hang") / "state.json")["supervisor_pid"]
    assert Path(f"/proc/{pod_pid}").exists() and Path(f"/proc/{supervisor_pid}").exists()
    # The next job replaces the hung pod: SIGTERM (only noted once the end record is written), SIGKILL after the grace.
    second = podrun.remote(times_ten, max_duration=1, pod_name="hang", workers=1).remote(4)
    assert second.get(timeout=60) == 40
    assert not Path(f"/proc/{pod_pid}").exists()  # stopped, and reaped by its supervisor
    assert not Path(f"/proc/{supervisor_pid}").exists()  # the supervisor too, by this client: no zombie left
