"""The reconcile step: check by hash, correct through one transaction per table, log it.

Bursts are coalesced by the caller (daemon.py); this module decides what a batch of events
costs: one check, and a correction only when the kernel differs. When something keeps undoing
the policy it keeps re-asserting, with a capped backoff, and says who it is fighting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from efa_guard import config as configmod
from efa_guard.enforce import Inspection, enforce, inspect, log_retry
from efa_guard.errors import CommandError, ConfigError
from efa_guard.events import Event, Trigger, culprit, families, label
from efa_guard.iptables import Iptables
from efa_guard.notify import Notifier
from efa_guard.policy import Policy

_PENDING_KEEP = 32
SURVEY_EVERY = 30  # timer intervals between exposure surveys when nothing changed


@dataclass
class Stats:
    """Counters reported when the daemon stops."""

    events: int = 0
    checks: int = 0
    corrections: int = 0
    failures: int = 0
    contests: int = 0


@dataclass
class Reconciler:
    """Owns the running config and the fight state; every decision is logged."""

    config: configmod.Config
    ipt: Iptables
    log: Any
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    clock: Callable[[], float] = time.monotonic
    on_config: Callable[[configmod.Config], None] = lambda _cfg: None
    stats: Stats = field(default_factory=Stats)
    hold_until: float = 0.0
    pending: list[Event] = field(default_factory=list)
    follow_ups: list[float] = field(default_factory=list)
    _corrections: deque[float] = field(default_factory=deque)
    _backoff: float = 0.0
    _contested: bool = False
    last_hash: str = ""
    exposed: dict[str, str] | None = None  # name -> reason, of the last survey
    _surveyed: tuple[float, frozenset[object]] | None = None  # when, and the sockets then
    ready: bool = False  # a check has succeeded: the policy is known to be in place
    on_retry: Callable[[], None] = lambda: None  # called at each retry (watchdog ping)

    # -- the public step ------------------------------------------------------------------

    def handle(self, events: list[Event]) -> None:
        """React to one coalesced burst of events."""
        self.stats.events += len(events)
        if any(e.trigger is Trigger.CONFIG_RELOAD for e in events):
            self._reload([e for e in events if e.trigger is Trigger.CONFIG_RELOAD])
        now = self.clock()
        for e in events:
            if e.trigger is Trigger.OVERFLOW:
                self.log.warning("events_lost", message=f"{e.detail}", detail=e.detail)
            if e.trigger is Trigger.INTERFACE:
                # Gone or renamed: the rules on its name match nothing until it is back.
                gone = e.detail.endswith("deleted") or " renamed to " in e.detail
                method = self.log.warning if gone else self.log.info
                method(
                    "interface_changed",
                    message=f"interface event: {e.detail}"
                    + ("; the rules on its name match nothing until it is back" if gone else ""),
                    detail=e.detail,
                )
                if self.config.daemon.follow_up > 0:
                    self.follow_ups.append(now + self.config.daemon.follow_up)
        self._check_or_hold(events, now)

    def _check_or_hold(self, events: list[Event], now: float) -> None:
        # Held events were handled above already; only their check is owed.
        if now < self.hold_until:
            self.pending = (self.pending + events)[-_PENDING_KEEP:]
            return
        batch = self.pending + events
        self.pending = []
        self._check(batch)

    def due(self, now: float) -> list[Event]:
        """New events owed at `now`: the follow-up checks after interface events."""
        out = [
            Event(Trigger.FOLLOW_UP, detail="re-check after an interface event", at=now)
            for t in self.follow_ups
            if t <= now
        ]
        self.follow_ups = [t for t in self.follow_ups if t > now]
        return out

    def release(self, now: float) -> None:
        """Run the check a backoff held back, once it has passed."""
        if self.pending and now >= self.hold_until:
            self._check_or_hold([], now)

    def next_deadline(self) -> float | None:
        """When `due` will have something."""
        times = list(self.follow_ups)
        if self.pending:
            times.append(self.hold_until)
        return min(times) if times else None

    def counters(self) -> dict[str, object]:
        """The counters, for the status and stopping events."""
        s = self.stats
        return {
            "events": s.events,
            "checks": s.checks,
            "corrections": s.corrections,
            "failures": s.failures,
            "contests": s.contests,
            "contested": self._contested,
            "hash": self.last_hash,
        }

    def report(self) -> None:
        """Log the counters (SIGUSR1)."""
        c = self.counters()
        self.log.info(
            "status",
            message=f"status: {c['checks']} checks, {c['corrections']} corrections, "
            f"{c['failures']} failures, contested: {c['contested']}",
            **c,
        )

    def maybe_survey(self, *, force: bool = False) -> None:
        """Survey when sockets changed, when forced, or every SURVEY_EVERY timer intervals.

        Listing sockets costs well under a millisecond; a survey runs iptables.
        """
        from efa_guard.sockets import listeners  # noqa: PLC0415

        try:
            socks = frozenset[object](listeners())
        except OSError:
            socks = frozenset()
        now = self.clock()
        stale = (
            now - self._surveyed[0] >= SURVEY_EVERY * self.config.daemon.interval
            if self._surveyed
            else True
        )
        if force or stale or self._surveyed is None or self._surveyed[1] != socks:
            self._surveyed = (now, socks)
            self.survey()

    def survey(self) -> None:
        """Log an `exposure` event when what is reachable outside the allowlist changes."""
        from efa_guard.exposure import survey, visible  # noqa: PLC0415

        try:
            found = visible(
                survey(self.ipt, self.config.interface, self.config.exposure, skip_allowed=True)
            )
        except Exception as e:  # noqa: BLE001 - a survey failure must not stop the guard
            self.log.error("survey_failed", message=f"cannot survey exposure: {e}", error=str(e))
            return
        now = {f.name: f.reason for f in found}
        if now == self.exposed or (self.exposed is None and not now):
            self.exposed = now  # nothing exposed at startup is not news
            return
        before = self.exposed or {}
        self.exposed = now
        added = sorted(set(now) - set(before))
        removed = sorted(set(before) - set(now))
        what = ", ".join(sorted(now)) if now else "nothing"
        method = self.log.warning if now else self.log.info
        method(
            "exposure",
            message=f"reachable on {self.config.interface} outside the allowlist: {what}",
            exposed=[f"{k}: {v}" for k, v in sorted(now.items())],
            added=added,
            removed=removed,
        )

    def startup(self) -> None:
        """Assert the policy once, and say what was found."""
        self._check([Event(Trigger.STARTUP, detail="daemon start")], startup=True)

    # -- internals ------------------------------------------------------------------------

    def _check(self, events: list[Event], *, startup: bool = False) -> None:
        self.stats.checks += 1
        policy = self._scope(events)
        try:
            insp = inspect(self.ipt, policy)
        except Exception as e:  # noqa: BLE001 - the daemon must outlive any one failure
            if len(policy.families) > 1:
                # One family's tools failing (ip6tables on a host without IPv6) must not
                # stop the other family from being enforced.
                for family in policy.families:
                    self._check_policy(events, replace(policy, families=(family,)), startup)
                return
            self._failed(events, e, stage="read")
            return
        self._checked(events, policy, insp, startup)

    def _check_policy(self, events: list[Event], policy: Policy, startup: bool) -> None:
        try:
            insp = inspect(self.ipt, policy)
        except Exception as e:  # noqa: BLE001 - logged with its evidence, retried later
            self._failed(events, e, stage=f"read {'+'.join(policy.families)}")
            return
        self._checked(events, policy, insp, startup)

    def _checked(
        self, events: list[Event], policy: Policy, insp: Inspection, startup: bool
    ) -> None:
        if insp.in_sync:
            self.ready = True
            if policy is self.config.policy:
                self.last_hash = insp.observed_hash
            if startup:
                self._asserted(insp, changed=False)
            self._calm()
            return
        try:
            outcome = enforce(self.ipt, policy, on_retry=self._retry, seen=insp)
        except Exception as e:  # noqa: BLE001 - logged with its evidence, retried later
            self._failed(events, e, stage="write")
            return
        if label(events) not in (Trigger.CONFIG_RELOAD, Trigger.STARTUP):  # no fight
            self._note_correction(self.clock(), events, insp)
        self.ready = True
        self.stats.corrections += 1
        if policy is self.config.policy:
            self.last_hash = outcome.after.observed_hash
        self._surveyed = None  # the rules changed: survey at the next chance
        if startup:
            self._asserted(outcome.before, changed=True, hash_after=outcome.after.observed_hash)
            return
        latency_ms = (self.clock() - min(e.at for e in events)) * 1000
        self._corrected(events, insp, outcome.after.observed_hash, latency_ms, outcome.attempts)
        if self._backoff:
            self.hold_until = self.clock() + self._backoff

    def _scope(self, events: list[Event]) -> Policy:
        """The policy, narrowed to the families the events concern (nf_tables names them)."""
        policy = self.config.policy
        wanted = families(events)
        if wanted is None:
            return policy
        narrowed = tuple(f for f in policy.families if f in wanted)
        if not narrowed or narrowed == policy.families:
            return policy
        return replace(policy, families=narrowed)

    def _asserted(self, insp: Inspection, *, changed: bool, hash_after: str = "") -> None:
        drift = [d.describe() for d in insp.drifts]
        what = f"corrected {len(drift)} drift(s)" if changed else "already in place"
        self.log.info(
            "policy_asserted",
            message=f"policy asserted at startup on {self.ipt.kind}: {what}",
            trigger=str(Trigger.STARTUP),
            backend=self.ipt.kind,
            changed=changed,
            drift=drift,
            hash_before=insp.observed_hash,
            hash_after=hash_after or insp.observed_hash,
        )

    def _corrected(
        self,
        events: list[Event],
        insp: Inspection,
        hash_after: str,
        latency_ms: float,
        attempts: int,
    ) -> None:
        trigger = label(events)
        who = culprit(events)
        by = ""
        fields: dict[str, object] = {}
        if who is not None:
            by = f" by {who.process or '?'}[{who.pid}]" if who.pid else f" by {who.process}"
            fields = {"culprit_pid": who.pid, "culprit_name": who.process}
        drift = [d.describe() for d in insp.drifts]
        chains = sorted({d.chain for d in insp.drifts})
        message = (
            f"drift corrected ({trigger}{by}) in {latency_ms:.1f} ms: "
            + "; ".join(drift[:4])
            + (f"; and {len(drift) - 4} more" if len(drift) > 4 else "")
        )
        self.log.warning(
            "drift_corrected",
            message=message,
            trigger=str(trigger),
            triggers=sorted({str(e.trigger) for e in events}),
            detail=next((e.detail for e in reversed(events) if e.detail), ""),
            backend=self.ipt.kind,
            chains=chains,
            drift=drift,
            drift_kinds=sorted({str(d.kind) for d in insp.drifts}),
            families=sorted({c.split(" ", 1)[0] for c in chains}),
            diff="\n".join(drift),
            hash_before=insp.observed_hash,
            hash_after=hash_after,
            latency_ms=round(latency_ms, 2),
            attempts=attempts,
            **fields,
        )
        self.notifier.status(f"policy in place; last correction: {trigger}{by}, {chains}")

    def _failed(self, events: list[Event], error: Exception, *, stage: str) -> None:
        self.stats.failures += 1
        evidence: dict[str, object] = {}
        if isinstance(error, CommandError):
            evidence = {
                "argv": list(error.argv),
                "returncode": error.returncode,
                "stderr": error.stderr.strip(),
            }
        self.log.error(
            "correction_failed",
            message=f"cannot {stage} the policy ({label(events)}): {error}",
            trigger=str(label(events)),
            stage=stage,
            error=str(error),
            **evidence,
        )
        # Do not spin on a persistent failure: the next attempt waits.
        self.hold_until = self.clock() + max(self._backoff, 1.0)
        self.pending = (self.pending + events)[-_PENDING_KEEP:]

    def _note_correction(self, now: float, events: list[Event], insp: Inspection) -> None:
        d = self.config.daemon
        self._corrections.append(now)
        while self._corrections and self._corrections[0] < now - d.contest_window:
            self._corrections.popleft()
        if len(self._corrections) < d.contest_threshold:
            return
        self._backoff = min(d.backoff_max, self._backoff * 2 if self._backoff else 0.25)
        if self._contested:
            return
        self._contested = True
        self.stats.contests += 1
        who = culprit(events)
        name = f"{who.process or '?'}[{who.pid}]" if who and who.pid else "an unknown writer"
        self.log.critical(
            "contested",
            message=(
                f"policy contested: {len(self._corrections)} corrections in "
                f"{d.contest_window:g} s, undone by {name}; re-asserting at most every "
                f"{d.backoff_max:g} s"
            ),
            trigger=str(label(events)),
            corrections=len(self._corrections),
            window_s=d.contest_window,
            culprit_pid=who.pid if who else None,
            culprit_name=who.process if who else None,
            drift=[x.describe() for x in insp.drifts],
            backoff_max_s=d.backoff_max,
        )

    def _calm(self) -> None:
        now = self.clock()
        window = self.config.daemon.contest_window
        if self._contested and (not self._corrections or self._corrections[-1] < now - window):
            self._contested = False
            self._backoff = 0.0
            self._corrections.clear()

    def _retry(self, attempt: int, wait: float, exc: BaseException) -> None:
        self.on_retry()
        log_retry(self.log, attempt, wait, exc)

    def _reload(self, events: list[Event]) -> None:
        why = ", ".join(sorted({e.detail for e in events if e.detail})) or "reload"
        old = self.config
        try:
            new = configmod.load(old.path)
        except ConfigError as e:
            self._rejected(e, why)
            return
        if new.backend != old.backend:
            msg = f"changing backend from {old.backend} to {new.backend} needs a restart"
            self._rejected(ConfigError(str(old.path), "backend", msg), why)
            return
        changed = new != old
        dropped = sorted(
            {f"{c.table}/{c.name}" for c in old.policy.chains}
            - {f"{c.table}/{c.name}" for c in new.policy.chains}
        )
        self.config = new
        self.on_config(new)
        self.log.info(
            "config_reloaded",
            message=f"config reloaded ({why}): {'policy changed' if changed else 'no change'}"
            + (f"; no longer managed, left in place: {', '.join(dropped)}" if dropped else ""),
            trigger=str(Trigger.CONFIG_RELOAD),
            path=str(new.path),
            changed=changed,
            detail=why,
            unmanaged=dropped,
        )

    def _rejected(self, e: ConfigError, why: str) -> None:
        self.log.error(
            "config_rejected",
            message=f"config rejected, the running policy stays: {e}",
            trigger=str(Trigger.CONFIG_RELOAD),
            path=e.path,
            key=e.key,
            reason=e.reason,
            detail=why,
        )
