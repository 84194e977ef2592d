"""Policy -> the rules as `iptables -S` prints them, and iptables-restore input."""

from __future__ import annotations

import functools

from efa_guard.policy import Chain, Family, Policy, Rule, multiport_chunks
from efa_guard.state import ChainState, Jump


def rule_lines(chain: Chain, rule: Rule) -> tuple[str, ...]:
    """One rule as `-A` lines in the exact form iptables prints (one per multiport chunk)."""
    lines = []
    for chunk in multiport_chunks(rule.ports):
        ports = ",".join(str(r) for r in chunk)
        parts = [f"-A {chain.name} -i {rule.interface} -p {rule.protocol}"]
        parts.append(f"-m multiport --dports {ports}")
        if rule.new_only:
            parts.append("-m conntrack --ctstate NEW")
        parts.append("-j DROP")
        lines.append(" ".join(parts))
    return tuple(lines)


def jump_rule(chain: Chain) -> str:
    """The jump from the hook chain, as iptables prints it."""
    return f"-A {chain.hook} -j {chain.name}"


def desired(chain: Chain, family: Family = "ipv4") -> ChainState:
    """The state an owned chain must be in (the rules read the same in both families)."""
    rules = tuple(line for rule in chain.rules for line in rule_lines(chain, rule))
    return ChainState(
        table=chain.table,
        name=chain.name,
        hook=chain.hook,
        exists=True,
        rules=rules,
        jumps=(Jump(1, jump_rule(chain)),),
        family=family,
    )


@functools.lru_cache(maxsize=16)
def desired_states(policy: Policy) -> tuple[ChainState, ...]:
    """The desired state of every owned chain in every family, in policy order.

    Memoized: the daemon asks for the same policy at every check.
    """
    return tuple(desired(c, f) for f in policy.families for c in policy.chains)


def restore_text(policy: Policy) -> str:
    """iptables-restore (ip6tables-restore) --noflush input for a system without the policy."""
    out: list[str] = []
    for table in policy.tables:
        out.append(f"*{table}")
        chains = policy.chains_in(table)
        out.extend(f":{c.name} - [0:0]" for c in chains)
        for c in chains:
            out.extend(desired(c).rules)
        out.extend(f"-I {c.hook} 1 -j {c.name}" for c in chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n"
