"""The reconcile step on a stateful fake: what it corrects, when it holds back, what it logs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from fakes import (
    DEFAULT_TOML,
    Clock,
    FakeIptables,
    default_config,
    fake,
    in_sync,
    reconciler,
    tamper,
)

from efa_guard.config import Daemon
from efa_guard.daemon.schedule import LEARN_AFTER, Schedule
from efa_guard.daemon.step import Reconciler
from efa_guard.events import Event, Trigger


def rule_change(at: float, pid: int = 4242) -> Event:
    """An nf_tables transaction by someone else."""
    return Event(
        Trigger.RULE_CHANGE, detail="touched EFA_INPUT", pid=pid, process="iptables-nft", at=at
    )


def watched_config(
    tmp_path: Path,
) -> tuple[Path, str, FakeIptables, Clock, Reconciler]:
    """A reconciler whose config is a real file (the shipped default) the test may edit."""
    path = tmp_path / "c.toml"
    text = DEFAULT_TOML.read_text()
    path.write_text(text)
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock)
    rec.config = default_config(path)
    return path, text, ipt, clock, rec


def test_in_sync_is_never_corrected() -> None:
    """A compliant system: checks, but no write and no correction event."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(200):
            rec.handle([Event(Trigger.TIMER, at=clock.now)])
    assert rec.status.counts.checks == 200
    assert ipt.restores == []
    assert logs == []


def test_startup_asserts_and_says_what_it_found() -> None:
    """Startup writes the missing policy and logs policy_asserted with the drift."""
    ipt, clock = fake(), Clock()
    rec = reconciler(ipt, clock)
    with structlog.testing.capture_logs() as logs:
        rec.startup()
    (entry,) = logs
    assert entry["event"] == "policy_asserted"
    assert entry["changed"] is True
    assert "ipv4 filter/EFA_INPUT: chain missing" in entry["drift"]
    assert "ipv6 filter/EFA_INPUT: chain missing" in entry["drift"]


def test_correction_is_labelled_with_trigger_culprit_and_latency() -> None:
    """A burst mixing a timer and a rule change is one correction, labelled rule-change."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock)
    tamper(ipt)
    with structlog.testing.capture_logs() as logs:
        rec.handle([Event(Trigger.TIMER, at=clock.now), rule_change(clock.now - 0.01)])
    (entry,) = logs
    assert entry["event"] == "drift_corrected"
    assert entry["trigger"] == "rule-change"
    assert (entry["culprit_pid"], entry["culprit_name"]) == (4242, "iptables-nft")
    assert entry["latency_ms"] == 10.0
    assert entry["hash_before"] != entry["hash_after"]
    assert entry["log_level"] == "warning"
    assert ipt.restores == ["filter"]


def test_a_fight_is_contested_and_the_policy_kept_in_place() -> None:
    """A writer undoing the policy every 0.5 s: each tamper corrected at once, one contested."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock, Daemon(contest_threshold=5, contest_window=10.0))
    with structlog.testing.capture_logs() as logs:
        for _ in range(20):
            clock.now += 0.5
            tamper(ipt)
            rec.handle([rule_change(clock.now)])
            assert ipt.states == in_sync().states  # re-asserted at once, within the budget
    events = [e["event"] for e in logs]
    assert rec.status.counts.corrections == 20
    assert 1 <= events.count("drift_corrected") < 20  # the fight does not flood the journal
    assert events.count("contested") == 1
    contested = next(e for e in logs if e["event"] == "contested")
    assert contested["log_level"] == "critical"
    assert contested["culprit_name"] == "iptables-nft"
    assert rec.fights.contested
    clock.now += 11.0
    with structlog.testing.capture_logs() as logs:
        rec.handle([Event(Trigger.TIMER, at=clock.now)])
    assert [e["event"] for e in logs] == ["contest_ended"]


def test_a_burst_of_one_controller_is_no_fight() -> None:
    """kube-proxy re-inserting five jumps within 0.2 s: five corrections, no contested event."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            clock.now += 0.04
            tamper(ipt)
            rec.handle([rule_change(clock.now)])
    events = [e["event"] for e in logs]
    assert events.count("drift_corrected") == 5
    assert "contested" not in events


def test_bad_config_is_rejected_and_the_policy_kept(tmp_path: Path) -> None:
    """A broken edit logs config_rejected naming the key; the running config stays."""
    path, text, _ipt, clock, rec = watched_config(tmp_path)
    path.write_text(text.replace("ports = [111]", "ports = [70000]", 1))
    before = rec.config
    with structlog.testing.capture_logs() as logs:
        rec.handle([Event(Trigger.CONFIG_RELOAD, detail="SIGHUP", at=clock.now)])
    assert logs[0]["event"] == "config_rejected"
    assert logs[0]["key"] == "chain[0].rule[2].ports[0]"
    assert rec.config is before
    path.write_text(text.replace('backend = "auto"', 'backend = "legacy"'))
    with structlog.testing.capture_logs() as logs:
        rec.handle([Event(Trigger.CONFIG_RELOAD, at=clock.now)])
    assert logs[0]["event"] == "config_rejected"
    assert "needs a restart" in logs[0]["reason"]


def test_interface_event_schedules_a_follow_up() -> None:
    """An interface event checks now and again follow_up seconds later."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock, Daemon(follow_up=2.0))
    with structlog.testing.capture_logs() as logs:
        rec.handle([Event(Trigger.INTERFACE, detail="eth0 up", at=clock.now)])
    assert logs[0]["event"] == "interface_changed"
    assert rec.schedule.next_deadline() == clock.now + 2.0
    clock.now += 2.0
    (follow_up,) = rec.schedule.due(clock.now)
    assert follow_up.trigger is Trigger.FOLLOW_UP
    assert rec.schedule.next_deadline() is None


