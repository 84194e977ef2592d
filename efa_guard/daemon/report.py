"""The daemon's journal events: every decision of the reconcile step, worded for an operator.

Checks, corrections, failures and fights here; pause and config events in report_settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from efa_guard.catalog import EventKind
from efa_guard.daemon.fights import Contest, ContestEnded
from efa_guard.daemon.report_settings import SettingsReports, shown
from efa_guard.enforce import Inspection
from efa_guard.errors import CommandError
from efa_guard.events import Event, Trigger, culprit, label

REPEAT_FAILURE = 60.0  # seconds: the same failure is logged once in this long (with a count)


def _by(events: list[Event]) -> tuple[str, dict[str, object]]:
    """` by iptables-nft[4242]` and the culprit fields, when a process is known."""
    who = culprit(events)
    if who is None:
        return "", {}
    by = f" by {who.process or '?'}[{who.pid}]" if who.pid else f" by {who.process}"
    return by, {"culprit_pid": who.pid, "culprit_name": who.process}


@dataclass(frozen=True)
class Reporter(SettingsReports):
    """Composes and logs the events; knows nothing of when or why they happen."""

    def checked(self, insp: Inspection | None) -> None:
        """A check ran (None: its read failed); only metrics care."""
        if self.telemetry is not None:
            self.telemetry.checked(insp)

    def asserted(self, insp: Inspection, *, hash_after: str) -> None:
        """The startup assert: what was found, and whether anything was written."""
        drift = [d.describe() for d in insp.drifts]
        changed = bool(drift)
        installed = changed and all(not s.exists for s in insp.observed)
        if installed:
            what = "policy installed"
        elif changed:
            what = f"corrected {len(drift)} drift(s)"
        else:
            what = "already in place"
        self.log.info(
            EventKind.POLICY_ASSERTED,
            message=f"policy asserted at startup on {self.backend}: {what}",
            installed=installed,
            trigger=str(Trigger.STARTUP),
            backend=self.backend,
            changed=changed,
            drift=drift,
            hash_before=insp.observed_hash,
            hash_after=hash_after,
        )

    def corrected(  # noqa: PLR0913 - keyword-only fields of one journal event
        self,
        events: list[Event],
        insp: Inspection,
        *,
        hash_after: str,
        latency_ms: float,
        attempts: int,
        suppressed: int = 0,
    ) -> None:
        """One verified correction, labelled with its trigger, culprit and latency."""
        trigger = label(events)
        by, fields = _by(events)
        drift = [d.describe() for d in insp.drifts]
        chains = sorted({d.chain for d in insp.drifts})
        more = f" ({suppressed} more corrections during the contest were not logged)"
        more = more if suppressed else ""
        self.log.warning(
            EventKind.DRIFT_CORRECTED,
            message=f"drift corrected ({trigger}{by}) in {latency_ms:.1f} ms: "
            + shown(drift)
            + more,
            trigger=str(trigger),
            triggers=sorted({str(e.trigger) for e in events}),
            detail=next((e.detail for e in reversed(events) if e.detail), ""),
            backend=self.backend,
            chains=chains,
            drift=drift,
            drift_kinds=sorted({str(d.kind) for d in insp.drifts}),
            families=sorted({c.split(" ", 1)[0] for c in chains}),
            diff="\n".join(drift),
            hash_before=insp.observed_hash,
            hash_after=hash_after,
            latency_ms=round(latency_ms, 2),
            attempts=attempts,
            suppressed=suppressed,
            **fields,
        )
        where = ", ".join(chains)
        self.notifier.status(f"policy in place; last correction: {trigger}{by} in {where}")
        if self.telemetry is not None:
            self.telemetry.corrected(str(trigger), latency_ms / 1000, chains)

    def failed(self, events: list[Event], error: Exception, *, stage: str) -> None:
        """A read or write that failed, with the command's evidence; the same one once a minute."""
        key = f"{stage}: {error}"
        now = time.monotonic()
        last, skipped = self.repeats.get(key, (float("-inf"), 0))
        if now - last < REPEAT_FAILURE:
            self.repeats[key] = (last, skipped + 1)
            if self.telemetry is not None:
                self.telemetry.metrics.correction_failed(stage)
            return
        self.repeats.clear()  # one failure at a time is remembered
        self.repeats[key] = (now, 0)
        evidence: dict[str, object] = {}
        if isinstance(error, CommandError):
            evidence = {
                "argv": list(error.argv),
                "returncode": error.returncode,
                "stderr": error.stderr.strip(),
            }
        if self.telemetry is not None:
            self.telemetry.metrics.correction_failed(stage)
            if stage.startswith("read"):
                self.telemetry.checked(None)
        self.log.error(
            EventKind.CORRECTION_FAILED,
            message=f"cannot {stage} the policy ({label(events)}): {error}",
            trigger=str(label(events)),
            stage=stage,
            error=str(error),
            repeated=skipped,
            **evidence,
        )

    def contested(self, events: list[Event], insp: Inspection, contest: Contest) -> None:
        """A fight began, or goes on (repeated at most once a minute with the running count)."""
        who = culprit(events)
        name = f"{who.process or '?'}[{who.pid}]" if who and who.pid else "an unknown writer"
        head = "policy still contested" if contest.ongoing else "policy contested"
        self.log.critical(
            EventKind.CONTESTED,
            message=(
                f"{head}: {contest.total} corrections so far, {contest.corrections} in the last "
                f"{contest.window_s:g} s, undone by {name}; re-asserting at once within a CPU "
                f"budget of {contest.budget:.0%} of a core"
            ),
            trigger=str(label(events)),
            corrections=contest.corrections,
            total=contest.total,
            ongoing=contest.ongoing,
            window_s=contest.window_s,
            culprit_pid=who.pid if who else None,
            culprit_name=who.process if who else None,
            drift=[x.describe() for x in insp.drifts],
            cpu_budget=contest.budget,
        )
        self.notifier.status(f"CONTESTED by {name}: re-asserting the policy")

    def contest_ended(self, ended: ContestEnded) -> None:
        """Nothing undid the policy for a whole window."""
        lasted = ended.last - ended.since
        self.log.warning(
            EventKind.CONTEST_ENDED,
            message=f"contest ended: {ended.total} corrections over {lasted:.1f} s; "
            "the policy has stayed in place since",
            total=ended.total,
            duration_s=round(lasted, 3),
        )
        self.notifier.status(f"policy in place on {self.backend}; a contest ended")

    def interface(self, event: Event) -> None:
        """An interface went down, up, away or came back."""
        gone = event.detail.endswith("deleted") or " renamed to " in event.detail
        method = self.log.warning if gone else self.log.info
        method(
            EventKind.INTERFACE_CHANGED,
            message=f"interface event: {event.detail}"
            + ("; the rules on its name match nothing until it is back" if gone else ""),
            detail=event.detail,
        )

    def overflow(self, event: Event) -> None:
        """The kernel dropped events: a full check follows."""
        self.log.warning(EventKind.EVENTS_LOST, message=event.detail, detail=event.detail)
