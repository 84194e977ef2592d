"""The pure policy model: owned chains, their rules and hooks, and port-set arithmetic."""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["tcp", "udp"]
Table = Literal["filter", "raw", "mangle"]
Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")

MIN_PORT = 1
MAX_PORT = 65535

# Built-in chains that see a packet's input interface, per table: the only places a
# rule on the management interface (`-i`) can be hooked.
HOOKS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD"),
    "raw": ("PREROUTING",),
    "mangle": ("PREROUTING", "INPUT", "FORWARD"),
}
# Conntrack runs after raw: a ctstate match there never sees NEW.
TABLES_WITH_CONNTRACK = frozenset({"filter", "mangle"})


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of ports; a single port when first == last."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not MIN_PORT <= self.first <= self.last <= MAX_PORT:
            msg = f"invalid port range {self.first}-{self.last}"
            raise ValueError(msg)

    def __str__(self) -> str:
        """Render as iptables prints it: `111` or `1024:6513`."""
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"

    @property
    def multiport_slots(self) -> int:
        """How many of multiport's 15 slots this entry uses (a range takes two)."""
        return 1 if self.first == self.last else 2

    def __contains__(self, port: object) -> bool:
        """Whether an int port lies inside the range."""
        return isinstance(port, int) and self.first <= port <= self.last


def normalize(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sort and merge overlapping or adjacent ranges (O(n log n))."""
    merged: list[PortRange] = []
    first = last = -2
    for r in sorted(ranges, key=_bounds):
        if r.first <= last + 1:
            last = max(last, r.last)
            continue
        if last >= MIN_PORT:
            merged.append(PortRange(first, last))
        first, last = r.first, r.last
    if last >= MIN_PORT:
        merged.append(PortRange(first, last))
    return tuple(merged)


def _bounds(r: PortRange) -> tuple[int, int]:
    return (r.first, r.last)


def subtract(ranges: Iterable[PortRange], removed: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """The ports in `ranges` that are not in `removed`, normalized (one sweep after sorting)."""
    cuts = normalize(removed)
    out: list[PortRange] = []
    j = 0
    for r in normalize(ranges):
        while j < len(cuts) and cuts[j].last < r.first:
            j += 1  # cuts wholly below r are below every later range too
        first = r.first
        k = j
        while k < len(cuts) and cuts[k].first <= r.last:
            cut = cuts[k]
            if first < cut.first:
                out.append(PortRange(first, cut.first - 1))
            first = cut.last + 1
            if cut.last >= r.last:
                break  # this cut may reach into the next range: keep it
            k += 1
        if first <= r.last:
            out.append(PortRange(first, r.last))
        j = k
    return tuple(out)


def contains(ranges: tuple[PortRange, ...], part: PortRange) -> bool:
    """Whether normalized `ranges` cover every port of `part` (binary search)."""
    i = bisect.bisect_right(ranges, part.first, key=_first) - 1
    return i >= 0 and ranges[i].last >= part.last


def _first(r: PortRange) -> int:
    return r.first


MULTIPORT_SLOTS = 15


def multiport_chunks(ranges: tuple[PortRange, ...]) -> tuple[tuple[PortRange, ...], ...]:
    """Split ranges into groups that fit one `-m multiport` match (15 slots each)."""
    chunks: list[tuple[PortRange, ...]] = []
    current: list[PortRange] = []
    used = 0
    for r in ranges:
        if used + r.multiport_slots > MULTIPORT_SLOTS:
            chunks.append(tuple(current))
            current, used = [], 0
        current.append(r)
        used += r.multiport_slots
    if current:
        chunks.append(tuple(current))
    return tuple(chunks)


@dataclass(frozen=True)
class Rule:
    """Drop traffic to `ports` of `protocol` arriving on `interface`."""

    protocol: Protocol
    ports: tuple[PortRange, ...]
    interface: str
    new_only: bool = False


@dataclass(frozen=True)
class Chain:
    """A chain efa-guard owns: its whole content, and one jump first in `hook`."""

    table: Table
    name: str
    hook: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Policy:
    """The set of owned chains, enforced in each address family."""

    chains: tuple[Chain, ...]
    families: tuple[Family, ...] = ("ipv4",)

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables the policy touches, in first-mention order."""
        return tuple(dict.fromkeys(c.table for c in self.chains))

    def chains_in(self, table: str) -> tuple[Chain, ...]:
        """The owned chains of one table."""
        return tuple(c for c in self.chains if c.table == table)


def interface_matches(name: str, pattern: str) -> bool:
    """Match an interface name like iptables does: exact, or prefix for a trailing '+'."""
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def any_interface_matches(name: str, patterns: Collection[str]) -> bool:
    """Whether `name` matches any of the iptables interface patterns."""
    return any(interface_matches(name, p) for p in patterns)


@dataclass(frozen=True)
class Allowlist:
    """Ports that may be visible on the management interface."""

    tcp: tuple[PortRange, ...] = ()
    udp: tuple[PortRange, ...] = ()

    def allows(self, protocol: str, port: int) -> bool:
        """Whether the port is on the list."""
        return any(port in r for r in (self.tcp if protocol == "tcp" else self.udp))
