"""Never fail open, under a real systemd: a broken config file still gives a policy.

One Debian 12 container for the module, the package installed by apt with the service
enabled but not yet started (a first boot); the tests run in order and share it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkgbox import active, check, installed, prop, upgrade_package, wait_for, watcher

from tools.nspawn import Container

pytestmark = pytest.mark.system

CONFIG = "/etc/efa-guard/efa-guard.toml"
LAST_GOOD = "/var/lib/efa-guard/last-good.json"
STATE = "/run/efa-guard/state.json"
KEY = "daemon.interval"
GOOD_INTERVAL = "interval = 10.0 "
BROKEN_INTERVAL = 'interval = "soon" '
NEW_PORT = "4444"
KEPT_PORT = "5555"
# Runs as soon as network-pre.target is reached (and only then), and keeps what the kernel
# held at that moment, in /run: gone at the next boot, so never a stale answer.
PROBE = """\
[Unit]
Description=what the firewall holds when network-pre.target is reached
DefaultDependencies=no
After=network-pre.target

[Service]
Type=oneshot
ExecStart=-/bin/sh -c 'iptables -w -S EFA_INPUT > /run/probe.chain 2>&1'
ExecStart=/bin/sh -c 'iptables -w -S INPUT > /run/probe.input'

[Install]
WantedBy=network-pre.target
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted container with the package installed, the service enabled but not started."""
    with installed(tmp_path_factory.mktemp("nspawn"), start=False) as c:
        yield c


def put(c: Container, text: str) -> None:
    """Replace the config file as an editor does: write a new file, rename it over the old."""
    c.run(["sh", "-c", f"cat > {CONFIG}.new && mv {CONFIG}.new {CONFIG}"], input=text)


def good(c: Container) -> str:
    """The shipped config (as installed in /usr/share)."""
    text = c.run(["cat", "/usr/share/efa-guard/efa-guard.toml"]).stdout
    assert GOOD_INTERVAL in text
    return text


def broken(c: Container) -> str:
    """The shipped config with a wrong type for daemon.interval."""
    return good(c).replace(GOOD_INTERVAL, BROKEN_INTERVAL)


def state(c: Container) -> dict[str, object]:
    """The daemon's published state."""
    data = json.loads(c.run(["cat", STATE]).stdout)
    assert isinstance(data, dict)
    return data


def shipped_policy_in_kernel(c: Container) -> bool:
    """The jump first in INPUT, and EFA_INPUT holding the shipped default's four DROP rules."""
    head = c.run(["iptables", "-w", "-S", "INPUT"]).stdout.splitlines()
    chain = c.run(["iptables", "-w", "-S", "EFA_INPUT"], check=False).stdout
    return head[1:2] == ["-A INPUT -j EFA_INPUT"] and chain.count("-j DROP") == 4


def fallback_events(c: Container) -> list[dict[str, str]]:
    """The service's config_fallback journal entries of the current boot."""
    argv = ["journalctl", "-b", "-u", "efa-guard", "-o", "json", "EFA_EVENT=config_fallback"]
    out = c.run(argv).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def remove_policy(c: Container) -> None:
    """Take efa-guard's policy out of the kernel (both families, both tables)."""
    hooks = (("filter", "INPUT", "EFA_INPUT"), ("raw", "PREROUTING", "EFA_NODEPORTS"))
    for tool in ("iptables", "ip6tables"):
        for table, hook, chain in hooks:
            c.run([tool, "-w", "-t", table, "-D", hook, "-j", chain], check=False)
            c.run([tool, "-w", "-t", table, "-F", chain], check=False)
            c.run([tool, "-w", "-t", table, "-X", chain], check=False)
    assert "EFA_INPUT" not in c.run(["iptables", "-w", "-S"]).stdout


def test_first_start_with_a_broken_edit_enforces_the_shipped_default(box: Container) -> None:
    """First start with a broken edit of the shipped file: default policy enforced, check warns."""
    assert prop(box, "efa-guard", "UnitFileState") == "enabled"
    assert not active(box)
    assert box.run(["test", "-e", LAST_GOOD], check=False).returncode != 0
    assert not shipped_policy_in_kernel(box)
    put(box, broken(box))
    box.run(["systemctl", "start", "efa-guard"])  # returns once READY=1 is sent
    assert shipped_policy_in_kernel(box)
    assert active(box)
    assert prop(box, "efa-guard", "NRestarts") == "0"
    assert state(box)["config_source"] == "shipped default"
    status = prop(box, "efa-guard", "StatusText")
    assert status.startswith("SHIPPED DEFAULT policy enforced"), status
    assert KEY in status
    warning = check(box)
    assert warning.returncode == 1, warning.stdout
    assert warning.stdout.startswith("EFA-GUARD WARNING"), warning.stdout
    assert KEY in warning.stdout
    [event] = fallback_events(box)
    assert event["KEY"] == KEY
    assert event["PRIORITY"] == "2"  # CRITICAL
    assert event["PATH"] == CONFIG


