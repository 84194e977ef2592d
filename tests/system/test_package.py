"""The installed .deb under a real systemd (systemd-nspawn), and the unit's hardening.

One Debian 12 container per module, booted inside a network namespace of its own, with the
package installed by apt; the tests run in order and share it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkgbox import active, check, deb, installed, prop, upgrade_package, wait_for, watcher
from support import need

from tools.harness import REPO
from tools.nspawn import Container

pytestmark = pytest.mark.system

UNIT = REPO / "packaging" / "debian" / "efa-guard.service"
CORRECTED = "90ce71a381474c89b36fb4b3755e87cd"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted container in a fresh network namespace with the package installed."""
    with installed(tmp_path_factory.mktemp("nspawn")) as c:
        yield c


def test_unit_exposure_is_low() -> None:
    """systemd-analyze security --offline scores the unit at most 2.5 (firewalld: 9.6)."""
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for efa-guard.service: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.5, out.stdout


def test_installed_and_ready(box: Container) -> None:
    """Installed: enabled, active, READY reached, the policy in the container's kernel."""
    assert prop(box, "efa-guard", "UnitFileState") == "enabled"
    wait_for("efa-guard active", lambda: active(box))
    assert prop(box, "efa-guard", "Type") == "notify"
    assert prop(box, "efa-guard", "StatusText").startswith("policy in place")
    rules = box.run(["iptables", "-S", "INPUT"]).stdout.splitlines()
    assert rules[1] == "-A INPUT -j EFA_INPUT"
    assert "-A INPUT -j EFA_INPUT" in box.run(["ip6tables", "-S", "INPUT"]).stdout
    assert box.run(["test", "-f", "/etc/efa-guard/efa-guard.toml"]).returncode == 0
    assert check(box).returncode == 0


def test_docs_and_completion_are_installed(box: Container) -> None:
    """Both man pages, the README and the examples are installed; the completion loads in bash."""
    completion = "/usr/share/bash-completion/completions/efa-guard"
    out = box.run(["bash", "-c", f"source {completion}; complete -p efa-guard"])
    assert out.stdout.strip() == "complete -F _efa_guard efa-guard"
    for path in (
        "/usr/share/man/man8/efa-guard.8.gz",
        "/usr/share/man/man5/efa-guard.toml.5.gz",
        "/usr/share/doc/efa-guard/README.md.gz",
        "/usr/share/doc/efa-guard/examples/sudoers-efa-guard",
    ):
        assert box.run(["test", "-f", path], check=False).returncode == 0, path


def test_systemd_analyze_verify_is_clean(box: Container) -> None:
    """systemd-analyze verify of the installed unit prints nothing (it exits 0 on errors)."""
    out = box.run(["systemd-analyze", "verify", "efa-guard.service"], check=False)
    assert out.stderr.strip() == "", out.stderr
    assert out.returncode == 0


def test_tamper_is_corrected_and_journaled(box: Container) -> None:
    """A flush is undone; journalctl -u and efa-guard history both show the correction."""
    box.run(["iptables", "-F", "EFA_INPUT"])
    wait_for("policy back", lambda: check(box).returncode == 0)

    def entries() -> list[dict[str, str]]:
        out = box.run(["journalctl", "-u", "efa-guard", "-o", "json", f"MESSAGE_ID={CORRECTED}"])
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    wait_for("a drift_corrected entry", entries)
    entry = entries()[-1]
    assert entry["SYSLOG_IDENTIFIER"] == "efa-guard"
    assert entry["TRIGGER"] == "rule-change"
    assert entry["CULPRIT_NAME"] == "iptables"
    assert "rule 1 missing" in entry["DRIFT"]
    assert float(entry["LATENCY_MS"]) > 0
    plain = box.run(["journalctl", "-u", "efa-guard", "--no-pager"]).stdout
    assert "drift corrected (rule-change by iptables[" in plain
    history = json.loads(box.run(["efa-guard", "history", "--json"]).stdout)["events"]
    assert history[-1]["event"] == "drift_corrected"
    assert history[-1]["trigger"] == "rule-change"


def test_check_warns_while_the_service_is_stopped(box: Container) -> None:
    """Stopped: the policy stays but check warns (1) that no daemon runs; a tamper makes it 2."""
    box.run(["systemctl", "stop", "efa-guard"])
    warning = check(box)
    assert warning.returncode == 1, warning.stdout
    assert warning.stdout.startswith("EFA-GUARD WARNING"), warning.stdout
    assert "efa-guard.service is enabled but no daemon is running" in warning.stdout
    assert "-A INPUT -j EFA_INPUT" in box.run(["iptables", "-S", "INPUT"]).stdout
    box.run(["iptables", "-D", "INPUT", "-j", "EFA_INPUT"])
    critical = check(box)
    assert critical.returncode == 2
    assert "jump missing" in critical.stdout
    box.run(["systemctl", "start", "efa-guard"])
    ok = check(box)
    assert ok.returncode == 0, ok.stdout


