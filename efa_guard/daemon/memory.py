"""The daemon's heap: big buffers given back when freed, free pages given back after work."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3)
TRIM_EVERY = 5.0  # seconds: free pages are given back at most this often


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def return_big_buffers() -> None:
    """Have glibc give buffers of 4 MiB and more back to the kernel when they are freed.

    Its default threshold rises each time such a buffer is freed, after which a legacy table's
    copy or a save's text (tens of MB at 50k rules) stays in the heap for good: measured, the
    daemon's RSS grew by ~50 MB at the first check of a 50k-rule table. Not lower: buffers of
    a MiB or so (netlink dumps, listings) would be mapped and faulted in afresh each time.
    """
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
            # Fixing it also fixes the trim threshold at 128 KiB: the heap would shrink and
            # grow again around every such buffer. Keep what is below 8 MiB instead (measured
            # with the nf_tables source's reused buffer: 1 MiB or 128 KiB saved no RSS).
            libc.mallopt(_M_TRIM_THRESHOLD, 8 << 20)


def _malloc_trim() -> Callable[[], object] | None:
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    return None if trim is None else lambda: trim(0)


@dataclass
class Trimmer:
    """Gives the free pages of every arena back to the kernel (malloc_trim), now and then.

    What a big read freed (a save's text, a table's copy, a survey's listings in its thread's
    arena) is otherwise kept below the trim threshold or between live objects: measured, the
    legacy daemon's RSS stayed ~8 MB above its start after corrections at 50k rules. A trim
    walks the free chunks: ~0.2 ms, ~1.5 ms when it gives pages back.
    """

    every: float = TRIM_EVERY
    trim: Callable[[], object] | None = field(default_factory=_malloc_trim)
    trims: int = 0
    _last: float = float("-inf")

    def after_work(self, now: float) -> None:
        """Trim unless that was done less than `every` seconds ago."""
        if self.trim is None or now - self._last < self.every:
            return
        self._last = now
        self.trim()
        self.trims += 1
