"""Fights on the real kernel, both backends: the policy stays in place, a resync is no fight."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemons import GuardDaemon, daemon_config, launch
from support import Guard, wait_for

from tools.fightkit import SAMPLER, WRITER

pytestmark = [pytest.mark.usefixtures("journald"), pytest.mark.slow]


def _in_guard(guard: Guard, code: str, *args: str) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", guard.box.guard, sys.executable, "-c", code, *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


@pytest.fixture
def fighting(guard: Guard, tmp_path: Path) -> GuardDaemon:
    """A daemon with a short timer (legacy without lock events relies on it)."""
    daemon_config(guard, 0.2 if guard.backend == "legacy" else 30.0)
    return launch(guard, tmp_path)


def test_a_persistent_writer_does_not_win(guard: Guard, fighting: GuardDaemon) -> None:
    """A writer deleting rule 1 every 300 ms for 8 s: policy present most of the time."""
    d = fighting
    try:
        writer = _in_guard(guard, WRITER, guard.iptables, "0.3", "8")
        sampler = _in_guard(guard, SAMPLER, guard.iptables, "8")
        present = float(sampler.communicate(timeout=60)[0])
        writer.wait(timeout=60)
        assert d.proc.poll() is None, "the daemon died in the fight"
        floor = 0.8 if guard.backend == "nft" else 0.5
        assert present >= floor, f"policy present {present:.0%} of the time"
        contested = d.wait_event("contested")
        assert contested["PRIORITY"] == "2"
        check = guard.efa("check")
        assert check.returncode in (1, 2), check.stdout  # contested: never OK
        assert "contested" in check.stdout
    finally:
        d.stop()


KUBE_JUMPS = (
    ("KUBE-FIREWALL", ()),
    ("KUBE-EXTERNAL-SERVICES", ("-m", "conntrack", "--ctstate", "NEW")),
    ("KUBE-NODEPORTS", ("-m", "comment", "--comment", "kubernetes health check service ports")),
    ("KUBE-PROXY-FIREWALL", ("-m", "conntrack", "--ctstate", "NEW")),
)


def test_kube_proxy_resync_after_a_flush_is_no_fight(guard: Guard, fighting: GuardDaemon) -> None:
    """`iptables -F INPUT`, then kube-proxy re-inserting its jumps one by one: no contested."""
    d = fighting
    try:
        for chain, _ in KUBE_JUMPS:
            guard.ipt("-N", chain)
        before = d.corrections()
        guard.ipt("-F", "INPUT")
        for chain, match in reversed(KUBE_JUMPS):  # kube-proxy's EnsureRule, each -I INPUT 1
            guard.ipt("-I", "INPUT", "1", *match, "-j", chain)
            time.sleep(0.02)
        wait_for(
            "our jump first again",
            lambda: guard.ipt("-S", "INPUT").splitlines()[1] == "-A INPUT -j EFA_INPUT",
        )
        time.sleep(1.0)
        assert d.corrections() > before
        assert d.journal("contested") == []
        assert guard.efa("check").returncode == 0
    finally:
        d.stop()
