"""Monitoring-plugin style results: exit codes, one status line, details, a JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SHOWN_IN_SUMMARY = 3
# The `schema` of each --json document (documented in efa-guard(8)): raised only on an
# incompatible change to that document (a field removed, renamed or retyped), never for a new
# field. state.json has its own (efa_guard.daemon.publish.SCHEMA).
CHECK_SCHEMA = 1
EXPOSURE_SCHEMA = 1
HISTORY_SCHEMA = 1


@dataclass
class Report:
    """A monitoring-plugin style result: one status line, details, and a JSON form."""

    code: int
    summary: str
    details: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)

    @property
    def status_line(self) -> str:
        """The first line, as monitoring systems read it."""
        return f"EFA-GUARD {STATUS[self.code]} - {self.summary}"

    def emit(self, *, as_json: bool) -> int:
        """Print the report; return the exit code."""
        if as_json:
            body = {
                "schema": CHECK_SCHEMA,
                "status": STATUS[self.code],
                "exit_code": self.code,
                "summary": self.summary,
            }
            print(json.dumps(body | self.data, indent=2, sort_keys=True))
        else:
            print(self.status_line)
            for line in self.details:
                print(line)
        return self.code
