"""The linear validator gives the same result as the quadratic one it replaced (kept here)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from efa_guard.config import DEFAULT_ALLOWLIST, Config, Daemon, parse
from efa_guard.errors import ConfigError
from efa_guard.policy import (
    HOOKS,
    TABLES_WITH_CONNTRACK,
    Chain,
    Policy,
    PortRange,
    Rule,
    contains,
    normalize,
    subtract,
)
from efa_guard.render import restore_text

P = Path("/etc/efa-guard/efa-guard.toml")


def old_normalize(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """normalize() before issue 10, verbatim."""
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.first <= merged[-1].last + 1:
            last = merged[-1]
            merged[-1] = PortRange(last.first, max(last.last, r.last))
        else:
            merged.append(r)
    return tuple(merged)


def old_subtract(
    ranges: Iterable[PortRange], removed: Iterable[PortRange]
) -> tuple[PortRange, ...]:
    """subtract() before issue 10, verbatim (quadratic)."""
    result = list(old_normalize(ranges))
    for cut in old_normalize(removed):
        kept: list[PortRange] = []
        for r in result:
            if cut.last < r.first or cut.first > r.last:
                kept.append(r)
                continue
            if r.first < cut.first:
                kept.append(PortRange(r.first, cut.first - 1))
            if cut.last < r.last:
                kept.append(PortRange(cut.last + 1, r.last))
        result = kept
    return tuple(result)


def port_range(low: int, high: int) -> st.SearchStrategy[PortRange]:
    """A range inside low-high, mostly short so that lists overlap and touch."""
    return st.tuples(st.integers(low, high), st.integers(0, 30)).map(
        lambda t: PortRange(t[0], min(t[0] + t[1] * (t[1] % 3 == 0), high))
    )


wide = st.lists(port_range(1, 65535), max_size=200)
narrow = st.lists(port_range(1, 400), max_size=60)


@settings(max_examples=150, deadline=None)
@given(st.one_of(wide, narrow), st.one_of(wide, narrow))
def test_subtract_and_normalize_match_the_old_ones(
    keep: list[PortRange], cut: list[PortRange]
) -> None:
    """The one-sweep subtract and key-sorted normalize return exactly the old tuples."""
    assert normalize(keep) == old_normalize(keep)
    assert subtract(keep, cut) == old_subtract(keep, cut)


@settings(max_examples=150, deadline=None)
@given(narrow, port_range(1, 450))
def test_contains_matches_the_old_inside_check(ranges: list[PortRange], part: PortRange) -> None:
    """contains() says inside exactly when the old subtract left nothing over."""
    norm = normalize(ranges)
    assert contains(norm, part) == (not old_subtract((part,), norm))


@dataclass(frozen=True)
class RawRule:
    """A generated [[chain.rule]]: ports and excepts as written, in mixed forms."""

    protocol: str
    ports: tuple[PortRange, ...]
    excepted: tuple[PortRange, ...]
    new_only: bool
    interface: str | None


def spec(r: PortRange, form: int) -> str:
    """One port entry in one of the accepted spellings."""
    if r.first == r.last and form % 3 == 0:
        return str(r.first)
    return json.dumps(f"{r.first}{'-' if form % 2 else ':'}{r.last}")


@st.composite
def raw_rules(draw: st.DrawFn) -> RawRule:
    """A rule whose excepts mostly lie inside its ports, sometimes not."""
    ports = draw(st.lists(port_range(1, 400), min_size=1, max_size=20))
    cuts = []
    for _ in range(draw(st.integers(0, 8))):
        p = draw(st.sampled_from(ports))
        first = draw(st.integers(p.first, p.last))
        cuts.append(PortRange(first, draw(st.integers(first, p.last))))
    if draw(st.integers(0, 19)) == 0:
        cuts.append(draw(port_range(1, 400)))  # most likely outside the ports
    return RawRule(
        protocol=draw(st.sampled_from(["tcp", "udp"])),
        ports=tuple(ports),
        excepted=tuple(draw(st.permutations(cuts))),
        new_only=draw(st.booleans()),
        interface=draw(st.sampled_from([None, "eth1", "br+"])),
    )


PAIRS = [(t, h) for t, hooks in HOOKS.items() for h in hooks]
layouts = st.lists(
    st.tuples(st.sampled_from(PAIRS), st.lists(raw_rules(), min_size=1, max_size=4)),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c[0],
)


def toml(layout: list[tuple[tuple[str, str], list[RawRule]]]) -> str:
    """The config text of a generated layout."""
    out = ['interface = "eth0"\n']
    for i, ((table, hook), rules) in enumerate(layout):
        out.append(f'[[chain]]\nname = "EFA_C{i}"\ntable = "{table}"\nhook = "{hook}"\n')
        for r in rules:
            ports = ", ".join(spec(p, i + j) for j, p in enumerate(r.ports))
            cuts = ", ".join(spec(p, i + j) for j, p in enumerate(r.excepted))
            out.append(f'[[chain.rule]]\nprotocol = "{r.protocol}"\nports = [{ports}]\n')
            out.append(f"except = [{cuts}]\n")
            if r.new_only and table in TABLES_WITH_CONNTRACK:
                out.append("new_only = true\n")
            if r.interface:
                out.append(f'interface = "{r.interface}"\n')
    return "".join(out)


def old_result(layout: list[tuple[tuple[str, str], list[RawRule]]]) -> Config | str:
    """What the old validator made of a layout: the Config, or the key prefix of its error."""
    chains = []
    for i, ((table, hook), raw) in enumerate(layout):
        rules = []
        for j, r in enumerate(raw):
            ports, cuts = old_normalize(r.ports), old_normalize(r.excepted)
            blocked = old_subtract(ports, cuts)
            if any(old_subtract((c,), ports) for c in cuts) or not blocked:
                return f"chain[{i}].rule[{j}].except"
            new_only = r.new_only and table in TABLES_WITH_CONNTRACK
            iface = r.interface or "eth0"
            rules.append(Rule(r.protocol, blocked, iface, new_only))  # type: ignore[arg-type]
        chains.append(Chain(table, f"EFA_C{i}", hook, tuple(rules)))  # type: ignore[arg-type]
    policy = Policy(tuple(chains), ("ipv4", "ipv6"))
    return Config(P, "auto", "eth0", policy, Daemon(), DEFAULT_ALLOWLIST)


@settings(max_examples=25, deadline=None)
@given(layouts)
def test_generated_configs_give_the_old_result(
    layout: list[tuple[tuple[str, str], list[RawRule]]],
) -> None:
    """Generated configs parse to the old Config and render the same rules, or fail alike."""
    expected = old_result(layout)
    try:
        got: Config | str = parse(toml(layout), path=P)
    except ConfigError as e:
        got = e.key
    if isinstance(expected, str):
        assert isinstance(got, str)
        assert got.startswith(expected)
    else:
        assert got == expected
        assert isinstance(got, Config)
        assert restore_text(got.policy) == restore_text(expected.policy)


def ranges(rs: tuple[PortRange, ...]) -> str:
    """Port ranges as a TOML list of "first-last" strings."""
    return "[" + ", ".join(f'"{r.first}-{r.last}"' for r in rs) + "]"


def to_toml(cfg: Config) -> str:
    """A Config written back as TOML: blocked ports as ranges, no excepts, every key explicit."""
    out = [f'backend = "{cfg.backend}"\ninterface = "{cfg.interface}"\n']
    out.append(f"families = {json.dumps(list(cfg.policy.families))}\n")
    for c in cfg.policy.chains:
        out.append(f'[[chain]]\nname = "{c.name}"\ntable = "{c.table}"\nhook = "{c.hook}"\n')
        for r in c.rules:
            out.append(f'[[chain.rule]]\nprotocol = "{r.protocol}"\nports = {ranges(r.ports)}\n')
            out.append(f'new_only = {str(r.new_only).lower()}\ninterface = "{r.interface}"\n')
    out.append(f"[exposure]\ntcp = {ranges(cfg.exposure.tcp)}\nudp = {ranges(cfg.exposure.udp)}\n")
    return "".join(out)


@settings(max_examples=15, deadline=None)
@given(layouts)
def test_valid_configs_round_trip(layout: list[tuple[tuple[str, str], list[RawRule]]]) -> None:
    """A valid generated config, written back as TOML, parses to the same Config."""
    assume(not isinstance(old_result(layout), str))
    cfg = parse(toml(layout), path=P)
    assert parse(to_toml(cfg), path=P) == cfg
