"""The reconcile step: handle a burst → scope it → check → correct → log.

Bursts are coalesced by the loop; this decides what a batch of events costs: one check, and a
correction only when the kernel differs. Scheduling, fights, reloads and wording live in their
own modules; every side effect enters through the constructor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field, replace

from efa_guard import config as configmod
from efa_guard.daemon.apply import Reloads
from efa_guard.daemon.fights import Fights
from efa_guard.daemon.pauses import Pauses
from efa_guard.daemon.reload import InlineLoader, ThreadLoader
from efa_guard.daemon.report import Reporter
from efa_guard.daemon.schedule import Schedule, scope_of
from efa_guard.daemon.status import Hooks, Status
from efa_guard.enforce import Inspection, Proven, enforce, inspect, log_retry
from efa_guard.errors import ConcurrentChangeError, VerifyError
from efa_guard.events import Event, Trigger, families, label, tables
from efa_guard.iptables import Runner
from efa_guard.lastgood import sha256
from efa_guard.policy import Policy

__all__ = ["Hooks", "Reconciler", "Status"]


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (iptables)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Reconciler:
    """Owns the running config; composes the schedule, fights, pauses, reloads and reporter."""

    config: configmod.Config
    ipt: Runner
    report: Reporter
    clock: InitVar[Callable[[], float]] = time.monotonic  # the schedule keeps it
    hooks: Hooks = field(default_factory=Hooks)
    status: Status = field(default_factory=Status)
    loader: InitVar[InlineLoader | ThreadLoader | None] = None  # default: InlineLoader
    fights: Fights = field(init=False)
    schedule: Schedule = field(init=False)
    reloads: Reloads = field(init=False)
    proven: Proven = field(init=False)  # corrections verified once: no read-back when alone

    def __post_init__(
        self, clock: Callable[[], float], loader: InlineLoader | ThreadLoader | None
    ) -> None:
        self.fights = Fights(self.config.daemon)
        self.schedule = Schedule(clock=clock)
        self.reloads = Reloads(loader or InlineLoader(), self.report, self.status)
        self.proven = Proven()

    def _now(self) -> float:
        """Now, on the step's clock."""
        return self.schedule.clock()

    @property
    def pauses(self) -> Pauses:
        """The pause handling, over the schedule that holds the pause."""
        return Pauses(self.schedule, self.report)

    # -- the public step ------------------------------------------------------------------

    def handle(self, events: list[Event]) -> None:
        """React to one coalesced burst of events."""
        self.status.counts.events += len(events)
        events = self.pauses.handle(self.reloads.handle(self.config, events, self._use))
        if not events:
            return
        now = self._now()
        for e in events:
            if e.trigger is Trigger.OVERFLOW:
                self.report.overflow(e)
            if e.trigger is Trigger.INTERFACE:
                self.report.interface(e)
                if self.config.daemon.follow_up > 0:
                    self.schedule.follow_up(now + self.config.daemon.follow_up)
        batch = self.schedule.admit(events, now)
        if batch is not None:
            self._check(batch)

    def release(self, now: float) -> None:
        """Run the check a hold delayed, once it has passed."""
        batch = self.schedule.released(now)
        if batch is not None:
            self._check(batch)

    def startup(self) -> None:
        """Assert the policy once, and say what was found."""
        self._check([Event(Trigger.STARTUP, detail="daemon start")])

    def counters(self) -> dict[str, object]:
        """The counters, for the status and stopping events."""
        c = self.status.counts
        return {
            "events": c.events,
            "checks": c.checks,
            "corrections": c.corrections,
            "failures": c.failures,
            "contests": self.fights.contests,
            "contested": self.fights.contested,
            "hash": self.status.last_hash,
        }

    # -- internals ------------------------------------------------------------------------

    def _check(self, events: list[Event]) -> None:
        self.status.counts.checks += 1
        self.status.last_check = time.time()
        cpu = _cpu()  # a fight's cost is the whole check: reads, restore and read-back
        policy = self._scope(events)
        try:
            insp = inspect(self.ipt, policy)
        except Exception as e:  # noqa: BLE001 - the daemon must outlive any one failure
            if len(policy.families) > 1:
                # One family's tools failing (ip6tables on a host without IPv6) must not
                # stop the other family from being enforced.
                for family in policy.families:
                    self._check_policy(events, replace(policy, families=(family,)), cpu)
                return
            self._failed(events, e, stage="read")
            return
        self.schedule.was_read(scope_of(policy))
        self._checked(events, policy, insp, cpu)

    def _check_policy(self, events: list[Event], policy: Policy, cpu: float) -> None:
        try:
            insp = inspect(self.ipt, policy)
        except Exception as e:  # noqa: BLE001 - logged with its evidence, retried later
            self._failed(events, e, stage=f"read {'+'.join(policy.families)}")
            return
        self._checked(events, policy, insp, cpu)

    def _checked(self, events: list[Event], policy: Policy, insp: Inspection, cpu: float) -> None:
        trigger = label(events)
        self.report.checked(insp)
        if self.schedule.pause is not None:
            self.pauses.observe(self.status, insp)
            return
        if insp.in_sync:
            self._in_place(policy, insp.observed_hash)
            if trigger is Trigger.STARTUP:
                self.report.asserted(insp, hash_after=insp.observed_hash)
            ended = self.fights.calm(self._now())
            if ended is not None:
                self.report.contest_ended(ended)
            return
        try:
            outcome = enforce(self.ipt, policy, on_retry=self._retry, seen=insp, proven=self.proven)
        except Exception as e:  # noqa: BLE001 - logged with its evidence, retried later
            if isinstance(e, VerifyError | ConcurrentChangeError):
                self._fought(events, insp, _cpu() - cpu)  # a storm that wins every verify
            self._failed(events, e, stage="write")
            return
        cost = _cpu() - cpu
        self.report.checked(outcome.after)
        self.status.counts.corrections += 1
        self.status.last_correction = time.time()
        self._in_place(policy, outcome.after.observed_hash)
        self.hooks.rules_changed()
        if outcome.proven:
            self.schedule.after_unread_correction(self._now(), scope_of(policy))
        if trigger is Trigger.STARTUP:
            self.report.asserted(outcome.before, hash_after=outcome.after.observed_hash)
            return
        self._fought(events, insp, cost)
        latency_ms = (self._now() - min(e.at for e in events)) * 1000
        skipped = self.fights.log_correction(self._now())
        if skipped is not None:  # a fight does not flood the journal: contested counts all
            self.report.corrected(
                events,
                insp,
                hash_after=outcome.after.observed_hash,
                latency_ms=latency_ms,
                attempts=outcome.attempts,
                suppressed=skipped,
            )
        self.schedule.hold(self.fights.next_allowed(self._now()))

    def pause_from_file(self) -> None:
        """At startup: a pause recorded before a daemon restart (same boot) still holds."""
        self.pauses.from_file()

    def _fought(self, events: list[Event], insp: Inspection, cost: float) -> None:
        """A correction others made necessary: count it towards a fight (an edit never is)."""
        if label(events) in (Trigger.CONFIG_RELOAD, Trigger.STARTUP, Trigger.RESUME):
            return
        contest = self.fights.corrected(self._now(), cost)
        if contest is not None:
            self.report.contested(events, insp, contest)

    def _in_place(self, policy: Policy, observed_hash: str) -> None:
        self.status.ready = True
        if policy is not self.config.policy:
            return
        self.status.last_hash = observed_hash
        digest = sha256(self.config.text)
        if self.config.text and digest != self.status.verified_sha256:
            self.status.verified_sha256 = digest
            if self.status.source == "file":
                self.hooks.verified(self.config)

    def _scope(self, events: list[Event]) -> Policy:
        """The policy, narrowed to the families and tables the events concern.

        nf_tables events name both: a tamper in ipv4 filter costs no read of raw or ipv6.
        """
        policy = self.config.policy
        wanted, in_tables = families(events), tables(events)
        narrowed = policy.families
        if wanted is not None:
            narrowed = tuple(f for f in policy.families if f in wanted) or policy.families
        chains = policy.chains
        if in_tables is not None:
            chains = tuple(c for c in policy.chains if c.table in in_tables) or policy.chains
        if narrowed == policy.families and chains == policy.chains:
            return policy
        return replace(policy, families=narrowed, chains=chains)

    def _failed(self, events: list[Event], error: Exception, *, stage: str) -> None:
        self.status.counts.failures += 1
        self.report.failed(events, error, stage=stage)
        now = self._now()
        if isinstance(error, VerifyError | ConcurrentChangeError):
            until = self.fights.next_allowed(now)  # a writer won: try again within the budget
        else:
            until = now + 1.0  # do not spin on a persistent failure
        self.schedule.hold(until)
        self.schedule.defer(events)

    def _retry(self, attempt: int, wait: float, exc: BaseException) -> None:
        self.hooks.retrying()
        log_retry(self.report.log, attempt, wait, exc)

    def _use(self, new: configmod.Config) -> None:
        """A reloaded config runs from now on; the sources follow it."""
        self.config = new
        self.fights.tuning = new.daemon
        self.hooks.config_changed(new)
