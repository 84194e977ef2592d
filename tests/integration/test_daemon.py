"""`efa-guard run` on the real kernel, both backends: every tamper is undone and journaled."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemons import GuardDaemon, daemon_config, launch
from support import Guard, wait_for

from efa_guard.catalog import MESSAGE_IDS

CORRECTED = MESSAGE_IDS["drift_corrected"]


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest,
    guard: Guard,
    journald: None,  # noqa: ARG001 - needs journald running
    tmp_path: Path,
) -> Iterator[GuardDaemon]:
    """The daemon, started after the policy is absent, stopped (by PID) at the end."""
    # nft must react through events: a long timer proves it. legacy has only the timer
    # (and lock closes): a short one keeps the test fast.
    daemon_config(guard, 30.0 if guard.backend == "nft" else 0.5)
    d = launch(guard, tmp_path)
    try:
        yield d
    finally:
        d.close()
        request.node.add_report_section("teardown", "daemon stderr", d.tail(60))


def assert_protected(d: GuardDaemon) -> None:
    """The policy is in place and an outside nmap sees 3306 filtered."""
    check = d.guard.efa("check")
    assert check.returncode == 0, check.stdout
    assert d.guard.box.nmap(tcp=(3306,)) == {("tcp", 3306): "filtered"}


def assert_correction_fields(entry: dict[str, str], backend: str) -> None:
    """A drift_corrected journal entry carries everything an operator needs."""
    assert entry["SYSLOG_IDENTIFIER"] == "efa-guard"
    assert entry["PRIORITY"] == "4"
    assert entry["MESSAGE"].startswith("drift corrected (")
    assert json.loads(entry["DRIFT"])
    assert entry["HASH_BEFORE"] != entry["HASH_AFTER"]
    assert float(entry["LATENCY_MS"]) > 0
    assert entry["BACKEND"] == backend
    if backend == "nft":
        assert entry["TRIGGER"] in {"rule-change", "kube-proxy", "config-reload", "interface"}
        if entry["TRIGGER"] in {"rule-change", "kube-proxy"}:
            assert entry["CULPRIT_NAME"].startswith("iptables")
            assert int(entry["CULPRIT_PID"]) > 0
    else:
        assert entry["TRIGGER"] in {"timer", "xtables-lock", "config-reload", "interface"}


def tamper_and_expect(
    d: GuardDaemon, *commands: list[str], text: str = "", probe: bool = True
) -> dict[str, str]:
    """Run iptables commands in the guard; wait for the correction; check its fields."""
    before = d.corrections()
    if len(commands) == 1:
        d.guard.ipt(*commands[0])
    else:  # one transaction, or the daemon repairs between the steps
        restore = "\n".join(["*filter", *(" ".join(c) for c in commands), "COMMIT", ""])
        d.guard.box.run([f"{d.guard.iptables}-restore", "--noflush"], input=restore)
    entry = d.wait_event("drift_corrected", before + 1)
    assert_correction_fields(entry, d.guard.backend)
    if text:
        assert text in entry["MESSAGE"], entry["MESSAGE"]
    if probe:
        assert_protected(d)
    return entry


R3 = "-i eth0 -p tcp -m multiport --dports 112 -m conntrack --ctstate NEW -j DROP"
R1 = (
    "-i eth0 -p tcp -m multiport --dports 1024:6513,6515:8077,8079:65535 -m conntrack --ctstate NEW"
)
TAMPERS: list[tuple[str, list[list[str]], str]] = [
    ("flush chain", [["-F", "EFA_INPUT"]], "rule 1 missing"),
    (
        "delete chain and jump",
        [["-D", "INPUT", "-j", "EFA_INPUT"], ["-F", "EFA_INPUT"], ["-X", "EFA_INPUT"]],
        "chain missing",
    ),
    ("delete rule", [["-D", "EFA_INPUT", "2"]], "rule 2 missing"),
    ("change rule", [["-R", "EFA_INPUT", "3", *R3.split()]], "rule 3 changed"),
    (
        "reorder rules",
        [["-D", "EFA_INPUT", "1"], ["-A", "EFA_INPUT", *R1.split(), "-j", "DROP"]],
        "rules reordered",
    ),
    ("ACCEPT above jump", [["-I", "INPUT", "1", "-j", "ACCEPT"]], "not first"),
    ("delete jump", [["-D", "INPUT", "-j", "EFA_INPUT"]], "jump missing"),
    ("iptables -F", [["-F"]], "rule 1 missing"),
]


@pytest.mark.parametrize(("name", "commands", "text"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tamper_is_undone(
    daemon: GuardDaemon, name: str, commands: list[list[str]], text: str
) -> None:
    """Each tamper is corrected, journaled with its fields, and 3306 stays filtered."""
    del name  # the case's id
    entry = tamper_and_expect(daemon, *commands, text=text)
    if daemon.guard.backend == "nft":
        assert entry["TRIGGER"] == "rule-change"


def test_startup_asserts_and_notifies(daemon: GuardDaemon) -> None:
    """At start the policy is asserted, READY=1 and STATUS sent, WATCHDOG pings follow."""
    started = daemon.wait_event("started")
    assert daemon.guard.backend in started["MESSAGE"]
    asserted = daemon.wait_event("policy_asserted")
    assert asserted["TRIGGER"] == "startup"
    assert "chain missing" in asserted["DRIFT"]
    wait_for("WATCHDOG=1", lambda: any("WATCHDOG=1" in n for n in daemon.notifications()))
    ready = next(n for n in daemon.notifications() if "READY=1" in n)
    assert "STATUS=policy in place" in ready
    assert_protected(daemon)


def test_kube_proxy_restart_is_undone(daemon: GuardDaemon) -> None:
    """kube-proxy rewriting 10k rules and re-inserting its jumps first is corrected."""
    lines = ["*filter", ":KUBE-SERVICES - [0:0]", ":KUBE-FIREWALL - [0:0]"]
    lines += [
        f"-A KUBE-SERVICES -d 10.96.{i // 250}.{i % 250}/32 -p tcp -m tcp --dport 80 -j REJECT"
        for i in range(10_000)
    ]
    lines += ["-I INPUT 1 -j KUBE-FIREWALL", "-I INPUT 1 -j KUBE-SERVICES", "COMMIT", ""]
    before = daemon.corrections()
    iptables = daemon.guard.iptables
    daemon.guard.box.run([f"{iptables}-restore", "--noflush"], input="\n".join(lines))
    entry = daemon.wait_event("drift_corrected", before + 1)
    assert_correction_fields(entry, daemon.guard.backend)
    assert "not first" in entry["MESSAGE"]
    if daemon.guard.backend == "nft":
        assert entry["TRIGGER"] == "kube-proxy"
    assert_protected(daemon)


def test_interface_flap_with_hook_flush(daemon: GuardDaemon) -> None:
    """eth0 down, an ifup hook flushing the chain, eth0 up: logged and corrected."""
    box = daemon.guard.box
    box.run(["ip", "link", "set", "eth0", "down"])
    tamper_and_expect(daemon, ["-F", "EFA_INPUT"], probe=False)
    box.run(["ip", "link", "set", "eth0", "up"])
    events = [e["MESSAGE"] for e in daemon.journal("interface_changed")]
    wait_for(
        "eth0 up logged",
        lambda: any(
            "eth0 up" in m for m in [e["MESSAGE"] for e in daemon.journal("interface_changed")]
        ),
    )
    assert any("eth0 down" in m for m in events)
    assert_protected(daemon)


def test_eth0_deleted_and_recreated(daemon: GuardDaemon) -> None:
    """Deleting and re-creating eth0 is seen; the policy holds for the new interface."""
    box = daemon.guard.box
    box.run(["ip", "link", "del", "eth0"])
    box.run(
        ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "ext0", "netns", box.outside]
    )
    box.run(["ip", "addr", "add", "198.18.0.2/24", "dev", "eth0"])
    box.run(["ip", "link", "set", "eth0", "up"])
    box.run(["ip", "addr", "add", "198.18.0.1/24", "dev", "ext0"], ns=box.outside)
    box.run(["ip", "link", "set", "ext0", "up"], ns=box.outside)

    def seen() -> bool:
        messages = " | ".join(e["MESSAGE"] for e in daemon.journal("interface_changed"))
        return "eth0 deleted" in messages and "eth0 appeared" in messages

    wait_for("eth0 deleted and re-created", seen)
    gone = next(e for e in daemon.journal("interface_changed") if "deleted" in e["MESSAGE"])
    assert gone["PRIORITY"] == "4"  # a missing management interface is a warning
    box.start_listeners(tcp=(3306, 6514), udp=())
    tamper_and_expect(daemon, ["-D", "INPUT", "-j", "EFA_INPUT"])
    assert box.nmap(tcp=(6514,)) == {("tcp", 6514): "open"}


def test_config_edits(daemon: GuardDaemon) -> None:
    """A valid edit is applied; a broken one is rejected and the old policy kept."""
    cfg = daemon.guard.config
    good = cfg.read_text()
    cfg.write_text(good.replace("ports = [111]", "ports = [111, 9999]", 1))
    entry = daemon.wait_event("config_reloaded")
    assert json.loads(entry["CHANGED"]) is True
    wait_for(
        "9999 in EFA_INPUT", lambda: "--dports 111,9999" in daemon.guard.ipt("-S", "EFA_INPUT")
    )
    before = daemon.guard.save()
    cfg.write_text(good.replace("ports = [111]", "ports = [70000]", 1))
    rejected = daemon.wait_event("config_rejected")
    assert "port 70000 is out of range" in rejected["MESSAGE"]
    assert rejected["KEY"] == "chain[0].rule[2].ports[0]"
    time.sleep(0.3)
    assert daemon.guard.save() == before
    entry = tamper_and_expect(daemon, ["-F", "EFA_INPUT"], probe=False)
    assert "--dports 111,9999" in daemon.guard.ipt("-S", "EFA_INPUT"), entry
    assert daemon.guard.box.nmap(tcp=(3306,)) == {("tcp", 3306): "filtered"}


def test_sighup_reloads(daemon: GuardDaemon) -> None:
    """SIGHUP re-reads the config; unchanged, it says so and writes nothing."""
    daemon.wait_event("policy_asserted")
    before = daemon.guard.save()
    os.kill(daemon.pid, signal.SIGHUP)
    entry = daemon.wait_event("config_reloaded")
    assert entry["DETAIL"] == "SIGHUP"
    assert json.loads(entry["CHANGED"]) is False
    assert daemon.guard.save() == before


def test_sigterm_stops_and_leaves_the_policy(daemon: GuardDaemon) -> None:
    """SIGTERM: exit 0, a stopping event, and the policy stays in the kernel."""
    daemon.wait_event("policy_asserted")
    assert daemon.stop() == 0
    stopping = daemon.wait_event("stopping")
    assert stopping["REASON"] == "SIGTERM"
    assert_protected(daemon)


def test_untouched_system_is_never_corrected(guard: Guard, journald: None) -> None:  # noqa: ARG001
    """200 checks (a 10 ms timer) on an untouched system produce zero corrections."""
    daemon_config(guard, 0.01)
    d = GuardDaemon(guard)
    try:
        d.wait_event("policy_asserted")

        def checks() -> int:
            os.kill(d.pid, signal.SIGUSR1)
            time.sleep(0.3)
            return max((int(e["CHECKS"]) for e in d.journal("status")), default=0)

        wait_for("200 checks", lambda: checks() >= 200, timeout=60)
        assert d.stop() == 0
    finally:
        d.stop()
    assert d.journal("drift_corrected") == []
    assert int(d.wait_event("stopping")["CORRECTIONS"]) == 1  # the startup assertion


@pytest.mark.slow
def test_fight_is_contested_and_cpu_bounded(daemon: GuardDaemon) -> None:
    """A tamper every 10 ms for 10 s: a CRITICAL contested event, and the daemon stays calm."""
    daemon.wait_event("policy_asserted")
    cpu0 = daemon.cpu_seconds()
    t0 = time.monotonic()
    code = (
        "import subprocess, time\n"
        "end = time.monotonic() + 10\n"
        "while time.monotonic() < end:\n"
        f"    subprocess.run(['{daemon.guard.iptables}', '-F', 'EFA_INPUT'], check=False)\n"
        "    time.sleep(0.01)\n"
    )
    daemon.guard.box.run([sys.executable, "-c", code], timeout=60)
    used = (daemon.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    contested = daemon.wait_event("contested")
    assert contested["PRIORITY"] == "2"
    if daemon.guard.backend == "nft":
        assert contested["CULPRIT_NAME"] == "iptables-nft"
    assert used < 0.5, f"daemon used {used:.0%} of a core during the fight"
    wait_for("policy back after the fight", lambda: daemon.guard.check_json()["drift"] == [])
    report = daemon.guard.efa("check")
    assert report.returncode == 1  # WARNING: in place, but contested until a quiet window
    assert "contested since" in report.stdout


def test_history_tells_the_story(daemon: GuardDaemon) -> None:
    """`efa-guard history` lists the correction with its trigger and latency."""
    started = daemon.wait_event("started")["__REALTIME_TIMESTAMP"]
    tamper_and_expect(daemon, ["-F", "EFA_INPUT"])
    since = datetime.fromtimestamp(int(started) / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    out = daemon.guard.efa("history", "--json", "--since", f"{since} UTC")
    assert out.returncode == 0, out.stderr
    # A PID is unique only among live processes: an earlier daemon of this run may have had it.
    events = json.loads(out.stdout)["events"]
    mine = [e for e in events if e["pid"] == daemon.pid]
    assert [e["event"] for e in mine] == ["drift_corrected"]
    assert mine[0]["latency_ms"] > 0
    assert "rule 1 missing" in " ".join(mine[0]["drift"])
    table = daemon.guard.efa("history").stdout
    assert "drift_corrected" in table
    assert mine[0]["trigger"] in table


def test_exposure_event_when_a_service_appears(daemon: GuardDaemon) -> None:
    """A new listener no rule drops is logged as an `exposure` event naming it."""
    daemon.wait_event("policy_asserted")
    assert daemon.journal("exposure") == []
    daemon.guard.box.start_listeners(tcp=(80,), udp=())
    os.kill(daemon.pid, signal.SIGHUP)  # a reload surveys at once; the timer would, later
    entry = daemon.wait_event("exposure")
    assert "tcp/80 ipv4" in entry["MESSAGE"]
    assert entry["PRIORITY"] == "4"
    assert "tcp/80 ipv4" in entry["ADDED"]
