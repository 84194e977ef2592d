"""Real nmap from an outside namespace: what the policy hides and what it leaves open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import Guard

from tools.harness import write_config

TCP = (111, 3306, 6514, 8078, 31672)
UDP = (111,)
FILTER_ONLY = """backend = "auto"
interface = "eth0"
[[chain]]
name = "EFA_INPUT"
table = "filter"
hook = "INPUT"
[[chain.rule]]
protocol = "tcp"
ports = ["1024-65535"]
except = [6514, 8078]
new_only = true
"""


@pytest.mark.slow
def test_nmap_sees_the_policy(guard: Guard) -> None:
    """Before: all open. After apply: 3306, 111 and the NodePort filtered; 6514 and 8078 open."""
    guard.box.start_listeners(tcp=(111, 3306, 6514, 8078), udp=UDP)
    guard.box.add_nodeport(iptables=guard.iptables, node_port=31672, pod_port=5672)
    before = guard.box.nmap(tcp=TCP, udp=UDP)
    assert set(before.values()) == {"open"}, before
    assert guard.efa("apply").returncode == 0
    after = guard.box.nmap(tcp=TCP, udp=UDP)
    assert after == {
        ("tcp", 111): "filtered",
        ("tcp", 3306): "filtered",
        ("tcp", 6514): "open",
        ("tcp", 8078): "open",
        ("tcp", 31672): "filtered",
        ("udp", 111): "open|filtered",
    }


@pytest.mark.slow
def test_nodeport_needs_the_raw_chain(guard: Guard, tmp_path: Path) -> None:
    """A filter-only policy leaves the DNATed NodePort open: the pre-DNAT chain is what hides it."""
    guard.box.add_nodeport(iptables=guard.iptables, node_port=31672, pod_port=5672)
    guard.box.start_listeners(tcp=(3306,), udp=())
    filter_only = write_config(tmp_path / "f.toml", backend=guard.backend, text=FILTER_ONLY)
    assert guard.efa("apply", config=filter_only).returncode == 0
    partial = guard.box.nmap(tcp=(3306, 31672))
    assert partial == {("tcp", 3306): "filtered", ("tcp", 31672): "open"}
    assert guard.efa("apply").returncode == 0
    assert guard.box.nmap(tcp=(31672,)) == {("tcp", 31672): "filtered"}


def exposure(guard: Guard) -> dict[tuple[str, str, int], dict[str, object]]:
    """`efa-guard exposure --json`, keyed by (family, protocol, port)."""
    out = guard.efa("exposure", "--json")
    assert out.returncode in (0, 1), out.stderr
    services = json.loads(out.stdout)["services"]
    return {(s["family"], s["protocol"], s["port"]): s for s in services}


def scan_both(guard: Guard) -> dict[tuple[str, str, int], str]:
    """Scan with nmap over IPv4 and IPv6 from outside, keyed by (family, protocol, port)."""
    v4 = guard.box.nmap(tcp=TCP, udp=UDP)
    v6 = guard.box.nmap6(tcp=TCP, udp=UDP)
    return {("ipv4", p, n): s for (p, n), s in v4.items()} | {
        ("ipv6", p, n): s for (p, n), s in v6.items()
    }


def assert_agree(
    report: dict[tuple[str, str, int], dict[str, object]], scan: dict[tuple[str, str, int], str]
) -> None:
    """For every port scanned, exposure says reachable exactly when nmap says open."""
    for key, state in scan.items():
        assert key in report, f"exposure does not list {key}"
        assert report[key]["reachable"] is (state == "open"), (key, state, report[key]["reason"])


@pytest.mark.slow
def test_ipv6_parity_and_exposure_agree_with_nmap(guard: Guard) -> None:
    """Over IPv4 and IPv6: all open before, only the allowlist after, and exposure agrees."""
    box = guard.box
    box.start_listeners(tcp=(111, 3306, 6514, 8078), udp=UDP)
    box.start_listeners(tcp=(111, 3306, 6514, 8078), udp=UDP, host="::", v6only=True)
    box.add_nodeport(iptables=guard.iptables)
    box.add_nodeport6(ip6tables=f"ip6tables-{guard.backend}")
    before = scan_both(guard)
    assert set(before.values()) == {"open"}, before
    assert_agree(exposure(guard), before)
    assert guard.efa("apply").returncode == 0
    after = scan_both(guard)
    for family in ("ipv4", "ipv6"):
        assert after[(family, "tcp", 6514)] == after[(family, "tcp", 8078)] == "open"
        for port in (111, 3306, 31672):
            assert after[(family, "tcp", port)] == "filtered", (family, port)
        assert after[(family, "udp", 111)] == "open|filtered"
    report = exposure(guard)
    assert_agree(report, after)
    assert "EFA_INPUT" in str(report[("ipv6", "tcp", 3306)]["reason"])
    assert "ipv6 raw/EFA_NODEPORTS" in str(report[("ipv6", "tcp", 31672)]["reason"])
    assert guard.efa("check").returncode == 0


def test_check_warns_about_a_visible_service(guard: Guard) -> None:
    """A listener outside the allowlist that no rule drops makes check WARNING, naming it."""
    assert guard.efa("apply").returncode == 0
    guard.box.start_listeners(tcp=(80, 22), udp=(), host="::", v6only=False)
    check = guard.efa("check")
    assert check.returncode == 1, check.stdout
    first = check.stdout.splitlines()[0]
    assert first.startswith("EFA-GUARD WARNING - policy in place")
    assert "tcp/80 ipv4 (python" in first
    assert "tcp/80 ipv6 (python" in first
    assert "tcp/22" not in first  # allowlisted
    exposed = guard.check_json()["exposed"]
    assert isinstance(exposed, list)
    assert {(e["family"], e["port"]) for e in exposed} == {("ipv4", 80), ("ipv6", 80)}


def test_check_without_exposure_ignores_visible_services(guard: Guard) -> None:
    """`check --no-exposure` checks the policy only: a visible service does not warn."""
    assert guard.efa("apply").returncode == 0
    guard.box.start_listeners(tcp=(80,), udp=())
    assert guard.efa("check").returncode == 1
    quiet = guard.efa("check", "--no-exposure")
    assert quiet.returncode == 0, quiet.stdout
    assert "exposed=0" in quiet.stdout


def test_check_warns_when_the_interface_is_missing(guard: Guard) -> None:
    """With eth0 gone the rules match nothing: check says so as a WARNING."""
    assert guard.efa("apply").returncode == 0
    guard.box.run(["ip", "link", "set", "eth0", "name", "mgmt0"])
    check = guard.efa("check")
    assert check.returncode == 1, check.stdout
    assert "interface eth0 does not exist here" in check.stdout
