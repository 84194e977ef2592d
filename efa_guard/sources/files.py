"""File events (watchdog): edits of the config file (the xtables lock: lockwatch.py).

The config watch must not be lost silently: config-management tools delete and re-create
/etc/efa-guard, replace the file by rename, or swap a symlink. So the watcher watches the
file's directory, that directory's parent, and the same two for the path the file resolves
to; after any event there it re-arms the watches whose directory was replaced and compares
the file's (device, inode, mtime, size) with what it last saw. While the file's directory
cannot be watched (gone, or inotify refused) it says so (source_failed), polls that signature
every POLL seconds, and says so again (source_restored) once the watch is back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efa_guard.catalog import EventKind
from efa_guard.events import Event, Trigger
from efa_guard.sources import Emit

if TYPE_CHECKING:
    from efa_guard.config import Config
    from efa_guard.log import Logger

POLL = 1.0  # seconds between stats while the watch is lost
SAFETY_POLL = 5.0  # seconds between stats of the file while the watch is armed
QUIET = 0.05  # a write is over after this long without another event (truncate, then write)
MAX_QUIET = 0.5  # ... or after this long in all: a file written forever is read anyway
_DIRECT = frozenset({"modified", "created", "moved", "closed"})  # writes, not our own reads

Signature = tuple[int, int, int, int] | None  # st_dev, st_ino, st_mtime_ns, st_size


def signature(path: Path) -> Signature:
    """What the path resolves to, now; None when it resolves to nothing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _identity(directory: Path) -> tuple[int, int] | None:
    try:
        st = directory.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def directories(path: Path) -> tuple[Path, ...]:
    """The directories whose changes can change what `path` resolves to, the parent first."""
    real = Path(os.path.realpath(path))
    out = (path.parent, path.parent.parent, real.parent, real.parent.parent)
    return tuple(dict.fromkeys(out))


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))  # noqa: PTH100 - keep symlinks as given


class FileWatcher:
    """Watches the config file, re-arming itself."""

    def __init__(
        self,
        config: Config,
        *,
        emit: Emit,
        log: Logger,
        poll: float = POLL,
        observer: Any = None,  # noqa: ANN401 - a watchdog observer; tests inject failures
    ) -> None:
        self.name = "config-file"
        self.emit = emit
        self.log = log
        self.path = _absolute(config.path)
        self.poll = poll
        self.observer: Any = observer if observer is not None else _observer()
        self.observer.daemon = True
        self.handler = _make_handler(self)
        self.armed: dict[Path, tuple[Any, tuple[int, int]]] = {}  # dir -> (watch, identity)
        self.watched: frozenset[Path] = frozenset()  # read by the observer thread
        self.lost: str | None = None  # why the config's directory is not watched
        self.rechecks = 0  # checks still owed shortly after a watch was (re-)armed
        self.last: Signature = None
        self._force = False
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._work, name="config-watch", daemon=True)

    def start(self) -> None:
        """Arm the watches and start; a watch that cannot be armed means polling, not failure."""
        self.observer.start()
        self.last = signature(self.path)
        self.check()
        self.thread.start()

    def stop(self) -> None:
        """Stop watching and polling."""
        self.stopped.set()
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        self.observer.stop()
        self.observer.join(timeout=2)

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config: its path (the watches move with it)."""
        path = _absolute(config.path)
        with self._mutex:
            if path == self.path:
                return
            self.path = path
            self.last = signature(path)
        self._wake.set()

    def on_event(self, event: Any) -> None:  # noqa: ANN401 - watchdog's event classes
        """Route one watchdog event (observer thread) to check()."""
        paths = {Path(str(event.src_path))}
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.add(Path(str(dest)))
        kind = str(event.event_type)
        if self.path in paths and kind in _DIRECT and not event.is_directory:
            self._force = True  # a write to the file itself: reload even if stat looks the same
        watched = self.watched
        if any(p in watched or p.parent in watched for p in paths):
            self._wake.set()

    def check(self) -> None:
        """Re-arm what was replaced; emit a reload if the file was written or now differs."""
        with self._mutex:
            force, self._force = self._force, False
            self._rearm()
            now = signature(self.path)
            changed, self.last = now != self.last, now
            if now is not None and (changed or force):
                self.emit(Event(Trigger.CONFIG_RELOAD, detail=f"{self.path} changed"))

    def _rearm(self) -> None:
        wanted = directories(self.path)
        for directory, (watch, armed_as) in list(self.armed.items()):
            if directory not in wanted or _identity(directory) != armed_as:
                del self.armed[directory]
                # Its inotify watch may have died with its directory: nothing left to undo.
                with contextlib.suppress(Exception):
                    self.observer.unschedule(watch)
        errors: dict[Path, str] = {}
        for directory in wanted:
            identity = _identity(directory)  # before arming: a replacement in between re-arms
            if directory in self.armed or identity is None:
                continue
            try:
                watch = self.observer.schedule(self.handler, str(directory), recursive=False)
            except Exception as e:  # noqa: BLE001 - inotify limits, permissions, a race
                errors[directory] = str(e)
                continue
            self.armed[directory] = (watch, identity)
            # watchdog arms the inotify watch in its emitter thread, a moment later: a write
            # in between would be missed, so look again shortly (twice) after a new watch.
            self.rechecks = 2
        self.watched = frozenset(self.armed)
        parent = self.path.parent
        if parent not in self.armed:
            self._lose(errors.get(parent, f"{parent} does not exist"))
        elif self.lost is not None:
            was, self.lost = self.lost, None
            self.log.info(
                EventKind.SOURCE_RESTORED,
                message=f"config watch on {parent} is back (it was lost: {was}); polling stopped",
                source=self.name,
                path=str(self.path),
            )

    def _lose(self, why: str) -> None:
        if self.lost is not None:
            return
        self.lost = why
        self.log.error(
            EventKind.SOURCE_FAILED,
            message=f"config watch lost: {why}; polling {self.path} every {self.poll:g} s "
            "until the watch is back",
            error=why,
            source=self.name,
            path=str(self.path),
        )

    def _work(self) -> None:
        """The check thread: woken by events, or every `poll` seconds while the watch is lost."""
        while not self.stopped.is_set():
            again = self.lost is not None or self.rechecks > 0
            # Even with every watch armed, a stat every SAFETY_POLL seconds: an event inotify
            # did not deliver (a watch armed a moment too late) is picked up all the same.
            woken = self._wake.wait(timeout=self.poll if again else SAFETY_POLL)
            if self.stopped.is_set():
                return
            self._wake.clear()
            if woken:  # let a write in several steps finish: one reload of the whole file
                end = time.monotonic() + MAX_QUIET
                while time.monotonic() < end and self._wake.wait(QUIET):
                    self._wake.clear()
                if self.stopped.is_set():
                    return
            self.rechecks = max(0, self.rechecks - 1)
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the watch must outlive any single failure
                with self._mutex:
                    self._lose(f"re-arming failed: {e!r}")


def _observer() -> Any:  # noqa: ANN401
    from watchdog.observers import Observer  # noqa: PLC0415 - daemon only

    return Observer()


def _make_handler(watcher: FileWatcher) -> Any:  # noqa: ANN401
    from watchdog.events import FileSystemEventHandler  # noqa: PLC0415 - daemon only

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:  # noqa: ANN401
            watcher.on_event(event)

    return Handler()
