"""Volume file operations a pod cannot race.

A pod owns everything inside its volume and may swap any folder for a symlink at any moment,
so no path is ever checked and then reopened by name. Every operation starts from a
descriptor of the volume's root and resolves the rest beneath it with no symlink followed:
``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has it (Linux >= 5.6),
else a walk that opens one component at a time with ``O_NOFOLLOW | O_DIRECTORY`` relative to
the previous one. Creates, renames, deletes and listings then act on the folder's descriptor
(``dir_fd``), never on a path, so a swap makes the operation fail or act inside the volume,
never outside it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import Conflict, IllegalPath, InvalidRequest, NotFound
from ...files import write_at
from ..paths import clean_relative

CHUNK = 1024 * 1024
FILE_MODE = 0o644  # pods read and write volume files; the volume folder itself is private
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SYS_OPENAT2 = 437  # the same number on every Linux architecture (asm-generic table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_PART_SUFFIXES = (".part", ".tmp")
# A pod can nest folders without end. A listing shows this many levels (deeper folders appear
# empty); a delete holds at most this many descriptors, moving a deeper subtree up to the
# folder it started from and removing it from there, so neither recursion nor descriptors run out.
MAX_DEPTH = 64


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc: Any = None
_openat2_works: bool | None = None


def _openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def has_openat2() -> bool:
    """Whether this kernel (and seccomp policy) offers openat2; checked once per process."""
    global _libc, _openat2_works
    if _openat2_works is None:
        _openat2_works = False
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syscall.restype = ctypes.c_long
            probe = os.open("/", _DIR_FLAGS)
            try:
                os.close(_openat2(probe, ".", _DIR_FLAGS))
                _openat2_works = True
            finally:
                os.close(probe)
        except (OSError, AttributeError):
            _openat2_works = False
    return _openat2_works


def _refused(path: str, exc: OSError, missing: Exception) -> Exception:
    """A symlink on the way refuses the path; a file where a folder should be means the
    path is not there (``missing``)."""
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        return IllegalPath(f"illegal path {path!r}: it leads through a symlink, which volume paths may not")
    if exc.errno in (errno.ENOTDIR, errno.ENOENT, errno.EISDIR):
        return missing
    return exc


def _open_at(dir_fd: int, name: str, flags: int, mode: int = 0) -> int:
    """``openat`` of one component, refusing a symlink with ELOOP (``O_NOFOLLOW`` with
    ``O_DIRECTORY`` says ENOTDIR for a link: told apart here, so a link is never "missing")."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except NotADirectoryError:
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link:
            raise OSError(errno.ELOOP, "a symlink", name) from None
        raise


