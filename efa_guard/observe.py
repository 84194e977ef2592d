"""`iptables -S CHAIN` text -> observed chain state. Pure: text in, values out."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Collection
from itertools import groupby

from efa_guard.policy import Chain
from efa_guard.state import ChainState, Jump


class ParseError(ValueError):
    """iptables printed something we do not understand."""


def rules_of(text: str, chain: str) -> tuple[str, ...]:
    """The `-A` lines of one chain's `-S` listing, checking that it is that chain."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        msg = f"empty listing for chain {chain}"
        raise ParseError(msg)
    header = lines[0].split()
    if header[:2] not in (["-N", chain], ["-P", chain]):
        msg = f"listing for chain {chain} starts with {lines[0]!r}"
        raise ParseError(msg)
    rules = tuple(lines[1:])
    for rule in rules:
        if not rule.startswith(f"-A {chain} "):
            msg = f"unexpected line in listing of chain {chain}: {rule!r}"
            raise ParseError(msg)
    return rules


def targets(rule: str) -> tuple[str, ...]:
    """The chains a rule jumps or goes to (`-j X`, `-g X`)."""
    try:
        tokens = shlex.split(rule)
    except ValueError as e:
        msg = f"cannot tokenize rule {rule!r}: {e}"
        raise ParseError(msg) from e
    return tuple(
        tokens[i + 1]
        for i, tok in enumerate(tokens[:-1])
        if tok in ("-j", "-g", "--jump", "--goto")
    )


def jumps_to(hook_rules: tuple[str, ...], chain: str) -> tuple[Jump, ...]:
    """Every rule of the hook chain that references `chain`, with its 1-based position."""
    return tuple(
        Jump(position=i, rule=rule)
        for i, rule in enumerate(hook_rules, start=1)
        if f" {chain}" in rule and chain in targets(rule)
    )


@functools.lru_cache(maxsize=64)
def observe(
    chain: Chain, chain_listing: str | None, hook_listing: str, family: str = "ipv4"
) -> ChainState:
    """Build the observed state; `chain_listing` is None when the chain does not exist."""
    rules = () if chain_listing is None else rules_of(chain_listing, chain.name)
    hook_rules = rules_of(hook_listing, chain.hook)
    return ChainState(
        table=chain.table,
        name=chain.name,
        hook=chain.hook,
        exists=chain_listing is not None,
        rules=rules,
        jumps=jumps_to(hook_rules, chain.name),
        family=family,
    )


def save_listings(text: str, table: str, only: Collection[str] | None = None) -> dict[str, str]:
    """`iptables-save -t TABLE` text -> every chain's listing as `iptables -S CHAIN` prints it.

    A legacy table is copied from the kernel in one step: all chains read from one save are
    one consistent state. Output without the table's header or COMMIT is not trusted. Built
    for 50k-rule tables: a chain's rules are one block (iptables-save prints chain by chain).
    With `only`, just those chains, found by string search: no object per line of a 50k-rule
    table is made (the daemon's memory stays flat).
    """
    if only is not None:
        return _some_listings(text, table, only)
    lines = text.split("\n")
    try:
        start = lines.index(f"*{table}")
        end = lines.index("COMMIT", start)
    except ValueError:
        msg = f"iptables-save printed no complete table {table} (empty or cut short)"
        raise ParseError(msg) from None
    for line in (*lines[:start], *lines[end + 1 :]):
        if line.strip() and not line.startswith("#"):
            msg = f"unexpected line outside table {table} in iptables-save output: {line!r}"
            raise ParseError(msg)
    body = lines[start + 1 : end]
    n = next((i for i, line in enumerate(body) if not line.startswith(":")), len(body))
    chains: dict[str, list[str]] = {}
    for line in body[:n]:
        name, policy, *_ = [*line[1:].split(" ", 2), ""]
        chains[name] = [f"-N {name}" if policy == "-" else f"-P {name} {policy}"]
    for name, group in groupby(body[n:], key=_rule_chain):
        bucket = chains.get(name) if name else None
        if bucket is None:
            line = next(group)
            what = f"rule of undeclared chain {name}" if name else "unexpected line"
            msg = f"{what} in iptables-save output of table {table}: {line!r}"
            raise ParseError(msg)
        bucket.extend(group)  # noqa: B031 - used once: the branch above raises
    return {name: "\n".join(listing) + "\n" for name, listing in chains.items()}


def _some_listings(text: str, table: str, only: Collection[str]) -> dict[str, str]:
    head = f"*{table}\n"
    at = text.find(f"\n{head}")
    start = 0 if text.startswith(head) else (at + 1 if at >= 0 else -1)
    end = text.find("\nCOMMIT\n", max(start, 0))
    if start < 0 or end < 0:
        msg = f"iptables-save printed no complete table {table} (empty or cut short)"
        raise ParseError(msg)
    pos, declared = start + len(head), {}
    while text.startswith(":", pos):
        stop = text.find("\n", pos)
        name, policy, *_ = [*text[pos + 1 : stop].split(" ", 2), ""]
        declared[name] = f"-N {name}" if policy == "-" else f"-P {name} {policy}"
        pos = stop + 1
    out: dict[str, str] = {}
    for name in only:
        if name not in declared:
            continue
        needle = f"\n-A {name} "
        first = text.find(needle, pos - 1, end)
        if first < 0:
            out[name] = declared[name] + "\n"
            continue
        stop = text.find("\n", text.rfind(needle, first, end) + 1)
        block = text[first + 1 : stop]
        if block.count("\n") != block.count(needle):  # a chain's rules are one block
            msg = f"iptables-save printed the rules of {name} in table {table} apart"
            raise ParseError(msg)
        out[name] = f"{declared[name]}\n{block}\n"
    return out


def _rule_chain(line: str) -> str:
    return line.split(" ", 2)[1] if line.startswith("-A ") else ""
