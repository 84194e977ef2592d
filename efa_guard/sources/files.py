"""File events (watchdog): edits of the config file, and legacy iptables writers via the lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from efa_guard.events import Event, Trigger
from efa_guard.sources import Emit

XTABLES_LOCK = Path("/run/xtables.lock")


def _handler_base() -> type:
    from watchdog.events import FileSystemEventHandler  # noqa: PLC0415 - daemon only

    return FileSystemEventHandler


def closed_no_write_supported() -> bool:
    """Whether watchdog (>= 2.3) reports closes of read-only files (iptables-legacy's lock)."""
    import watchdog.events  # noqa: PLC0415

    return hasattr(watchdog.events, "FileClosedNoWriteEvent")


class FileWatcher:
    """Watches the config file's directory, and /run for the xtables lock when asked."""

    def __init__(
        self,
        emit: Emit,
        *,
        config: Path,
        lock: Path | None = None,
    ) -> None:
        from watchdog.observers import Observer  # noqa: PLC0415

        self.emit = emit
        self.config = Path(os.path.abspath(config))  # noqa: PTH100 - keep symlinks as given
        self.lock = lock
        self.observer: Any = Observer()
        handler = _make_handler(self)
        self.observer.schedule(handler, str(self.config.parent), recursive=False)
        if lock is not None and lock.parent != self.config.parent:
            self.observer.schedule(handler, str(lock.parent), recursive=False)

    def start(self) -> None:
        """Start watching."""
        self.observer.daemon = True
        self.observer.start()

    def stop(self) -> None:
        """Stop watching."""
        self.observer.stop()
        self.observer.join(timeout=2)

    def on_event(self, event: Any) -> None:  # noqa: ANN401 - watchdog's event classes
        """Route one watchdog event."""
        if event.is_directory:
            return
        paths = {Path(str(event.src_path))}
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.add(Path(str(dest)))
        kind = str(event.event_type)
        if self.config in paths and kind in {"modified", "created", "moved", "closed"}:
            self.emit(Event(Trigger.CONFIG_RELOAD, detail=f"{self.config} {kind}"))
        elif self.lock is not None and self.lock in paths and kind in {"closed_no_write", "closed"}:
            # Our own writes release the lock too: that costs one check that finds the
            # policy in place. Dropping events while we are busy would lose foreign ones.
            self.emit(Event(Trigger.LOCK, detail=f"a legacy iptables writer released {self.lock}"))


def _make_handler(watcher: FileWatcher) -> Any:  # noqa: ANN401
    base = _handler_base()

    class Handler(base):  # type: ignore[valid-type,misc]
        def on_any_event(self, event: Any) -> None:  # noqa: ANN401
            watcher.on_event(event)

    return Handler()