def test_sigkill_is_restarted(box: Container) -> None:
    """SIGKILL of the main process: systemd restarts it and the policy is back."""
    before = int(prop(box, "efa-guard", "NRestarts"))
    box.run(["systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "efa-guard"])
    box.run(["iptables", "-F", "EFA_INPUT"])
    wait_for("a restart", lambda: int(prop(box, "efa-guard", "NRestarts")) > before)
    wait_for("efa-guard active again", lambda: active(box))
    wait_for("policy back", lambda: check(box).returncode == 0)


def test_reboot_policy_before_network_pre(box: Container) -> None:
    """After a reboot the policy is asserted (READY) before network-pre.target is reached."""
    box.run(["systemctl", "reboot", "--no-block"])
    box.wait_stopped(timeout=60)
    box.boot()
    wait_for("efa-guard active after reboot", lambda: active(box))
    ready = int(prop(box, "efa-guard", "ActiveEnterTimestampMonotonic"))
    pre = int(prop(box, "network-pre.target", "ActiveEnterTimestampMonotonic"))
    assert 0 < ready <= pre, (ready, pre)
    assert check(box).returncode == 0


def test_legacy_backend_under_the_hardened_unit(box: Container) -> None:
    """With backend = "legacy" the confined daemon reads, writes and corrects iptables-legacy."""
    config = "/etc/efa-guard/efa-guard.toml"
    original = box.run(["cat", config]).stdout
    legacy = original.replace('backend = "auto"', 'backend = "legacy"')
    legacy = legacy.replace("interval = 10.0 ", "interval = 1.0 ")
    assert legacy != original
    box.run(["tee", config], input=legacy)
    try:
        box.run(["systemctl", "restart", "efa-guard"])
        wait_for("efa-guard active", lambda: active(box))
        head = box.run(["iptables-legacy", "-S", "INPUT"]).stdout.splitlines()
        assert head[1] == "-A INPUT -j EFA_INPUT"
        box.run(["iptables-legacy", "-F", "EFA_INPUT"])

        def back() -> bool:  # (check also warns: the nft tables still hold the earlier policy)
            report = box.run(["efa-guard", "check", "--json"], check=False).stdout
            drift: list[object] = json.loads(report)["drift"]
            return not drift

        wait_for("legacy policy back", back, timeout=15)
        last = box.run(["efa-guard", "history", "--json"]).stdout
        assert json.loads(last)["events"][-1]["trigger"] in ("timer", "xtables-lock")
    finally:
        box.run(["tee", config], input=original)
        box.run(["systemctl", "restart", "efa-guard"])
    wait_for("efa-guard active", lambda: active(box))


def test_reinstall_and_upgrade_restart_without_a_gap(box: Container, tmp_path: Path) -> None:
    """Reinstall and upgrade restart the daemon; a watcher never sees the policy missing."""
    newer = upgrade_package(box, tmp_path)
    name = deb().name
    for step in (
        ["apt-get", "install", "-y", "--reinstall", f"/root/{name}"],
        ["apt-get", "install", "-y", f"/root/{newer}"],
    ):
        pid = prop(box, "efa-guard", "MainPID")
        watch = watcher(box, 8)
        time.sleep(0.5)
        box.run(step, timeout=300)
        out, _ = watch.communicate(timeout=60)
        assert out.strip() == "0", f"{step[-1]}: the policy was missing {out.strip()} times"
        wait_for("efa-guard active", lambda: active(box))
        assert prop(box, "efa-guard", "MainPID") != pid, "the daemon was not restarted"
    assert "+1" in box.run(["dpkg-query", "-W", "-f=${Version}", "efa-guard"]).stdout


def test_remove_keeps_the_policy_and_purge_the_config(box: Container) -> None:
    """remove: the daemon stops, the policy and config stay; purge removes the config."""
    box.run(["apt-get", "remove", "-y", "efa-guard"], timeout=300)
    assert not active(box)
    assert box.run(["iptables", "-S", "INPUT"]).stdout.splitlines()[1] == "-A INPUT -j EFA_INPUT"
    assert box.run(["test", "-f", "/etc/efa-guard/efa-guard.toml"], check=False).returncode == 0
    box.run(["apt-get", "purge", "-y", "efa-guard"], timeout=300)
    assert box.run(["test", "-e", "/etc/efa-guard"], check=False).returncode != 0
    assert "-A INPUT -j EFA_INPUT" in box.run(["iptables", "-S", "INPUT"]).stdout
