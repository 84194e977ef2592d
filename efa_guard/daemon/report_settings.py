"""The daemon's journal events about its settings: pause, resume, config reload and fallback."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from efa_guard.catalog import EventKind
from efa_guard.daemon.reload import Reloaded
from efa_guard.daemon.telemetry import Telemetry
from efa_guard.enforce import Inspection
from efa_guard.errors import ConfigError
from efa_guard.events import Trigger
from efa_guard.log import Logger
from efa_guard.notify import Notifier
from efa_guard.pause import Pause

_SHOWN = 4


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def shown(drift: list[str]) -> str:
    """The first few drifts, and how many more there are."""
    more = f"; and {len(drift) - _SHOWN} more" if len(drift) > _SHOWN else ""
    return "; ".join(drift[:_SHOWN]) + more


@dataclass(frozen=True)
class SettingsReports:
    """Where the events go, and the events of pause, resume and config (see daemon.report)."""

    log: Logger
    notifier: Notifier
    backend: str
    telemetry: Telemetry | None = None
    repeats: dict[str, tuple[float, int]] = field(default_factory=dict)  # message -> last, skipped

    def paused(self, pause: Pause, *, carried: bool) -> None:
        """Enforcement paused: who, why, until when."""
        until = _clock(pause.until)
        again = " (still, after a daemon restart)" if carried else ""
        self.log.warning(
            EventKind.PAUSED,
            message=f"enforcement paused{again} by {pause.by} until {until}: {pause.reason}",
            by=pause.by,
            reason=pause.reason,
            until=pause.until,
            carried=carried,
        )
        self.notifier.status(f"PAUSED by {pause.by} until {until}: {pause.reason}")

    def resumed(self, pause: Pause, why: str) -> None:
        """The pause ended: the policy goes back at once."""
        self.log.warning(
            EventKind.RESUMED,
            message=f"enforcement resumed ({why}); paused by {pause.by}: {pause.reason}",
            reason=why,
            paused_by=pause.by,
            paused_for=pause.reason,
        )
        self.notifier.status(f"policy being re-asserted on {self.backend} after a pause")

    def drift_observed(self, insp: Inspection, pause: Pause | None) -> None:
        """Drift seen while paused, left alone."""
        drift = [d.describe() for d in insp.drifts]
        who = f" (paused by {pause.by})" if pause else ""
        self.log.warning(
            EventKind.DRIFT_OBSERVED,
            message=f"drift left in place while paused{who}: " + shown(drift),
            drift=drift,
            hash_observed=insp.observed_hash,
        )

    def reloaded(self, new: Reloaded, why: str, *, recovered: bool) -> None:
        """A new config is running."""
        what = " and ".join(new.changes) + " changed" if new.changes else "no change"
        if recovered:
            what += "; the file is valid again, the fallback policy is no longer used"
        dropped = new.dropped
        self.log.info(
            EventKind.CONFIG_RELOADED,
            message=f"config reloaded ({why}): {what}"
            + (f"; no longer managed, left in place: {', '.join(dropped)}" if dropped else ""),
            trigger=str(Trigger.CONFIG_RELOAD),
            path=str(new.config.path),
            changed=bool(new.changes),
            changes=list(new.changes),
            recovered=recovered,
            detail=why,
            unmanaged=list(dropped),
        )

    def rejected(self, error: ConfigError, why: str, *, running: str) -> None:
        """An edit that cannot be used; the running policy stays."""
        keeps = "the running policy stays" + (f" ({running})" if running != "file" else "")
        self.log.error(
            EventKind.CONFIG_REJECTED,
            message=f"config rejected, {keeps}: {error}",
            trigger=str(Trigger.CONFIG_RELOAD),
            path=error.path,
            key=error.key,
            reason=error.reason,
            sha256=error.sha256,
            detail=why,
        )
        self.notifier.status(f"policy in place; config REJECTED: {error.key}: {error.reason}")

    def fallback(self, error: ConfigError, source: str) -> None:
        """Started with a broken file: a fallback policy is enforced instead."""
        self.log.critical(
            EventKind.CONFIG_FALLBACK,
            message=f"config file unusable at startup, enforcing the {source} policy "
            f"instead: {error}",
            path=error.path,
            key=error.key,
            reason=error.reason,
            source=source,
        )
