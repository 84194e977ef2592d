"""The journal writer never blocks: stalls queue, drop and report; no journald falls back."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

from efa_guard.backlog import Backlog
from efa_guard.journal import journal_fields
from efa_guard.journal_writer import JournalWriter, send_datagram


def decode(data: bytes) -> dict[str, str]:
    """Parse one native-protocol entry (both the KEY=value and the binary form)."""
    fields: dict[str, str] = {}
    rest = data
    while rest:
        line, _, tail = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = tail
        else:
            (size,) = struct.unpack("<Q", tail[:8])
            fields[line.decode()] = tail[8 : 8 + size].decode()
            rest = tail[8 + size + 1 :]
    return fields


class FakeJournald:
    """A stateful stand-in for journald's socket: takes entries, stalls (EAGAIN) or is gone."""

    def __init__(self) -> None:
        self.stalled = False
        self.gone = False
        self.entries: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def transmit(self, data: bytes) -> None:
        """What the writer's socket would do with one datagram."""
        with self.lock:
            if self.gone:
                raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
            if self.stalled:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            self.entries.append(decode(data))

    def events(self) -> list[str]:
        """EFA_EVENT of every received entry, in order."""
        with self.lock:
            return [e.get("EFA_EVENT", "") for e in self.entries]


def event(kind: str, method: str = "info", **kw: object) -> dict[str, str]:
    """Journal fields of one event."""
    return journal_fields(method, {"event": kind, "message": kind, **kw})


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    """Poll a callable until it is truthy."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_a_stalled_journald_never_blocks_and_gets_everything_later() -> None:
    """While journald stalls, send returns at once; once it recovers, entries arrive in order."""
    fake = FakeJournald()
    writer = JournalWriter("/nonexistent", transmit=fake.transmit)
    writer.send(event("started"))
    fake.stalled = True
    start = time.monotonic()
    for i in range(20):
        writer.send(event("drift_corrected", "warning", n=i))
    assert time.monotonic() - start < 0.5
    assert writer.pending == 20
    assert fake.events() == ["started"]
    fake.stalled = False
    assert writer.flush(5.0)
    assert fake.events() == ["started"] + ["drift_corrected"] * 20
    assert [e["N"] for e in fake.entries[1:]] == [str(i) for i in range(20)]
    assert "LOGGED_USEC" not in fake.entries[0]  # sent at once: journald's timestamp is right
    logged = [int(e["LOGGED_USEC"]) for e in fake.entries[1:]]
    assert logged == sorted(logged)
    assert abs(logged[0] / 1e6 - time.time()) < 5
    assert "log_entries_dropped" not in fake.events()


def test_drops_are_reported_once_journald_recovers() -> None:
    """Overflow drops status chatter first; one log_entries_dropped entry tells the counts."""
    fake = FakeJournald()
    now = [1_000.0]
    writer = JournalWriter(
        "/nonexistent", transmit=fake.transmit, backlog=Backlog(capacity=4), clock=lambda: now[0]
    )
    fake.stalled = True
    for _ in range(10):
        writer.send(event("status"))
        now[0] += 1.0
    writer.send(event("drift_corrected", "warning"))
    writer.send(event("contested", "critical"))
    fake.stalled = False
    assert writer.flush(5.0)
    assert fake.events() == [
        "status",
        "status",
        "drift_corrected",
        "contested",
        "log_entries_dropped",
    ]
    report = fake.entries[-1]
    assert report["DROPPED"] == "8"
    assert json.loads(report["DROPPED_BY_KIND"]) == {"status": 8}
    assert json.loads(report["DROPPED_BY_PRIORITY"]) == {"6": 8}
    assert report["PRIORITY"] == "4"
    first, last = int(report["FIRST_DROP_USEC"]), int(report["LAST_DROP_USEC"])
    assert 1_004_000_000 <= first <= last <= 1_010_000_000  # the drop times, in usec


def test_a_gone_journald_falls_back_to_stderr() -> None:
    """With no journald the entry is a JSON line on stderr, naming the error, and nothing queues."""
    fake = FakeJournald()
    fake.gone = True
    err = io.StringIO()
    writer = JournalWriter("/nonexistent", transmit=fake.transmit, stderr=err)
    writer.send(event("drift_corrected", "warning", latency_ms=3))
    line = json.loads(err.getvalue())
    assert line["EFA_EVENT"] == "drift_corrected"
    assert line["LATENCY_MS"] == "3"
    assert "refused" in line["journal_error"]
    assert writer.pending == 0


def test_close_gives_up_within_its_bound() -> None:
    """close() on a journald that never recovers returns within the bound, counting the loss."""
    fake = FakeJournald()
    fake.stalled = True
    writer = JournalWriter("/nonexistent", transmit=fake.transmit)
    for _ in range(50):
        writer.send(event("drift_corrected", "warning"))
    start = time.monotonic()
    writer.close(0.3)
    elapsed = time.monotonic() - start
    assert 0.25 < elapsed < 0.8
    assert writer.pending == 0
    assert fake.events() == []


def test_close_flushes_a_journald_that_recovers_in_time() -> None:
    """Entries queued at close still arrive when journald takes them before the bound."""
    fake = FakeJournald()
    fake.stalled = True
    writer = JournalWriter("/nonexistent", transmit=fake.transmit)
    for _ in range(3):
        writer.send(event("drift_corrected", "warning"))
    timer = threading.Timer(0.1, lambda: setattr(fake, "stalled", False))
    timer.start()
    writer.close(2.0)
    timer.join()
    assert fake.events() == ["drift_corrected"] * 3


def test_real_socket_eagain_is_a_stall(tmp_path: Path) -> None:
    """A real datagram socket whose queue is full stalls the writer instead of blocking it."""
    path = tmp_path / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        writer = JournalWriter(str(path))
        start = time.monotonic()
        for i in range(200):  # far beyond net.unix.max_dgram_qlen
            writer.send(event("status", n=i))
        assert time.monotonic() - start < 1.0
        assert writer.pending > 0
        server.setblocking(False)  # noqa: FBT003 - socket API
        got: list[str] = []
        assert wait_until(lambda: _drain(server, got) and len(got) >= 200)
        assert [decode(g.encode())["N"] for g in got[:200]] == [str(i) for i in range(200)]
        writer.close(1.0)


def _drain(server: socket.socket, got: list[str]) -> bool:
    while True:
        try:
            got.append(server.recv(65536).decode())
        except BlockingIOError:
            return True


def test_an_entry_larger_than_a_datagram_goes_in_a_sealed_memfd(tmp_path: Path) -> None:
    """EMSGSIZE makes the entry a sealed memfd passed with SCM_RIGHTS, as journald expects."""
    path = tmp_path / "journal.sock"
    data = b"MESSAGE=big\nBLOB=" + b"x" * 300_000 + b"\n"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client,
    ):
        server.bind(str(path))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
        send_datagram(client, str(path), data)
        payload, ancillary, _flags, _addr = server.recvmsg(16, socket.CMSG_SPACE(4))
        assert payload == b""
        level, kind, raw = ancillary[0]
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        (fd,) = struct.unpack("i", raw[:4])
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            want = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            assert seals & want == want
            assert os.pread(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)
