"""kube-proxy's own rules and a foreign 30k-rule chain in a real kernel, against real nmap."""

from __future__ import annotations

import json

import kube_rules
import pytest
from support import Guard

from efa_guard.chainreader import TOO_BIG
from tools.sandbox import POD_ADDR

POD_PORT = 5672
BIG_RULES = 30000


def exposure(guard: Guard, kind: str) -> dict[tuple[str, int], list[dict[str, object]]]:
    """`efa-guard exposure --json` services of one kind, keyed by (family, port)."""
    out = guard.efa("exposure", "--json")
    assert out.returncode in (0, 1), out.stderr
    found: dict[tuple[str, int], list[dict[str, object]]] = {}
    for s in json.loads(out.stdout)["services"]:
        if s["kind"] == kind:
            found.setdefault((s["family"], s["port"]), []).append(s)
    return found


@pytest.mark.slow
def test_kube_proxy_nodeports_agree_with_nmap(guard: Guard) -> None:
    """Session affinity and plain NodePorts open, as nmap finds them; each listed once."""
    box = guard.box
    assert guard.efa("apply").returncode == 0
    box.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    box.start_listeners(tcp=(POD_PORT,), udp=(), ns=box.pod)
    rules = kube_rules.for_sandbox(POD_ADDR, POD_PORT)
    box.run([f"{guard.iptables}-restore", "--noflush"], input=rules)
    scan = box.nmap(tcp=kube_rules.NODEPORTS)
    assert scan == {
        ("tcp", kube_rules.LOCAL_POLICY): "filtered",
        ("tcp", kube_rules.SESSION_AFFINITY): "open",
        ("tcp", kube_rules.PLAIN): "open",
    }
    report = exposure(guard, "nodeport")
    assert sorted(port for _, port in report) == sorted(kube_rules.NODEPORTS)
    assert all(len(entries) == 1 for entries in report.values()), report
    for port in (kube_rules.SESSION_AFFINITY, kube_rules.PLAIN):
        (entry,) = report["ipv4", port]
        assert entry["reachable"] is True
        assert entry["reason"] == f"DNAT to {POD_ADDR}:{POD_PORT}, forwarded"
    # Open only to sources in 10.0.0.0/8: nmap's source is not one, the reason says so.
    (local_policy,) = report["ipv4", kube_rules.LOCAL_POLICY]
    assert str(local_policy["reason"]).startswith("reachable when ipv4 nat/KUBE-EXT-")
    assert "-s 10.0.0.0/8" in str(local_policy["reason"])
    exposed = guard.check_json()["exposed"]
    assert isinstance(exposed, list)
    ports = sorted(e["port"] for e in exposed if e["kind"] == "nodeport")
    assert ports == sorted(kube_rules.NODEPORTS)  # once each, not twice


def big_chain(count: int) -> str:
    """INPUT jumps to BIG: `count` REJECTs of tcp/80 to ClusterIPs, then a DROP of tcp/80."""
    lines = ["*filter", ":BIG - [0:0]", "-A INPUT -j BIG"]
    lines += (
        f"-A BIG -d 10.{96 + (i >> 16)}.{i >> 8 & 255}.{i & 255}/32 -p tcp -m comment "
        f'--comment "ns/s{i}:http has no endpoints" -m tcp --dport 80 -j REJECT'
        for i in range(count)
    )
    return "\n".join([*lines, "-A BIG -p tcp -m tcp --dport 80 -j DROP", "COMMIT", ""])


@pytest.mark.slow
def test_a_deciding_rule_deep_in_a_foreign_chain(guard: Guard) -> None:
    """`exposure` finds the DROP after 30k other rules; `check` says it could not evaluate it."""
    box = guard.box
    assert guard.efa("apply").returncode == 0
    box.run([f"{guard.iptables}-restore", "--noflush"], input=big_chain(BIG_RULES), timeout=300)
    box.start_listeners(tcp=(80,), udp=())
    assert box.nmap(tcp=(80,)) == {("tcp", 80): "filtered"}
    (socket,) = exposure(guard, "socket")["ipv4", 80]
    assert socket["reachable"] is False
    assert f"ipv4 filter/BIG rule {BIG_RULES + 1}: " in str(socket["reason"])
    check = guard.check_json()
    exposed = check["exposed"]
    assert isinstance(exposed, list)
    (entry,) = [e for e in exposed if e["port"] == 80]
    assert entry["evaluated"] is False
    # Counted before it is read (nft: over netlink; legacy: in the save of filter the check
    # read anyway), the big chain is not even started.
    assert str(entry["reason"]).startswith("not evaluated (")
    assert "budget" in str(entry["reason"])
    assert f"ipv4 filter/BIG holds more than {TOO_BIG} rules" in str(entry["reason"])
