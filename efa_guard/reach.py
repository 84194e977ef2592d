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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from efa_guard.matches import Hit, Packet, Probe
from efa_guard.reach_walk import End, NotEvaluatedError, Path, Walker
from efa_guard.ruletext import Chain, compile_chain

__all__ = ["Evaluator", "Fetch", "Hit", "NotEvaluatedError", "Probe", "Verdict"]

# (table, chain) -> the chain's `-S` listing lines, or None when it does not exist. It may
# raise NotEvaluatedError (a budget ran out before the chain could be read).
Fetch = Callable[[str, str], list[str] | None]

_SHOWN = 3  # caveats named in a reason
_PRE = (("raw", "PREROUTING"), ("mangle", "PREROUTING"))


@dataclass(frozen=True)
class Verdict:
    """Reachable or not, and why."""

    reachable: bool
    reason: str
    by: Hit | None = None
    caveats: tuple[Hit, ...] = ()
    evaluated: bool = True  # False: not evaluated within the budget (reported reachable)


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
    _walker: Walker = field(init=False)

    def __post_init__(self) -> None:
        self._walker = Walker(self.compiled, self.addresses, self.deadline)

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
                path = self._walker.path(chains, probe, Packet())
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
        pre = self._walker.path(_PRE, probe, Packet())
        if pre.open is None or not follow_dnat:
            return self._verdict(pre, "nothing drops it before kube-proxy's DNAT")
        nat = self._walker.walk("nat", "KUBE-NODEPORTS", probe, pre.open, 0)
        dnats = [e for e in nat.ends if e.action == "DNAT" and e.dnat]
        if not dnats:
            return Verdict(
                reachable=False, reason="kube-proxy's KUBE-NODEPORTS has no endpoint for it"
            )
        judged = [(e, self._after_dnat(probe, e, pre.closed)) for e in dnats]
        # An open path first, an unconditional one (kube-proxy's own choice) before others.
        judged.sort(key=lambda ev: (not ev[1].reachable, len(ev[0].packet.conds)))
        return judged[0][1]

    def _after_dnat(self, probe: Probe, dnat: End, closed: list[End]) -> Verdict:
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
        path = self._walker.path(chains, after, packet)
        path.closed[:0] = closed
        return self._verdict(path, f"DNAT to {dest}, forwarded")

    # -- internals -----------------------------------------------------------------------

    def _verdict(self, path: Path, ok: str) -> Verdict:
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
