"""Hook chains iptables cannot print: the true cause, never a computed answer (nft only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import Guard

from tools.harness import write_config
from tools.sandbox import Sandbox

FOREIGN = ["nft", "insert", "rule", "ip", "filter", "INPUT", "ct", "state", "established", "accept"]


@pytest.fixture
def nft_guard(box: Sandbox, tmp_path: Path) -> Guard:
    """A guard on the nft backend (nft-native rules exist only there), policy applied."""
    guard = Guard(box=box, backend="nft", config=write_config(tmp_path / "g.toml", backend="nft"))
    assert guard.efa("apply").returncode == 0
    return guard


def test_foreign_rule_ahead_of_the_jump_is_critical_then_corrected(nft_guard: Guard) -> None:
    """An nft-native rule ahead of our jump: check is CRITICAL naming it; apply moves the jump."""
    nft_guard.box.run(FOREIGN)
    check = nft_guard.efa("check", "--no-exposure")
    assert check.returncode == 2, check.stdout
    assert check.stdout.startswith("EFA-GUARD CRITICAL - ")
    assert "jump at position 2, not first" in check.stdout.splitlines()[0]
    assert "ip filter INPUT holds nft-native rules iptables cannot print" in check.stdout
    assert "(position 1: ct state" in check.stdout
    assert "ahead of the jump at position 2" in check.stdout
    assert "incompatible, use 'nft' tool" in check.stdout  # iptables' own words
    apply = nft_guard.efa("apply")
    assert apply.returncode == 0, apply.stderr
    assert "corrected: ipv4 filter/EFA_INPUT: jump at position 2, not first" in apply.stdout
    listing = nft_guard.box.run(["nft", "list", "chain", "ip", "filter", "INPUT"]).stdout
    rules = [ln.strip() for ln in listing.splitlines() if ln.endswith(("accept", "EFA_INPUT"))]
    assert rules[0].endswith("jump EFA_INPUT")
    assert rules[1] == "ct state established accept"  # the foreign rule is kept, behind us
    assert len([r for r in rules if "jump EFA_INPUT" in r]) == 1
    after = nft_guard.efa("check", "--no-exposure")
    assert after.returncode == 1, after.stdout
    assert "behind the jump at position 1" in after.stdout


def test_jump_moved_by_nft_reads_back_as_iptables_wrote_it(nft_guard: Guard) -> None:
    """Once the foreign rule is gone, iptables prints the jump nft inserted: check is OK."""
    nft_guard.box.run(FOREIGN)
    assert nft_guard.efa("apply").returncode == 0
    listing = nft_guard.box.run(["nft", "-a", "list", "chain", "ip", "filter", "INPUT"]).stdout
    handle = next(ln.split()[-1] for ln in listing.splitlines() if "ct state" in ln)
    nft_guard.box.run(["nft", "delete", "rule", "ip", "filter", "INPUT", "handle", handle])
    assert nft_guard.ipt("-S", "INPUT").splitlines()[1] == "-A INPUT -j EFA_INPUT"
    check = nft_guard.efa("check", "--no-exposure")
    assert "policy in place" in check.stdout
    assert "nft-native" not in check.stdout


def test_foreign_rule_behind_the_jump_is_a_warning(nft_guard: Guard) -> None:
    """An nft-native rule behind our jump: the policy is in place, check warns with the cause."""
    nft_guard.box.run(["nft", "add", *FOREIGN[2:]])
    check = nft_guard.efa("check", "--no-exposure")
    assert check.returncode == 1, check.stdout
    assert "policy in place" in check.stdout
    assert "behind the jump at position 1" in check.stdout
    assert nft_guard.efa("apply").returncode == 0


MISSING = """
import json
from efa_guard.iptables import Iptables
ipt = Iptables("nft")
ran = []
real = ipt.run
ipt.run = lambda argv, text=None: (ran.append(list(argv)), real(argv, text))[1]
found = ipt.list_many([("ipv4", "nat", "KUBE-NODEPORTS"), ("ipv4", "filter", "INPUT")])
print(json.dumps({"found": [f is not None for f in found], "ran": ran}))
"""


def test_a_missing_chain_is_known_missing_without_an_nft_process(nft_guard: Guard) -> None:
    """iptables-nft calls a missing chain "incompatible": netlink says it is absent, no nft runs."""
    seen = json.loads(nft_guard.python(MISSING))
    assert seen == {"found": [False, True], "ran": []}
    nft_guard.box.run(FOREIGN)  # a chain iptables cannot print is still read through nft
    seen = json.loads(nft_guard.python(MISSING))
    assert seen["found"] == [False, True]
    assert [argv[1:3] for argv in seen["ran"]] == [["-j", "list"]]
