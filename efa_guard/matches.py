"""What one rule's matches say about a new connection arriving from outside. Pure.

Each option is decided True, False, or None (cannot be known from the rules alone):
- always true: `comment`, `nfacct`, `recent --set` (it records the source and matches),
  the modifiers of `recent` (`--name`, `--mask`, `--rsource`, `--seconds`, `--reap`);
- known from where the packet comes from: a loopback source or destination (no packet from
  another interface carries one), `addrtype` (the destination is one of the node's own
  addresses until a DNAT, the source is never local), `conntrack --ctstate` (NEW, or
  UNTRACKED after a NOTRACK, plus DNAT once kube-proxy's DNAT ran), `mark` (0 on arrival,
  then what MARK targets on the path did to it), a destination address when the node's
  own addresses are known;
- undecidable: a source address or port, `recent --rcheck/--update`, `statistic`, `limit`,
  `set`, and every match not listed here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from efa_guard.matches_addr import destination, source
from efa_guard.policy import interface_matches
from efa_guard.ruletext import Option, Pulled, Rule

_MASK = 0xFFFFFFFF
_ALWAYS = frozenset(
    {
        "--comment",
        "--nfacct-name",
        "--set",
        "--name",
        "--mask",
        "--rsource",
        "--rdest",
        "--seconds",
        "--reap",
        "--hitcount",
        "--rttl",
        "--limit-iface-in",
        "--limit-iface-out",
    }
)
_SOURCE = frozenset({"-s", "--source", "--src"})
_LONG = frozenset(
    {
        "--destination",
        "--dst",
        "--in-interface",
        "--protocol",
        "--ports",
        "--destination-port",
        "--destination-ports",
    }
)


@dataclass(frozen=True)
class Probe:
    """The first packet of a connection from outside, arriving on `interface`."""

    family: str
    protocol: str
    port: int
    interface: str
    destination: str | None = None  # known after a DNAT; before it, one of the node's own


@dataclass(frozen=True)
class Hit:
    """A rule (or chain policy) that decided, or might decide, a packet's fate."""

    table: str
    chain: str
    position: int  # 0 for the chain policy
    rule: str

    def describe(self, family: str) -> str:
        """`ipv4 filter/EFA_INPUT rule 1: -A ...`."""
        where = f"rule {self.position}" if self.position else "policy"
        return f"{family} {self.table}/{self.chain} {where}: {self.rule}"


@dataclass(frozen=True)
class Packet:
    """What the walk knows of the packet at one point of its path."""

    mark: int | None = 0  # None: set by a rule whose match could not be decided
    untracked: bool | None = False
    dnat: bool = False  # kube-proxy's DNAT ran: conntrack state DNAT
    conds: tuple[Hit, ...] = ()  # undecidable rules assumed to match on this path


@dataclass(frozen=True)
class Context:
    """Where the rule is evaluated: its table, the node's own addresses (None: unknown)."""

    table: str
    local: frozenset[str] | None = None


def decide(rule: Rule, probe: Probe, pkt: Packet, ctx: Context) -> bool | None:
    """Whether the rule's matches hold for the probe: True, False, or None (cannot tell)."""
    if rule.interface is not None and _neg(
        rule.interface, interface_matches(probe.interface, rule.interface.value)
    ):
        return False
    if rule.protocol is not None and _neg(rule.protocol, _proto(rule.protocol.value, probe)):
        return False
    if rule.dports is not None and _neg(rule.dports, _ports(rule.dports.value, probe.port)):
        return False
    result: bool | None = True
    if rule.destination is not None:
        value = destination(rule.destination.value, probe.destination, ctx.local)
        if value is None:
            result = None
        elif value == rule.destination.negated:
            return False
    for opt in rule.options:
        value = _option(opt, probe, pkt, ctx)
        if value is None:
            result = None
        elif value == opt.negated:
            return False
    return result


def _neg(opt: Pulled, value: bool) -> bool:
    """True when the option, negation applied, fails."""
    return value == opt.negated


def _option(  # noqa: C901, PLR0911 - one flat decision per option reads best
    opt: Option, probe: Probe, pkt: Packet, ctx: Context
) -> bool | None:
    name, value = opt.name, opt.value
    if name in _ALWAYS:
        return True
    if name in _SOURCE:
        return source(value)
    if name in _LONG:
        return _long_form(opt, probe, ctx)
    if name in ("--ctstate", "--state"):
        return _ctstate(value, pkt, ctx.table)
    if name == "--dst-type":
        local = probe.destination is None or ipaddress.ip_address(probe.destination).is_loopback
        return ("LOCAL" if local else "UNICAST") in value.split(",")
    if name == "--src-type":
        return "UNICAST" in value.split(",")
    if name == "--mark":
        return _mark(value, pkt.mark)
    if name == "--syn":
        return probe.protocol == "tcp"
    if name == "--tcp-flags":
        mask, _, comp = value.partition(" ")
        return probe.protocol == "tcp" and _flags(mask) & {"SYN"} == _flags(comp)
    if name in ("-f", "--fragment"):
        return False  # second and later fragments; a connection's first packet is not one
    return None


def _long_form(opt: Option, probe: Probe, ctx: Context) -> bool | None:
    """Long spellings `iptables -S` does not print, for listings from elsewhere."""
    name, value = opt.name, opt.value
    if name in ("--destination", "--dst"):
        return destination(value, probe.destination, ctx.local)
    if name == "--in-interface":
        return interface_matches(probe.interface, value)
    if name == "--protocol":
        return _proto(value, probe)
    if name == "--ports":  # source or destination port: the source port is not known
        return True if _ports(value, probe.port) else None
    return _ports(value, probe.port)  # --destination-port(s)


def _flags(spec: str) -> set[str]:
    all_flags = {"SYN", "ACK", "FIN", "RST", "URG", "PSH"}
    names = set(spec.split(","))
    return all_flags if "ALL" in names else names - {"NONE"}


def _ctstate(value: str, pkt: Packet, table: str) -> bool | None:
    if table == "raw" or pkt.untracked is None:
        return None  # conntrack has not run yet in raw
    states = {"UNTRACKED"} if pkt.untracked else {"NEW", "DNAT"} if pkt.dnat else {"NEW"}
    return bool(states & set(value.split(",")))


def _mark(value: str, mark: int | None) -> bool | None:
    if mark is None:
        return None
    want, _, mask = value.partition("/")
    return mark & (int(mask, 0) if mask else _MASK) == int(want, 0)


def _proto(value: str, probe: Probe) -> bool:
    numbers = {"tcp": "6", "udp": "17"}
    return value in ("all", "0", probe.protocol, numbers.get(probe.protocol, ""))


def _ports(spec: str, port: int) -> bool:
    for part in spec.split(","):
        first, _, last = part.partition(":")
        low = int(first) if first else 0
        high = int(last) if last else (65535 if part.endswith(":") else low)
        if low <= port <= high:
            return True
    return False


def marked(rule: Rule, mark: int | None) -> int | None:  # noqa: PLR0911 - one per option
    """The packet mark after a MARK target (None: unknown)."""
    if mark is None:
        return None
    args = rule.target_args
    for i in range(len(args) - 1):
        name, value = args[i], args[i + 1]
        v, _, m = value.partition("/")
        val, msk = int(v, 0), int(m, 0) if m else _MASK
        if name == "--set-xmark":
            return ((mark & ~msk) ^ val) & _MASK
        if name == "--set-mark":
            return ((mark & ~msk) | val) & _MASK
        if name == "--or-mark":
            return mark | val
        if name == "--and-mark":
            return mark & val
        if name == "--xor-mark":
            return mark ^ val
    return None
