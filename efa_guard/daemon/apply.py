"""Reloads in the reconcile step: ask the loader, and use (or reject) what it validated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from efa_guard import config as configmod
from efa_guard.daemon.reload import InlineLoader, Outcome, Reloaded, ThreadLoader
from efa_guard.daemon.report import Reporter
from efa_guard.daemon.status import Status
from efa_guard.events import Event, Trigger


@dataclass
class Reloads:
    """Config reloads: requested by events, validated by the loader, applied when done."""

    loader: InlineLoader | ThreadLoader
    report: Reporter
    status: Status

    def handle(
        self,
        running: configmod.Config,
        events: list[Event],
        use: Callable[[configmod.Config], None],
    ) -> list[Event]:
        """Request a reload the events ask for; `use` each finished one. The events to check."""
        reloads = [e for e in events if e.trigger is Trigger.CONFIG_RELOAD]
        if reloads:
            why = ", ".join(sorted({e.detail for e in reloads if e.detail})) or "reload"
            self.loader.request(running, why, min(e.at for e in reloads))
        events = [e for e in events if e.trigger is not Trigger.CONFIG_LOADED]
        return events + [self._apply(done, use) for done in self.loader.take()]

    def _apply(self, done: Outcome, use: Callable[[configmod.Config], None]) -> Event:
        """Use a finished reload (or log its rejection); the check that follows is its own."""
        result = done.result
        event = Event(Trigger.CONFIG_RELOAD, detail=done.why, at=done.asked_at)
        if not isinstance(result, Reloaded):
            self.status.rejected = {
                "path": result.path,
                "key": result.key,
                "reason": result.reason,
                "sha256": result.sha256,
            }
            self.report.rejected(result, done.why, running=self.status.source)
            return event
        recovered = self.status.source != "file"
        if recovered:  # the fallback was verified, not the file (even with the same text):
            self.status.verified_sha256 = ""  # the next check verifies and keeps it
        self.status.source, self.status.rejected = "file", None
        use(result.config)
        self.report.reloaded(result, done.why, recovered=recovered)
        return event
