"""journald's native protocol and the mapping of events to fields."""

from __future__ import annotations

import io
import json
import socket
import struct
from pathlib import Path

import pytest

from efa_guard import log
from efa_guard.catalog import MESSAGE_IDS
from efa_guard.journal import encode, field_name, journal_fields
from efa_guard.journal_writer import JournalWriter
from efa_guard.notify import Notifier

CATALOG = Path(__file__).parents[2] / "config" / "efa-guard.catalog"


def test_multiline_values_use_the_binary_form() -> None:
    """A value with a newline is KEY, 64-bit length, value; others are KEY=value."""
    raw = encode({"MESSAGE": "one line", "DIFF": "a\nb"})
    assert raw == b"MESSAGE=one line\nDIFF\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_event_fields() -> None:
    """An event gets MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, MESSAGE_ID and upper-case fields."""
    fields = journal_fields(
        "warning",
        {
            "event": "drift_corrected",
            "message": "drift corrected",
            "latency_ms": 1.5,
            "drift": ["x"],
            "culprit_pid": None,
            "level": "warning",
        },
    )
    assert fields["MESSAGE"] == "drift corrected"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "efa-guard"
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["drift_corrected"]
    assert fields["LATENCY_MS"] == "1.5"
    assert json.loads(fields["DRIFT"]) == ["x"]
    assert fields["CULPRIT_PID"] == "null"
    assert "LEVEL" not in fields


def test_field_names_are_valid_journal_names() -> None:
    """Keys become [A-Z0-9_] names that do not start with _ or a digit."""
    assert field_name("hash-before") == "HASH_BEFORE"
    assert field_name("_private") == "PRIVATE"
    assert field_name("9lives") == "LIVES"


def test_message_ids_are_unique_and_catalogued() -> None:
    """Each event type has its own 128-bit id, and the catalog documents every one."""
    ids = list(MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    catalog = CATALOG.read_text()
    for mid in ids:
        assert f"-- {mid}\n" in catalog


def test_writer_sends_datagrams(tmp_path: Path) -> None:
    """The writer delivers one datagram per entry to the socket it is given."""
    path = tmp_path / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        JournalWriter(str(path)).send({"MESSAGE": "hi", "X": "1"})
        assert server.recv(4096) == b"MESSAGE=hi\nX=1\n"


def test_notifier_speaks_sd_notify(tmp_path: Path) -> None:
    """READY/STATUS/WATCHDOG datagrams reach NOTIFY_SOCKET; the ping interval is half."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"})
        assert n.watchdog_interval == 1.5
        assert n.ready("policy in place")
        assert server.recv(4096) == b"READY=1\nSTATUS=policy in place"
        assert n.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
    silent = Notifier({})
    assert not silent.enabled
    assert not silent.ready("x")
    assert silent.watchdog_interval is None


def test_configure_reads_the_socket_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """log.configure('journal') sends to $EFA_GUARD_JOURNAL_SOCKET; shutdown() stops the writer."""
    import structlog  # noqa: PLC0415 - lazy like the code under test

    path = tmp_path / "journal.sock"
    monkeypatch.setenv(log.SOCKET_ENV, str(path))
    monkeypatch.setattr(log, "_configured", False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        try:
            assert log.configure("journal") == "journal"
            log.get_logger().warning("drift_corrected", message="fixed", latency_ms=2)
            got = server.recv(65536)
        finally:
            log.shutdown()
            structlog.reset_defaults()
    assert b"MESSAGE=fixed\n" in got
    assert f"MESSAGE_ID={MESSAGE_IDS['drift_corrected']}\n".encode() in got
    assert b"LATENCY_MS=2\n" in got


def test_a_closed_writer_falls_back_to_stderr(tmp_path: Path) -> None:
    """After close() (at exit), an entry still goes somewhere: stderr."""
    path = tmp_path / "journal.sock"
    err = io.StringIO()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        writer = JournalWriter(str(path), stderr=err)
        writer.close(0.1)
        writer.send({"MESSAGE": "late", "EFA_EVENT": "stopping"})
    assert json.loads(err.getvalue())["MESSAGE"] == "late"
