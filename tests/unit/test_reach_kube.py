"""The evaluator on kube-proxy's own rules (its proxier test's expected ruleset), text alone."""

from __future__ import annotations

import kube_rules
import pytest

from efa_guard.exposure import nodeports
from efa_guard.reach import Evaluator, Probe

NODE = frozenset({"192.168.0.2", "fd00::2"})


def evaluator(rules: dict[tuple[str, str], list[str]] | None = None) -> Evaluator:
    """An evaluator over the fixture (or `rules`), on a node with known addresses."""
    chains = rules if rules is not None else kube_rules.listings()
    return Evaluator(fetch=lambda t, c: chains.get((t, c)), family="ipv4", addresses=NODE)


def tcp(port: int) -> Probe:
    """A new TCP connection on eth0."""
    return Probe("ipv4", "tcp", port, "eth0")


def test_each_nodeport_is_listed_once() -> None:
    """kube-proxy's -d 127.0.0.0/8 twin of each NodePort rule is no NodePort of its own."""
    found = nodeports(kube_rules.listings()[("nat", "KUBE-NODEPORTS")], "eth0")
    assert sorted(n.port for n in found) == sorted(kube_rules.NODEPORTS)
    assert {n.port: n.service for n in found}[kube_rules.PLAIN] == "ns3/svc3:p80"


def test_session_affinity_nodeport_is_reachable() -> None:
    """`recent --set` always matches: the DNAT after it is followed, the NodePort is open."""
    v = evaluator().forwarded(tcp(kube_rules.SESSION_AFFINITY))
    assert v.reachable, v.reason
    assert v.reason == f"DNAT to {kube_rules.ENDPOINT}:80, forwarded"


@pytest.mark.parametrize("port", [kube_rules.SESSION_AFFINITY, kube_rules.PLAIN])
def test_the_masquerade_mark_gets_nodeports_through_a_drop_policy(port: int) -> None:
    """FORWARD policy DROP: kube-proxy's 0x4000 mark, set in nat, is accepted by KUBE-FORWARD."""
    rules = kube_rules.listings()
    rules["filter", "FORWARD"][0] = "-P FORWARD DROP"
    assert evaluator(rules).forwarded(tcp(port)).reachable
    rules["nat", "KUBE-MARK-MASQ"] = ["-N KUBE-MARK-MASQ"]  # no mark: the policy drops it
    v = evaluator(rules).forwarded(tcp(port))
    assert not v.reachable
    assert v.reason == "dropped by ipv4 filter/FORWARD policy: -P FORWARD DROP"


def test_local_traffic_policy_is_open_only_to_pod_sources() -> None:
    """No local endpoint: only a source in 10.0.0.0/8 is DNATed, and the reason says so."""
    v = evaluator().forwarded(tcp(kube_rules.LOCAL_POLICY))
    assert v.reachable
    assert v.reason.startswith("reachable when ipv4 nat/KUBE-EXT-GNZBNJ2PO5MGZ6GT rule 1: ")
    assert "-s 10.0.0.0/8" in v.reason


def test_a_port_kube_proxy_does_not_serve_is_not_a_nodeport() -> None:
    """A port without a NodePort rule: no DNAT, and the local path is judged for sockets."""
    assert not evaluator().forwarded(tcp(3999)).reachable
    assert evaluator().local(tcp(3999)).reachable


def test_localnet_block_does_not_apply_from_outside() -> None:
    """KUBE-FIREWALL's `-d 127.0.0.0/8 ! -s 127.0.0.0/8` DROP is no caveat for eth0 traffic."""
    v = evaluator().local(tcp(8080))
    assert v.reachable
    assert v.caveats == ()
    assert v.reason == "no rule drops it"


def test_health_check_nodeport_is_accepted() -> None:
    """KUBE-NODEPORTS in filter ACCEPTs the health check port before anything else."""
    rules = kube_rules.listings()
    rules["filter", "INPUT"].append("-A INPUT -j DROP")
    assert evaluator(rules).local(tcp(30000)).reachable
    assert not evaluator(rules).local(tcp(30001)).reachable
