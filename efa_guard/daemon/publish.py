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
EVERY = 1.0  # seconds: at most one write per second while only counters and times change
_ROUTINE = frozenset(
    {"heartbeat", "counters", "last_check", "last_correction", "contest_total", "last_contest"}
)


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
    _written: tuple[float, dict[str, object]] = (float("-inf"), {})  # when, what (no routine)
    _owed: bool = False  # a turn's routine changes are not written yet

    def _config_hashes(self) -> tuple[str, str]:
        """The running config's text and policy hashes, computed once per config."""
        cfg = self.rec.config
        if self._hashes[0] is not cfg:
            text = sha256(cfg.text) if cfg.text else ""
            self._hashes = (cfg, text, digest(desired_states(cfg.policy)))
        return self._hashes[1], self._hashes[2]

    def publish(self, *, running: bool = True) -> None:
        """Write the state after a turn of the loop that changed it (a small file on tmpfs).

        What an operator acts on (in place, source, rejected, paused, contested) is written
        at once; counters and times at most once per EVERY seconds (during a fight every
        correction changes them), and the heartbeat with them.
        """
        snapshot = self.snapshot(running=running)
        now = time.monotonic()
        significant = {k: v for k, v in snapshot.items() if k not in _ROUTINE}
        if significant != self._written[1] or now - self._written[0] >= EVERY:
            write_json(STATE_FILE, snapshot)
            self._written, self._owed = (now, significant), False
        else:
            self._owed = True  # written by the turn next_deadline() wakes
        if self.telemetry is not None:
            exposed = len(self.exposure.exposed or {}) if self.exposure else 0
            self.telemetry.state(snapshot, exposed)
            self.telemetry.flush()

    def next_deadline(self) -> float | None:
        """When a skipped write or the metrics textfile is due (time.monotonic()), if ever."""
        due = [self._written[0] + EVERY] if self._owed else []
        if self.telemetry is not None:
            due.append(self.telemetry.due())
        return min(due) if due else None

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
