"""When the next check may run: holds (back-off, failures), held events, follow-ups."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from efa_guard.events import Event, Trigger
from efa_guard.pause import Pause
from efa_guard.policy import Policy

_PENDING_KEEP = 32
# A correction trusted without a read-back (nft, proven) left a state no read has seen: it is
# read this long after, off the correction's path, so that the next tamper's check finds it
# known (no iptables process before the restore) and the trusted result is read after all.
LEARN_AFTER = 0.1
_UNREAD = "read the state a correction left unread"
Scope = tuple[frozenset[str], frozenset[str]]  # (families, tables)


def scope_of(policy: Policy) -> Scope:
    """The families and tables a (scoped) policy covers."""
    return frozenset(policy.families), frozenset(policy.tables)


def _union(a: Scope, b: Scope) -> Scope:
    return (a[0] | b[0], a[1] | b[1])


@dataclass
class Schedule:
    """Events only request a check; this decides when it runs (a fake clock drives it in tests)."""

    hold_until: float = 0.0
    pending: list[Event] = field(default_factory=list)
    follow_ups: list[float] = field(default_factory=list)
    pause: Pause | None = None  # enforcement paused: observe, never correct
    pause_ends: float = 0.0  # the pause's deadline on this clock
    seen_while_paused: str = ""  # the observed hash last reported while paused
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # the step's time
    # When to read what corrections trusted without a read-back left unread (None: nothing).
    unread: tuple[float, Scope] | None = None

    def hold(self, until: float) -> None:
        """No check before `until` (held events wait in `pending`)."""
        self.hold_until = max(self.hold_until, until)

    def admit(self, events: list[Event], now: float) -> list[Event] | None:
        """The batch to check now (with anything held), or None when a hold is on."""
        if now < self.hold_until:
            self.defer(events)
            return None
        batch = self.pending + events
        self.pending = []
        return batch

    def defer(self, events: list[Event]) -> None:
        """Keep events for the check after the hold (the newest few are enough)."""
        self.pending = (self.pending + events)[-_PENDING_KEEP:]

    def released(self, now: float) -> list[Event] | None:
        """The held batch once its hold has passed, else None."""
        if self.pending and now >= self.hold_until:
            return self.admit([], now)
        return None

    def follow_up(self, at: float) -> None:
        """Ask for one more check at `at`."""
        self.follow_ups.append(at)

    def after_unread_correction(self, now: float, scope: Scope) -> None:
        """Read the state a correction trusted without a read-back left, LEARN_AFTER later.

        `scope`: the (families, tables) it wrote. One such read owed covers them all.
        """
        if self.unread is None:
            self.unread = (now + LEARN_AFTER, scope)
        else:
            self.unread = (self.unread[0], _union(self.unread[1], scope))

    def was_read(self, scope: Scope) -> None:
        """A check read `scope`: an owed read it covers is done (in a fight, the next check)."""
        if self.unread is not None and _union(self.unread[1], scope) == scope:
            self.unread = None

    def paused(self, pause: Pause | None, ends: float = 0.0) -> None:
        """Start (or end, with None) a maintenance pause ending at `ends` on this clock."""
        self.pause, self.pause_ends, self.seen_while_paused = pause, ends, ""

    def due(self, now: float) -> list[Event]:
        """The follow-up checks owed at `now`, and the end of a pause."""
        out = [
            Event(Trigger.FOLLOW_UP, detail="re-check after an interface event", at=now)
            for t in self.follow_ups
            if t <= now
        ]
        self.follow_ups = [t for t in self.follow_ups if t > now]
        if self.unread is not None and self.unread[0] <= now:  # only what was left unread
            families, tables = self.unread[1]
            out.append(Event(Trigger.FOLLOW_UP, _UNREAD, at=now, families=families, tables=tables))
            self.unread = None
        if self.pause is not None and now >= self.pause_ends:
            out.append(Event(Trigger.RESUME, detail="the pause's deadline passed", at=now))
        return out

    def next_deadline(self) -> float | None:
        """When `due` or `released` will have something."""
        times = list(self.follow_ups)
        if self.unread is not None:
            times.append(self.unread[0])
        if self.pause is not None:
            times.append(self.pause_ends)
        if self.pending:
            times.append(self.hold_until)
        return min(times) if times else None
