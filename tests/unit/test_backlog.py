"""The journal backlog: bounded, drops the least important entries, counts what it dropped."""

from __future__ import annotations

from efa_guard.backlog import Backlog, Entry


def entry(kind: str, priority: int, message: str = "", size: int = 0) -> Entry:
    """An entry of one event kind and syslog priority."""
    fields = {"MESSAGE": message or kind, "PRIORITY": str(priority), "EFA_EVENT": kind}
    if size:
        fields["BLOB"] = "x" * size
    return Entry.of(fields)


def drain(backlog: Backlog) -> list[str]:
    """The MESSAGEs of every queued entry, oldest first (the backlog ends empty)."""
    out = []
    while (e := backlog.pop()) is not None:
        out.append(e.fields["MESSAGE"])
    return out


def test_status_chatter_goes_before_corrections() -> None:
    """A full backlog drops an older status entry to keep a newer drift_corrected."""
    b = Backlog(capacity=3)
    b.push(entry("status", 6, "s1"), now=1.0)
    b.push(entry("drift_corrected", 4, "d1"), now=1.0)
    b.push(entry("status", 6, "s2"), now=1.0)
    b.push(entry("drift_corrected", 4, "d2"), now=2.0)
    b.push(entry("contested", 2, "c1"), now=3.0)
    assert drain(b) == ["d1", "d2", "c1"]
    report = b.report()
    assert report is not None
    assert report.by_kind == {"status": 2}
    assert report.by_priority == {6: 2}
    assert (report.first_drop, report.last_drop) == (2.0, 3.0)


def test_essential_kinds_beat_a_lower_priority_number() -> None:
    """An essential kind (drift_corrected, warning) outranks an error-level non-essential one."""
    b = Backlog(capacity=1)
    b.push(entry("drift_corrected", 4, "d"), now=0.0)
    b.push(entry("survey_failed", 3, "survey"), now=0.0)
    assert drain(b) == ["d"]
    assert b.dropped == 1


def test_among_equals_the_newest_goes() -> None:
    """A burst of one kind keeps its start; the rest is counted."""
    b = Backlog(capacity=2)
    for i in range(5):
        b.push(entry("drift_corrected", 4, f"d{i}"), now=float(i))
    assert drain(b) == ["d0", "d1"]
    report = b.report()
    assert report is not None
    assert report.total == 3
    assert report.message().startswith("3 log entries dropped")


def test_the_byte_bound_drops_too() -> None:
    """Large entries are dropped when the queued bytes pass max_bytes, one entry always kept."""
    b = Backlog(capacity=100, max_bytes=25_000)
    b.push(entry("status", 6, "big1", size=10_000), now=0.0)
    b.push(entry("status", 6, "big2", size=10_000), now=0.0)
    b.push(entry("status", 6, "big3", size=10_000), now=0.0)
    assert drain(b) == ["big1", "big2"]
    b.push(entry("status", 6, "huge", size=100_000), now=0.0)
    assert drain(b) == ["huge"]


def test_an_unsent_entry_goes_back_to_the_front() -> None:
    """push_front keeps the order of an entry the sender could not deliver."""
    b = Backlog(capacity=5)
    b.push(entry("status", 6, "a"), now=0.0)
    b.push(entry("status", 6, "b"), now=0.0)
    first = b.pop()
    assert first is not None
    b.push_front(first, now=0.0)
    assert drain(b) == ["a", "b"]


def test_acknowledge_keeps_later_drops() -> None:
    """Drops counted after a report was taken stay counted once that report is acknowledged."""
    b = Backlog(capacity=1)
    b.push(entry("status", 6, "a"), now=0.0)
    b.push(entry("status", 6, "b"), now=0.0)
    report = b.report()
    assert report is not None
    b.push(entry("exposure", 4, "c"), now=1.0)
    b.acknowledge(report)
    later = b.report()
    assert later is not None
    assert later.by_kind == {"status": 1}
    b.acknowledge(later)
    assert b.report() is None
    assert b.dropped == 0
