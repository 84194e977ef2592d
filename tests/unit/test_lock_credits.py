"""Our own closes of the xtables lock: credits that keep them from waking another check."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import default_config

from efa_guard.events import Event, Trigger
from efa_guard.iptables_proc import CREDIT_TTL, Activity, Tools, lock_closes
from efa_guard.legacycache import LockCloses
from efa_guard.log import get_logger
from efa_guard.sources.files import FileWatcher


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


def _watcher(tmp_path: Path, activity: Activity) -> tuple[FileWatcher, list[Event]]:
    events: list[Event] = []
    cfg = default_config(tmp_path / "efa-guard.toml")
    lock = tmp_path / "xtables.lock"
    watcher = FileWatcher(
        cfg, emit=events.append, log=get_logger(), lock=lock, own_close=activity.own_lock_close
    )
    return watcher, events


def _close(path: Path) -> SimpleNamespace:
    return SimpleNamespace(event_type="closed_no_write", src_path=str(path), is_directory=False)


def test_watcher_spends_a_credit_instead_of_waking(tmp_path: Path) -> None:
    """Our expected close wakes nothing; the next, foreign one emits the lock trigger."""
    activity = Activity()
    watcher, events = _watcher(tmp_path, activity)
    activity.expect_closes(41, 1, within=5)
    watcher.on_event(_close(tmp_path / "xtables.lock"))
    assert events == []
    watcher.on_event(_close(tmp_path / "xtables.lock"))
    assert [e.trigger for e in events] == [Trigger.LOCK]


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
