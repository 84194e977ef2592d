"""A daemon under test: `efa-guard run` in a sandbox's guard namespace, its journal, its stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import Guard

from efa_guard.catalog import MESSAGE_IDS


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 15.0) -> object:
    """Poll until predicate() is truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Daemon:
    """efa-guard run as a subprocess in the guard namespace."""

    guard: Guard
    proc: subprocess.Popen[str]
    notify: socket.socket | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The daemon's PID (ip netns exec execs it)."""
        return self.proc.pid

    def journal(self, event: str | None = None) -> list[dict[str, str]]:
        """The daemon's journal entries, optionally of one event type."""
        argv = ["journalctl", "--no-pager", "-o", "json", f"_PID={self.pid}"]
        if event:
            argv.append(f"MESSAGE_ID={MESSAGE_IDS[event]}")
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_event(self, event: str, count: int = 1, timeout: float = 15.0) -> dict[str, str]:
        """Wait until the journal holds `count` entries of `event`; return the last."""
        entries = wait_for(
            f"{count} {event} event(s) from pid {self.pid}",
            lambda: (e := self.journal(event)) and len(e) >= count and e,
            timeout,
        )
        assert isinstance(entries, list)
        return entries[-1]  # type: ignore[no-any-return]

    def corrections(self) -> int:
        """How many drift_corrected events so far."""
        return len(self.journal("drift_corrected"))

    def notifications(self) -> list[str]:
        """sd_notify datagrams received so far."""
        assert self.notify is not None
        while True:
            try:
                self.notes.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                return self.notes

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the daemon so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL (by PID) if it hangs. The exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            raise


def daemon_config(guard: Guard, interval: float) -> None:
    """Pin the guard's config to a timer interval."""
    text = guard.config.read_text().replace("interval = 10.0 ", f"interval = {interval} ")
    guard.config.write_text(text)


def launch(guard: Guard, tmp_path: Path, *, ready: bool = True) -> Daemon:
    """Start `efa-guard run` in the guard namespace; wait for READY=1 unless told not to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / f"notify.{time.monotonic_ns()}.sock"
    sock.bind(str(path))
    sock.setblocking(False)  # noqa: FBT003 - socket API
    env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")
    argv = ["ip", "netns", "exec", guard.box.guard, sys.executable, "-m", "efa_guard", "run"]
    argv += ["--config", str(guard.config), "--log-format", "journal"]
    stderr = (tmp_path / "daemon.stderr").open("a")
    proc = subprocess.Popen(argv, env=env, stderr=stderr, text=True)
    stderr.close()
    d = Daemon(guard=guard, proc=proc, notify=sock)
    if ready:
        try:
            wait_for("READY=1", lambda: any("READY=1" in n for n in d.notifications()))
        except BaseException:
            d.stop()
            sock.close()
            raise
    return d
