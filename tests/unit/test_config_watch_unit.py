"""The config watch on a real filesystem (inotify, no root): re-arming, polling, what it says."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import MINIMAL_TOML
from support import wait_for

from efa_guard.catalog import EventKind
from efa_guard.config import Config, parse
from efa_guard.events import Event, Trigger
from efa_guard.sources.files import FileWatcher, directories


class Log:
    """A Logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.entries.append((level, event, kw))

    def debug(self, event: str, /, **kw: Any) -> None:  # noqa: ANN401
        """Keep it."""
        self._add("debug", event, kw)

    def info(self, event: str, /, **kw: Any) -> None:  # noqa: ANN401
        """Keep it."""
        self._add("info", event, kw)

    def warning(self, event: str, /, **kw: Any) -> None:  # noqa: ANN401
        """Keep it."""
        self._add("warning", event, kw)

    def error(self, event: str, /, **kw: Any) -> None:  # noqa: ANN401
        """Keep it."""
        self._add("error", event, kw)

    def critical(self, event: str, /, **kw: Any) -> None:  # noqa: ANN401
        """Keep it."""
        self._add("critical", event, kw)

    def events(self) -> list[str]:
        """The event names so far."""
        return [e for _level, e, _kw in self.entries]


class Refusing:
    """A watchdog observer whose schedule() fails with ENOSPC while `refuse` is set."""

    def __init__(self) -> None:
        from watchdog.observers import Observer  # noqa: PLC0415

        self.real: Any = Observer()
        self.real.daemon = True
        self.refuse = threading.Event()

    def schedule(self, handler: object, path: str, *, recursive: bool) -> object:
        """Refuse, or pass on."""
        if self.refuse.is_set():
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return self.real.schedule(handler, path, recursive=recursive)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        """Everything else is the real observer's."""
        return getattr(self.real, name)


def config_at(path: Path) -> Config:
    """Write a valid config at path and parse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MINIMAL_TOML)
    return parse(MINIMAL_TOML, path=path)


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[tuple[FileWatcher, list[Event], Log, Refusing]]:
    """A started watcher on tmp/etc/efa-guard/efa-guard.toml, polling every 50 ms when lost."""
    events: list[Event] = []
    log = Log()
    observer = Refusing()
    cfg = config_at(tmp_path / "etc" / "efa-guard" / "efa-guard.toml")
    watcher = FileWatcher(cfg, emit=events.append, log=log, poll=0.05, observer=observer)
    watcher.start()
    try:
        yield watcher, events, log, observer
    finally:
        watcher.stop()


def reloads(events: list[Event]) -> int:
    """How many config reloads were asked for."""
    return sum(e.trigger is Trigger.CONFIG_RELOAD for e in events)


def test_directories_cover_the_path_and_what_it_resolves_to(tmp_path: Path) -> None:
    """Parent and grandparent of the path as given and of its symlink target, no duplicates."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "cfg").symlink_to("v1")
    got = directories(tmp_path / "cfg" / "x.toml")
    assert got == (tmp_path / "cfg", tmp_path, tmp_path / "v1")


def test_an_edit_asks_for_one_reload_and_reads_do_not(
    watch: tuple[FileWatcher, list[Event], Log, Refusing],
) -> None:
    """Writing the file asks for a reload; reading it (as the daemon does) asks for none."""
    watcher, events, log, _ = watch
    watcher.path.write_text(MINIMAL_TOML + "\n")
    wait_for("a reload", lambda: reloads(events) >= 1)
    time.sleep(0.2)  # the write's later events (modified, closed) may ask again
    count = reloads(events)
    watcher.path.read_text()
    time.sleep(0.2)
    assert reloads(events) == count
    assert log.entries == []


