"""The xtables lock: each close of it by a legacy iptables writer is an event (inotify).

iptables-legacy takes /run/xtables.lock (flock) for every write and closes it afterwards; a
close is the sign of a write, and legacy has no change events otherwise. watchdog reports
closes of files opened read-only (as iptables opens the lock) only from 2.3 on, and Debian
bookworm ships 2.2.1, so this thread reads inotify itself: the lock file's closes, and its
directory for the file's creation or replacement (then a check, unless a close of ours is
due: a foreign creator may have written before the watch). Our own restores close the lock
too: each leaves a credit (iptables_proc.Activity) and its close spends it instead of waking a
check. A lost event (queue overflow) wakes one.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path

from efa_guard import inotify
from efa_guard.events import Event, Trigger
from efa_guard.sources import Emit

_FILE_MASK = inotify.IN_CLOSE | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
WAKE = 0.5  # seconds between looks at `stopped` while nothing happens


class LockWatcher:
    """A thread on an inotify descriptor watching the xtables lock and its directory."""

    name = "xtables-lock"

    def __init__(
        self,
        path: Path,
        *,
        own_close: Callable[[], bool],
        emit: Emit,
        expecting: Callable[[], bool] = lambda: False,
    ) -> None:
        self.path = path
        self.own_close = own_close  # spends a credit of ours (iptables_proc.Activity)
        self.expecting = expecting  # whether a close of ours is due (no credit spent)
        self.emit = emit
        self.closes = 0  # foreign closes seen (each emitted)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="xtables-lock", daemon=True)
        self._fd = -1
        self._dir_wd = -1
        self._file_wd = -1

    def start(self) -> None:
        """Watch the directory (OSError when inotify refuses) and the lock if it exists; run."""
        fd = self._fd = inotify.init()
        try:
            self._dir_wd = inotify.add_watch(
                fd, self.path.parent, inotify.IN_CREATE | inotify.IN_MOVED_TO
            )
        except OSError:
            os.close(fd)
            self._fd = -1
            raise
        self._arm_file()
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread (it looks every WAKE seconds) and close the descriptor."""
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2 * WAKE + 1)
        if self._fd >= 0 and not self.thread.is_alive():
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def reconfigure(self, _config: object) -> None:
        """Nothing in the config concerns the lock."""

    def handle(self, data: bytes) -> None:
        """Act on a buffer of inotify events, in order."""
        for wd, mask, name in inotify.events(data):
            if mask & inotify.IN_Q_OVERFLOW:
                self._wake("inotify dropped events: a legacy write may have gone unseen")
            elif wd == self._file_wd and wd >= 0:
                if mask & inotify.IN_CLOSE and not self.own_close():
                    self.closes += 1
                    self._wake(f"a legacy iptables writer released {self.path}")
                if mask & inotify.IN_GONE:
                    self._file_wd = -1  # watched again once the directory shows a new one
            elif wd == self._dir_wd and name == os.fsencode(self.path.name):
                self._created()

    def _created(self) -> None:
        """The lock file was (re)created: watch it; a check unless a close of ours is due."""
        if self._arm_file() and not self.expecting():  # ours: its close comes, or its credit
            self._wake(f"{self.path} was created or replaced")  # stays unspent

    def _run(self) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([self._fd], [], [], WAKE)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError as e:
                self._wake(f"cannot read the xtables lock's events ({e})")
                return
            self.handle(data)

    def _arm_file(self) -> bool:
        """Watch the lock file; False when there is none (yet)."""
        try:
            self._file_wd = inotify.add_watch(self._fd, self.path, _FILE_MASK)
        except FileNotFoundError:
            self._file_wd = -1
            return False
        return True

    def _wake(self, detail: str) -> None:
        self.emit(Event(Trigger.LOCK, detail=detail))
