"""inotify through libc (ctypes): the masks, watches and event layout efa-guard uses.

Two readers share it: the daemon's xtables lock watch (sources/lockwatch.py, a thread) and
the legacy caches' close counter (legacycache.LockCloses, no thread).
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from pathlib import Path

IN_MOVED_TO, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE, IN_CREATE = 0x80, 0x08, 0x10, 0x100
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_CLOSE = IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
IN_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED  # the watched file is no longer there
_EVENT = struct.Struct("=iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def init() -> int:
    """A non-blocking, close-on-exec inotify descriptor; OSError if the kernel refuses."""
    fd = int(_lib().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
    return fd


def add_watch(fd: int, path: Path, mask: int) -> int:
    """Watch `path`; OSError (FileNotFoundError when it does not exist) if it cannot be."""
    wd = int(_lib().inotify_add_watch(fd, os.fsencode(path), mask))
    if wd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}")
    return wd


def events(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(watch, mask, name) of each event in a buffer read from the descriptor, in order."""
    at = 0
    while at + _EVENT.size <= len(data):
        wd, mask, _, length = _EVENT.unpack_from(data, at)
        start = at + _EVENT.size
        yield wd, mask, data[start : start + length].split(b"\0", 1)[0]
        at = start + length