def test_a_fixed_file_is_picked_up_without_a_restart(box: Container) -> None:
    """Fixing the file: the same daemon enforces it, keeps it as last-known-good, check says OK."""
    pid = prop(box, "efa-guard", "MainPID")
    text = good(box)
    put(box, text)
    wait_for("check OK", lambda: check(box).returncode == 0, timeout=15)
    assert prop(box, "efa-guard", "MainPID") == pid
    assert state(box)["config_source"] == "file"
    wait_for(
        "last-good.json", lambda: box.run(["test", "-f", LAST_GOOD], check=False).returncode == 0
    )
    kept = json.loads(box.run(["cat", LAST_GOOD]).stdout)
    assert kept["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    mode = box.run(["stat", "-c", "%a %U", LAST_GOOD, "/var/lib/efa-guard"]).stdout.split("\n")
    assert mode[:2] == ["600 root", "700 root"]


def test_broken_file_and_reboot_enforce_before_network_pre(box: Container) -> None:
    """A broken file, then a reboot: last-known-good in the kernel when network-pre is reached."""
    box.run(["tee", "/etc/systemd/system/efa-probe.service"], input=PROBE)
    box.run(["systemctl", "enable", "efa-probe.service"])
    verified = good(box).replace("ports = [111]", f"ports = [111, {KEPT_PORT}]", 1)
    put(box, verified)  # not the shipped default: the kernel shows which policy came back
    want = hashlib.sha256(verified.encode()).hexdigest()
    wait_for("it is kept", lambda: json.loads(box.run(["cat", LAST_GOOD]).stdout)["sha256"] == want)
    put(box, broken(box))
    # Nothing left from this boot: only the next boot's daemon can put the policy back.
    box.run(["systemctl", "stop", "efa-guard"])
    remove_policy(box)
    box.run(["systemctl", "reboot", "--no-block"])
    box.wait_stopped(timeout=60)
    box.boot()
    wait_for("efa-guard active after reboot", lambda: active(box))
    assert prop(box, "efa-guard", "NRestarts") == "0"
    ready = int(prop(box, "efa-guard", "ActiveEnterTimestampMonotonic"))
    pre = int(prop(box, "network-pre.target", "ActiveEnterTimestampMonotonic"))
    assert 0 < ready <= pre, (ready, pre)
    wait_for(
        "the probe ran",
        lambda: box.run(["test", "-f", "/run/probe.input"], check=False).returncode == 0,
    )
    seen = box.run(["cat", "/run/probe.input"]).stdout.splitlines()
    assert seen[1:2] == ["-A INPUT -j EFA_INPUT"], seen
    chain = box.run(["cat", "/run/probe.chain"]).stdout
    assert chain.count("-j DROP") == 4, chain
    assert f"--dports 111,{KEPT_PORT} " in chain, chain
    assert state(box)["config_source"] == "last-known-good"
    status = prop(box, "efa-guard", "StatusText")
    assert status.startswith("LAST-KNOWN-GOOD policy enforced"), status
    assert KEY in status
    warning = check(box)
    assert warning.returncode == 1, warning.stdout
    assert KEY in warning.stdout
    assert "last-known-good" in warning.stdout
    [event] = fallback_events(box)
    assert event["KEY"] == KEY
    assert event["SOURCE"] == "last-known-good"
    box.run(["systemctl", "disable", "efa-probe.service"])


def test_reload_of_a_broken_file_fails_and_says_why(box: Container) -> None:
    """A reload of a broken file fails (systemctl exits non-zero); the key is in the journal."""
    put(box, good(box))
    wait_for("check OK", lambda: check(box).returncode == 0, timeout=15)
    pid = prop(box, "efa-guard", "MainPID")
    cursor = box.run(["journalctl", "-n", "0", "--show-cursor", "-q"]).stdout.split()[-1]
    put(box, broken(box))
    reload = box.run(["systemctl", "reload", "efa-guard"], check=False)
    assert reload.returncode != 0, reload.stdout + reload.stderr
    out = box.run(["journalctl", "-u", "efa-guard", f"--after-cursor={cursor}", "-o", "cat"])
    assert f"not reloaded, the file is invalid: {CONFIG}: {KEY}:" in out.stdout, out.stdout
    shown = box.run(["systemctl", "status", "--no-pager", "-n", "20", "efa-guard"], check=False)
    assert f"{CONFIG}: {KEY}:" in shown.stdout, shown.stdout
    assert active(box)
    assert prop(box, "efa-guard", "MainPID") == pid
    assert shipped_policy_in_kernel(box)


def test_reload_of_a_good_file_returns_once_the_policy_is_verified(box: Container) -> None:
    """A reload of a good file returns once the new rule is in the kernel and verified."""
    text = good(box).replace("ports = [111]", f"ports = [111, {NEW_PORT}]", 1)
    assert text != good(box)
    want = hashlib.sha256(text.encode()).hexdigest()
    # Edit, reload, and look at once, in one shell: no time for the daemon to catch up after.
    script = (
        f"cat > {CONFIG}.new && mv {CONFIG}.new {CONFIG} && systemctl reload efa-guard; "
        f"echo rc=$?; iptables -w -S EFA_INPUT; cat {STATE}"
    )
    out = box.run(["sh", "-c", script], input=text).stdout.splitlines()
    assert out[0] == "rc=0", out
    assert any(NEW_PORT in line and "-j DROP" in line for line in out[1:-1]), out
    published = json.loads(out[-1])
    assert published["verified_sha256"] == want
    assert published["config_sha256"] == want
    ok = check(box)
    assert ok.returncode == 0, ok.stdout


def test_upgrade_with_a_broken_file_keeps_the_last_known_good(
    box: Container, tmp_path: Path
) -> None:
    """An upgrade restarts the daemon onto the last-known-good; dpkg succeeds, no gap."""
    verified = state(box)["verified_sha256"]
    put(box, broken(box))
    pid = prop(box, "efa-guard", "MainPID")
    seen = len(fallback_events(box))
    newer = upgrade_package(box, tmp_path)
    watch = watcher(box, 8)
    time.sleep(0.5)
    box.run(["apt-get", "install", "-y", f"/root/{newer}"], timeout=300)
    out, _ = watch.communicate(timeout=60)
    assert out.strip() == "0", f"the policy was missing {out.strip()} times"
    assert prop(box, "efa-guard", "MainPID") != pid, "the daemon was not restarted"
    assert active(box)
    published = state(box)
    assert published["config_source"] == "last-known-good"
    assert published["config_sha256"] == verified
    assert NEW_PORT in box.run(["iptables", "-w", "-S", "EFA_INPUT"]).stdout
    events = fallback_events(box)
    assert len(events) == seen + 1
    assert events[-1]["KEY"] == KEY
    assert events[-1]["SOURCE"] == "last-known-good"
    put(box, good(box))
    wait_for("check OK", lambda: check(box).returncode == 0, timeout=15)


def _fails_once_with_6(box: Container) -> str:
    """Start the unit: it fails with exit 6 and systemd does not restart it; its status text."""
    start = box.run(["systemctl", "start", "efa-guard"], check=False)
    assert start.returncode != 0
    time.sleep(3)  # RestartSec=1s: a restart would have happened by now
    assert prop(box, "efa-guard", "ExecMainStatus") == "6"
    assert prop(box, "efa-guard", "NRestarts") == "0"
    assert prop(box, "efa-guard", "ActiveState") == "failed"
    return box.run(["systemctl", "status", "--no-pager", "efa-guard"], check=False).stdout


def test_no_iptables_exits_6_without_restarting(box: Container) -> None:
    """Without the iptables binaries the unit fails once with 6/NOTCONFIGURED; no restart loop."""
    box.run(["systemctl", "stop", "efa-guard"])
    tools = ("/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi")
    box.run(["mkdir", "-p", "/root/aside"])
    box.run(["mv", *tools, "/root/aside/"])
    try:
        shown = _fails_once_with_6(box)
        assert "cannot start: iptables-nft not found" in shown, shown
    finally:
        box.run(["sh", "-c", "mv /root/aside/* /usr/sbin/"])
    box.run(["systemctl", "start", "efa-guard"])
    assert check(box).returncode == 0


def test_no_usable_config_exits_6_without_restarting(box: Container) -> None:
    """Broken file, no last-known-good, no shipped default: exit 6, and systemd does not loop."""
    put(box, broken(box))
    box.run(["systemctl", "stop", "efa-guard"])
    box.run(["rm", "-rf", "/var/lib/efa-guard", "/usr/share/efa-guard/efa-guard.toml"])
    shown = _fails_once_with_6(box)
    assert "status=6/NOTCONFIGURED" in shown, shown
    argv = ["journalctl", "-u", "efa-guard", "-o", "json", "EFA_EVENT=cannot_start"]
    events = [json.loads(line) for line in box.run(argv).stdout.splitlines() if line.strip()]
    assert events[-1]["KEY"] == KEY
    assert events[-1]["PRIORITY"] == "2"
