"""Diff and plan: every kind of drift is named, and the transaction removes exactly it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from efa_guard.observe import ParseError, jumps_to, observe, rules_of
from efa_guard.plan import DriftKind, diff, plan
from efa_guard.policy import Chain, PortRange, Rule
from efa_guard.render import desired
from efa_guard.state import ChainState, Jump, digest

CHAIN = Chain(
    "filter",
    "EFA_INPUT",
    "INPUT",
    (
        Rule("tcp", (PortRange(3306, 3306),), "eth0", new_only=True),
        Rule("udp", (PortRange(111, 111),), "eth0"),
        Rule("tcp", (PortRange(111, 111),), "eth0"),
    ),
)
WANT = desired(CHAIN)
R1, R2, R3 = WANT.rules
JUMP = "-A INPUT -j EFA_INPUT"
KUBE = '-A INPUT -m comment --comment "kubernetes firewall" -j KUBE-FIREWALL'


def state(
    rules: tuple[str, ...] = WANT.rules,
    jumps: tuple[Jump, ...] = (Jump(1, JUMP),),
    *,
    exists: bool = True,
) -> ChainState:
    """An observed state differing from WANT only where told."""
    return replace(WANT, rules=rules, jumps=jumps, exists=exists)


def kinds(have: ChainState) -> list[DriftKind]:
    """The drift kinds between WANT and `have`."""
    return [d.kind for d in diff(WANT, have)]


CASES = [
    ("in sync", state(), []),
    (
        "chain deleted",
        state((), (), exists=False),
        [DriftKind.CHAIN_MISSING, DriftKind.JUMP_MISSING],
    ),
    ("flushed", state(()), [DriftKind.RULE_MISSING] * 3),
    ("rule deleted", state((R1, R3)), [DriftKind.RULE_MISSING]),
    ("rule added", state((R1, R2, R3, "-A EFA_INPUT -j ACCEPT")), [DriftKind.RULE_EXTRA]),
    ("rule changed", state((R1, R2.replace("111", "112"), R3)), [DriftKind.RULE_CHANGED]),
    ("reordered", state((R2, R1, R3)), [DriftKind.RULES_REORDERED]),
    ("jump deleted", state(jumps=()), [DriftKind.JUMP_MISSING]),
    ("jump pushed down", state(jumps=(Jump(2, JUMP),)), [DriftKind.JUMP_NOT_FIRST]),
    ("jump duplicated", state(jumps=(Jump(1, JUMP), Jump(3, JUMP))), [DriftKind.JUMP_DUPLICATED]),
    (
        "variant jump only",
        state(jumps=(Jump(1, "-A INPUT -i eth0 -j EFA_INPUT"),)),
        [DriftKind.JUMP_MISSING, DriftKind.JUMP_DUPLICATED],
    ),
]


@pytest.mark.parametrize(("name", "have", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_drift_is_named(name: str, have: ChainState, expected: list[DriftKind]) -> None:
    """diff() reports exactly the expected kinds; a hash differs exactly when drifted."""
    assert kinds(have) == expected, name
    assert (digest([have]) == digest([WANT])) == (not expected)


def test_changed_rule_reports_position_and_both_texts() -> None:
    """A changed rule names its position, what was expected and what was found."""
    (d,) = diff(WANT, state((R1, "-A EFA_INPUT -j ACCEPT", R3)))
    assert (d.position, d.expected, d.observed) == (2, R2, "-A EFA_INPUT -j ACCEPT")
    assert "rule 2 changed" in d.describe()


def test_in_sync_plans_nothing() -> None:
    """No transaction when the kernel matches the policy."""
    assert plan([(WANT, state())]) == ()


def test_missing_chain_is_created_and_hooked() -> None:
    """A missing chain is declared, filled and jumped to first, in one table transaction."""
    (txn,) = plan([(WANT, state((), (), exists=False))])
    assert txn.text.splitlines() == [
        "*filter",
        ":EFA_INPUT - [0:0]",
        R1,
        R2,
        R3,
        "-I INPUT 1 -j EFA_INPUT",
        "COMMIT",
    ]


def test_jump_only_drift_leaves_the_chain_alone() -> None:
    """A pushed-down jump is deleted by text and inserted at 1; the rules are not rewritten."""
    (txn,) = plan([(WANT, state(jumps=(Jump(3, JUMP), Jump(4, "-A INPUT -g EFA_INPUT"))))])
    assert txn.text.splitlines() == [
        "*filter",
        "-D INPUT -j EFA_INPUT",
        "-D INPUT -g EFA_INPUT",
        "-I INPUT 1 -j EFA_INPUT",
        "COMMIT",
    ]


def test_rules_drift_rewrites_the_chain_but_keeps_a_good_jump() -> None:
    """Changed rules re-declare (flush) and refill the chain; a correct jump is not touched."""
    (txn,) = plan([(WANT, state((R3,)))])
    assert txn.text.splitlines() == ["*filter", ":EFA_INPUT - [0:0]", R1, R2, R3, "COMMIT"]


def test_one_transaction_per_table() -> None:
    """Two drifted chains in two tables give two transactions; an in-sync table none."""
    raw = desired(Chain("raw", "EFA_NP", "PREROUTING", (Rule("tcp", (PortRange(1, 1),), "e"),)))
    mangle = desired(Chain("mangle", "EFA_M", "INPUT", (Rule("tcp", (PortRange(2, 2),), "e"),)))
    txns = plan([(WANT, state(())), (raw, replace(raw, jumps=())), (mangle, mangle)])
    assert [t.table for t in txns] == ["filter", "raw"]


def test_observe_parses_both_listings() -> None:
    """`-S` output becomes rules and jump positions; foreign jumps are ignored."""
    chain_listing = f"-N EFA_INPUT\n{R1}\n{R2}\n{R3}\n"
    hook_listing = f"-P INPUT ACCEPT\n{KUBE}\n{JUMP}\n-A INPUT -j EFA_INPUT_OLD\n"
    got = observe(CHAIN, chain_listing, hook_listing)
    assert got.rules == WANT.rules
    assert got.jumps == (Jump(2, JUMP),)
    assert observe(CHAIN, None, "-P INPUT ACCEPT\n").exists is False


def test_jump_inside_a_comment_is_not_a_jump() -> None:
    """Only -j/-g tokens count: a comment mentioning the chain does not."""
    rules = ('-A INPUT -m comment --comment "-j EFA_INPUT" -j ACCEPT',)
    assert jumps_to(rules, "EFA_INPUT") == ()


def test_unexpected_listing_is_a_parse_error() -> None:
    """A listing for another chain, or garbage, is refused rather than misread."""
    with pytest.raises(ParseError, match="starts with"):
        rules_of("-N OTHER\n", "EFA_INPUT")
    with pytest.raises(ParseError, match="unexpected line"):
        rules_of("-N EFA_INPUT\n-A OTHER -j DROP\n", "EFA_INPUT")
    with pytest.raises(ParseError, match="empty listing"):
        rules_of("", "EFA_INPUT")
