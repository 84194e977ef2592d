"""Send journal entries without ever blocking the caller.

The caller's `send` tries one non-blocking datagram. If journald does not take it (stopped,
overloaded: its socket queue is full, EAGAIN), the entry goes into a bounded `Backlog` and a
sender thread retries with a short backoff; the caller never waits. When the backlog overflows,
the least important entries are dropped and counted (see `efa_guard.backlog`); once journald
takes entries again, one `log_entries_dropped` event says how many were lost, by kind and by
PRIORITY. An entry that waited carries LOGGED_USEC, when it was logged (journald's own timestamp
says when it arrived). `close()` (run at exit) flushes what it can within a bound, then gives up.

A journald that is gone (no socket, connection refused) is not waited for either: the entry is
written to stderr as a JSON line. Entries larger than a datagram go in a sealed memfd passed
with SCM_RIGHTS, as journald's native protocol allows (and as sd_journal_sendv does).

Why not python3-systemd's `systemd.journal.send`: it calls sd_journal_sendv, which sends on a
blocking socket and holds the GIL meanwhile. Measured with bookworm's python3-systemd 235 against
a SIGSTOPped journald (its socket bind-mounted in a private mount namespace): the first send
blocked until the process was killed 8 s later, and no other Python thread ran meanwhile, so not
even a sender thread could hide it. It also only knows the default socket path (no journald
namespace for tests), and is not on PyPI under that name (`systemd-python` needs libsystemd-dev
and a compiler). The native protocol is ~20 lines here.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from efa_guard.backlog import Backlog, DropReport, Entry
from efa_guard.catalog import EventKind
from efa_guard.journal import SOCKET_PATH, encode, journal_fields

_TOO_BIG = {errno.EMSGSIZE, errno.ENOBUFS}
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
MIN_PAUSE = 0.005
MAX_PAUSE = 0.05


class Outcome(enum.Enum):
    """What became of one send attempt."""

    SENT = "sent"
    STALLED = "stalled"  # journald exists but does not take entries now: try again later
    GONE = "gone"  # no journald: the entry went to stderr


def _send_memfd(sock: socket.socket, path: str, data: bytes) -> None:
    fd = os.memfd_create("efa-guard-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
        sock.sendmsg([], rights, 0, path)
    finally:
        os.close(fd)


def send_datagram(sock: socket.socket, path: str, data: bytes) -> None:
    """One native-protocol entry on a non-blocking socket; a memfd when it is too big."""
    try:
        sock.sendto(data, path)
    except OSError as e:
        if e.errno not in _TOO_BIG:
            raise
        _send_memfd(sock, path, data)


class JournalWriter:
    """Delivers entries to journald's native socket; `send` never blocks."""

    def __init__(
        self,
        path: str = SOCKET_PATH,
        *,
        backlog: Backlog | None = None,
        clock: Callable[[], float] = time.time,
        stderr: TextIO | None = None,
        transmit: Callable[[bytes], None] | None = None,
    ) -> None:
        self.path = path
        self._backlog = backlog if backlog is not None else Backlog()
        self._clock = clock
        self._stderr = stderr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)  # noqa: FBT003 - socket API
        self._transmit = transmit or (lambda data: send_datagram(self._sock, self.path, data))
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._in_flight = False
        self._closing = False
        self._deadline = 0.0

    @property
    def pending(self) -> int:
        """Entries waiting for journald."""
        with self._cond:
            return len(self._backlog) + self._in_flight

    def send(self, fields: Mapping[str, str]) -> None:
        """Write one entry now, or queue it if journald does not take it now."""
        entry = Entry.of(fields)
        with self._cond:
            idle = not self._backlog and not self._in_flight and not self._backlog.dropped
            if idle and self._deliver(entry) is not Outcome.STALLED:
                return
            now = self._clock()  # journald stamps an entry when it arrives: say when it was logged
            entry = Entry.of({**fields, "LOGGED_USEC": str(int(now * 1e6))})
            self._backlog.push(entry, now)
            self._start_locked()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until nothing waits; whether everything went."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._backlog or self._in_flight or self._backlog.dropped:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, MAX_PAUSE))
            return True

    def close(self, timeout: float = 1.0) -> None:
        """Flush for at most `timeout` s, then drop (and count) what is left, and stop.

        Entries sent after this go to stderr.
        """
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout + 0.5)
        if thread is None or not thread.is_alive():
            self._sock.close()

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="journal-sender", daemon=True)
            self._thread.start()

    def _deliver(self, entry: Entry) -> Outcome:
        try:
            self._transmit(encode(entry.fields))
        except (BlockingIOError, InterruptedError, TimeoutError):
            return Outcome.STALLED
        except OSError as e:
            if e.errno in {errno.EAGAIN, errno.EINTR}:
                return Outcome.STALLED
            line = json.dumps({"journal_error": str(e), **entry.fields})
            out = self._stderr or sys.stderr
            out.write(line + "\n")
            out.flush()
            return Outcome.GONE
        return Outcome.SENT

    def _next_locked(self) -> tuple[Entry, DropReport | None] | None:
        """The next entry to send (with the report it carries), or None to stop."""
        while not (self._backlog or self._backlog.dropped or self._closing):
            self._cond.wait()
        if self._closing and time.monotonic() >= self._deadline:
            self._backlog.drop_all(self._clock())
            report = self._backlog.report()
            if report is not None:  # one last try, never waited for
                self._deliver(Entry.of(report_fields(report)))
            return None
        entry = self._backlog.pop()
        if entry is not None:
            return entry, None
        report = self._backlog.report()
        if report is None:
            return None
        return Entry.of(report_fields(report)), report

    def _run(self) -> None:
        pause = MIN_PAUSE
        while True:
            with self._cond:
                job = self._next_locked()
                if job is None:
                    self._cond.notify_all()
                    return
                self._in_flight = True
            entry, report = job
            outcome = self._deliver(entry)
            with self._cond:
                self._in_flight = False
                if outcome is not Outcome.STALLED:
                    pause = MIN_PAUSE
                    if report is not None:
                        self._backlog.acknowledge(report)
                else:
                    if report is None:
                        self._backlog.push_front(entry, self._clock())
                    left = self._deadline - time.monotonic() if self._closing else pause
                    self._cond.wait(max(min(pause, left), 0.0))
                    pause = min(pause * 2, MAX_PAUSE)
                self._cond.notify_all()


def report_fields(report: DropReport) -> dict[str, str]:
    """The `log_entries_dropped` entry for a drop report (drop times in usec since the epoch)."""
    return journal_fields(
        "warning",
        {
            "event": EventKind.LOG_ENTRIES_DROPPED.value,
            "message": report.message(),
            "dropped": report.total,
            "dropped_by_kind": report.by_kind,
            "dropped_by_priority": {str(p): n for p, n in sorted(report.by_priority.items())},
            "first_drop_usec": int(report.first_drop * 1e6),
            "last_drop_usec": int(report.last_drop * 1e6),
        },
    )
