"""The operator's toolkit on the real kernel, both backends: pause/resume and remove."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import GuardDaemon, daemon_config, launch
from support import Guard, wait_for

pytestmark = pytest.mark.usefixtures("journald")
LOG_RULE = ("-I", "INPUT", "1", "-i", "eth0", "-j", "LOG", "--log-prefix", "dbg:")


@pytest.fixture
def running(guard: Guard, tmp_path: Path) -> GuardDaemon:
    """A daemon with a short timer, stopped by PID by the test."""
    daemon_config(guard, 0.5)
    return launch(guard, tmp_path)


def test_pause_keeps_a_log_rule_until_the_deadline(guard: Guard, running: GuardDaemon) -> None:
    """Paused: a LOG rule above our jump stays, check WARNING; the deadline brings the policy."""
    d = running
    try:
        paused = guard.efa("pause", "--for", "6s", "--reason", "debug with LOG")
        assert paused.returncode == 0, paused.stderr
        guard.ipt(*LOG_RULE)
        d.wait_event("drift_observed")
        assert guard.ipt("-S", "INPUT").splitlines()[1].endswith('--log-prefix "dbg:"')
        check = guard.efa("check", "--no-exposure")
        assert check.returncode == 1, check.stdout
        assert "PAUSED by" in check.stdout
        assert "debug with LOG" in check.stdout
        entry = d.wait_event("paused")
        assert entry["REASON"] == "debug with LOG"
        assert d.wait_event("resumed", timeout=10)["REASON"] == "the pause's deadline passed"
        wait_for(
            "our jump first again",
            lambda: guard.ipt("-S", "INPUT").splitlines()[1] == "-A INPUT -j EFA_INPUT",
        )
        assert "LOG" in guard.ipt("-S", "INPUT")  # the operator's rule is left, below ours
        assert d.wait_event("drift_corrected")["TRIGGER"] == "resume"
    finally:
        d.stop()


def test_pause_and_resume_refuse_bad_requests(guard: Guard, running: GuardDaemon) -> None:
    """Twice, too long, negative, resume when not paused: each refused, nothing changed."""
    d = running
    try:
        assert guard.efa("resume").returncode == 1
        assert guard.efa("pause", "--for", "-5").returncode == 3
        too_long = guard.efa("pause", "--for", "30d")
        assert too_long.returncode == 1
        assert "pause_max" in too_long.stderr
        assert guard.efa("pause", "--for", "10m").returncode == 0
        again = guard.efa("pause", "--for", "10m")
        assert again.returncode == 1
        assert "already paused" in again.stderr
        assert guard.efa("resume").returncode == 0
        assert d.wait_event("resumed")["REASON"] == "efa-guard resume"
        assert guard.efa("check", "--no-exposure").returncode == 0
    finally:
        d.stop()
    assert guard.efa("pause").returncode == 3  # no daemon: nothing to pause


def test_remove_takes_out_exactly_the_policy(guard: Guard, running: GuardDaemon) -> None:
    """Refused while the daemon runs; then every EFA_ chain and jump goes, nothing else."""
    guard.ipt("-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP")  # not ours: stays
    refused = guard.efa("remove")
    assert refused.returncode == 1
    assert "disable --now" in refused.stderr
    dry = guard.efa("remove", "--dry-run")
    assert dry.returncode == 0
    assert "-X EFA_INPUT" in dry.stdout
    assert "-D PREROUTING -j EFA_NODEPORTS" in dry.stdout
    running.stop()
    done = guard.efa("remove")
    assert done.returncode == 0, done.stderr
    for tool in (guard.iptables, guard.iptables.replace("iptables", "ip6tables")):
        for table in ("filter", "raw"):
            saved = guard.box.run([f"{tool}-save", "-t", table]).stdout
            assert "EFA_" not in saved
    assert "--dport 9 -j DROP" in guard.ipt("-S", "INPUT")
    assert guard.efa("remove").returncode == 1  # nothing left to remove