def test_held_events_are_handled_once(tmp_path: Path) -> None:
    """A config edit arriving during a backoff is reloaded once; its check waits for the hold."""
    path, text, ipt, clock, rec = watched_config(tmp_path)
    rec.schedule.hold_until = clock.now + 1.0
    path.write_text(text.replace("ports = [111]", "ports = [111, 9999]", 1))
    with structlog.testing.capture_logs() as logs:
        rec.handle([Event(Trigger.CONFIG_RELOAD, detail="modified", at=clock.now)])
        assert ipt.restores == []
        clock.now += 1.0
        rec.release(clock.now)
        rec.release(clock.now)
    events = [e["event"] for e in logs]
    assert events.count("config_reloaded") == 1
    assert events.count("drift_corrected") == 1
    assert next(e for e in logs if e["event"] == "drift_corrected")["trigger"] == "config-reload"


def test_config_edits_are_not_a_fight(tmp_path: Path) -> None:
    """Many operator edits in a row are corrections, never a contested event."""
    path, text, _ipt, clock, rec = watched_config(tmp_path)
    with structlog.testing.capture_logs() as logs:
        for i in range(8):
            clock.now += 0.1
            ports = "[111]" if i % 2 else "[111, 9999]"
            path.write_text(text.replace("ports = [111]", f"ports = {ports}", 1))
            rec.handle([Event(Trigger.CONFIG_RELOAD, at=clock.now)])
    events = [e["event"] for e in logs]
    assert events.count("drift_corrected") == 8
    assert "contested" not in events


def test_a_family_scoped_event_checks_that_family_only() -> None:
    """An nf_tables event naming ipv6 reads and corrects the ipv6 chains only."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock)
    key = "ipv6 filter/EFA_INPUT"
    ipt.states[key] = replace(ipt.states[key], rules=())
    event = Event(
        Trigger.RULE_CHANGE, pid=1, process="ip6tables", at=clock.now, families=frozenset({"ipv6"})
    )
    with structlog.testing.capture_logs() as logs:
        rec.handle([event])
    (entry,) = logs
    assert entry["families"] == ["ipv6"]
    assert ipt.restores == ["filter"]
    assert ipt.policy.families == ("ipv6",)


def test_a_table_scoped_event_reads_that_table_only() -> None:
    """An nf_tables event naming filter reads and corrects filter's chains, never raw's."""
    ipt, clock = in_sync(), Clock()
    rec = reconciler(ipt, clock)
    key = "ipv4 filter/EFA_INPUT"
    ipt.states[key] = replace(ipt.states[key], rules=())
    event = Event(
        Trigger.RULE_CHANGE,
        pid=1,
        process="iptables",
        at=clock.now,
        families=frozenset({"ipv4"}),
        tables=frozenset({"filter"}),
    )
    rec.handle([event])
    assert ipt.restores == ["filter"]
    assert {c.table for c in ipt.policy.chains} == {"filter"}
    assert ipt.policy.families == ("ipv4",)
    assert ipt.states[key].rules  # corrected


def test_a_correction_trusted_unread_is_read_soon_after() -> None:
    """nft, a proven correction (no read-back): one follow-up check reads what it left."""
    ipt, clock = in_sync(), Clock()
    ipt.generation = 40
    rec = reconciler(ipt, clock)
    ipv4, table = frozenset({"ipv4"}), frozenset({"filter"})
    for _ in range(3):  # the first correction is read back; the next two are trusted
        tamper(ipt)
        rec.handle([Event(Trigger.RULE_CHANGE, at=clock.now, families=ipv4, tables=table)])
        clock.now += 0.01
    assert rec.status.counts.corrections == 3
    # Each check read what the trusted correction before it left: one read is owed, the last's.
    assert rec.schedule.follow_ups == []  # owed reads are not interface follow-ups
    owed = rec.schedule.next_deadline()
    assert owed is not None
    assert owed == pytest.approx(clock.now - 0.01 + LEARN_AFTER)
    reads = ipt.reads
    clock.now = owed
    (follow_up,) = rec.schedule.due(clock.now)
    assert follow_up.trigger is Trigger.FOLLOW_UP
    assert (follow_up.families, follow_up.tables) == (ipv4, table)  # only what it left
    rec.handle([follow_up])
    assert ipt.reads - reads == 1  # the state is read, and found in place
    assert rec.status.counts.corrections == 3
    assert rec.schedule.next_deadline() is None
    assert rec.schedule.unread is None


def test_an_owed_read_is_done_only_by_a_check_that_covers_it() -> None:
    """A check of another table leaves the owed read; one covering it cancels the follow-up."""
    s = Schedule()
    filter4 = (frozenset({"ipv4"}), frozenset({"filter"}))
    s.after_unread_correction(10.0, filter4)
    s.after_unread_correction(10.05, (frozenset({"ipv6"}), frozenset({"filter"})))
    assert s.unread is not None
    assert s.unread[1] == (frozenset({"ipv4", "ipv6"}), frozenset({"filter"}))  # one read, both
    s.was_read(filter4)
    assert s.next_deadline() == pytest.approx(10.0 + LEARN_AFTER)
    s.was_read((frozenset({"ipv4", "ipv6"}), frozenset({"filter", "raw"})))
    assert s.unread is None
    assert s.next_deadline() is None
