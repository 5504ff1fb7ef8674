"""LocalPlatform's :class:`~podrun.platform.base.Watch`: a client following a job wakes the
moment a result segment, a warm pod's status or the pod's own state lands, not at its next poll.

Why: polls back off (a local one to 20 ms), so a result that landed just after a poll waited for
the next; a warm call is a few milliseconds of work. Every file of interest here is renamed into
its folder when complete (a segment, the status file, the pod's ``state.json``), so the watch
wakes on ``IN_MOVED_TO`` alone: a temporary file being written wakes nothing.

Hostile volumes: a pod may replace a folder by a symlink. Each folder is opened beneath the
volume's descriptor with no symlink followed (``VolumeDir.folder``) and watched through that
descriptor, so a watch never lands outside the volume. A folder not there yet (a warm job's,
which the pod makes only when it takes the job) is made by the watch, as an uplink into it would
make it: the segment a warm pod closes a few milliseconds after taking the job then wakes the
client, which a folder watched only from the next wait on could miss. Where it cannot be made it
is looked for again at each wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import PodrunError
from ...inotify import IN_MOVED_TO, Inotify
from ..base import Watch
from .volumes import VolumeDir


class LocalWatch(Watch):
    wakes = True

    def __init__(self, volume: VolumeDir, folders: Sequence[str], pod_dir: Path) -> None:
        self.volume = volume
        self.inotify = Inotify()
        self.pod_dir: Path | None = pod_dir  # the host's own folder (made by the first run of the pod_name)
        self.missing = list(folders)
        if self.inotify.fd is None:  # no inotify here: every wait sleeps
            self.wakes = False
            return
        self._add_missing(create=True)

    def _add_missing(self, create: bool = False) -> None:
        if self.pod_dir is not None and self.inotify.add(str(self.pod_dir), IN_MOVED_TO):  # state.json: replaced by rename
            self.pod_dir = None
        left = []
        for folder in self.missing:
            try:
                with self.volume.folder(folder, create=create) as fd:
                    added = self.inotify.add(f"/proc/self/fd/{fd}", IN_MOVED_TO)  # the folder opened, not its path
            except (PodrunError, OSError):
                added = False
            if not added:
                left.append(folder)
        self.missing = left

    def wait(self, timeout: float) -> bool:
        if (self.missing or self.pod_dir is not None) and self.inotify.fd is not None:
            self._add_missing()
        return self.inotify.wait(timeout)

    def close(self) -> None:
        self.inotify.close(later=True)  # the job goes on; the kernel's grace period is the closing thread's
