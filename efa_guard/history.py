"""`efa-guard history`: the corrections, fights and failures, read back from the journal."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime

from efa_guard.catalog import MESSAGE_IDS
from efa_guard.errors import EfaGuardError
from efa_guard.journal import IDENTIFIER

EVENTS = ("drift_corrected", "contested", "correction_failed")


@dataclass(frozen=True)
class Entry:
    """One past event."""

    time: datetime
    event: str
    trigger: str
    drift: tuple[str, ...]
    culprit: str
    latency_ms: float | None
    message: str
    pid: int | None
    fields: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "time": self.time.isoformat(),
            "event": self.event,
            "trigger": self.trigger,
            "drift": list(self.drift),
            "culprit": self.culprit,
            "latency_ms": self.latency_ms,
            "message": self.message,
            "pid": self.pid,
            "hash_before": self.fields.get("HASH_BEFORE", ""),
            "hash_after": self.fields.get("HASH_AFTER", ""),
        }


def journalctl_argv(*, since: str | None, unit: str | None = None) -> list[str]:
    """The journalctl query: our identifier, and the MESSAGE_IDs of history events (ORed)."""
    exe = shutil.which("journalctl") or "journalctl"
    argv = [exe, "--no-pager", "--output=json", f"SYSLOG_IDENTIFIER={IDENTIFIER}"]
    argv += [f"MESSAGE_ID={MESSAGE_IDS[e]}" for e in EVENTS]
    if since:
        argv.append(f"--since={since}")
    if unit:
        argv.append(f"--unit={unit}")
    return argv


def parse(lines: str) -> list[Entry]:
    """Turn `journalctl --output=json` lines into entries."""
    out = []
    names = {v: k for k, v in MESSAGE_IDS.items()}
    for line in lines.splitlines():
        if not line.strip():
            continue
        rec = {k: v for k, v in json.loads(line).items() if isinstance(v, str)}
        usec = int(rec.get("__REALTIME_TIMESTAMP", "0"))
        drift = rec.get("DRIFT", "[]")
        try:
            drift_list = tuple(str(d) for d in json.loads(drift))
        except (ValueError, TypeError):
            drift_list = (drift,)
        name = rec.get("CULPRIT_NAME", "null")
        pid = rec.get("CULPRIT_PID", "null")
        culprit = "" if name == "null" and pid == "null" else f"{_null(name, '?')}[{pid}]"
        latency = rec.get("LATENCY_MS")
        out.append(
            Entry(
                time=datetime.fromtimestamp(usec / 1e6, tz=UTC),
                event=names.get(rec.get("MESSAGE_ID", ""), rec.get("EFA_EVENT", "?")),
                trigger=rec.get("TRIGGER", ""),
                drift=drift_list,
                culprit=culprit,
                latency_ms=float(latency) if latency and latency != "null" else None,
                message=rec.get("MESSAGE", ""),
                pid=int(rec["_PID"]) if rec.get("_PID", "").isdigit() else None,
                fields=rec,
            )
        )
    return out


def _null(value: str, default: str) -> str:
    """Journal fields hold JSON `null` for a missing value."""
    return default if value == "null" else value


def read(*, since: str | None) -> list[Entry]:
    """Run journalctl and parse its output."""
    argv = journalctl_argv(since=since)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"cannot read the journal: {e}"
        raise EfaGuardError(msg) from e
    # Some journalctl versions exit 1 when nothing matches; that is an empty history.
    if proc.returncode != 0 and "No entries" not in proc.stderr and proc.stderr.strip():
        msg = f"journalctl exited {proc.returncode}: {proc.stderr.strip()}"
        raise EfaGuardError(msg)
    return parse(proc.stdout)


def table(entries: list[Entry]) -> str:
    """A human table, oldest first."""
    if not entries:
        return "no corrections recorded"
    rows = [("TIME (UTC)", "EVENT", "TRIGGER", "LATENCY", "CULPRIT", "WHAT")]
    for e in entries:
        latency = f"{e.latency_ms:.1f} ms" if e.latency_ms is not None else "-"
        what = "; ".join(e.drift) if e.drift else e.message
        rows.append(
            (
                e.time.strftime("%Y-%m-%d %H:%M:%S"),
                e.event,
                e.trigger or "-",
                latency,
                e.culprit or "-",
                what,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    )
