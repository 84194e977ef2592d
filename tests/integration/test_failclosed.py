"""Fail closed, on the real kernel and both backends: a broken config, reload, a stopped daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import GuardDaemon, daemon_config, launch
from support import Guard, wait_for

from tools.harness import write_config

BROKEN = ("ports = [111]", "ports = [70000]")
KEY = "chain[0].rule[2].ports[0]"
pytestmark = pytest.mark.usefixtures("journald")


@pytest.fixture
def stopper() -> Iterator[list[GuardDaemon]]:
    """Daemons a test started, stopped by PID at the end whatever happens."""
    started: list[GuardDaemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.close()


def _break(guard: Guard) -> str:
    text = guard.config.read_text()
    guard.config.write_text(text.replace(*BROKEN, 1))
    return text


def test_a_broken_file_at_start_enforces_the_last_known_good(
    guard: Guard, tmp_path: Path, stopper: list[GuardDaemon]
) -> None:
    """Verified once, then broken, then restarted: the old policy is enforced, check WARNING."""
    daemon_config(guard, 0.5)
    extra = guard.config.read_text().replace("ports = [111]", "ports = [111, 9999]", 1)
    guard.config.write_text(extra)
    first = launch(guard, tmp_path)
    stopper.append(first)
    wait_for(
        "last-known-good kept",
        (Path(os.environ["EFA_GUARD_STATE_DIR"]) / "last-good.json").exists,
    )
    assert first.stop() == 0
    guard.ipt("-F", "EFA_INPUT")  # as after a reboot: nothing of the policy left
    guard.ipt("-D", "INPUT", "-j", "EFA_INPUT")
    guard.config.write_text(extra.replace("ports = [111, 9999]", "ports = [70000]", 1))
    second = launch(guard, tmp_path)  # READY=1 only once a policy is in place
    stopper.append(second)
    fallback = second.wait_event("config_fallback")
    assert fallback["PRIORITY"] == "2"
    assert fallback["KEY"] == KEY
    assert fallback["SOURCE"] == "last-known-good"
    assert "9999" in guard.ipt("-S", "EFA_INPUT")  # the verified policy, not the default
    check = guard.efa("check")
    assert check.returncode == 1, check.stdout
    assert KEY in check.stdout
    assert "last-known-good" in check.stdout
    guard.config.write_text(extra)  # fixed: picked up without a restart
    second.wait_event("config_reloaded")
    wait_for("check OK once fixed", lambda: guard.efa("check").returncode == 0)


def test_a_first_start_with_a_broken_file_enforces_the_shipped_default(
    guard: Guard, tmp_path: Path, stopper: list[GuardDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No last-known-good yet: the package's default policy goes in, not nothing."""
    default = write_config(tmp_path / "default.toml", backend=guard.backend)
    monkeypatch.setenv("EFA_GUARD_DEFAULT", str(default))
    _break(guard)
    d = launch(guard, tmp_path)
    stopper.append(d)
    assert d.wait_event("config_fallback")["SOURCE"] == "shipped default"
    assert "-A INPUT -j EFA_INPUT" in guard.ipt("-S", "INPUT").splitlines()[1]
    assert guard.efa("check").returncode == 1
    kept = Path(os.environ["EFA_GUARD_STATE_DIR"]) / "last-good.json"
    assert not kept.exists()
    guard.config.write_text(default.read_text())  # fixed to the very text of the fallback
    d.wait_event("config_reloaded")
    wait_for("the fixed file kept as last-known-good", kept.exists)


def test_no_config_and_no_fallback_exits_6(
    guard: Guard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing usable at all: exit 6 (LSB not configured) with a cannot_start event."""
    _break(guard)
    monkeypatch.setenv("EFA_GUARD_DEFAULT", str(tmp_path / "absent.toml"))
    argv = ["ip", "netns", "exec", guard.box.guard, sys.executable, "-m", "efa_guard", "run"]
    argv += ["--config", str(guard.config), "--log-format", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 6
    assert '"event": "cannot_start"' in done.stderr
    assert KEY in done.stderr


def test_reload_validates_and_waits_for_the_policy(
    guard: Guard, tmp_path: Path, stopper: list[GuardDaemon]
) -> None:
    """`efa-guard reload`: a broken file fails with its reason; a good one returns enforced."""
    daemon_config(guard, 30.0)
    d = launch(guard, tmp_path)
    stopper.append(d)
    good = _break(guard)
    bad = guard.efa("reload")
    assert bad.returncode == 1
    assert KEY in bad.stderr
    guard.config.write_text(good.replace("ports = [111]", "ports = [111, 9999]", 1))
    ok = guard.efa("reload")
    assert ok.returncode == 0, ok.stderr
    assert "verified in the kernel" in ok.stdout
    assert "9999" in guard.ipt("-S", "EFA_INPUT")  # enforced before reload returned
    assert guard.efa("validate").returncode == 0


def test_check_warns_when_the_enabled_daemon_is_not_running(
    guard: Guard, tmp_path: Path, stopper: list[GuardDaemon]
) -> None:
    """Service enabled, daemon stopped: WARNING, though the policy is still in the kernel."""
    wants = Path(os.environ["EFA_GUARD_SYSTEMD_DIR"]) / "multi-user.target.wants"
    wants.mkdir()
    (wants / "efa-guard.service").symlink_to("/lib/systemd/system/efa-guard.service")
    d = launch(guard, tmp_path)
    stopper.append(d)
    assert guard.efa("check").returncode == 0
    os.kill(d.pid, signal.SIGTERM)
    d.proc.wait(timeout=15)
    check = guard.efa("check")
    assert check.returncode == 1, check.stdout
    assert "no daemon is running" in check.stdout
    assert guard.check_json()["daemon"] == {
        "running": False,
        "expected": True,
        "last_heartbeat": pytest.approx(0, abs=1e12),
    }


def test_check_knows_an_older_config_runs(
    guard: Guard, tmp_path: Path, stopper: list[GuardDaemon]
) -> None:
    """The file changed but the daemon was not told: WARNING (with SIGHUP-less edits off)."""
    daemon_config(guard, 30.0)
    d = launch(guard, tmp_path)
    stopper.append(d)
    text = guard.config.read_text()
    os.kill(d.pid, signal.SIGSTOP)  # a hung daemon cannot follow the edit
    try:
        guard.config.write_text(text.replace("follow_up = 2.0", "follow_up = 3.0", 1))
        check = guard.efa("check")
        assert check.returncode == 1, check.stdout
        assert "older config" in check.stdout
    finally:
        os.kill(d.pid, signal.SIGCONT)
