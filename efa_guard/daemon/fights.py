"""Fights: who keeps undoing the policy, and how efa-guard keeps it in place meanwhile.

Every correction is re-asserted at once as long as corrections cost less CPU than the budget
(`cpu_budget` of one core over `contest_window`); only past the budget are they spaced out,
and never further apart than `backoff_max`. A fight is a writer that keeps undoing the policy
over time: `contest_threshold` corrections spread over at least a quarter of the window. One
controller's burst (kube-proxy re-inserting its jumps one by one after a flush) is not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from efa_guard.config import Daemon

REPEAT_EVERY = 60.0  # seconds between `contested` events while a fight goes on
QUIET_GAP = 10.0  # during a fight, one drift_corrected entry per this many seconds
_SPAN_FRACTION = 0.25  # a fight spans at least this fraction of the contest window


@dataclass(frozen=True)
class Contest:
    """A fight to report: begun now, or still going on (with the running count)."""

    corrections: int  # in the window now
    total: int  # since the fight began
    since: float
    window_s: float
    budget: float  # fraction of one core
    ongoing: bool  # a repeat, not the start


@dataclass(frozen=True)
class ContestEnded:
    """A fight is over: nothing undid the policy for a whole window."""

    total: int
    since: float
    last: float


@dataclass
class Fights:
    """Corrections in the contest window with their CPU cost; the current fight, if any."""

    tuning: Daemon
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (when, cpu seconds)
    since: float | None = None  # the current fight began
    total: int = 0  # corrections in the current fight
    reported: float = 0.0  # when `contested` was last logged
    contests: int = 0  # fights since start
    logged: float = float("-inf")  # when a correction was last logged during a fight
    suppressed: int = 0  # corrections not logged since then

    def log_correction(self, now: float) -> int | None:
        """During a fight, log one correction per QUIET_GAP: None to skip, else how many were."""
        if self.since is None:
            return 0
        if now - self.logged < QUIET_GAP:
            self.suppressed += 1
            return None
        skipped, self.suppressed, self.logged = self.suppressed, 0, now
        return skipped

    @property
    def contested(self) -> bool:
        """Whether a fight is going on."""
        return self.since is not None

    def corrected(self, now: float, cost: float) -> Contest | None:
        """Note one correction (or a write lost to a writer); a Contest when one is to be logged."""
        d = self.tuning
        self.recent.append((now, cost))
        self._expire(now)
        if self.since is not None:
            self.total += 1
            if now - self.reported < REPEAT_EVERY:
                return None
            self.reported = now
            return Contest(
                len(self.recent),
                self.total,
                self.since,
                d.contest_window,
                d.cpu_budget,
                ongoing=True,
            )
        span = now - self.recent[0][0]
        if len(self.recent) < d.contest_threshold or span < d.contest_window * _SPAN_FRACTION:
            return None
        self.since, self.total, self.reported = self.recent[0][0], len(self.recent), now
        self.contests += 1
        return Contest(
            len(self.recent), self.total, self.since, d.contest_window, d.cpu_budget, ongoing=False
        )

    def next_allowed(self, now: float) -> float:
        """When the next correction may run: at once while within the CPU budget."""
        self._expire(now)
        allowance = self.tuning.cpu_budget * self.tuning.contest_window
        spent = sum(cost for _, cost in self.recent)
        if spent <= allowance:
            return now
        for when, cost in self.recent:  # oldest first: wait until enough has expired
            spent -= cost
            if spent <= allowance:
                return min(when + self.tuning.contest_window, now + self.tuning.backoff_max)
        return now + self.tuning.backoff_max

    def calm(self, now: float) -> ContestEnded | None:
        """The policy was found in place: a fight ends once a whole window passed quietly."""
        if self.since is None or (
            self.recent and self.recent[-1][0] >= now - self.tuning.contest_window
        ):
            return None
        last = self.recent[-1][0] if self.recent else self.since
        ended = ContestEnded(self.total, self.since, last)
        self.since, self.total = None, 0
        self.recent.clear()
        return ended

    def _expire(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - self.tuning.contest_window:
            self.recent.popleft()
