"""Desired vs observed -> the drift, and the iptables-restore transaction that removes it. Pure."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from efa_guard.state import ChainState


class DriftKind(enum.StrEnum):
    """Every way the kernel can differ from the policy."""

    CHAIN_MISSING = "chain-missing"
    RULE_MISSING = "rule-missing"
    RULE_EXTRA = "rule-extra"
    RULE_CHANGED = "rule-changed"
    RULES_REORDERED = "rules-reordered"
    JUMP_MISSING = "jump-missing"
    JUMP_NOT_FIRST = "jump-not-first"
    JUMP_DUPLICATED = "jump-duplicated"


@dataclass(frozen=True)
class Drift:
    """One difference, with enough detail to act on it at 3 a.m."""

    kind: DriftKind
    chain: str  # "filter/EFA_INPUT"
    position: int | None = None
    expected: str | None = None
    observed: str | None = None

    def describe(self) -> str:  # noqa: PLR0911 - one return per kind reads best
        """One human line."""
        where = f" at position {self.position}" if self.position is not None else ""
        match self.kind:
            case DriftKind.CHAIN_MISSING:
                return f"{self.chain}: chain missing"
            case DriftKind.RULE_MISSING:
                return f"{self.chain}: rule {self.position} missing: {self.expected}"
            case DriftKind.RULE_EXTRA:
                return f"{self.chain}: extra rule{where}: {self.observed}"
            case DriftKind.RULE_CHANGED:
                return (
                    f"{self.chain}: rule {self.position} changed: expected {self.expected!r}, "
                    f"found {self.observed!r}"
                )
            case DriftKind.RULES_REORDERED:
                return f"{self.chain}: rules reordered"
            case DriftKind.JUMP_MISSING:
                return f"{self.chain}: jump missing: {self.expected}"
            case DriftKind.JUMP_NOT_FIRST:
                return f"{self.chain}: jump at position {self.position}, not first: {self.observed}"
            case DriftKind.JUMP_DUPLICATED:
                return f"{self.chain}: extra jump{where}: {self.observed}"
        return f"{self.chain}: {self.kind}"  # pragma: no cover - match is exhaustive

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "kind": str(self.kind),
            "chain": self.chain,
            "position": self.position,
            "expected": self.expected,
            "observed": self.observed,
            "message": self.describe(),
        }


def diff(desired: ChainState, observed: ChainState) -> tuple[Drift, ...]:
    """Everything that differs between the desired and the observed state of one chain."""
    out: list[Drift] = []
    if not observed.exists:
        out.append(Drift(DriftKind.CHAIN_MISSING, desired.key))
    else:
        out.extend(_rule_drift(desired, observed))
    out.extend(_jump_drift(desired, observed))
    return tuple(out)


def _rule_drift(desired: ChainState, observed: ChainState) -> Iterable[Drift]:
    want, have, key = desired.rules, observed.rules, desired.key
    if want == have:
        return
    if sorted(want) == sorted(have):
        yield Drift(
            DriftKind.RULES_REORDERED, key, expected="\n".join(want), observed="\n".join(have)
        )
        return
    matcher = difflib.SequenceMatcher(None, want, have, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(paired):
            yield Drift(
                DriftKind.RULE_CHANGED,
                key,
                position=j1 + k + 1,
                expected=want[i1 + k],
                observed=have[j1 + k],
            )
        for i in range(i1 + paired, i2):
            yield Drift(DriftKind.RULE_MISSING, key, position=i + 1, expected=want[i])
        for j in range(j1 + paired, j2):
            yield Drift(DriftKind.RULE_EXTRA, key, position=j + 1, observed=have[j])


def _jump_drift(desired: ChainState, observed: ChainState) -> Iterable[Drift]:
    (want,) = desired.jumps
    key = desired.key
    canonical = [j for j in observed.jumps if j.rule == want.rule]
    if not canonical:
        yield Drift(DriftKind.JUMP_MISSING, key, expected=want.rule)
    elif canonical[0].position != want.position:
        first = canonical[0]
        yield Drift(
            DriftKind.JUMP_NOT_FIRST,
            key,
            position=first.position,
            expected=want.rule,
            observed=first.rule,
        )
    kept = canonical[0] if canonical else None
    for j in observed.jumps:
        if j is not kept:
            yield Drift(DriftKind.JUMP_DUPLICATED, key, position=j.position, observed=j.rule)


@dataclass(frozen=True)
class Transaction:
    """One atomic iptables-restore --noflush input for one table."""

    table: str
    text: str
    chains: tuple[str, ...]  # the owned chains it rewrites or re-hooks
    family: str = "ipv4"


def plan(pairs: Iterable[tuple[ChainState, ChainState]]) -> tuple[Transaction, ...]:
    """One transaction per family and table whose owned chains drifted; none when in sync."""
    by_table: dict[tuple[str, str], list[tuple[ChainState, ChainState]]] = {}
    for want, have in pairs:
        if want != have:
            by_table.setdefault((want.family, want.table), []).append((want, have))
    return tuple(_transaction(f, t, drifted) for (f, t), drifted in by_table.items())


def _transaction(
    family: str, table: str, drifted: list[tuple[ChainState, ChainState]]
) -> Transaction:
    declare: list[str] = []
    rules: list[str] = []
    hooks: list[str] = []
    for want, have in drifted:
        if not have.exists or want.rules != have.rules:
            # With --noflush, declaring an existing user chain flushes it: the
            # content is replaced in the same commit, never absent.
            declare.append(f":{want.name} - [0:0]")
            rules.extend(want.rules)
        if want.jumps != have.jumps:
            # Delete by rule text, not number: if the hook chain moved since we read
            # it, the delete fails and the whole transaction is retried.
            hooks.extend("-D" + j.rule.removeprefix("-A") for j in have.jumps)
            hooks.append(f"-I {want.hook} 1 -j {want.name}")
    text = "\n".join([f"*{table}", *declare, *rules, *hooks, "COMMIT"]) + "\n"
    chains = tuple(w.key for w, _ in drifted)
    return Transaction(table=table, text=text, chains=chains, family=family)
