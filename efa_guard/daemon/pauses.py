"""Pause and resume in the daemon: the pause file read, carried over a restart, ended."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from efa_guard import pause
from efa_guard.daemon.report import Reporter
from efa_guard.daemon.schedule import Schedule
from efa_guard.daemon.status import Status
from efa_guard.enforce import Inspection
from efa_guard.events import Event, Trigger

ASKED = "efa-guard resume"


@dataclass
class Pauses:
    """Follows the pause file into the schedule (which holds the pause) and the journal."""

    schedule: Schedule
    report: Reporter

    def handle(self, events: list[Event]) -> list[Event]:
        """React to pause/resume events; the events left to check (a resume re-checks)."""
        if any(e.trigger is Trigger.PAUSE for e in events):
            events = [e for e in events if e.trigger is not Trigger.PAUSE] + self._changed()
        if any(e.trigger is Trigger.RESUME and e.detail != ASKED for e in events):
            self.resume("the pause's deadline passed")
        return events

    def from_file(self) -> None:
        """At startup: a pause recorded before a daemon restart (same boot) still holds."""
        found = pause.read()
        if found is not None and found.until > time.time():
            self.schedule.paused(found, self.schedule.clock() + found.until - time.time())
            self.report.paused(found, carried=True)

    def observe(self, status: Status, insp: Inspection) -> None:
        """While paused: note what changed, correct nothing."""
        status.ready = status.ready or insp.in_sync
        seen = insp.observed_hash
        if not insp.in_sync and seen != self.schedule.seen_while_paused:
            self.report.drift_observed(insp, self.schedule.pause)
        self.schedule.seen_while_paused = seen

    def _changed(self) -> list[Event]:
        """`efa-guard pause` or `resume` wrote the pause file; a resume re-checks at once."""
        found = pause.read()
        now = self.schedule.clock()
        if found is not None and found.until > time.time():
            if found != self.schedule.pause:
                self.schedule.paused(found, now + found.until - time.time())
                self.report.paused(found, carried=False)
            return []
        if self.schedule.pause is None:
            return []
        self.resume(ASKED)
        return [Event(Trigger.RESUME, detail=ASKED, at=now)]

    def resume(self, why: str) -> None:
        """End the pause (and remove its file), saying why."""
        was = self.schedule.pause
        self.schedule.paused(None)
        with contextlib.suppress(OSError):
            pause.write(None)
        if was is not None:
            self.report.resumed(was, why)
