"""The ``file://`` backend: objects as files under a local directory (the default).

``<root>/entries/ab/<key>`` and so on; writes go to ``<root>/tmp/`` and are
renamed into place, so readers see a complete file or none, concurrent
writers of one name each leave a complete one, and a killed writer leaves at
most a temp file.  Temp files carry their writer's process id and host, so
the next store to open the directory (:meth:`FileBackend.sweep`) removes
those whose writer is gone, at once, and others' after an hour.

There is no fsync: a process crash loses nothing (the page cache survives
it) and what an OS crash can leave behind (empty or zero-filled files) fails
the store's checksum.  Files are opened without blocking and only if they are
regular files (a FIFO or device planted in the cache is refused, never waited
on), and without following symbolic links.  Last use is the file's mtime.

Large files are mapped private and copy-on-write (:meth:`FileBackend.map`):
restored arrays sit on the page cache's own pages, and a page is copied only
when the user writes to it.  A mapped file must never shrink or change in
place (a read past its end would kill the kernel with SIGBUS; a change would
show through pages the user has not written).  What protects the user: this
backend never changes a file in place (writes are renames of new files,
deletes unlink, so a mapped inode lives on unchanged), and a file is only
mapped if it is ours and nobody else may write to it (owner the current user,
no group or other write bit); anything else is read into memory as before.
Left: the user's own tools truncating or rewriting a cache file in place
(``truncate``, ``rsync --inplace``) while a kernel holds a mapping of it.
"""

from __future__ import annotations

import ctypes
import errno
import io
import itertools
import mmap
import os
import shutil
import socket
import stat
import time
import weakref
from collections.abc import Hashable, Iterator, Sequence
from contextlib import suppress

import xxhash

from .backend import Backend, Listing
from .codec import aligned_buffer

_TMP = "tmp"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600.0
_HOST = xxhash.xxh3_64_hexdigest(socket.gethostname().encode())[:8]
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_NUMBERS = itertools.count()
#: The most buffers one ``writev`` takes (POSIX's IOV_MAX; Linux's is 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX")


class FileBackend(Backend):
    """Objects as files under ``root`` (created mode 0700 on first write)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = os.fspath(root)
        self.url = "file://" + os.path.abspath(self.root)
        self._prefix = os.path.join(self.root, "")  # the root and a separator
        self._temps = os.path.join(self.root, _TMP)
        self._temp_prefix = ("", -1)  # (prefix of our temp files' paths, the pid it names)

    def _path(self, name: str) -> str:
        # names are "/"-separated relative paths (``entries/ab/<key>``): on POSIX, the same
        # path as os.path.join of their components, for a string concatenation per lookup
        return self._prefix + name

    # -- reading --------------------------------------------------------------

    def open(self, name: str) -> tuple[io.RawIOBase, int, Hashable]:
        path = self._path(name)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "is a symbolic link, not a cache file") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return io.FileIO(fd, "rb"), info.st_size, (info.st_dev, info.st_ino)

    def read(self, name: str) -> tuple[memoryview, Hashable]:
        file, size, version = self.open(name)
        with file:
            try:
                data = aligned_buffer(size)
            except MemoryError:  # a huge value on a small machine, or a huge stray file
                raise OSError(errno.ENOMEM, "too large for the memory available") from None
            done = 0
            while done < size:
                count = file.readinto(data[done:])
                if not count:
                    break
                done += count
        return data[:done], version

    def map(self, file: io.RawIOBase, size: int) -> memoryview | None:
        info = os.fstat(file.fileno())
        if (
            _LIBC is None
            or size <= 0
            or info.st_size != size
            or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return None
        return _map_private(file.fileno(), size)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    # -- writing --------------------------------------------------------------

    def write(self, name: str, chunks: Sequence[bytes | memoryview]) -> int:
        """Write to a temp file, rename it into place; KeyboardInterrupt also cleans up.

        Directories are made when a call finds them missing (the first write into each,
        or after a ``clear()``), not looked for before every write."""
        path = self._path(name)
        tmp = None
        try:
            fd, tmp = self._temp()
            try:
                size = _write_all(fd, chunks)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:  # its directory is new (or removed since)
                _makedirs(os.path.dirname(path))
                os.replace(tmp, path)
            return size
        except BaseException:
            if tmp is not None:
                with suppress(OSError):
                    os.unlink(tmp)
            raise

    def _temp(self) -> tuple[int, str]:
        """A new temp file, created exclusively, named for its writer (:func:`_writer_gone`)
        and a per-process count: no random name to draw, one ``open`` per write."""
        prefix, pid = self._temp_prefix
        if pid != os.getpid():  # first write, or a forked child's
            pid = os.getpid()
            prefix = os.path.join(self._temps, f"{_TMP_PREFIX}{pid}-{_HOST}-")
            self._temp_prefix = prefix, pid
        while True:
            tmp = f"{prefix}{next(_TEMP_NUMBERS)}"
            try:
                return os.open(tmp, _CREATE_FLAGS, 0o600), tmp
            except FileExistsError:  # left by an earlier process of the same id
                continue
            except FileNotFoundError:  # the first write here (or the cache was cleared)
                _makedirs(self._temps)
                return os.open(tmp, _CREATE_FLAGS, 0o600), tmp

    def touch(self, name: str) -> bool:
        try:
            os.utime(self._path(name))
        except FileNotFoundError:
            return False
        except OSError:  # not ours to touch (a shared cache): it is there all the same
            return self.exists(name)
        return True

    def delete(self, name: str, version: Hashable | None = None) -> bool:
        path = self._path(name)
        try:
            if version is not None:
                info = os.stat(path, follow_symlinks=False)
                if (info.st_dev, info.st_ino) != version:
                    return False  # a concurrent writer replaced it since: keep theirs
            os.unlink(path)
        except OSError:
            return False
        return True

    # -- housekeeping ---------------------------------------------------------

    def list(self, prefix: str) -> Iterator[Listing]:
        try:
            shards = [
                entry
                for entry in os.scandir(self._path(prefix))
                if entry.is_dir(follow_symlinks=False)
            ]
        except (FileNotFoundError, NotADirectoryError):
            return
        for shard in shards:
            try:
                found = list(os.scandir(shard.path))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in found:
                if entry.name.startswith("."):
                    continue
                with suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        yield Listing(
                            f"{prefix}/{shard.name}/{entry.name}", info.st_size, info.st_mtime
                        )

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def free_space(self) -> int | None:
        directory = self.root
        while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)
        try:
            return shutil.disk_usage(directory).free
        except OSError:
            return None

    def sweep(self) -> int:
        """Remove temp files whose writer (on this host) is gone, and any older than an hour."""
        freed = 0
        stale = time.time() - _STALE_TMP_SECONDS
        try:
            temps = list(os.scandir(os.path.join(self.root, _TMP)))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for temp in temps:
            with suppress(OSError):
                info = temp.stat(follow_symlinks=False)
                if info.st_mtime < stale or _writer_gone(temp.name):
                    os.unlink(temp.path)
                    freed += info.st_size
        return freed


def _libc() -> ctypes.CDLL | None:
    """The C library's mmap, madvise and munmap (not Python's mmap module, which keeps a
    duplicate of the file descriptor open per mapping: one per restored value would
    exhaust the process's descriptors); None where there is none (then files are read)."""
    if not all(hasattr(mmap, name) for name in ("PROT_READ", "MAP_PRIVATE", "MADV_WILLNEED")):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        )
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


