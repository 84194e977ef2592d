"""`efa-guard run` as a child process inside a sandbox namespace: start, watch, measure, stop.

Used by the demo, the daemon benchmark and the daemon's integration tests.  The daemon's
stderr goes to a file, or (``stderr=None``) through a pipe that a thread reads line by line,
each line stamped with its arrival time and parsed when it is JSON (``--log-format json``).
It is only ever stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tools.harness import REPO, HarnessError, journal_entries, pythonpath, stop_process

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 15.0
"""Seconds for the daemon to exit after SIGTERM before it is killed."""
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""Never inherited from our own environment: only what ``env`` passes reaches the daemon."""
PRIVATE_RUN = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs efa-private-run /run && exec "$@"',
    "sh",
)
"""Prefix giving a command (a legacy daemon) its own /run, so its own xtables lock.

iptables-legacy's lock /run/xtables.lock is host-wide, and the daemon reacts to every release
of it: any legacy iptables anywhere on the host (other test runs, here) would wake it.  The
mount lives in a private mount namespace of the daemon's and is gone with it; tampers enter
it with nsenter (:meth:`Daemon.enter`).  /run/systemd is hidden too: log to stderr (json).
"""


@dataclasses.dataclass(frozen=True)
class Line:
    """One line the daemon wrote to stderr, with its arrival time (time.monotonic)."""

    at: float
    event: str
    data: dict[str, object]
    raw: str


@dataclasses.dataclass(frozen=True)
class Cpu:
    """CPU time of a process in milliseconds: its own, and its reaped children's."""

    own: float
    children: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.own - other.own, self.children - other.children)

    @property
    def total(self) -> float:
        """Own plus children."""
        return self.own + self.children


class Daemon:
    """``efa-guard run --config CONFIG --log-format LOG_FORMAT`` in namespace ``ns``.

    ``prefix`` goes between ``ip netns exec NS`` and the interpreter (e.g. an ``unshare``
    giving the daemon its own /run); ``env`` is added to the environment; ``stderr`` is a
    file to write, or None to read the lines here (:meth:`wait_for`, :meth:`since`).
    """

    def __init__(  # noqa: PLR0913 - each is one independent knob of the child
        self,
        ns: str,
        config: Path,
        *,
        log_format: str = "json",
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stderr: Path | None = None,
    ) -> None:
        self.ns = ns
        self.config = config
        self.prefix = tuple(prefix)
        self.stderr_path = stderr
        argv = ["ip", "netns", "exec", ns, *self.prefix, sys.executable, "-m", "efa_guard"]
        self.argv = [*argv, "run", "--config", str(config), "--log-format", log_format]
        full_env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
        full_env |= {"PYTHONPATH": pythonpath(), **(env or {})}
        self.lines: list[Line] = []
        self.eof = False
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        with contextlib.ExitStack() as stack:
            err: IO[bytes] | int = subprocess.PIPE
            if stderr is not None:
                err = stack.enter_context(stderr.open("wb"))
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.pid = self.proc.pid
        self.started = time.time() - 1.0  # its journal entries are no older (PIDs are reused)
        if stderr is None:
            self.thread = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
            self.thread.start()

    # -- its stderr --------------------------------------------------------------------

    def _read(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        for raw in iter(stream.readline, b""):
            at = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            data: dict[str, object] = {}
            with contextlib.suppress(ValueError):
                parsed = json.loads(text)
                if isinstance(parsed, dict):
                    data = parsed
            with self.cond:
                self.lines.append(Line(at, str(data.get("event", "")), data, text))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def mark(self) -> int:
        """The number of lines read so far: a position for :meth:`wait_for`."""
        with self.cond:
            return len(self.lines)

    def wait_for(self, event: str, *, after: int = 0, timeout: float) -> Line | None:
        """The first line of ``event`` at or after position ``after``; None on timeout/EOF."""
        deadline = time.monotonic() + timeout
        with self.cond:
            pos = after
            while True:
                while pos < len(self.lines):
                    if self.lines[pos].event == event:
                        return self.lines[pos]
                    pos += 1
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self.cond.wait(left)

    def since(self, after: int, event: str | None = None) -> list[Line]:
        """Lines from position ``after`` on, optionally only of one event."""
        with self.cond:
            return [ln for ln in self.lines[after:] if event is None or ln.event == event]

    def tail(self, lines: int = 15) -> str:
        """The last lines of its stderr, for error messages."""
        if self.stderr_path is not None:
            with contextlib.suppress(OSError):
                return "\n".join(self.stderr_path.read_text().splitlines()[-lines:])
            return ""
        with self.cond:
            return "\n".join(ln.raw for ln in self.lines[-lines:])

    def journal(self, event: str | None = None) -> list[dict[str, str]]:
        """Its journal entries (``--log-format journal``), optionally of one event type."""
        return journal_entries(self.pid, event, since=self.started)

    # -- its process -------------------------------------------------------------------

    def cpu(self) -> Cpu:
        """utime+stime, and cutime+cstime, from /proc/PID/stat."""
        fields = self._proc("stat").rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17.
        own = int(fields[11]) + int(fields[12])
        children = int(fields[13]) + int(fields[14])
        return Cpu(own * 1000.0 / CLK_TCK, children * 1000.0 / CLK_TCK)

    def memory_mb(self) -> tuple[float, float]:
        """VmRSS and VmHWM from /proc/PID/status, in MB."""
        values: dict[str, float] = {}
        for line in self._proc("status").splitlines():
            key, _, rest = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                values[key] = int(rest.split()[0]) / 1024.0
        return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)

    def _proc(self, name: str) -> str:
        try:
            return Path(f"/proc/{self.pid}/{name}").read_text()
        except OSError as e:
            msg = f"daemon {self.pid} gone? {e}\n{self.tail()}"
            raise HarnessError(msg) from None

    def check_alive(self) -> None:
        """Raise if the daemon has exited, or if the PID is not the daemon itself."""
        if self.proc.poll() is not None:
            msg = f"daemon exited with {self.proc.returncode}:\n{self.tail()}"
            raise HarnessError(msg)
        cmdline = self._proc("cmdline").replace("\0", " ")
        if "efa_guard" not in cmdline:
            msg = f"PID {self.pid} is not the daemon: {cmdline!r}"
            raise HarnessError(msg)

    def enter(self) -> list[str]:
        """The prefix that runs a command where the daemon runs (its netns, its mounts)."""
        if self.prefix:
            return ["nsenter", "-t", str(self.pid), "-m", "-n"]
        return ["ip", "netns", "exec", self.ns]

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM by PID and reap; its exit status.  Killed after ``timeout`` s: an error."""
        stopped = stop_process(self.proc, grace=timeout)
        self._close()
        if not stopped:
            msg = f"daemon ignored SIGTERM for {timeout:g} s, killed:\n{self.tail()}"
            raise HarnessError(msg)
        return self.proc.returncode

    def kill(self) -> None:
        """Teardown on failure: stop it by PID whatever state it is in, never raise."""
        stop_process(self.proc, grace=STOP_TIMEOUT)
        self._close()

    def _close(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=STOP_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
