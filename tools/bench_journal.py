"""Tamper-to-restored latency of the journal-logging daemon, with journald running and stalled.

A private journald namespace instance (tests/journald.py, never the machine's journald) and a
fresh sandbox (tests/sandbox.py). The daemon (nft backend, 30 s timer, contest detection off)
runs from `--repo` (default: this checkout) and writes to the private journald through
EFA_GUARD_JOURNAL_SOCKET. Each tamper flushes EFA_INPUT; the latency is from the flush
command's exit to `iptables-nft -S EFA_INPUT` reading back the policy, polled from outside every
5 ms. `--tampers` tampers with journald running, then as many with journald SIGSTOPped and its
socket queue full, then the seconds SIGTERM takes with journald still stopped.

To measure a checkout that predates EFA_GUARD_JOURNAL_SOCKET, point its
efa_guard/journal.py SOCKET_PATH at the variable first (a copy, never your worktree).

Usage: ``python tests/bench_journal.py [--tampers N] [--repo PATH]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.harness import REPO, isolate_state, write_config
from tools.privjournal import PrivateJournald, private_journald
from tools.sandbox import Sandbox, sandbox

SOCKET_ENV = "EFA_GUARD_JOURNAL_SOCKET"


def _chain(box: Sandbox) -> str:
    return box.run(["iptables-nft", "-S", "EFA_INPUT"], check=False).stdout


def _restore_ms(box: Sandbox, want: str) -> float:
    box.run(["iptables-nft", "-F", "EFA_INPUT"])
    flushed = time.monotonic()
    while _chain(box) != want:
        if time.monotonic() - flushed > 10:
            msg = "EFA_INPUT not restored within 10 s"
            raise RuntimeError(msg)
        time.sleep(0.005)
    return (time.monotonic() - flushed) * 1000


def _summary(name: str, values: list[float]) -> str:
    shown = ", ".join(f"{v:.0f}" for v in values)
    return f"{name}: median {statistics.median(values):.0f} ms, max {max(values):.0f} ms ({shown})"


def measure(jd: PrivateJournald, box: Sandbox, repo: Path, tampers: int, tmp: Path) -> None:
    """Print the latencies, running then stalled, and the SIGTERM time while stalled."""
    config = write_config(tmp / "g.toml", backend="nft")
    text = config.read_text().replace("interval = 10.0 ", "interval = 30.0 ")
    config.write_text(text.replace("contest_threshold = 5 ", "contest_threshold = 1000 "))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp / "notify.sock"), **{SOCKET_ENV: jd.socket})
    env["PYTHONPATH"] = str(repo)
    argv = ["ip", "netns", "exec", box.guard, sys.executable, "-m", "efa_guard", "run"]
    argv += ["--config", str(config), "--log-format", "journal"]
    proc = subprocess.Popen(argv, env=env, cwd=repo, stderr=subprocess.DEVNULL)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        want = _chain(box)
        print(_summary("journald running", [_restore_ms(box, want) for _ in range(tampers)]))
        jd.stall()
        print(_summary("journald stalled", [_restore_ms(box, want) for _ in range(tampers)]))
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        print(f"SIGTERM with journald stalled: exit {code} after {time.monotonic() - start:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        notify.close()


def main() -> int:
    """Run the measurement once."""
    isolate_state()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tampers", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args()
    with (
        private_journald() as jd,
        sandbox(prefix="efab") as box,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print(f"efa_guard from {args.repo.resolve()}")
        measure(jd, box, args.repo.resolve(), args.tampers, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