def _open_walk(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    """The fallback: one ``openat`` per component, each refusing symlinks."""
    current = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            following = _open_at(current, part, _DIR_FLAGS)
            os.close(current)
            current = following
        return _open_at(current, parts[-1], flags, mode)
    finally:
        os.close(current)


def open_beneath(dir_fd: int, relative: str, flags: int, mode: int = 0) -> int:
    """Open ``relative`` (already clean: no ``..``, not empty) beneath ``dir_fd``, following
    no symlink on the way or at the end. Raises OSError as ``open`` would (ELOOP for a link)."""
    if has_openat2():  # RESOLVE_NO_SYMLINKS refuses every link with ELOOP, the last one included
        return _openat2(dir_fd, relative, (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC, mode)
    return _open_walk(dir_fd, relative.split("/"), flags, mode)


@dataclass
class Entry:
    """One listed entry: ``children`` for a folder (None for a file), ``value`` from ``on_file``."""

    name: str
    stat: os.stat_result
    children: list[Entry] | None
    value: Any = None


OnFile = Callable[[str, os.stat_result, Callable[[], BinaryIO]], Any]


@dataclass
class VolumeDir:
    """One volume, addressed by its host folder (made by the host, never by a pod)."""

    root: Path

    @contextmanager
    def _root_fd(self) -> Iterator[int]:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _owner(root: int) -> tuple[int, int] | None:
        """Whom what the host creates in the volume belongs to: under root podman the engine
        hands the volume to the pod's unprivileged root (``:U`` at each pod start), and what is
        uplinked while that pod runs (a warm pod's next job) must be the pod's too, else it
        cannot read a private file or write into a new folder. None: leave it to the creator."""
        if os.geteuid() != 0:
            return None
        found = os.fstat(root)
        return None if found.st_uid == 0 and found.st_gid == 0 else (found.st_uid, found.st_gid)

    @contextmanager
    def folder(self, path: str, create: bool = False) -> Iterator[int]:
        """A descriptor of the folder ``path`` of the volume (made, one component at a time,
        when ``create``); NotFound when absent, IllegalPath when a component is a symlink."""
        relative = clean_relative(path)
        with self._root_fd() as root:
            try:
                if create:
                    fd = _make_dirs(root, relative, self._owner(root))
                else:
                    fd = open_beneath(root, relative, _DIR_FLAGS) if relative else os.dup(root)
            except OSError as exc:
                missing: Exception = NotFound(f"no folder {path!r} in the volume", code="FILE_MISSING", status=404)
                if create and exc.errno != errno.ENOENT:  # ENOENT while creating: deleted meanwhile
                    missing = IllegalPath(f"illegal path {path!r}: a file stands where a folder is needed")
                raise _refused(path, exc, missing) from None
        try:
            yield fd
        finally:
            os.close(fd)

    # files ---------------------------------------------------------------------------------
    def write(self, dest: str, name: str, content: Any, progress: Callable[[int], None] | None = None) -> int:
        """Create or replace ``dest/name`` atomically (a ``.part`` file renamed into place, both
        inside the folder's descriptor); returns the bytes written. A ``str`` content is a
        local path, as in ``Platform.uplink``."""
        if isinstance(content, str):
            content = Path(content)
        with self._root_fd() as root:
            owner = self._owner(root)
        with self.folder(dest, create=True) as folder:
            try:
                return write_at(folder, name, content, progress, FILE_MODE, owner)
            except FileNotFoundError:  # the folder was deleted while the file was written
                raise NotFound(f"folder {dest!r} was deleted while {name!r} was written into it; uplink again",
                               code="FILE_MISSING", status=404) from None
            except IsADirectoryError:
                raise InvalidRequest(f"cannot write {name!r} into {dest or '/'!r}: a folder of that name is in the way; "
                                     "delete it first or choose another name", status=400) from None

    def open_read(self, path: str) -> BinaryIO:
        """A regular file of the volume, opened for reading; NotFound when it is not one."""
        relative = clean_relative(path)
        missing = NotFound(f"File missing: {path!r} is not a file in the volume", code="FILE_MISSING", status=404)
        if not relative:
            raise missing
        with self._root_fd() as root:
            try:
                fd = open_beneath(root, relative, os.O_RDONLY)
            except OSError as exc:
                raise _refused(path, exc, missing) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise missing
        return os.fdopen(fd, "rb")

    def delete(self, path: str) -> bool:
        """Delete a file, a symlink (never what it points to) or a whole folder; False when
        nothing was there."""
        relative = clean_relative(path)
        if not relative:
            raise IllegalPath("give a file or folder inside the volume, not its root")
        parent, _, name = relative.rpartition("/")
        try:
            with self.folder(parent) as folder:
                return remove_at(folder, name)
        except NotFound:
            return False

    def walk(self, on_file: OnFile) -> list[Entry]:
        """The volume's tree, read through descriptors. ``on_file(path, stat, open)`` gives a
        file's ``value`` (``open()`` returns the file, opened without following links).
        ``.part``/``.tmp`` files in flight and entries removed while the listing runs are left out."""
        with self._root_fd() as root:
            return _walk_at(root, "", on_file)

    def remove_volume(self) -> None:
        """Delete the whole volume folder (its parent is the host's, so it is opened by path)."""
        parent = os.open(self.root.parent, _DIR_FLAGS)
        try:
            remove_at(parent, self.root.name)
        finally:
            os.close(parent)


def _make_dirs(root: int, relative: str, owner: tuple[int, int] | None = None) -> int:
    current = os.dup(root)
    try:
        for part in [p for p in relative.split("/") if p]:
            try:
                following = _open_at(current, part, _DIR_FLAGS)
            except FileNotFoundError:
                made = False
                with suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=current)
                    made = True
                following = _open_at(current, part, _DIR_FLAGS)
                if made and owner is not None:  # by descriptor: the folder opened is the one chowned
                    os.fchown(following, *owner)
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current


def remove_at(folder: int, name: str) -> bool:
    """Remove ``name`` in ``folder``: a folder's contents through its own descriptor, depth
    first; anything else (a symlink included) with ``unlinkat``. A pod swapping entries while
    this runs can make it leave something behind, never remove anything outside ``folder``."""
    return _remove(folder, name, None, 0, [])


def _remove(folder: int, name: str, top: int | None, depth: int, hoisted: list[str]) -> bool:
    """``top``: the descriptor of the folder being removed (None: ``name`` is it). A folder
    MAX_DEPTH levels below it is moved up into it (both descriptors are inside it) and removed
    from there once the rest is gone."""
    for _attempt in range(8):  # an entry swapped between look and act is looked at again
        try:
            mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        try:
            if not stat.S_ISDIR(mode):
                os.unlink(name, dir_fd=folder)
                return True
            if top is not None and depth >= MAX_DEPTH:
                moved = f".podrun-rm-{secrets.token_hex(8)}"
                os.rename(name, moved, src_dir_fd=folder, dst_dir_fd=top)
                hoisted.append(moved)
                return True
            child = os.open(name, _DIR_FLAGS, dir_fd=folder)
            try:
                with os.scandir(child) as entries:
                    names = [entry.name for entry in entries]
                for inner in names:
                    _remove(child, inner, child if top is None else top, depth + 1, hoisted)
                while top is None and hoisted:
                    _remove(child, hoisted.pop(), child, 1, hoisted)
            finally:
                os.close(child)
            os.rmdir(name, dir_fd=folder)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENOTEMPTY, errno.EEXIST, errno.EPERM):
                raise
    raise Conflict(f"{name!r} kept changing while it was deleted (something in the pod is rewriting it); "
                   "delete it again", code="FILE_DELETE_FAILED", status=409)


def sha256_of(source: BinaryIO) -> bytes:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
    return digest.digest()


def _walk_at(folder: int, prefix: str, on_file: OnFile, depth: int = 1) -> list[Entry]:
    out: list[Entry] = []
    if depth > MAX_DEPTH:
        return out
    with os.scandir(folder) as scan:
        names = sorted(item.name for item in scan)
    for name in names:
        if name.startswith(".") and name.endswith(_PART_SUFFIXES):
            continue
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=folder)
                try:
                    out.append(Entry(name, info, _walk_at(child, f"{prefix}{name}/", on_file, depth + 1)))
                finally:
                    os.close(child)
            elif stat.S_ISREG(info.st_mode):
                def opener(name: str = name) -> BinaryIO:
                    return os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder), "rb")

                out.append(Entry(name, info, None, on_file(prefix + name, info, opener)))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # swapped for a symlink since the scan: not listed
                raise
    return out
