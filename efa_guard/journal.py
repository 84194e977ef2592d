"""journald's native protocol and the structured fields of our events.

Sending, without ever blocking the caller, is efa_guard.journal_writer's job.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from efa_guard.catalog import MESSAGE_IDS

SOCKET_PATH = "/run/systemd/journal/socket"
IDENTIFIER = "efa-guard"

# structlog method name -> syslog priority.
PRIORITIES = {
    "critical": 2,
    "fatal": 2,
    "error": 3,
    "err": 3,
    "exception": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "msg": 6,
    "debug": 7,
}

_FIELD_OK = re.compile(r"[^A-Z0-9_]")
_MAX_VALUE = 1024 * 1024  # characters; larger entries than a datagram go in a memfd


def field_name(key: str) -> str:
    """A journal field name: upper case, [A-Z0-9_], not starting with '_' or a digit."""
    name = _FIELD_OK.sub("_", key.upper()).lstrip("_0123456789")
    return name[:64] or "FIELD"


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


def _truncate(text: str) -> str:
    if len(text) <= _MAX_VALUE:
        return text
    return f"{text[:_MAX_VALUE]}…[truncated {len(text) - _MAX_VALUE} characters]"


def journal_fields(method: str, event_dict: Mapping[str, Any]) -> dict[str, str]:
    """Map a structlog event to journal fields."""
    data = dict(event_dict)
    event = str(data.pop("event", ""))
    message = str(data.pop("message", "") or event)
    data.pop("level", None)
    data.pop("timestamp", None)
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(PRIORITIES.get(method, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "EFA_EVENT": event,
    }
    if event in MESSAGE_IDS:
        fields["MESSAGE_ID"] = MESSAGE_IDS[event]
    for key, value in data.items():
        name = field_name(key)
        if name not in fields:
            fields[name] = _truncate(_text(value))
    return fields


def encode(fields: Mapping[str, str]) -> bytes:
    """The native protocol: KEY=value lines, or KEY, length, value for multi-line values."""
    out = bytearray()
    for key, value in fields.items():
        raw = value.encode("utf-8", "replace")
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)


class Sink(Protocol):
    """Where a JournalLogger's entries go (JournalWriter in efa_guard.journal_writer)."""

    def send(self, fields: Mapping[str, str]) -> None:
        """Write one entry; must not block."""


def journal_available(path: str = SOCKET_PATH) -> bool:
    """Whether a journald listens on the native socket."""
    if not Path(path).exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class JournalLogger:
    """A structlog logger whose methods take the event as keyword arguments."""

    def __init__(self, writer: Sink) -> None:
        self.writer = writer

    def _send(self, method: str, kw: Mapping[str, Any]) -> None:
        self.writer.send(journal_fields(method, kw))

    def msg(self, **kw: Any) -> None:  # noqa: ANN401 - structlog passes arbitrary values
        """Info level."""
        self._send("info", kw)

    def debug(self, **kw: Any) -> None:  # noqa: ANN401
        """Debug level."""
        self._send("debug", kw)

    def info(self, **kw: Any) -> None:  # noqa: ANN401
        """Info level."""
        self._send("info", kw)

    def warning(self, **kw: Any) -> None:  # noqa: ANN401
        """Warning level."""
        self._send("warning", kw)

    def error(self, **kw: Any) -> None:  # noqa: ANN401
        """Error level."""
        self._send("error", kw)

    def critical(self, **kw: Any) -> None:  # noqa: ANN401
        """Critical level."""
        self._send("critical", kw)

    warn = warning
    err = error
    fatal = critical
    exception = error
