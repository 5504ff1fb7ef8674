"""A seam for tests that interleave object writers at exact points of their protocol.

The object store's commit protocol is only as good as its worst interleaving of four volume
operations (list, read, write, delete), and real threads hit the narrow ones by luck. A test
installs a hook with ``stepping(hook)``; every ``ObjectStore`` made while it is installed calls
``hook(operation, path)`` in the calling thread before each volume operation, so the test can
hold that thread there until its schedule says go. Nothing else changes: the operations are
the real ones, on the real platform. Production never installs a hook (the store then uses
its volume directly, at no cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .objects import VolumeFiles

StepHook = Callable[[str, str], None]
_hook: StepHook | None = None


@contextmanager
def stepping(hook: StepHook) -> Iterator[None]:
    """Install ``hook`` for the stores made inside this block (tests only)."""
    global _hook
    previous, _hook = _hook, hook
    try:
        yield
    finally:
        _hook = previous


def observed(volume: VolumeFiles) -> VolumeFiles:
    """``volume`` itself, or, while a hook is installed, a view that calls it first."""
    if _hook is None:
        return volume
    from .objects import VolumeFiles

    hook = _hook

    class Stepped(VolumeFiles):
        remote = volume.remote

        def list_tree(self, directory: str) -> dict[str, int]:
            hook("list", directory)
            return volume.list_tree(directory)

        def read(self, path: str) -> bytearray:
            hook("read", path)
            return volume.read(path)

        def write_many(self, directory: str, files: list[tuple[str, bytes | bytearray | memoryview]]) -> None:
            hook("write", f"{directory}/{files[-1][0]}")
            volume.write_many(directory, files)

        def delete(self, path: str) -> None:
            hook("delete", path)
            volume.delete(path)

        def read_blob(self, blob_hash: str) -> bytes:
            hook("read", blob_hash)
            return volume.read_blob(blob_hash)

        def has_blob(self, blob_hash: str) -> bool | None:
            return volume.has_blob(blob_hash)

    return Stepped()
