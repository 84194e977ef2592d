"""Hook chains iptables cannot print: the true cause, never a computed answer (nft only)."""

from __future__ import annotations

import pytest
from support import Guard

FOREIGN = ["nft", "insert", "rule", "ip", "filter", "INPUT", "ct", "state", "established", "accept"]


@pytest.fixture
def nft_guard(guard: Guard) -> Guard:
    """The guard on the nft backend only, policy applied."""
    if guard.backend != "nft":
        pytest.skip("nft-native rules exist only on the nft backend")
    assert guard.efa("apply").returncode == 0
    return guard


def test_foreign_rule_ahead_of_the_jump_is_critical_with_its_cause(nft_guard: Guard) -> None:
    """An nft-native rule ahead of our jump: check and apply are CRITICAL naming it; no change."""
    nft_guard.box.run(FOREIGN)
    before = nft_guard.box.run(["nft", "list", "ruleset"]).stdout
    check = nft_guard.efa("check", "--no-exposure")
    assert check.returncode == 2, check.stdout
    assert check.stdout.startswith("EFA-GUARD CRITICAL - ")
    assert "jump" in check.stdout.splitlines()[0]
    assert "ip filter INPUT holds nft-native rules iptables cannot print" in check.stdout
    assert "(position 1: ct state" in check.stdout
    assert "ahead of the jump at position 2" in check.stdout
    assert "incompatible, use 'nft' tool" in check.stdout  # iptables' own words
    apply = nft_guard.efa("apply")
    assert apply.returncode == 2, apply.stderr
    assert "position 1: ct state" in apply.stderr
    assert "Parsing nftables rule failed" in apply.stderr  # iptables-nft-restore's own words
    assert nft_guard.box.run(["nft", "list", "ruleset"]).stdout == before


def test_foreign_rule_behind_the_jump_is_a_warning(nft_guard: Guard) -> None:
    """An nft-native rule behind our jump: the policy is in place, check warns with the cause."""
    nft_guard.box.run(["nft", "add", *FOREIGN[2:]])
    check = nft_guard.efa("check", "--no-exposure")
    assert check.returncode == 1, check.stdout
    assert "policy in place" in check.stdout
    assert "behind the jump at position 1" in check.stdout
    assert nft_guard.efa("apply").returncode == 0
