"""Would a new connection to a port on the management interface get through? Pure.

Walks the built-in chains a packet traverses, as iptables prints them (`-S`), following jumps
into user chains (matches: efa_guard.matches). A rule whose match cannot be decided is
followed both ways: what it does if it matches is an alternative outcome, tied to that rule;
the walk goes on as if it did not. The answer is never the safe one while a path is open:
reachable if any path gets through ("when <rule> matches"), with the drops that might apply
as caveats ("unless <rule> matches"). State the walk cannot follow both ways (a mark set
under an undecidable match) becomes unknown, so the walk stays linear in the rules.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from efa_guard.matches import Context, Hit, Packet, Probe, decide, marked
from efa_guard.ruletext import Chain, Rule, compile_chain

__all__ = ["Evaluator", "Fetch", "Hit", "NotEvaluatedError", "Probe", "Verdict"]

# (table, chain) -> the chain's `-S` listing lines, or None when it does not exist. It may
# raise NotEvaluatedError (a budget ran out before the chain could be read).
Fetch = Callable[[str, str], list[str] | None]

TERMINAL_DROP = frozenset({"DROP", "REJECT"})
_ENDS = frozenset({"ACCEPT", "DROP", "REJECT", "DNAT"})
_MAX_DEPTH = 32
_SHOWN = 3  # caveats named in a reason
_PRE = (("raw", "PREROUTING"), ("mangle", "PREROUTING"))


class NotEvaluatedError(Exception):
    """The walk stopped before it could decide (a time budget ran out)."""


@dataclass(frozen=True)
class Verdict:
    """Reachable or not, and why."""

    reachable: bool
    reason: str
    by: Hit | None = None
    caveats: tuple[Hit, ...] = ()
    evaluated: bool = True  # False: not evaluated within the budget (reported reachable)


@dataclass(frozen=True)
class _End:
    action: str  # ACCEPT, DROP, REJECT, DNAT
    hit: Hit
    packet: Packet
    dnat: str | None = None


@dataclass
class _Flow:
    ends: list[_End]
    through: Packet | None  # what falls off the end or RETURNs (merged); None: nothing


@dataclass
class _Path:
    closed: list[_End]
    open: Packet | None


def _merge(a: Packet | None, b: Packet | None) -> Packet | None:
    """One packet standing for both paths: what differs becomes unknown."""
    if a is None or b is None:
        return a or b
    return Packet(
        mark=a.mark if a.mark == b.mark else None,
        untracked=a.untracked if a.untracked == b.untracked else None,
        dnat=a.dnat or b.dnat,
        conds=a.conds if len(a.conds) <= len(b.conds) else b.conds,
    )


@dataclass
class Evaluator:
    """Evaluates probes against one family's rules, reading and compiling chains lazily."""

    fetch: Fetch
    family: str
    tables: frozenset[str] | None = None  # tables known to exist; None: ask fetch
    addresses: frozenset[str] | None = None  # the node's own non-loopback addresses
    deadline: float | None = None  # time.monotonic() after which a walk gives up
    _listings: dict[tuple[str, str], list[str] | None] = field(default_factory=dict)
    _compiled: dict[tuple[str, str], Chain | None] = field(default_factory=dict)
    _steps: int = 0

    def chain(self, table: str, chain: str) -> list[str] | None:
        """A chain's listing, cached."""
        if self.tables is not None and table not in self.tables:
            return None
        key = (table, chain)
        if key not in self._listings:
            self._listings[key] = self.fetch(table, chain)
        return self._listings[key]

    def compiled(self, table: str, chain: str) -> Chain | None:
        """A chain's rules, compiled once."""
        key = (table, chain)
        if key not in self._compiled:
            listing = self.chain(table, chain)
            self._compiled[key] = None if listing is None else compile_chain(chain, listing)
        return self._compiled[key]

    # -- the paths -----------------------------------------------------------------------

    def local(self, probe: Probe) -> Verdict:
        """A connection to a socket of this host: raw, mangle PREROUTING; mangle, filter INPUT."""
        chains = (*_PRE, ("mangle", "INPUT"), ("filter", "INPUT"))
        try:
            with _no_gc():
                path = self._path(chains, probe, Packet())
        except NotEvaluatedError as e:
            return _not_evaluated(e)
        return self._verdict(path, "no rule drops it")

    def forwarded(self, probe: Probe, *, follow_dnat: bool = True) -> Verdict:
        """A NodePort: raw, mangle PREROUTING, kube-proxy's KUBE-NODEPORTS, then to the pod.

        Without `follow_dnat` it stops before the DNAT: what nothing drops there counts as
        reachable (following kube-proxy's chains costs a whole-table copy per chain on legacy).
        """
        try:
            with _no_gc():
                return self._forwarded(probe, follow_dnat=follow_dnat)
        except NotEvaluatedError as e:
            return _not_evaluated(e)

    def _forwarded(self, probe: Probe, *, follow_dnat: bool) -> Verdict:
        pre = self._path(_PRE, probe, Packet())
        if pre.open is None or not follow_dnat:
            return self._verdict(pre, "nothing drops it before kube-proxy's DNAT")
        nat = self._walk("nat", "KUBE-NODEPORTS", probe, pre.open, 0)
        dnats = [e for e in nat.ends if e.action == "DNAT" and e.dnat]
        if not dnats:
            return Verdict(
                reachable=False, reason="kube-proxy's KUBE-NODEPORTS has no endpoint for it"
            )
        judged = [(e, self._after_dnat(probe, e, pre.closed)) for e in dnats]
        # An open path first, an unconditional one (kube-proxy's own choice) before others.
        judged.sort(key=lambda ev: (not ev[1].reachable, len(ev[0].packet.conds)))
        return judged[0][1]

    def _after_dnat(self, probe: Probe, dnat: _End, closed: list[_End]) -> Verdict:
        dest = dnat.dnat or ""
        address, _, port = (
            dest.rpartition(":") if "]" in dest or dest.count(":") == 1 else (dest, "", "")
        )
        address = address.strip("[]")
        try:
            known: str | None = str(ipaddress.ip_address(address))
        except ValueError:
            known = None  # a range, or a port-only DNAT: the destination stays unknown
        after = Probe(
            probe.family,
            probe.protocol,
            int(port) if port.isdigit() else probe.port,
            probe.interface,
            known,
        )
        chains = (("mangle", "FORWARD"), ("filter", "FORWARD"))
        if known is not None and ipaddress.ip_address(known).is_loopback:
            chains = (("mangle", "INPUT"), ("filter", "INPUT"))
        packet = replace(dnat.packet, dnat=True)
        path = self._path(chains, after, packet)
        path.closed[:0] = closed
        return self._verdict(path, f"DNAT to {dest}, forwarded")

    # -- internals -----------------------------------------------------------------------

    def _verdict(self, path: _Path, ok: str) -> Verdict:
        fam = self.family
        main = min(path.closed, key=lambda e: len(e.packet.conds), default=None)
        if path.open is None:
            if main is None:
                return Verdict(reachable=False, reason="no path gets through")
            return Verdict(
                reachable=False, reason=f"dropped by {main.hit.describe(fam)}", by=main.hit
            )
        if path.open.conds:
            cond = path.open.conds[0]
            reason = f"reachable when {cond.describe(fam)} matches ({ok})"
            if main is not None and not main.packet.conds:
                reason += f"; otherwise dropped by {main.hit.describe(fam)}"
            return Verdict(reachable=True, reason=reason, caveats=path.open.conds)
        caveats = tuple(dict.fromkeys(e.packet.conds[-1] for e in path.closed if e.packet.conds))
        if caveats:
            named = "; ".join(c.describe(fam) for c in caveats[:_SHOWN])
            more = f"; and {len(caveats) - _SHOWN} more" if len(caveats) > _SHOWN else ""
            ok += f" (unless {named}{more})"
        return Verdict(reachable=True, reason=ok, caveats=caveats)

    def _path(self, chains: tuple[tuple[str, str], ...], probe: Probe, pkt: Packet) -> _Path:
        closed: list[_End] = []
        live: Packet | None = pkt
        for table, name in chains:
            if live is None:
                break
            chain = self.compiled(table, name)
            if chain is None:
                continue
            flow = self._walk(table, name, probe, live, 0)
            closed += [e for e in flow.ends if e.action in TERMINAL_DROP]
            live = None
            for e in flow.ends:
                if e.action == "ACCEPT":  # ends this table's chain, not the packet's path
                    live = _merge(live, e.packet)
            through = flow.through
            if through is not None and chain.policy in TERMINAL_DROP:
                policy = Hit(table, name, 0, f"-P {name} {chain.policy}")
                closed.append(_End(chain.policy, policy, through))
                through = None
            live = _merge(live, through)
        return _Path(closed, live)

    def _walk(self, table: str, name: str, probe: Probe, pkt: Packet, depth: int) -> _Flow:
        chain = self.compiled(table, name)
        if chain is None or depth > _MAX_DEPTH:
            return _Flow([], pkt)
        ctx = Context(table, self.addresses)
        ends: list[_End] = []
        live, returned = pkt, None
        for index in range(len(chain)):
            self._tick()
            rule = chain.rule(index)
            matched = decide(rule, probe, live, ctx)
            if matched is False or rule.target is None:
                continue
            hit = Hit(table, name, rule.position, rule.line)
            if matched is None:
                branch = replace(live, conds=(*live.conds, hit))
                sub_ends, cont, ret = self._apply(rule, hit, probe, branch, depth)
                ends += sub_ends
                live = _merge(live, cont) or live
                returned = _merge(returned, ret)
                continue
            sub_ends, cont, ret = self._apply(rule, hit, probe, live, depth)
            ends += sub_ends
            if cont is None:
                return _Flow(ends, _merge(returned, ret))
            live = cont
        return _Flow(ends, _merge(returned, live))

    def _apply(  # noqa: PLR0911 - one return per kind of target
        self, rule: Rule, hit: Hit, probe: Probe, pkt: Packet, depth: int
    ) -> tuple[list[_End], Packet | None, Packet | None]:
        """(outcomes that end the walk, the packet going on in this chain, the one returning)."""
        target = rule.target or ""
        if target in _ENDS:
            return [_End(target, hit, pkt, rule.target_arg("--to-destination"))], None, None
        if target == "RETURN":
            return [], None, pkt
        if target == "NOTRACK" or (target == "CT" and "--notrack" in rule.target_args):
            return [], replace(pkt, untracked=True), None  # `--ctstate NEW` will not match
        if target == "MARK":
            return [], replace(pkt, mark=marked(rule, pkt.mark)), None
        if target == "CONNMARK" and "--restore-mark" in rule.target_args:
            return [], replace(pkt, mark=None), None
        if self.compiled(hit.table, target) is None:
            return [], pkt, None  # LOG, MASQUERADE, ...: the packet goes on
        flow = self._walk(hit.table, target, probe, pkt, depth + 1)
        if rule.goto:
            return flow.ends, None, flow.through
        return flow.ends, flow.through, None

    def _tick(self) -> None:
        self._steps += 1
        late = self.deadline is not None and time.monotonic() > self.deadline
        if not self._steps & 0x3FF and late:
            msg = f"the time budget ran out after {self._steps} rules"
            raise NotEvaluatedError(msg)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Hold the cyclic GC off while walking.

    Compiling tens of thousands of rules creates objects in no cycle; they would trigger
    full collections over a growing heap.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _not_evaluated(e: NotEvaluatedError) -> Verdict:
    reason = f"not evaluated ({e}): counted as reachable; `efa-guard exposure` walks every rule"
    return Verdict(reachable=True, reason=reason, evaluated=False)
