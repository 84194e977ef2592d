"""The daemon's state, published atomically in the run directory for `check` and `reload`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from efa_guard.daemon.step import Reconciler
from efa_guard.daemon.survey import ExposureWatch
from efa_guard.daemon.telemetry import Telemetry
from efa_guard.lastgood import sha256
from efa_guard.render import desired_states
from efa_guard.rundir import write_json
from efa_guard.state import digest

STATE_FILE = "state.json"
SCHEMA = 1


def _wall(mono: float | None) -> float | None:
    """A time.monotonic() reading as unix time."""
    return None if mono is None else time.time() - (time.monotonic() - mono)


@dataclass
class Publisher:
    """Writes state.json: what runs, what was verified, the fight, the heartbeat."""

    rec: Reconciler
    exposure: ExposureWatch | None = None
    telemetry: Telemetry | None = None
    started: float = field(default_factory=time.time)
    _hashes: tuple[object, str, str] = (None, "", "")  # config, its text's and policy's SHA-256

    def _config_hashes(self) -> tuple[str, str]:
        """The running config's text and policy hashes, computed once per config."""
        cfg = self.rec.config
        if self._hashes[0] is not cfg:
            text = sha256(cfg.text) if cfg.text else ""
            self._hashes = (cfg, text, digest(desired_states(cfg.policy)))
        return self._hashes[1], self._hashes[2]

    def publish(self, *, running: bool = True) -> None:
        """Write the state after each turn of the loop (a small file on tmpfs: ~0.1 ms)."""
        snapshot = self.snapshot(running=running)
        write_json(STATE_FILE, snapshot)
        if self.telemetry is not None:
            exposed = len(self.exposure.exposed or {}) if self.exposure else 0
            self.telemetry.state(snapshot, exposed)
            self.telemetry.flush()

    def next_deadline(self) -> float | None:
        """When the metrics textfile is next due (time.monotonic()), if metrics are on."""
        return self.telemetry.due() if self.telemetry is not None else None

    def snapshot(self, *, running: bool = True) -> dict[str, object]:
        """The state as a JSON-ready dict (schema 1, documented in efa-guard(8))."""
        rec, st, fights = self.rec, self.rec.status, self.rec.fights
        cfg = rec.config
        text_sha, policy_sha = self._config_hashes()
        return {
            "schema": SCHEMA,
            "pid": os.getpid(),
            "running": running,
            "started": self.started,
            "heartbeat": time.time(),
            "backend": rec.ipt.kind,
            "config_path": str(cfg.path),
            "config_sha256": text_sha,
            "config_source": st.source,
            "verified_sha256": st.verified_sha256,
            "policy_sha256": policy_sha,
            "policy_in_place": st.ready,
            "last_check": st.last_check,
            "last_correction": st.last_correction,
            "interval_s": cfg.daemon.interval,
            "counters": rec.counters(),
            "contested_since": _wall(fights.since),
            "contest_total": fights.total,
            "contest_window_s": cfg.daemon.contest_window,
            "last_contest": _wall(fights.recent[-1][0]) if fights.since and fights.recent else None,
            "rejected": st.rejected,
            "paused_until": rec.schedule.pause.until if rec.schedule.pause else None,
            "paused_by": rec.schedule.pause.by if rec.schedule.pause else None,
            "paused_reason": rec.schedule.pause.reason if rec.schedule.pause else None,
        }
