"""The daemon on legacy: its own restore wakes no second check; a foreign write still does."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tools.harness import write_config
from tools.runner import PRIVATE_RUN, Daemon, Line
from tools.sandbox import Sandbox

QUIET = 2.0  # seconds after a correction in which a check woken by our own close would run


def _status(d: Daemon) -> Line:
    """The daemon's counters, asked for with SIGUSR1."""
    mark = d.mark()
    os.kill(d.pid, signal.SIGUSR1)
    line = d.wait_for("status", after=mark, timeout=10)
    assert line is not None, d.tail()
    return line


def _checks(d: Daemon) -> int:
    value = _status(d).data["checks"]
    assert isinstance(value, int)
    return value


def _tamper(d: Daemon) -> None:
    """A foreign iptables-legacy, where the daemon runs (its netns, its /run)."""
    argv = [*d.enter(), "iptables-legacy", "-w", "-D", "EFA_INPUT", "1"]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def test_own_restore_wakes_no_second_check(box: Sandbox, tmp_path: Path) -> None:
    """After each correction no check follows from our own lock close; foreign writes do."""
    config = write_config(tmp_path / "g.toml", backend="legacy", settings={"interval": 30.0})
    d = Daemon(box.guard, config, prefix=PRIVATE_RUN)  # its own lock: no other test wakes it
    try:
        assert d.wait_for("policy_asserted", timeout=30) is not None, d.tail()
        started = d.wait_for("started", timeout=0)
        assert started is not None
        assert "xtables-lock" in str(started.data["sources"])
        time.sleep(QUIET)
        before = _checks(d)
        assert before == 1  # the startup check; its restore's close woke nothing
        for n in (1, 2):
            mark = d.mark()
            _tamper(d)
            corrected = d.wait_for("drift_corrected", after=mark, timeout=15)
            assert corrected is not None, d.tail()
            assert corrected.data["trigger"] == "xtables-lock"
            time.sleep(QUIET)
            assert _checks(d) == before + n  # the tamper's check, and no other
        assert d.stop() == 0
    finally:
        d.kill()
