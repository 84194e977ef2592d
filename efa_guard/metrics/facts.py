"""Every fact the daemon reports, as Prometheus metrics in a registry of their own.

prometheus_client is imported when a `Metrics` is made, never by importing this module: a plain
`efa-guard check` does not pay for it. Each `Metrics` has its own registry, so several can live in
one process (tests run three). Every label value is bounded: families, chain keys from the config,
and fixed trigger and stage names (anything else is counted as "other").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from efa_guard.events import Trigger
from efa_guard.metrics import output
from efa_guard.metrics.output import (
    TEXTFILE_NAME,
    ListenError,
    MetricsError,
    TextfileError,
    write_atomic,
)

if TYPE_CHECKING:
    from efa_guard.metrics.serve import Server

# Corrections take milliseconds; a fight with backoff takes seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("read", "write", "verify")
OTHER = "other"


def _trigger(value: str) -> str:
    return value if value in {t.value for t in Trigger} else OTHER


def _stage(value: str) -> str:
    word = value.split(" ", 1)[0]
    return word if word in STAGES else OTHER


class Metrics:
    """Every fact the daemon reports, as Prometheus metrics in a registry of its own.

    `clock` gives unix seconds (the timestamps operators compare with `time()`).
    """

    def __init__(
        self, *, version: str, backend: str, clock: Callable[[], float] = time.time
    ) -> None:
        try:
            import prometheus_client as pc  # noqa: PLC0415

            from efa_guard.metrics.serve import public_view  # noqa: PLC0415
        except ImportError as e:
            msg = f"metrics need the Prometheus client library (python3-prometheus-client): {e}"
            raise MetricsError(msg) from e
        self._server: Server | None = None
        self._is_contested = False
        self._clock = clock
        r = pc.CollectorRegistry(auto_describe=True)
        self.registry = public_view(r)  # what a scrape and the textfile show
        self._build = pc.Gauge(
            "efa_guard_build_info", "Version and backend (value 1).", ["version", "backend"],
            registry=r,
        )  # fmt: skip
        self._in_sync = pc.Gauge(
            "efa_guard_policy_in_sync",
            "1 if the chain matched the policy at the last check, 0 if it had drifted.",
            ["family", "chain"],
            registry=r,
        )
        self._checks = pc.Counter(
            "efa_guard_checks_total", "Checks, by result (in_sync, drift, failed).", ["result"],
            registry=r,
        )  # fmt: skip
        self._last_check = pc.Gauge(
            "efa_guard_last_successful_check_timestamp_seconds",
            "When the kernel was last read and compared with the policy (unix time).",
            registry=r,
        )
        self._heartbeat = pc.Gauge(
            "efa_guard_heartbeat_timestamp_seconds",
            "When the daemon's loop was last alive (unix time).",
            registry=r,
        )
        self._corrections = pc.Counter(
            "efa_guard_corrections_total",
            "Drift corrected, by trigger, family and chain.",
            ["trigger", "family", "chain"],
            registry=r,
        )
        self._latency = pc.Histogram(
            "efa_guard_correction_latency_seconds",
            "First event seen to policy verified back in place.",
            ["family"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._failures = pc.Counter(
            "efa_guard_correction_failures_total",
            "Checks or corrections that failed, by stage (read, write, verify, other).",
            ["stage"],
            registry=r,
        )
        self._contested = pc.Gauge(
            "efa_guard_contested", "1 while something keeps undoing the policy.", registry=r
        )
        self._contests = pc.Counter(
            "efa_guard_contests_total", "Fights begun (contested went from 0 to 1).", registry=r
        )
        self._paused = pc.Gauge(
            "efa_guard_enforcement_paused", "1 while enforcement is paused.", registry=r
        )
        self._lkg = pc.Gauge(
            "efa_guard_last_known_good_config",
            "1 while the daemon enforces its last known good config (the file on disk is bad).",
            registry=r,
        )
        self._rejected = pc.Gauge(
            "efa_guard_config_rejected",
            "1 if the last config load (start or reload) was rejected.",
            registry=r,
        )
        self._exposed = pc.Gauge(
            "efa_guard_exposed_outside_allowlist",
            "Services reachable on the management interface that the allowlist does not name.",
            registry=r,
        )
        # Series that exist from the start: increase() cannot see a counter's first step.
        for result in ("in_sync", "drift", "failed"):
            self._checks.labels(result=result)
        for stage in (*STAGES, OTHER):
            self._failures.labels(stage=stage)
        self.build(version=version, backend=backend)
        self.heartbeat()

    # --- facts -------------------------------------------------------------------------

    def build(self, *, version: str, backend: str) -> None:
        """The running version and the backend in use (a backend change replaces the series)."""
        self._build.clear()
        self._build.labels(version=version, backend=backend).set(1)

    def heartbeat(self) -> None:
        """The loop is alive."""
        self._heartbeat.set(self._clock())

    def checked(self, *, ok: bool, chains: Iterable[tuple[str, str, bool]] = ()) -> None:
        """A check ran; `ok` if the kernel could be read. `chains`: (family, chain, in_sync)."""
        if not ok:
            self._checks.labels(result="failed").inc()
            return
        in_sync = True
        for family, chain, same in chains:
            self._in_sync.labels(family=family, chain=chain).set(1 if same else 0)
            in_sync = in_sync and same
        self._checks.labels(result="in_sync" if in_sync else "drift").inc()
        self._last_check.set(self._clock())
        self.heartbeat()

    def corrected(
        self, *, trigger: str, latency_s: float, chains: Iterable[tuple[str, str]]
    ) -> None:
        """One correction put `chains` ((family, chain) pairs) back; they are in sync again.

        Each chain counts once; the latency is observed once per family the correction touched.
        """
        families = set()
        for family, chain in chains:
            self._corrections.labels(trigger=_trigger(trigger), family=family, chain=chain).inc()
            self._in_sync.labels(family=family, chain=chain).set(1)
            families.add(family)
        for family in sorted(families):
            self._latency.labels(family=family).observe(latency_s)

    def correction_failed(self, stage: str) -> None:
        """A read or write failed; `stage` as the journal says it ("read ipv4" counts as read)."""
        self._failures.labels(stage=_stage(stage)).inc()

    def contested(self, *, active: bool) -> None:
        """A fight began (True) or ended (False)."""
        if active and not self._is_contested:
            self._contests.inc()
        self._is_contested = active
        self._contested.set(1 if active else 0)

    def paused(self, *, active: bool) -> None:
        """Enforcement paused or resumed."""
        self._paused.set(1 if active else 0)

    def last_known_good(self, *, active: bool) -> None:
        """Running on the last known good config (True) or on the file on disk (False)."""
        self._lkg.set(1 if active else 0)

    def config_rejected(self, *, active: bool) -> None:
        """The last config load was rejected (True) or accepted (False)."""
        self._rejected.set(1 if active else 0)

    def exposed(self, count: int) -> None:
        """How many services outside the allowlist are reachable now."""
        self._exposed.set(count)

    def forget_chains(self) -> None:
        """Drop every per-chain series (after a reload that changed the chains)."""
        self._in_sync.clear()

    # --- ways out ----------------------------------------------------------------------

    def text(self) -> bytes:
        """The exposition text (what a scrape returns)."""
        from prometheus_client import generate_latest  # noqa: PLC0415

        return generate_latest(self.registry)

    def write_textfile(self, directory: Path | None = None) -> Path:
        """Write `efa_guard.prom` atomically into `directory` (Debian's default if None)."""
        where = directory or output.default_textfile_directory()
        if where is None:
            msg = f"no textfile directory: {output.DEFAULT_TEXTFILE_DIRECTORY} does not exist"
            raise TextfileError(msg)
        return write_atomic(where / TEXTFILE_NAME, self.text())

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve /metrics on `listen` in a thread; return the bound (host, port)."""
        from efa_guard.metrics.serve import Server  # noqa: PLC0415

        if self._server is not None:
            msg = f"already serving on {self._server.address}"
            raise ListenError(msg)
        self._server = Server.start(listen, self.registry)
        return self._server.bound

    def close(self) -> None:
        """Stop the HTTP endpoint, if any; the textfile stays (its stale heartbeat tells)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
