"""The ``Platform`` contract: the EM API's operations, typed. Everything above layer 2 talks
to pods only through it, so a job runs unchanged on the local platform and on CG2."""

from __future__ import annotations

import io
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Union

from ..errors import NotFound
from .types import FileEntry, PodSpec, PodState

# An uplinked file: its name in the volume (no directories: the EM API sends basenames) and
# its content as bytes, a local path, or an open binary stream.
FileContent = Union[bytes, bytearray, memoryview, "os.PathLike[str]", BinaryIO]
UplinkFile = tuple[str, FileContent]
Progress = Callable[[int], None]  # called with the number of bytes just moved


def content_size(content: FileContent) -> int | None:
    """Bytes an uplinked file will carry; None for a stream that cannot seek."""
    if isinstance(content, (bytes, bytearray)):
        return len(content)
    if isinstance(content, memoryview):
        return content.nbytes
    if isinstance(content, (str, os.PathLike)):
        return os.path.getsize(content)
    try:
        position = content.tell()
        size = content.seek(0, os.SEEK_END) - position
        content.seek(position)
    except (OSError, AttributeError, ValueError):
        return None
    return size


class Watch:
    """A wait between two polls of a job's volume folders and its pod's status. This one sleeps
    out every wait (a platform that cannot say when a file lands, as the EM API cannot): the
    caller's poll backoff is the bound. A platform that can tell (``LocalPlatform``) ends a
    wait as soon as a file lands in a watched folder or the pod's status changes; ``wakes``
    says which kind a watch is. A wake means "look now", never what changed."""

    wakes = False

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when woken early by a change."""
        time.sleep(timeout)
        return False

    def close(self) -> None:
        return

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Platform(ABC):
    """A pod platform. Implementations: LocalPlatform (embedded) and EMPlatform (HTTP)."""

    #: Short kind name ("local", "em"), used in manifests and stats.
    kind: str = "abstract"
    #: The largest total size one uplink call accepts; larger uplinks are split by callers.
    max_uplink_bytes: int = 2 * 1000**3
    #: (first, max) seconds between status polls: a local pod answers in milliseconds, CG2 in minutes.
    poll_interval: tuple[float, float] = (0.02, 0.5)

    @abstractmethod
    def identity(self) -> str:
        """A stable name for where this platform's volumes live (user included), for caches."""

    def environment_scope(self) -> str:
        """Where what a pod reported about its environment (Python, modules, codecs) holds:
        the platform itself, unless the same volumes can be served by pods of another kind."""
        return self.identity()

    # files -----------------------------------------------------------------------------------
    @abstractmethod
    def uplink(
        self,
        files: Sequence[UplinkFile],
        dest_path: str = "",
        pod_name: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Store ``files`` under ``dest_path`` in the volume; returns ``{file_count, total_size_kb}``."""

    @abstractmethod
    def downlink_into(self, path: str, sink: BinaryIO, pod_name: str | None = None, progress: Progress | None = None) -> int:
        """Stream one file of the volume into ``sink``; returns the byte count."""

    def downlink(self, path: str, pod_name: str | None = None) -> bytes:
        buffer = io.BytesIO()
        self.downlink_into(path, buffer, pod_name)
        return buffer.getvalue()

    @abstractmethod
    def list_files(self, pod_name: str | None = None) -> list[FileEntry]:
        """The volume's tree (names relative to the volume root)."""

    @abstractmethod
    def delete(self, path: str, pod_name: str | None = None) -> None:
        """Delete a file or a folder (recursively)."""

    # images ----------------------------------------------------------------------------------
    @abstractmethod
    def image_build(self, dockerfile: str, image: str, context: str = ".", pod_name: str | None = None) -> None:
        """Build ``image`` from a Dockerfile and context already in the volume."""

    @abstractmethod
    def image_load(self, tarfile: str, image: str, pod_name: str | None = None) -> None:
        """Load an image tar (``docker save`` output) already in the volume."""

    @abstractmethod
    def image_list(self) -> list[dict[str, Any]]:
        """The user's own built and loaded images (stock images are not listed)."""

    # pods ------------------------------------------------------------------------------------
    @abstractmethod
    def run_pod(self, spec: PodSpec) -> None:
        """Schedule a pod; replaces a pod of the same pod_name. Returns once accepted."""

    def run_pod_at_most_once(self, spec: PodSpec, started: Callable[[], bool]) -> None:
        """``run_pod`` for a caller whose pod must not be started twice (it would replace the
        first one mid-call): where an answer can be lost after the platform acted, a re-send
        first asks ``started()``, and True means the first send got through. A platform that
        never loses an answer (in-process) just runs it."""
        self.run_pod(spec)

    @abstractmethod
    def pod_status(self, pod_name: str | None = None) -> PodState:
        """The pod's container state; NotFound when no pod of that name was ever run."""

    def pod_ended(self, pod_name: str | None = None) -> bool:
        """Whether no pod of ``pod_name`` runs now (one never run has ended too)."""
        try:
            return self.pod_status(pod_name).is_terminal
        except NotFound:
            return True

    def watch(self, folders: Sequence[str], pod_name: str | None = None) -> Watch:
        """A :class:`Watch` for polls of ``folders`` of the volume (those not there yet are
        watched once they are) and of the pod's status. The default sleeps: polls keep their
        backoff."""
        return Watch()

    @abstractmethod
    def nodes_status(self) -> list[dict[str, str]]:
        """``[{"name": "fpga", "status": "True"}, ...]``."""

    # volumes ---------------------------------------------------------------------------------
    @abstractmethod
    def pvc_list(self) -> list[str]:
        """Names of the user's volumes."""

    @abstractmethod
    def pvc_delete(self, pvc_name: str) -> None:
        """Delete one of the user's volumes and everything in it."""

    def default_volume(self) -> str | None:
        """The name ``pvc_list`` gives the default volume (the EM's ``<username>-pvc``); every
        other volume is named by its pod_name. None where the platform does not say."""
        return None

    def close(self) -> None:
        """Release connections. Pods keep running: they outlive the client by design.

        Concrete on purpose, not abstract: a platform holding no connections (the local one) has
        nothing to release, so the default does nothing; one that holds some (EM) or wraps
        another (metered) overrides it."""
        return

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
