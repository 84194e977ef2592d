"""A private systemd-journald for tests and scripts: started, stalled and stopped by us only.

`systemd-journald NS` runs a journald *namespace* instance: it listens on
/run/systemd/journal.NS/socket and stores to /var/log/journal/MACHINE-ID.NS, read with
`journalctl --namespace=NS`. The machine's own journald (if any) is never touched: we signal
only the PID we started, and delete only the directories of our namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EXE = Path("/lib/systemd/systemd-journald")


@dataclass
class PrivateJournald:
    """One journald namespace instance that we started."""

    namespace: str
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> str:
        """Its native protocol socket."""
        return f"/run/systemd/journal.{self.namespace}/socket"

    def stall(self) -> None:
        """SIGSTOP it, then fill its socket queue so that every sender gets EAGAIN."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as s:
            s.setblocking(False)  # noqa: FBT003 - socket API
            for i in range(10_000):
                try:
                    s.sendto(
                        f"MESSAGE=filler {i}\nSYSLOG_IDENTIFIER=filler\n".encode(), self.socket
                    )
                except BlockingIOError:
                    return
        msg = "journald's socket queue never filled up"
        raise RuntimeError(msg)

    def resume(self) -> None:
        """SIGCONT it."""
        os.kill(self.proc.pid, signal.SIGCONT)

    def entries(self, *matches: str) -> list[dict[str, str]]:
        """Its entries as journalctl -o json --all prints them, filtered by FIELD=value matches."""
        argv = ["journalctl", f"--namespace={self.namespace}", "--no-pager", "-o", "json", "--all"]
        out = subprocess.run([*argv, *matches], capture_output=True, text=True, check=False)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _directories(namespace: str) -> list[Path]:
    machine = Path("/etc/machine-id").read_text().strip()
    return [
        Path(f"/run/systemd/journal.{namespace}"),
        Path(f"/var/log/journal/{machine}.{namespace}"),
        Path(f"/run/log/journal/{machine}.{namespace}"),
    ]


@contextlib.contextmanager
def private_journald(timeout: float = 10.0) -> Iterator[PrivateJournald]:
    """Start a journald namespace instance; always SIGCONT, stop it and delete its files."""
    namespace = f"efat{uuid.uuid4().hex[:10]}"
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen([str(EXE), namespace], stdout=subprocess.DEVNULL, stderr=errors)
    jd = PrivateJournald(namespace=namespace, proc=proc)
    try:
        deadline = time.monotonic() + timeout
        while not _listening(jd.socket):
            if proc.poll() is not None or time.monotonic() > deadline:
                errors.seek(0)
                msg = f"systemd-journald {namespace} did not start: {errors.read().decode()}"
                raise RuntimeError(msg)
            time.sleep(0.02)
        yield jd
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        errors.close()
        for path in _directories(namespace):
            shutil.rmtree(path, ignore_errors=True)


def _listening(path: str) -> bool:
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True
