"""Would a new connection to a port on the management interface get through? Pure.

Walks the built-in chains a packet traverses, as iptables prints them (`-S`), following jumps
into user chains. Matches it understands are decided; a rule with a match it cannot decide
(a source address, a mark, a rate limit) is assumed not to match, and if its target would drop
the packet it is reported as a caveat: "reachable, unless this rule matches".
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from efa_guard.policy import interface_matches

# (table, chain) -> the chain's `-S` listing lines, or None when it does not exist.
Fetch = Callable[[str, str], list[str] | None]

TERMINAL_DROP = frozenset({"DROP", "REJECT"})
_MAX_DEPTH = 32
_NO_VALUE = frozenset({"--syn", "--rcheck", "--update", "--set", "--remove"})


@dataclass(frozen=True)
class Probe:
    """The first packet of a connection from outside, arriving on `interface`."""

    family: str
    protocol: str
    port: int
    interface: str
    destination: str | None = None  # known after a DNAT; the node's address is not


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
class Verdict:
    """Reachable or not, and why."""

    reachable: bool
    reason: str
    by: Hit | None = None
    caveats: tuple[Hit, ...] = ()


@dataclass
class _Walk:
    action: str  # ACCEPT, DROP, REJECT, RETURN, END, DNAT
    hit: Hit | None = None
    dnat: str | None = None


@dataclass
class Evaluator:
    """Evaluates probes against one family's rules, fetching chains lazily."""

    fetch: Fetch
    family: str
    tables: frozenset[str] | None = None  # tables known to exist; None: ask fetch
    _cache: dict[tuple[str, str], list[str] | None] = field(default_factory=dict)
    _caveats: list[Hit] = field(default_factory=list)
    _maybe_accept: list[Hit] = field(default_factory=list)
    _untracked: bool = False  # a raw-table NOTRACK matched: conntrack state is UNTRACKED

    def chain(self, table: str, chain: str) -> list[str] | None:
        """A chain's listing, cached."""
        if self.tables is not None and table not in self.tables:
            return None
        key = (table, chain)
        if key not in self._cache:
            self._cache[key] = self.fetch(table, chain)
        return self._cache[key]

    # -- the paths -----------------------------------------------------------------------

    def local(self, probe: Probe) -> Verdict:
        """A connection to a socket of this host: raw, mangle PREROUTING; mangle, filter INPUT."""
        self._reset()
        path = (
            ("raw", "PREROUTING"),
            ("mangle", "PREROUTING"),
            ("mangle", "INPUT"),
            ("filter", "INPUT"),
        )
        return self._path(path, probe, "no rule drops it")

    def forwarded(
        self,
        probe: Probe,
        *,
        nodeport_target: str | None,
        destination: str | None = None,
        follow_dnat: bool = True,
    ) -> Verdict:
        """A NodePort: raw, mangle PREROUTING, kube-proxy's DNAT, then FORWARD to the pod.

        Without `follow_dnat` it stops before the DNAT: what nothing drops there counts as
        reachable (following kube-proxy's chains costs a whole-table copy per chain on legacy).
        """
        self._reset()
        pre = self._path((("raw", "PREROUTING"), ("mangle", "PREROUTING")), probe, "")
        if not pre.reachable:
            return pre
        if not follow_dnat:
            reason = "nothing drops it before kube-proxy's DNAT"
            return Verdict(reachable=True, reason=reason, caveats=pre.caveats)
        if nodeport_target is None:
            return Verdict(
                reachable=False, reason="no DNAT for this port in kube-proxy's KUBE-NODEPORTS"
            )
        dest = destination if nodeport_target == "DNAT" else self._dnat(probe, nodeport_target)
        if dest is None:
            return Verdict(
                reachable=False, reason=f"kube-proxy's {nodeport_target} has no endpoint for it"
            )
        address, _, port = dest.rpartition(":")
        address = address.strip("[]")
        after = Probe(
            probe.family,
            probe.protocol,
            int(port) if port.isdigit() else probe.port,
            probe.interface,
            address or None,
        )
        if address and ipaddress.ip_address(address).is_loopback:
            path = (("mangle", "INPUT"), ("filter", "INPUT"))
        else:
            path = (("mangle", "FORWARD"), ("filter", "FORWARD"))
        verdict = self._path(path, after, f"DNAT to {dest}, forwarded")
        caveats = pre.caveats + verdict.caveats
        return Verdict(
            reachable=verdict.reachable, reason=verdict.reason, by=verdict.by, caveats=caveats
        )

    # -- internals -----------------------------------------------------------------------

    def _path(self, path: tuple[tuple[str, str], ...], probe: Probe, ok: str) -> Verdict:
        for table, chain in path:
            listing = self.chain(table, chain)
            if listing is None:
                continue
            result = self._walk(table, chain, probe, 0)
            if result.action in TERMINAL_DROP:
                return self._dropped(result.hit)
            if result.action in ("END", "RETURN"):
                policy = _policy(listing, chain)
                if policy in TERMINAL_DROP:
                    return self._dropped(Hit(table, chain, 0, f"-P {chain} {policy}"))
        reason = ok
        if self._caveats:
            reason += " (unless " + "; ".join(c.describe(self.family) for c in self._caveats) + ")"
        return Verdict(reachable=True, reason=reason, caveats=tuple(self._caveats))

    def _reset(self) -> None:
        self._caveats, self._maybe_accept, self._untracked = [], [], False

    def _dropped(self, hit: Hit | None) -> Verdict:
        reason = f"dropped by {hit.describe(self.family)}" if hit else "dropped"
        if self._maybe_accept:
            first = "; ".join(h.describe(self.family) for h in self._maybe_accept)
            reason += f" (unless accepted first by {first})"
        return Verdict(reachable=False, reason=reason, by=hit, caveats=tuple(self._caveats))

    def _walk(  # noqa: C901, PLR0911, PLR0912 - one branch per kind of target
        self, table: str, chain: str, probe: Probe, depth: int
    ) -> _Walk:
        listing = self.chain(table, chain)
        if listing is None or depth > _MAX_DEPTH:
            return _Walk("END")
        position = 0
        for line in listing:
            if not line.startswith(f"-A {chain} "):
                continue
            position += 1
            tokens = shlex.split(line)[2:]
            matched, target, goto, args = _match(tokens, probe, table, untracked=self._untracked)
            if matched is False or target is None:
                continue
            hit = Hit(table, chain, position, line)
            if matched is None:
                if target in TERMINAL_DROP:
                    self._caveats.append(hit)
                elif target == "ACCEPT":
                    self._maybe_accept.append(hit)
                continue
            if target == "NOTRACK" or (target == "CT" and "--notrack" in args):
                self._untracked = True  # later `--ctstate NEW` will not match
                continue
            if target == "ACCEPT" or target in TERMINAL_DROP:
                return _Walk(target, hit)
            if target == "RETURN":
                return _Walk("RETURN", hit)
            if target == "DNAT":
                return _Walk("DNAT", hit, _arg(args, "--to-destination"))
            if self.chain(table, target) is not None:
                sub = self._walk(table, target, probe, depth + 1)
                if sub.action in ("ACCEPT", "DROP", "REJECT", "DNAT"):
                    return sub
                if goto:
                    return _Walk("RETURN", hit)
        return _Walk("END")

    def _dnat(self, probe: Probe, target: str) -> str | None:
        result = self._walk("nat", target, probe, 0)
        return result.dnat if result.action == "DNAT" else None


