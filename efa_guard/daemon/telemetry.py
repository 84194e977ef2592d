"""The daemon's Prometheus metrics: fed by the reporter and the publisher, written within budget.

Metrics never stop enforcement: a missing library, an unwritable textfile directory or a busy
port is logged once (metrics_failed, naming the path or address) and that output is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from efa_guard.catalog import EventKind
from efa_guard.config_metrics import AUTO, MetricsConfig
from efa_guard.enforce import Inspection
from efa_guard.log import Logger
from efa_guard.metrics import Metrics, MetricsError, default_textfile_directory

_MIN_GAP = 1.0  # seconds between textfile writes caused by corrections (a fight is many)


@dataclass
class Telemetry:
    """One Metrics registry and where it goes."""

    metrics: Metrics
    settings: MetricsConfig
    log: Logger
    directory: Path | None = None
    written: float = float("-inf")  # time.monotonic() of the last textfile write
    dirty: bool = False
    failed: set[str] = field(default_factory=set)  # messages already logged

    @classmethod
    def start(cls, settings: MetricsConfig, log: Logger, backend: str) -> Telemetry | None:
        """Metrics as the config asks, or None (off, or the library is missing: logged)."""
        if not settings.enabled:
            return None
        from efa_guard import __version__  # noqa: PLC0415

        try:
            metrics = Metrics(version=__version__, backend=backend)
        except MetricsError as e:
            log.error(EventKind.METRICS_FAILED, message=f"metrics are off: {e}", error=str(e))
            return None
        out = cls(metrics, settings, log)
        if settings.textfile_directory == AUTO:
            out.directory = default_textfile_directory()
        elif settings.textfile_directory:
            out.directory = Path(settings.textfile_directory)
        if settings.listen:
            try:
                host, port = metrics.serve(settings.listen)
                log.info(
                    EventKind.STATUS,
                    message=f"metrics served on http://{host}:{port}/metrics",
                    listen=settings.listen,
                )
            except MetricsError as e:
                out.fail(e)
        return out

    def fail(self, error: MetricsError) -> None:
        """Log a metrics failure once per distinct message; enforcement goes on."""
        if str(error) in self.failed:
            return
        self.failed.add(str(error))
        self.log.error(
            EventKind.METRICS_FAILED,
            message=f"metrics output failed, enforcement goes on: {error}",
            error=str(error),
        )

    def checked(self, insp: Inspection | None) -> None:
        """A check: per-chain in-sync gauges, or a failed read."""
        if insp is None:
            self.metrics.checked(ok=False)
            return
        chains = [
            (want.family, want.key.split(" ", 1)[1], want == have)
            for want, have in zip(insp.desired, insp.observed, strict=True)
        ]
        self.metrics.checked(ok=True, chains=chains)

    def corrected(self, trigger: str, latency_s: float, chains: Iterable[str]) -> None:
        """One correction: chains as `ipv4 filter/EFA_INPUT`."""
        pairs = [(c.split(" ", 1)[0], c.split(" ", 1)[1]) for c in chains]
        self.metrics.corrected(trigger=trigger, latency_s=latency_s, chains=pairs)
        self.dirty = True

    def state(self, snapshot: dict[str, object], exposed: int) -> None:
        """The state gauges from the published snapshot, and the heartbeat."""
        m = self.metrics
        m.contested(active=snapshot.get("contested_since") is not None)
        m.last_known_good(active=snapshot.get("config_source") != "file")
        m.config_rejected(active=snapshot.get("rejected") is not None)
        m.paused(active=snapshot.get("paused_until") is not None)
        m.exposed(exposed)
        m.heartbeat()

    def due(self) -> float:
        """When the next periodic textfile write is due (time.monotonic())."""
        return self.written + self.settings.interval

    def flush(self) -> None:
        """Write the textfile when due, or soon after a correction."""
        now = time.monotonic()
        if now < self.due() and not (self.dirty and now - self.written >= _MIN_GAP):
            return
        self.written, self.dirty = now, False  # also paces the heartbeat of a scrape-only setup
        if self.directory is None:
            return
        try:
            self.metrics.write_textfile(self.directory)
        except MetricsError as e:
            self.fail(e)

    def close(self) -> None:
        """Stop serving; the textfile stays (its stale heartbeat tells the daemon is gone)."""
        self.metrics.close()
