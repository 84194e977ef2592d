"""What `check` says about the daemon: running, stale, on a fallback, behind the file, fighting.

Pure: the published state (daemon/publish.py, schema 1) and a few facts in, warnings out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from efa_guard import paths
from efa_guard.rundir import read_json

STATE_FILE = "state.json"


@dataclass(frozen=True)
class DaemonView:
    """The daemon as `check` sees it: warnings for the report, an object for --json."""

    warnings: tuple[str, ...]
    data: dict[str, object] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        """Whether enforcement is paused for maintenance (drift is then the operator's)."""
        return self.data.get("paused_until") is not None


def alive_here(pid: object) -> bool:
    """Whether the PID runs, in this network namespace (a test's daemon elsewhere is not ours)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        theirs = Path(f"/proc/{pid}/ns/net").stat().st_ino
        ours = Path("/proc/self/ns/net").stat().st_ino
    except OSError:
        return False
    return theirs == ours


def _clock(t: object) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, float | int) else "?"


def _liveness(state: dict[str, object], now: float) -> list[str]:
    heartbeat = state.get("heartbeat")
    interval = state.get("interval_s")
    stale_after = 3 * float(interval) + 10 if isinstance(interval, int | float) else 60.0
    age = now - float(heartbeat) if isinstance(heartbeat, int | float) else None
    if age is None or age > stale_after:
        shown = "never" if age is None else f"{age:.0f} s ago"
        return [f"the daemon's heartbeat is stale (last {shown}): it may be hung"]
    return []


def _config(state: dict[str, object], file_sha256: str) -> list[str]:
    rejected = state.get("rejected")
    source = state.get("config_source", "file")
    if isinstance(rejected, dict):
        why = f"{rejected.get('path')}: {rejected.get('key')}: {rejected.get('reason')}"
        if source != "file":
            return [f"the daemon enforces the {source} policy; the config file is broken: {why}"]
        if rejected.get("sha256") == file_sha256:
            return [f"the daemon rejected the config file and runs the previous one ({why})"]
    if file_sha256 and state.get("config_sha256") not in ("", file_sha256):
        return ["the daemon runs an older config than the file: run `efa-guard reload`"]
    return []


def _activity(state: dict[str, object]) -> list[str]:
    out = []
    until = state.get("paused_until")
    if isinstance(until, float | int):
        by, reason = state.get("paused_by"), state.get("paused_reason")
        out.append(f"enforcement is PAUSED by {by} until {_clock(until)}: {reason}")
    since = state.get("contested_since")
    if since is not None:
        total = state.get("contest_total")
        out.append(f"the policy is contested since {_clock(since)} ({total} corrections so far)")
    return out


def assess(
    state: dict[str, object] | None,
    *,
    expected: bool,
    file_sha256: str,
    now: float,
    alive: bool,
) -> DaemonView:
    """Warnings about enforcement, from the published state."""
    if state is None or not alive or not state.get("running"):
        data: dict[str, object] = {"running": False, "expected": expected}
        if state is not None:
            data["last_heartbeat"] = state.get("heartbeat")
        if not expected:
            return DaemonView((), data)
        why = "efa-guard.service is enabled but no daemon is running: nothing re-asserts the policy"
        return DaemonView((why,), data)
    out = [*_liveness(state, now), *_config(state, file_sha256), *_activity(state)]
    view = {
        k: state.get(k)
        for k in (
            "pid",
            "started",
            "heartbeat",
            "backend",
            "config_path",
            "config_sha256",
            "config_source",
            "verified_sha256",
            "policy_sha256",
            "last_check",
            "last_correction",
            "contested_since",
            "contest_total",
            "rejected",
            "counters",
            "paused_until",
            "paused_by",
            "paused_reason",
        )
    }
    return DaemonView(tuple(out), {"running": True, "expected": expected, **view})


def published() -> dict[str, object] | None:
    """The daemon's published state, or None."""
    return read_json(STATE_FILE, paths.run_dir())


def observe(file_sha256: str) -> DaemonView:
    """Read the published state and judge it now."""
    state = published()
    return assess(
        state,
        expected=paths.unit_enabled(),
        file_sha256=file_sha256,
        now=time.time(),
        alive=state is not None and alive_here(state.get("pid")),
    )


__all__ = ["DaemonView", "assess", "observe"]
