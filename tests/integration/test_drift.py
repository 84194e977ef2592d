"""Every kind of drift on the real kernel is CRITICAL, named, and corrected by check --fix."""

from __future__ import annotations

import pytest
from support import Guard

R1 = (
    "-i eth0 -p tcp -m multiport --dports 1024:6513,6515:8077,8079:65535 -m conntrack --ctstate NEW"
)
R3_CHANGED = "-i eth0 -p tcp -m multiport --dports 112 -m conntrack --ctstate NEW -j DROP"
KUBE_RESTART = """*filter
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-I INPUT 1 -j KUBE-FIREWALL
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" \
-j KUBE-SERVICES
COMMIT
"""

# (name, iptables argv lists, restore input or None, text the CRITICAL line must contain)
TAMPERS: list[tuple[str, list[list[str]], str | None, str]] = [
    ("flush chain", [["-F", "EFA_INPUT"]], None, "filter/EFA_INPUT: rule 1 missing"),
    (
        "delete chain and jump",
        [["-D", "INPUT", "-j", "EFA_INPUT"], ["-F", "EFA_INPUT"], ["-X", "EFA_INPUT"]],
        None,
        "filter/EFA_INPUT: chain missing",
    ),
    ("delete one rule", [["-D", "EFA_INPUT", "2"]], None, "filter/EFA_INPUT: rule 2 missing"),
    (
        "change one rule",
        [["-R", "EFA_INPUT", "3", *R3_CHANGED.split()]],
        None,
        "filter/EFA_INPUT: rule 3 changed",
    ),
    (
        "reorder rules",
        [["-D", "EFA_INPUT", "1"], ["-A", "EFA_INPUT", *R1.split(), "-j", "DROP"]],
        None,
        "filter/EFA_INPUT: rules reordered",
    ),
    ("add a rule", [["-I", "EFA_INPUT", "1", "-j", "RETURN"]], None, "extra rule at position 1"),
    (
        "ACCEPT above the jump",
        [["-I", "INPUT", "1", "-p", "tcp", "--dport", "3306", "-j", "ACCEPT"]],
        None,
        "filter/EFA_INPUT: jump at position 2, not first",
    ),
    (
        "delete the jump",
        [["-D", "INPUT", "-j", "EFA_INPUT"]],
        None,
        "filter/EFA_INPUT: jump missing",
    ),
    ("duplicate the jump", [["-A", "INPUT", "-j", "EFA_INPUT"]], None, "extra jump at position 2"),
    (
        "delete the raw jump",
        [["-t", "raw", "-D", "PREROUTING", "-j", "EFA_NODEPORTS"]],
        None,
        "raw/EFA_NODEPORTS: jump missing",
    ),
    ("kube-proxy restart", [], KUBE_RESTART, "jump at position 3, not first"),
    ("iptables -F", [["-F"]], None, "filter/EFA_INPUT: rule 1 missing"),
]


@pytest.mark.parametrize(
    ("name", "commands", "restore", "expected"), TAMPERS, ids=[t[0] for t in TAMPERS]
)
def test_tamper_is_critical_and_fixed(
    guard: Guard, name: str, commands: list[list[str]], restore: str | None, expected: str
) -> None:
    """The tamper makes check CRITICAL naming it; check --fix restores; check is OK again."""
    assert guard.efa("apply").returncode == 0
    for argv in commands:
        guard.ipt(*argv)
    if restore is not None:
        guard.box.run([f"{guard.iptables}-restore", "--noflush"], input=restore)
    tampered = guard.save()
    check = guard.efa("check")
    assert check.returncode == 2, f"{name}: {check.stdout}"
    first = check.stdout.splitlines()[0]
    assert first.startswith("EFA-GUARD CRITICAL - ")
    assert expected in check.stdout, check.stdout
    assert guard.save() == tampered, "check must not write"
    fix = guard.efa("check", "--fix")
    assert fix.returncode == 1, fix.stdout + fix.stderr
    assert fix.stdout.startswith("EFA-GUARD WARNING - corrected")
    after = guard.efa("check")
    assert after.returncode == 0, after.stdout
    assert guard.ipt("-S", "INPUT").splitlines()[1] == "-A INPUT -j EFA_INPUT"
    assert guard.ipt("-S", "INPUT").count("-j EFA_INPUT") == 1


def test_foreign_rules_stay_byte_identical(guard: Guard) -> None:
    """kube-proxy-like chains and jumps in filter, nat, raw and mangle are never touched."""
    guard.box.add_foreign_rules(iptables=guard.iptables)
    guard.box.add_nodeport(iptables=guard.iptables)

    def foreign() -> list[str]:
        return [line for line in guard.save().splitlines() if "EFA_" not in line]

    before = foreign()
    assert any("KUBE-" in line for line in before)
    assert guard.efa("apply").returncode == 0
    assert foreign() == before
    guard.ipt("-F", "EFA_INPUT")
    guard.ipt("-D", "INPUT", "-j", "EFA_INPUT")
    guard.ipt("-t", "raw", "-I", "PREROUTING", "1", "-j", "KUBE-RAW-TEST")
    expected = [line for line in foreign() if "EFA_" not in line]
    assert guard.efa("check", "--fix").returncode == 1
    assert foreign() == expected
    assert guard.efa("check").returncode == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-F", "EFA_INPUT"], "ipv6 filter/EFA_INPUT: rule 1 missing"),
        (["-I", "INPUT", "1", "-j", "ACCEPT"], "ipv6 filter/EFA_INPUT: jump at position 2"),
        (["-t", "raw", "-D", "PREROUTING", "-j", "EFA_NODEPORTS"], "ipv6 raw/EFA_NODEPORTS: jump"),
    ],
)
def test_ipv6_drift_is_reported_as_ipv6(guard: Guard, argv: list[str], expected: str) -> None:
    """ip6tables tampering is CRITICAL naming the ipv6 chain; IPv4 stays untouched and in sync."""
    assert guard.efa("apply").returncode == 0
    v4 = guard.save()
    guard.box.run([f"ip6tables-{guard.backend}", *argv])
    check = guard.check_json()
    assert check["status"] == "CRITICAL"
    assert check["drifted_families"] == ["ipv6"]
    assert expected in str(check["summary"])
    fix = guard.efa("check", "--fix")
    assert fix.returncode == 1
    assert guard.efa("check").returncode == 0
    assert guard.save() == v4
    six = guard.box.run([f"ip6tables-{guard.backend}", "-S", "INPUT"]).stdout
    assert six.splitlines()[1] == "-A INPUT -j EFA_INPUT"
