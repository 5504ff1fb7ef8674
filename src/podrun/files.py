"""Writing a file so that readers see the old version or the new one, never half of either;
private state (what podrun keeps under ``$PODRUN_HOME`` is its user's alone); and state
writes that never fail the work they record (a full or read-only home is a warning); telling
one version of a file from the next."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def version_stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from the next without reading it. Not the mtime alone:
    its clock is coarse (a few ms on ext4) and a file may be replaced twice within one tick;
    each replacement (a new file renamed into place) has a new inode, size or change time."""
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def private_dirs(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` and its missing parents as private folders (0700); folders that already
    exist keep their mode (``/tmp`` is not ours to change). Returns ``path``."""
    path = Path(path)
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with suppress(FileExistsError):
            os.mkdir(folder, PRIVATE_DIR)
    return path


def write_at(folder: int, name: str, content: Any, progress: Callable[[int], None] | None = None,
             mode: int = PRIVATE_FILE, owner: tuple[int, int] | None = None) -> int:
    """Write ``name`` in the folder open as ``folder`` via a uniquely named ``.part`` file and a
    rename within that folder (both by descriptor): readers see the old file or the new one,
    concurrent writers never share a temporary file, and a symlink planted under either name
    is replaced, never followed. ``content``: bytes, str, a local path or a binary stream.
    ``owner`` (uid, gid) is given to the file before it appears under its name. Returns the
    bytes written."""
    tmp = f".{name}.{os.urandom(4).hex()}.part"  # not secrets: it imports hmac and random, in every pod
    written = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=folder)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as out:
            if isinstance(content, str):
                content = content.encode()
            if isinstance(content, (bytes, bytearray, memoryview)):
                out.write(content)
                written = memoryview(content).nbytes
                if progress:
                    progress(written)
            else:
                source = open(content, "rb") if isinstance(content, os.PathLike) else content  # noqa: SIM115 - closed below, not if the caller's
                try:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                        if progress:
                            progress(len(chunk))
                finally:
                    if source is not content:
                        source.close()
        os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        raise
    return written


def atomic_write(path: Path, data: Any, private: bool = True) -> None:
    """Write ``data`` (bytes, str, or a stream to read to its end) to ``path`` atomically as a
    private file (0600), making missing parent folders private (0700); ``private=False`` for a
    file the user asked for (umask decides). Listings skip the ``.part`` file in flight."""
    parent = Path(path).parent
    if private:
        private_dirs(parent)
    else:
        parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(parent, _DIR_FLAGS)
    try:
        write_at(folder, Path(path).name, data, mode=PRIVATE_FILE if private else 0o666)
    finally:
        os.close(folder)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT) -> int:
    """A descriptor of a private state file (a lock file, say), made 0600 in private folders."""
    private_dirs(Path(path).parent)
    return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE)


class StateNotSaved(UserWarning):
    """podrun could not write a state file (journal, cache, manifest): the work went on."""


@contextmanager
def best_effort(what: str) -> Iterator[None]:
    """Run a write of client state that must never fail the work it records (a call that ran,
    an object that was stored): an OSError (a full disk, a read-only ``$PODRUN_HOME``) becomes
    a :class:`StateNotSaved` warning naming what was not saved and how to fix it."""
    try:
        yield
    except OSError as exc:
        warnings.warn(f"podrun could not save {what} ({exc.strerror or exc}); the work itself is not affected. "
                      "Free space in $PODRUN_HOME (or point PODRUN_HOME at a writable folder).", StateNotSaved, stacklevel=3)
