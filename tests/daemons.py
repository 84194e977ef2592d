"""A daemon under test: `efa-guard run` in a guard namespace, its journal, sd_notify and stop."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from support import Guard, wait_for

from tools.harness import edit_config
from tools.runner import Daemon


class GuardDaemon(Daemon):
    """The harness's `efa-guard run` (journal format) in a guard, with its sd_notify socket."""

    def __init__(
        self,
        guard: Guard,
        *,
        notify: socket.socket | None = None,
        env: dict[str, str] | None = None,
        stderr: Path | None = None,
    ) -> None:
        super().__init__(
            guard.box.guard, guard.config, log_format="journal", env=env, stderr=stderr
        )
        self.guard = guard
        self.notify = notify
        self.notes: list[str] = []

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
        return self.cpu().own / 1000.0

    def close(self) -> None:
        """Stop it (by PID) and close the notify socket."""
        try:
            self.stop()
        finally:
            if self.notify is not None:
                self.notify.close()


def daemon_config(guard: Guard, interval: float) -> None:
    """Pin the guard's config to a timer interval."""
    edit_config(guard.config, {"interval": interval})


def launch(guard: Guard, tmp_path: Path, *, ready: bool = True) -> GuardDaemon:
    """Start `efa-guard run` in the guard namespace; wait for READY=1 unless told not to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / f"notify.{time.monotonic_ns()}.sock"
    sock.bind(str(path))
    sock.setblocking(False)  # noqa: FBT003 - socket API
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    d = GuardDaemon(guard, notify=sock, env=env, stderr=tmp_path / f"daemon.{d_count()}.stderr")
    if ready:
        try:
            wait_for("READY=1", lambda: any("READY=1" in n for n in d.notifications()))
        except BaseException:
            d.close()
            raise
    return d


_started = [0]


def d_count() -> int:
    """A number per daemon started by this process (distinct stderr files)."""
    _started[0] += 1
    return _started[0]
