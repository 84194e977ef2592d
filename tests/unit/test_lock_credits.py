"""Our own closes of the xtables lock: credits that keep them from waking another check."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from efa_guard.events import Event, Trigger
from efa_guard.iptables_proc import CREDIT_TTL, Activity, Tools, lock_closes
from efa_guard.legacycache import LockCloses
from efa_guard.sources.lockwatch import LockWatcher


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        """The time now."""
        return self.now


RESTORE_TWO = "*filter\n:EFA_INPUT - [0:0]\nCOMMIT\n*raw\nCOMMIT\n"


@pytest.mark.parametrize(
    ("argv", "text", "private", "closes"),
    [
        (["/usr/sbin/iptables-legacy-restore", "--noflush"], RESTORE_TWO, False, 2),
        (["/usr/sbin/ip6tables-legacy-restore", "--test"], "*filter\nCOMMIT\n", False, 1),
        (["/usr/sbin/iptables-legacy-save", "-t", "filter"], None, False, 0),
        (["/usr/sbin/iptables-legacy", "--wait=5", "-t", "raw", "-S", "X"], None, False, 1),
        (["/usr/sbin/ip6tables-legacy", "-D", "INPUT", "1"], None, False, 1),
        (["/usr/sbin/iptables-legacy", "-t", "filter", "-S", "INPUT"], None, True, 0),
        (["/usr/sbin/iptables-nft-restore", "--noflush"], RESTORE_TWO, False, 0),
        (["/usr/sbin/nft", "-j", "list", "tables"], None, False, 0),
    ],
)
def test_lock_closes_as_measured(
    argv: list[str], text: str | None, *, private: bool, closes: int
) -> None:
    """Closes of the shared lock per command follow the measurement on iptables 1.8.9."""
    assert lock_closes(argv, text, private=private) == closes


def test_each_credit_covers_one_close() -> None:
    """Two expected closes swallow two lock closes; the third wakes the check."""
    activity = Activity(Clock())
    activity.expect_closes(41, 2, within=5)
    assert [activity.own_lock_close() for _ in range(3)] == [True, True, False]


def test_a_credit_expires_after_its_command_ended() -> None:
    """An unused credit stops covering closes CREDIT_TTL after its command ended."""
    clock = Clock()
    activity = Activity(clock)
    activity.expect_closes(41, 1, within=5)
    clock.now += 3  # still waiting for the lock: within + CREDIT_TTL not over
    activity.ended(41)
    clock.now += CREDIT_TTL - 0.1
    activity.expect_closes(42, 1, within=5)
    clock.now += 0.2  # 41's credit expired, 42's is alive
    assert activity.own_lock_close()
    assert not activity.own_lock_close()


def test_a_running_command_keeps_its_credit_while_it_may_wait() -> None:
    """A command waiting for the lock keeps its credit for `within` plus CREDIT_TTL."""
    clock = Clock()
    activity = Activity(clock)
    activity.expect_closes(41, 1, within=5)
    clock.now += 5 + CREDIT_TTL - 0.1
    assert activity.own_lock_close()
    activity.expect_closes(42, 1, within=5)
    clock.now += 5 + CREDIT_TTL + 0.1
    assert not activity.own_lock_close()


def test_a_close_with_nothing_expected_is_foreign() -> None:
    """With no command of ours about, every close of the lock is a foreign one."""
    assert not Activity(Clock()).own_lock_close()


def test_run_leaves_credits_for_a_legacy_restore(tmp_path: Path) -> None:
    """Running iptables-legacy-restore with two tables leaves two credits, and no more."""
    tool = tmp_path / "iptables-legacy-restore"
    tool.write_text("#!/bin/sh\ncat >/dev/null\n")
    tool.chmod(0o755)
    tools = Tools("legacy", activity=Activity())
    _, _, rc = tools.run([str(tool), "--noflush"], RESTORE_TWO)
    assert rc == 0
    assert [tools.activity.own_lock_close() for _ in range(3)] == [True, True, False]


def _close(path: Path) -> None:
    """Open and close the lock as iptables does (read-only, created if missing)."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))


