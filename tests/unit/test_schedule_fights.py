"""The daemon's small state machines alone: the schedule and the fight tracker on a fake clock."""

from __future__ import annotations

from efa_guard.config import Daemon
from efa_guard.daemon.fights import Fights
from efa_guard.daemon.schedule import Schedule
from efa_guard.events import Event, Trigger


def test_a_hold_keeps_events_until_it_passes() -> None:
    """During a hold events wait; once it passes they come back once, in order."""
    s = Schedule()
    s.hold(10.0)
    first, second = Event(Trigger.TIMER, at=1.0), Event(Trigger.RULE_CHANGE, at=2.0)
    assert s.admit([first], 5.0) is None
    assert s.admit([second], 6.0) is None
    assert s.next_deadline() == 10.0
    assert s.released(9.9) is None
    assert s.released(10.0) == [first, second]
    assert s.released(10.0) is None
    assert s.next_deadline() is None


def test_without_a_hold_a_batch_runs_at_once() -> None:
    """No hold: admit returns the batch itself."""
    s = Schedule()
    batch = [Event(Trigger.TIMER, at=1.0)]
    assert s.admit(batch, 1.0) == batch


def test_follow_ups_fall_due_in_time() -> None:
    """A follow-up becomes one FOLLOW_UP event at its time, and only then."""
    s = Schedule()
    s.follow_up(3.0)
    assert s.due(2.0) == []
    assert s.next_deadline() == 3.0
    (event,) = s.due(3.5)
    assert event.trigger is Trigger.FOLLOW_UP
    assert s.due(4.0) == []


def test_a_fight_needs_corrections_spread_over_time() -> None:
    """Five corrections within 0.4 s (a controller settling) are no fight; spread out they are."""
    f = Fights(Daemon(contest_threshold=5, contest_window=10.0))
    assert [f.corrected(100.0 + i * 0.1, 0.01) for i in range(5)] == [None] * 5
    assert not f.contested
    contest = None
    for i in range(10):
        contest = contest or f.corrected(100.5 + i * 0.3, 0.01)
    assert contest is not None
    assert not contest.ongoing
    assert f.contested
    assert f.contests == 1


def test_a_fight_repeats_once_a_minute_with_a_running_count() -> None:
    """While a fight goes on, `contested` comes back at most once a minute, counting all."""
    f = Fights(Daemon(contest_threshold=2, contest_window=10.0))
    reports = [f.corrected(100.0 + i * 3.0, 0.01) for i in range(42)]  # 123 s of fighting
    logged = [r for r in reports if r is not None]
    assert len(logged) == 3  # the start (at 103 s), then at 163 s and 223 s
    assert [r.ongoing for r in logged] == [False, True, True]
    assert logged[-1].total == 42
    assert f.contests == 1


def test_corrections_are_immediate_within_the_cpu_budget() -> None:
    """Under the budget the next correction may run at once; past it, only once costs expire."""
    f = Fights(Daemon(contest_window=10.0, cpu_budget=0.1, backoff_max=5.0))  # 1 s per 10 s
    for i in range(50):
        f.corrected(100.0 + i * 0.1, 0.015)  # 0.75 s of CPU
    assert f.next_allowed(105.0) == 105.0
    for i in range(30):
        f.corrected(105.0 + i * 0.01, 0.015)  # 1.2 s in the window now
    wait = f.next_allowed(105.3) - 105.3
    assert 0 < wait <= 5.0


def test_a_fight_ends_after_a_quiet_window() -> None:
    """A check in sync after a whole quiet window ends the contest and says how long it was."""
    f = Fights(Daemon(contest_threshold=2, contest_window=4.0))
    f.corrected(100.0, 0.01)
    assert f.corrected(101.5, 0.01) is not None
    assert f.calm(104.0) is None
    ended = f.calm(105.6)
    assert ended is not None
    assert ended.total == 2
    assert (ended.since, ended.last) == (100.0, 101.5)
    assert not f.contested


def test_the_culprit_comes_from_the_labelled_transaction() -> None:
    """A burst of kube-proxy and a plain tamper: label kube-proxy, culprit kube-proxy too."""
    from efa_guard.events import culprit, label  # noqa: PLC0415

    burst = [
        Event(Trigger.KUBE_PROXY, pid=10, process="kube-proxy", at=1.0),
        Event(Trigger.RULE_CHANGE, pid=20, process="iptables", at=1.1),
    ]
    assert label(burst) is Trigger.KUBE_PROXY
    who = culprit(burst)
    assert who is not None
    assert who.process == "kube-proxy"
