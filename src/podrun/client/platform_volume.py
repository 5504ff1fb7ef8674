"""The object store's volume as a client reaches it: through a Platform (uplink, list,
downlink, delete), where every read costs link bytes. Inside a pod the store reads its own
volume's directory instead (``store.objects.DirectoryVolume``)."""

from __future__ import annotations

from ..platform.base import Platform
from ..platform.types import walk_entries
from ..store.objects import VolumeFiles


class PlatformVolume(VolumeFiles):
    """A volume reached through a Platform (one call per operation; list is the whole tree)."""

    remote = True

    def __init__(self, platform: Platform, pod_name: str | None) -> None:
        self.platform = platform
        self.pod_name = pod_name

    def list_tree(self, directory: str) -> dict[str, int]:
        files = walk_entries(self.platform.list_files(self.pod_name))
        prefix = directory.rstrip("/") + "/"
        return {path[len(prefix):]: entry.size for path, entry in files.items() if path.startswith(prefix)}

    def read(self, path: str) -> bytearray:
        return bytearray(self.platform.downlink(path, self.pod_name))

    def write(self, directory: str, name: str, data: bytes | bytearray | memoryview) -> None:
        self.platform.uplink([(name, data)], dest_path=directory, pod_name=self.pod_name)

    def delete(self, path: str) -> None:
        self.platform.delete(path, self.pod_name)