def _policy(listing: list[str], chain: str) -> str:
    for line in listing:
        parts = line.split()
        if parts[:2] == ["-P", chain] and len(parts) > 2:
            return parts[2]
    return "ACCEPT"


def _arg(args: list[str], name: str) -> str | None:
    for i, tok in enumerate(args[:-1]):
        if tok == name:
            return args[i + 1]
    return None


def _ports(spec: str, port: int) -> bool:
    for part in spec.split(","):
        first, _, last = part.partition(":")
        low = int(first) if first else 0
        high = int(last) if last else (65535 if part.endswith(":") else low)
        if low <= port <= high:
            return True
    return False


def _proto(value: str, protocol: str) -> bool:
    numbers = {"tcp": "6", "udp": "17"}
    return value in ("all", "0", protocol, numbers.get(protocol, ""))


def _net(value: str, known: str | None = None) -> bool | None:
    """A destination match: loopback never arrives on an interface; 0/0 always matches."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    if net.prefixlen == 0:
        return True
    if known is not None:
        return ipaddress.ip_address(known) in net
    if net.is_loopback:
        return False
    return None


def _match(  # noqa: C901, PLR0912, PLR0915 - one flat decision per iptables option reads best
    tokens: list[str], probe: Probe, table: str, *, untracked: bool = False
) -> tuple[bool | None, str | None, bool, list[str]]:
    """(matched: True/False/None=unknown, target, is goto, target args)."""
    result: bool | None = True
    target: str | None = None
    goto = False
    negate = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        step = 2
        r: bool | None
        if tok == "!":
            negate = True
            i += 1
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            target, goto = value, tok in ("-g", "--goto")
            return result, target, goto, tokens[i + 2 :]
        if tok in ("-i", "--in-interface"):
            r = interface_matches(probe.interface, value)
        elif tok in ("-p", "--protocol"):
            r = _proto(value, probe.protocol)
        elif tok in ("-s", "--source"):
            r = True if _net(value) is True else None
        elif tok in ("-d", "--destination"):
            r = _net(value, probe.destination)
        elif tok in ("-m", "--match"):
            r = True
        elif tok in ("--dport", "--destination-port", "--dports", "--destination-ports", "--ports"):
            r = _ports(value, probe.port)
        elif tok in ("--ctstate", "--state"):
            state = "UNTRACKED" if untracked else "NEW"
            r = None if table == "raw" else state in value.split(",")
        elif tok == "--comment":
            r = True
        elif tok == "--dst-type":
            r = "LOCAL" in value.split(",")
        elif tok == "--syn":
            r, step = probe.protocol == "tcp", 1
        elif tok in _NO_VALUE:
            r, step = None, 1
        elif tok.startswith("-"):
            r = None  # a match we do not decide (source port, mark, limit, set, ...)
            if not value or value.startswith("-") or value == "!":
                step = 1
        else:
            r, step = None, 1
        if negate and r is not None:
            r = not r
        negate = False
        if r is False:
            result = False
        elif r is None and result is True:
            result = None
        i += step
    return result, target, goto, []