def _map_private(fd: int, size: int) -> memoryview | None:
    """``size`` bytes of ``fd`` mapped private, copy-on-write, as a writeable byte view;
    unmapped when the last view of it (or object built on it) is gone, and never at
    exit (objects still on it may be read while the interpreter shuts down).  None if
    the mapping fails (then the caller reads the file instead)."""
    assert _LIBC is not None
    address = _LIBC.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if address is None or address == _MAP_FAILED:
        return None
    # read ahead: the checksum reads the whole file at once, which a cold page cache
    # would otherwise serve one fault at a time
    _LIBC.madvise(address, size, mmap.MADV_WILLNEED)
    pages = (ctypes.c_char * size).from_address(address)
    weakref.finalize(pages, _LIBC.munmap, address, size).atexit = False
    return memoryview(pages).cast("B")


def _makedirs(directory: str) -> None:
    """Make ``directory`` (mode 0700) and what it lies in, unless they are there."""
    os.makedirs(directory, mode=0o700, exist_ok=True)


def _write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> int:
    """Write ``chunks`` in order with as few system calls as the kernel allows (one
    ``writev`` for a small file, where a write per part made six); returns the size."""
    # bytes as they are, anything else as a flat byte view: len() is the size of each
    views = [chunk if type(chunk) is bytes else memoryview(chunk).cast("B") for chunk in chunks]
    size = left = sum(map(len, views))
    while left:
        done = os.writev(fd, views[:_IOV_MAX])
        left -= done
        if left:  # written in part, or more parts than one call takes
            views = _after(views, done)
    return size


def _after(views: list[bytes | memoryview], count: int) -> list[bytes | memoryview]:
    """``views`` without their first ``count`` bytes, nor the empty views that follow them."""
    for index, view in enumerate(views):
        if count < len(view):
            return [memoryview(view)[count:], *views[index + 1 :]]
        count -= len(view)
    return []


def _writer_gone(name: str) -> bool:
    """Whether the process that named temp file ``name`` has certainly exited."""
    parts = name[len(_TMP_PREFIX) :].split("-")
    if len(parts) < 3 or parts[1] != _HOST or not parts[0].isdigit():
        return False  # another host's (a shared directory), or not ours: the age rule decides
    pid = int(parts[0])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False
