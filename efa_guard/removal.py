"""Taking the policy out: exactly efa-guard's chains and their jumps, one transaction per table.

Pure: observed chain states in, iptables-restore --noflush text out.
"""

from __future__ import annotations

from collections.abc import Iterable

from efa_guard.config import Config
from efa_guard.plan import Transaction
from efa_guard.policy import FAMILIES, Chain, Family, Policy
from efa_guard.state import ChainState


def ours(configs: Iterable[Config]) -> Policy | None:
    """Every chain any of these configs (the file, last-known-good, the default) defines."""
    chains: dict[tuple[str, str], Chain] = {}
    families: set[Family] = set()
    for cfg in configs:
        families.update(cfg.policy.families)
        for c in cfg.policy.chains:
            chains.setdefault((c.table, c.name), c)
    if not chains:
        return None
    return Policy(tuple(chains.values()), tuple(f for f in FAMILIES if f in families))


def transactions(observed: Iterable[ChainState]) -> tuple[Transaction, ...]:
    """Delete every jump to an owned chain, then flush and delete the chain; per table."""
    by_table: dict[tuple[str, str], list[ChainState]] = {}
    for have in observed:
        if have.exists or have.jumps:
            by_table.setdefault((have.family, have.table), []).append(have)
    out = []
    for (family, table), states in by_table.items():
        jumps = ["-D" + j.rule.removeprefix("-A") for s in states for j in s.jumps]
        drops = [line for s in states if s.exists for line in (f"-F {s.name}", f"-X {s.name}")]
        text = "\n".join([f"*{table}", *jumps, *drops, "COMMIT"]) + "\n"
        out.append(Transaction(table, text, tuple(s.key for s in states), family))
    return tuple(out)
