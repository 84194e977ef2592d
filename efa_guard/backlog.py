"""A bounded queue of journal entries that journald has not taken yet, and what was dropped.

Pure: no sockets, no threads, no clock of its own (the caller passes `now`).

Which entry goes when the queue is full: every entry has a rank, `(tier, PRIORITY)`, lower is
more important. Tier 0 holds the kinds an operator must see (a correction, a fight, a failure,
a rejected config, a daemon that cannot start, a change of exposure, lost events or entries);
tier 1 everything else (started, stopping, status, reloads, interfaces: info chatter).
Within a tier the lower syslog PRIORITY wins. The least important entry goes, and among equals
the newest one: the queue keeps the start of a burst, and the drop report counts the rest.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from efa_guard.catalog import EventKind

ESSENTIAL: frozenset[str] = frozenset(
    {
        EventKind.DRIFT_CORRECTED,
        EventKind.CORRECTION_FAILED,
        EventKind.CONTESTED,
        EventKind.CONFIG_REJECTED,
        EventKind.CANNOT_START,
        EventKind.INTERNAL_ERROR,
        EventKind.SOURCE_FAILED,
        EventKind.EVENTS_LOST,
        EventKind.EXPOSURE,
        EventKind.LOG_ENTRIES_DROPPED,
    }
)


@dataclass(frozen=True)
class Entry:
    """One journal entry, with what decides whether it is kept."""

    fields: Mapping[str, str]
    size: int
    priority: int
    kind: str

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> Entry:
        """An entry for these fields: PRIORITY and EFA_EVENT decide its rank."""
        size = sum(len(k) + len(v) + 10 for k, v in fields.items())
        priority = fields.get("PRIORITY", "6")
        return cls(
            fields=fields,
            size=size,
            priority=int(priority) if priority.isdigit() else 6,
            kind=fields.get("EFA_EVENT", ""),
        )

    @property
    def rank(self) -> tuple[int, int]:
        """Lower is more important: (0 for an essential kind else 1, PRIORITY)."""
        return (0 if self.kind in ESSENTIAL else 1, self.priority)


@dataclass(frozen=True)
class DropReport:
    """How many entries never reached journald, by kind and by PRIORITY, over which period."""

    total: int
    by_kind: dict[str, int]
    by_priority: dict[int, int]
    first_drop: float
    last_drop: float

    def message(self) -> str:
        """One line for MESSAGE."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        return f"{self.total} log entries dropped while journald did not take them ({kinds})"


@dataclass
class Drops:
    """Entries that will never be sent, counted by kind and PRIORITY until reported."""

    kinds: Counter[str] = field(default_factory=Counter)
    priorities: Counter[int] = field(default_factory=Counter)
    first: float | None = None
    last: float = 0.0

    def count(self, entry: Entry, now: float) -> None:
        """Count one entry that will never be sent."""
        self.kinds[entry.kind or "unknown"] += 1
        self.priorities[entry.priority] += 1
        if self.first is None:
            self.first = now
        self.last = now

    def report(self) -> DropReport | None:
        """The drops counted so far (None if none)."""
        if self.first is None:
            return None
        return DropReport(
            total=sum(self.kinds.values()),
            by_kind=dict(self.kinds),
            by_priority=dict(self.priorities),
            first_drop=self.first,
            last_drop=self.last,
        )

    def acknowledge(self, report: DropReport) -> None:
        """Stop counting the drops that `report` told (later drops stay counted)."""
        self.kinds.subtract(report.by_kind)
        self.priorities.subtract(report.by_priority)
        self.kinds = +self.kinds
        self.priorities = +self.priorities
        if not self.kinds:
            self.first = None


@dataclass
class Backlog:
    """Entries waiting for journald, at most `capacity` of them and `max_bytes` in all."""

    capacity: int = 512
    max_bytes: int = 4 * 1024 * 1024
    _queue: deque[Entry] = field(default_factory=deque)
    _bytes: int = 0
    _ranks: Counter[tuple[int, int]] = field(default_factory=Counter)
    _drops: Drops = field(default_factory=Drops)

    def __len__(self) -> int:
        """How many entries wait."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Entries dropped since the last report."""
        return sum(self._drops.kinds.values())

    def push(self, entry: Entry, now: float) -> None:
        """Queue an entry at the back; drop the least important entries while over a bound."""
        self._queue.append(entry)
        self._bytes += entry.size
        self._ranks[entry.rank] += 1
        self._trim(now)

    def push_front(self, entry: Entry, now: float) -> None:
        """Put back an entry that could not be sent, ahead of the others."""
        self._queue.appendleft(entry)
        self._bytes += entry.size
        self._ranks[entry.rank] += 1
        self._trim(now)

    def pop(self) -> Entry | None:
        """The oldest entry, removed; None if empty."""
        if not self._queue:
            return None
        entry = self._queue.popleft()
        self._forget(entry)
        return entry

    def drop_all(self, now: float) -> None:
        """Give up on every waiting entry (counted)."""
        while (entry := self.pop()) is not None:
            self.count_drop(entry, now)

    def count_drop(self, entry: Entry, now: float) -> None:
        """Count one entry that will never be sent."""
        self._drops.count(entry, now)

    def report(self) -> DropReport | None:
        """The drops counted so far (None if none); `acknowledge` it once it is sent."""
        return self._drops.report()

    def acknowledge(self, report: DropReport) -> None:
        """Stop counting the drops that `report` told (later drops stay counted)."""
        self._drops.acknowledge(report)

    def _forget(self, entry: Entry) -> None:
        self._bytes -= entry.size
        self._ranks[entry.rank] -= 1
        if not self._ranks[entry.rank]:
            del self._ranks[entry.rank]

    def _trim(self, now: float) -> None:
        while len(self._queue) > self.capacity or (
            self._bytes > self.max_bytes and len(self._queue) > 1
        ):
            index = self._victim()
            victim = self._queue[index]
            del self._queue[index]
            self._forget(victim)
            self.count_drop(victim, now)

    def _victim(self) -> int:
        """The index of the least important entry; among equals the newest."""
        worst = max(self._ranks)
        for i in range(len(self._queue) - 1, -1, -1):
            if self._queue[i].rank == worst:
                return i
        msg = f"backlog rank count out of step: no entry of rank {worst}"
        raise AssertionError(msg)
