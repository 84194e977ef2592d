"""A stalled journald never slows enforcement; what it missed arrives or is counted afterwards.

Every test runs its own journald namespace instance (tests/journald.py), never the machine's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import need, wait_for

from efa_guard.journal import journal_fields
from efa_guard.journal_writer import JournalWriter
from efa_guard.log import SOCKET_ENV
from tools.harness import write_config
from tools.privjournal import EXE, PrivateJournald, private_journald
from tools.sandbox import Sandbox

RESTORE_BOUND = 0.3  # seconds from a tamper to the policy back (a blocked send cost 1.1 s)


@pytest.fixture
def jd() -> Iterator[PrivateJournald]:
    """A journald namespace instance of this test, always resumed and stopped."""
    need(EXE.exists(), "systemd-journald is not installed")
    with private_journald() as j:
        yield j


def test_an_entry_larger_than_a_datagram_arrives(jd: PrivateJournald) -> None:
    """A 300 KB field reaches a real journald whole (through a sealed memfd)."""
    writer = JournalWriter(jd.socket)
    blob = "".join(chr(ord("a") + i % 26) for i in range(300_000))
    writer.send(journal_fields("info", {"event": "status", "message": "big entry", "blob": blob}))
    wait_for("the big entry", lambda: jd.entries("MESSAGE=big entry"))
    assert jd.entries("MESSAGE=big entry")[0]["BLOB"] == blob


def test_drops_are_counted_and_reported_after_a_stall(jd: PrivateJournald) -> None:
    """Stalled: sends stay fast, chatter is dropped first; resumed: one report tells the counts."""
    writer = JournalWriter(jd.socket)
    jd.stall()
    start = time.monotonic()
    for i in range(2_000):
        writer.send(journal_fields("info", {"event": "status", "message": f"status {i}"}))
    for i in range(5):
        writer.send(journal_fields("warning", {"event": "drift_corrected", "message": f"fix {i}"}))
    assert time.monotonic() - start < 1.0
    jd.resume()
    assert writer.flush(10.0)
    wait_for("the drop report", lambda: jd.entries("EFA_EVENT=log_entries_dropped"))
    fixes = [e["MESSAGE"] for e in jd.entries("EFA_EVENT=drift_corrected")]
    assert fixes == [f"fix {i}" for i in range(5)]
    arrived = len(jd.entries("EFA_EVENT=status"))
    (report,) = jd.entries("EFA_EVENT=log_entries_dropped")
    assert int(report["DROPPED"]) == 2_000 - arrived > 0
    assert report["DROPPED_BY_KIND"] == f'{{"status": {2_000 - arrived}}}'
    assert report["PRIORITY"] == "4"


def _chain(box: Sandbox) -> str:
    return box.run(["iptables-nft", "-S", "EFA_INPUT"], check=False).stdout


def _time_to_restore(box: Sandbox, want: str) -> float:
    """Flush EFA_INPUT; seconds until it reads back as `want` (polled from outside)."""
    box.run(["iptables-nft", "-F", "EFA_INPUT"])
    flushed = time.monotonic()
    while _chain(box) != want:
        if time.monotonic() - flushed > 5:
            pytest.fail("EFA_INPUT was not restored within 5 s")
        time.sleep(0.005)
    return time.monotonic() - flushed


def test_corrections_keep_their_speed_while_journald_is_stalled(
    box: Sandbox, jd: PrivateJournald, tmp_path: Path
) -> None:
    """With journald stopped, tampers are undone at normal speed; resumed, every event arrives."""
    config = write_config(tmp_path / "g.toml", backend="nft")
    text = config.read_text().replace("interval = 10.0 ", "interval = 30.0 ")
    config.write_text(text.replace("contest_threshold = 5 ", "contest_threshold = 1000 "))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), **{SOCKET_ENV: jd.socket})
    argv = ["ip", "netns", "exec", box.guard, sys.executable, "-m", "efa_guard", "run"]
    argv += ["--config", str(config), "--log-format", "journal"]
    stderr = (tmp_path / "daemon.stderr").open("w")
    proc = subprocess.Popen(argv, env=env, stderr=stderr)
    try:
        notify.settimeout(15)
        assert b"READY=1" in notify.recv(4096)
        want = _chain(box)
        assert "-j DROP" in want
        jd.stall()
        latencies = [_time_to_restore(box, want) for _ in range(5)]
        assert max(latencies) < RESTORE_BOUND, latencies
        assert proc.poll() is None
        jd.resume()
        mine = f"_PID={proc.pid}"
        proc.send_signal(signal.SIGUSR1)  # a status entry with the daemon's own counters
        wait_for("the status entry", lambda: jd.entries(mine, "EFA_EVENT=status"), seen=jd.entries)
        (status,) = jd.entries(mine, "EFA_EVENT=status")
        fixes = jd.entries(mine, "EFA_EVENT=drift_corrected")
        asserted = jd.entries(mine, "EFA_EVENT=policy_asserted")  # the daemon counts it too
        assert len(fixes) >= 3  # a tamper during a correction's retry is folded into it
        assert len(fixes) + len(asserted) == int(status["CORRECTIONS"])
        jd.stall()
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - stopping < 2.5  # the flush at exit gives up after 1 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        notify.close()
        stderr.close()
