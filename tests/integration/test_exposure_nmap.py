"""Real nmap from an outside namespace: what the policy hides and what it leaves open."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import Guard, write_config

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
    filter_only = write_config(tmp_path / "f.toml", guard.backend, FILTER_ONLY)
    assert guard.efa("apply", config=filter_only).returncode == 0
    partial = guard.box.nmap(tcp=(3306, 31672))
    assert partial == {("tcp", 3306): "filtered", ("tcp", 31672): "open"}
    assert guard.efa("apply").returncode == 0
    assert guard.box.nmap(tcp=(31672,)) == {("tcp", 31672): "filtered"}
