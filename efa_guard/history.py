"""`efa-guard history`: corrections, fights, failures and stops, read back from the journal.

From this machine's journal, or from a collector's (`systemd-journal-remote` writes one file per
node into a directory): `directory` and `files` choose, the HOST column (`_HOSTNAME`) tells the
nodes apart.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from efa_guard.catalog import MESSAGE_IDS, EventKind
from efa_guard.errors import EfaGuardError
from efa_guard.journal import IDENTIFIER

# Shown unless --kind asks for others (any EventKind may be asked for).
DEFAULT_KINDS = (
    EventKind.DRIFT_CORRECTED,
    EventKind.CORRECTION_FAILED,
    EventKind.CONTESTED,
    EventKind.CONTEST_ENDED,
    EventKind.CONFIG_REJECTED,
    EventKind.CONFIG_FALLBACK,
    EventKind.PAUSED,
    EventKind.RESUMED,
    EventKind.DRIFT_OBSERVED,
    EventKind.POLICY_REMOVED,
    EventKind.STOPPING,
    EventKind.CANNOT_START,
    EventKind.INTERNAL_ERROR,
)
EVENTS = tuple(k.value for k in DEFAULT_KINDS)


class HistorySourceError(EfaGuardError):
    """A journal directory or file to read does not exist; names it."""


@dataclass(frozen=True)
class Entry:
    """One past event."""

    time: datetime
    host: str
    event: str
    trigger: str
    drift: tuple[str, ...]
    culprit: str
    message: str
    fields: dict[str, str]  # the whole journal record

    @property
    def latency_ms(self) -> float | None:
        """How long the correction took, for a correction."""
        latency = self.fields.get("LATENCY_MS")
        return float(latency) if latency and latency != "null" else None

    @property
    def pid(self) -> int | None:
        """The daemon's PID that logged it."""
        pid = self.fields.get("_PID", "")
        return int(pid) if pid.isdigit() else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "time": self.time.isoformat(),
            "host": self.host,
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


def journalctl_argv(  # noqa: PLR0913 - one keyword per journalctl option
    *,
    since: str | None,
    unit: str | None = None,
    directory: Path | None = None,
    files: Sequence[str] = (),
    hosts: Sequence[str] = (),
    kinds: Sequence[str] = EVENTS,
) -> list[str]:
    """The journalctl query: our identifier AND (any of the kinds' MESSAGE_IDs) AND (any host)."""
    exe = shutil.which("journalctl") or "journalctl"
    argv = [exe, "--no-pager", "--output=json"]
    if directory is not None:
        argv.append(f"--directory={directory}")
    argv += [f"--file={f}" for f in files]
    argv.append(f"SYSLOG_IDENTIFIER={IDENTIFIER}")
    argv += [f"MESSAGE_ID={MESSAGE_IDS[k]}" for k in dict.fromkeys(kinds)]
    argv += [f"_HOSTNAME={h}" for h in dict.fromkeys(hosts)]
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
        out.append(
            Entry(
                time=datetime.fromtimestamp(usec / 1e6, tz=UTC),
                host=rec.get("_HOSTNAME", ""),
                event=names.get(rec.get("MESSAGE_ID", ""), rec.get("EFA_EVENT", "?")),
                trigger=rec.get("TRIGGER", ""),
                drift=drift_list,
                culprit=culprit,
                message=rec.get("MESSAGE", ""),
                fields=rec,
            )
        )
    return out


def _null(value: str, default: str) -> str:
    """Journal fields hold JSON `null` for a missing value."""
    return default if value == "null" else value


def check_sources(directory: Path | None, files: Sequence[str]) -> None:
    """Refuse a journal directory or file that is not there, before journalctl says it less well."""
    if directory is not None and not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        msg = f"journal directory {directory} {what}"
        raise HistorySourceError(msg)
    for f in files:
        if not glob.glob(f):  # noqa: PTH207 - journalctl --file takes a glob; so do we
            msg = f"journal file {f} does not exist"
            raise HistorySourceError(msg)


def read(
    *,
    since: str | None,
    directory: Path | None = None,
    files: Sequence[str] = (),
    hosts: Sequence[str] = (),
    kinds: Sequence[str] = EVENTS,
) -> list[Entry]:
    """Run journalctl on this machine's journal, or on `directory`/`files`, and parse its output."""
    check_sources(directory, files)
    argv = journalctl_argv(since=since, directory=directory, files=files, hosts=hosts, kinds=kinds)
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
        return "no events recorded"
    rows = [("TIME (UTC)", "HOST", "EVENT", "TRIGGER", "LATENCY", "CULPRIT", "WHAT")]
    for e in entries:
        latency = f"{e.latency_ms:.1f} ms" if e.latency_ms is not None else "-"
        what = "; ".join(e.drift) if e.drift else e.message
        rows.append(
            (
                e.time.strftime("%Y-%m-%d %H:%M:%S"),
                e.host or "-",
                e.event,
                e.trigger or "-",
                latency,
                e.culprit or "-",
                what,
            )
        )
    last = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(last)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:last], widths, strict=True)) + "  " + r[last]
        for r in rows
    )