def _wait(events: list[Event], count: int, timeout: float = 3.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # and nothing more arrives
    return events


def test_watcher_spends_a_credit_instead_of_waking(tmp_path: Path) -> None:
    """Real inotify: our expected close wakes nothing; the next, foreign one emits the trigger."""
    lock = tmp_path / "xtables.lock"
    lock.touch()
    activity, events = Activity(), list[Event]()
    watcher = LockWatcher(lock, own_close=activity.own_lock_close, emit=events.append)
    watcher.start()
    try:
        activity.expect_closes(41, 1, within=5)
        _close(lock)
        assert _wait(events, 1, timeout=0.3) == []
        _close(lock)
        assert [e.trigger for e in _wait(events, 1)] == [Trigger.LOCK]
        assert watcher.closes == 1
    finally:
        watcher.stop()
    assert not watcher.thread.is_alive()


def test_a_lock_created_or_replaced_is_watched_and_wakes_a_check(tmp_path: Path) -> None:
    """No lock at start: its creation wakes a check, its closes are seen; so after a new file."""
    lock = tmp_path / "xtables.lock"
    events: list[Event] = []
    watcher = LockWatcher(lock, own_close=lambda: False, emit=events.append)
    watcher.start()
    try:
        _close(lock)  # created by the first writer: perhaps closed before the watch
        assert "created or replaced" in _wait(events, 1)[0].detail
        events.clear()
        _close(lock)
        assert "released" in _wait(events, 1)[0].detail
        events.clear()
        lock.unlink()
        _close(lock)  # a new file: watched again, and it says so
        details = [e.detail for e in _wait(events, 2)]
        assert any("created or replaced" in d for d in details), details
        events.clear()
        _close(lock)
        assert [e.detail for e in _wait(events, 1)] == [f"a legacy iptables writer released {lock}"]
    finally:
        watcher.stop()


def test_a_watcher_on_a_missing_directory_fails_to_start(tmp_path: Path) -> None:
    """No directory to watch: start() raises (the daemon logs source_failed; the timer stays)."""
    watcher = LockWatcher(tmp_path / "none" / "xtables.lock", own_close=lambda: False, emit=print)
    with pytest.raises(FileNotFoundError):
        watcher.start()


def test_lock_closes_tells_whether_the_lock_was_closed(tmp_path: Path) -> None:
    """The inotify counter moves on a close of the lock, only then, and follows a new file."""
    lock = tmp_path / "xtables.lock"
    lock.touch()
    closes = LockCloses(lock)
    assert closes.count() is None  # arming: a close before it would be missed
    first = closes.count()
    assert first is not None
    assert closes.count() == first  # nothing happened
    os.close(os.open(lock, os.O_RDONLY | os.O_CREAT))  # as iptables opens it
    moved = closes.count()
    assert moved is not None
    assert moved > first
    lock.unlink()
    assert closes.count() is None  # its watch is gone
    lock.touch()
    assert closes.count() is None  # armed again on the new file
    again = closes.count()
    assert again is not None
    os.close(os.open(lock, os.O_RDONLY))
    assert closes.count() not in {None, again}


def test_a_lock_we_create_wakes_nothing_until_a_foreign_close(tmp_path: Path) -> None:
    """Created while a close of ours is due: no check for the creation; a later close wakes one."""
    lock = tmp_path / "xtables.lock"
    events: list[Event] = []
    watcher = LockWatcher(lock, own_close=lambda: False, emit=events.append, expecting=lambda: True)
    watcher.start()
    try:
        lock.touch()
        assert _wait(events, 1, timeout=0.3) == []
        _close(lock)
        assert [e.trigger for e in _wait(events, 1)] == [Trigger.LOCK]
    finally:
        watcher.stop()