def test_a_refused_watch_falls_back_to_polling_and_says_so(
    watch: tuple[FileWatcher, list[Event], Log, Refusing],
) -> None:
    """Directory gone, then back while inotify refuses: lost, polled, then restored."""
    watcher, events, log, observer = watch
    directory = watcher.path.parent
    observer.refuse.set()
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()
    wait_for("the loss", lambda: EventKind.SOURCE_FAILED in log.events())
    directory.mkdir()
    watcher.path.write_text(MINIMAL_TOML)
    wait_for("a reload seen by polling", lambda: reloads(events) >= 1)
    (level, _, fields) = log.entries[0]
    assert level == "error"
    assert "does not exist" in fields["message"]
    assert "polling" in fields["message"]
    observer.refuse.clear()
    wait_for("the return", lambda: EventKind.SOURCE_RESTORED in log.events())
    assert log.events() == [EventKind.SOURCE_FAILED, EventKind.SOURCE_RESTORED]
    count = reloads(events)
    watcher.path.write_text(MINIMAL_TOML + "\n")
    wait_for("a reload seen by the watch", lambda: reloads(events) > count)


def test_reconfigure_moves_the_watch_to_the_new_path(
    watch: tuple[FileWatcher, list[Event], Log, Refusing],
    tmp_path: Path,
) -> None:
    """After reconfigure to another file, its edits count and the old file's do not."""
    watcher, events, _, _ = watch
    old = watcher.path
    watcher.reconfigure(config_at(tmp_path / "other" / "efa-guard.toml"))
    time.sleep(0.2)
    count = reloads(events)
    old.write_text(MINIMAL_TOML + "\n")
    time.sleep(0.3)
    assert reloads(events) == count
    (tmp_path / "other" / "efa-guard.toml").write_text(MINIMAL_TOML + "\n")
    wait_for("a reload of the new path", lambda: reloads(events) > count)


def test_a_watch_refused_at_start_names_the_cause(tmp_path: Path) -> None:
    """Started while inotify refuses: it starts anyway, polling, and the error says why."""
    events: list[Event] = []
    log = Log()
    observer = Refusing()
    observer.refuse.set()
    cfg = config_at(tmp_path / "efa-guard.toml")
    watcher = FileWatcher(cfg, emit=events.append, log=log, poll=0.05, observer=observer)
    watcher.start()
    try:
        (tmp_path / "efa-guard.toml").write_text(MINIMAL_TOML + "\n")
        wait_for("a reload seen by polling", lambda: reloads(events) >= 1)
    finally:
        watcher.stop()
    ((level, event, fields),) = log.entries
    assert (level, event) == ("error", EventKind.SOURCE_FAILED)
    assert "inotify watch limit reached" in fields["error"]


def test_a_source_that_cannot_start_is_logged_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nf_tables refused: source_failed names it; the others start and stop; nothing raises."""
    from efa_guard.sources import start_sources, stop_sources  # noqa: PLC0415
    from efa_guard.sources.links import LinkWatcher  # noqa: PLC0415
    from efa_guard.sources.nft import NftWatcher  # noqa: PLC0415

    def refused(_self: NftWatcher) -> None:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(NftWatcher, "start", refused)
    monkeypatch.setattr(LinkWatcher, "start", lambda _self: None)  # no host socket in a unit test
    log = Log()
    cfg = config_at(tmp_path / "efa-guard" / "efa-guard.toml")
    sources = start_sources(
        cfg,
        backend="nft",
        own_pid=lambda _pid: False,
        own_lock_close=lambda: False,
        emit=lambda _e: None,
        log=log,
    )
    try:
        assert [s.name for s in sources] == ["link-events", "config-file"]
        ((level, event, fields),) = log.entries
        assert (level, event) == ("error", EventKind.SOURCE_FAILED)
        assert (
            fields["message"] == "nf_tables events unavailable: [Errno 93] Protocol not supported"
        )
        for source in sources:
            source.reconfigure(cfg)
    finally:
        stop_sources(sources)


def test_an_edit_of_a_symlinked_file_in_another_directory_is_seen(tmp_path: Path) -> None:
    """The config is a symlink to a file elsewhere: editing that file asks for a reload."""
    target = tmp_path / "opt" / "efa.toml"
    config_at(target)
    link = tmp_path / "etc" / "efa-guard.toml"
    link.parent.mkdir()
    link.symlink_to(target)
    events: list[Event] = []
    log = Log()
    watcher = FileWatcher(parse(MINIMAL_TOML, path=link), emit=events.append, log=log, poll=0.05)
    watcher.start()
    try:
        time.sleep(0.1)
        target.write_text(MINIMAL_TOML + "\n# edited\n")
        wait_for("a reload", lambda: reloads(events) >= 1)
    finally:
        watcher.stop()
    assert log.entries == []
