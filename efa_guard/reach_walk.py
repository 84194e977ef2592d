"""The walk through iptables chains behind reach.Evaluator: one probe's packet, rule by rule.

A rule whose match cannot be decided is followed both ways; what differs between the ways
becomes unknown in the packet, so the walk stays linear in the rules. Pure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from efa_guard.matches import Context, Hit, Packet, Probe, decide, marked
from efa_guard.ruletext import Chain, Rule

TERMINAL_DROP = frozenset({"DROP", "REJECT"})
_ENDS = frozenset({"ACCEPT", "DROP", "REJECT", "DNAT"})
_MAX_DEPTH = 32
# A rule for one host address, as iptables -S prints it (not negated): kube-proxy writes
# thousands, each for a ClusterIP. See foreign_host.
_HOST_RULE = re.compile(r"-A \S+ -d (?:(\d+\.\d+\.\d+\.\d+)/32|([0-9a-f:]+)/128) ")


def foreign_host(local: frozenset[str] | None) -> Callable[[str], bool] | None:
    """A test of an `-A` line that decide() would answer False without reading it further.

    A rule for one host that is not the node's (nor loopback) never matches a packet to
    the node, whatever else it says (every match must hold). Only for a probe whose
    destination is one of the node's own (no DNAT yet) and with the node's addresses known:
    the same answer matches_addr.destination gives, without tokenizing 50k kube-proxy rules.
    """
    if local is None:
        return None

    def foreign(line: str) -> bool:
        m = _HOST_RULE.match(line)
        if m is None:
            return False
        host = m[1] or m[2]
        return host not in local and not host.startswith("127.") and host != "::1"

    return foreign


class NotEvaluatedError(Exception):
    """The walk stopped before it could decide (a time budget ran out)."""


@dataclass(frozen=True)
class End:
    """How a path ends: the action, the rule, the packet there, a DNAT's destination."""

    action: str  # ACCEPT, DROP, REJECT, DNAT
    hit: Hit
    packet: Packet
    dnat: str | None = None


@dataclass
class Flow:
    """A walk's ends, and the packet that falls off its end or RETURNs."""

    ends: list[End]
    through: Packet | None  # what falls off the end or RETURNs (merged); None: nothing


@dataclass
class Path:
    """The ends that drop, and the packet still going on (None: nothing)."""

    closed: list[End]
    open: Packet | None


def merge(a: Packet | None, b: Packet | None) -> Packet | None:
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
class Walker:
    """Walks compiled chains, counting the rules it passes against an optional deadline."""

    compiled: Callable[[str, str], Chain | None]
    addresses: frozenset[str] | None = None  # the node's own non-loopback addresses
    deadline: float | None = None  # time.monotonic() after which a walk gives up
    _steps: int = 0

    def path(self, chains: tuple[tuple[str, str], ...], probe: Probe, pkt: Packet) -> Path:
        """Through these built-in chains in turn: what drops, and what goes on."""
        closed: list[End] = []
        live: Packet | None = pkt
        for table, name in chains:
            if live is None:
                break
            chain = self.compiled(table, name)
            if chain is None:
                continue
            flow = self.walk(table, name, probe, live, 0)
            closed += [e for e in flow.ends if e.action in TERMINAL_DROP]
            live = None
            for e in flow.ends:
                if e.action == "ACCEPT":  # ends this table's chain, not the packet's path
                    live = merge(live, e.packet)
            through = flow.through
            if through is not None and chain.policy in TERMINAL_DROP:
                policy = Hit(table, name, 0, f"-P {name} {chain.policy}")
                closed.append(End(chain.policy, policy, through))
                through = None
            live = merge(live, through)
        return Path(closed, live)

    def walk(self, table: str, name: str, probe: Probe, pkt: Packet, depth: int) -> Flow:
        """Through one chain (and the chains it jumps to), rule by rule."""
        chain = self.compiled(table, name)
        if chain is None or depth > _MAX_DEPTH:
            return Flow([], pkt)
        ctx = Context(table, self.addresses)
        ends: list[End] = []
        live, returned = pkt, None
        foreign = foreign_host(ctx.local) if probe.destination is None else None
        for index in range(len(chain)):
            self._tick()
            if foreign is not None and foreign(chain.lines[index]):
                continue
            rule = chain.rule(index)
            matched = decide(rule, probe, live, ctx)
            if matched is False or rule.target is None:
                continue
            hit = Hit(table, name, rule.position, rule.line)
            if matched is None:
                branch = replace(live, conds=(*live.conds, hit))
                sub_ends, cont, ret = self._apply(rule, hit, probe, branch, depth)
                ends += sub_ends
                live = merge(live, cont) or live
                returned = merge(returned, ret)
                continue
            sub_ends, cont, ret = self._apply(rule, hit, probe, live, depth)
            ends += sub_ends
            if cont is None:
                return Flow(ends, merge(returned, ret))
            live = cont
        return Flow(ends, merge(returned, live))

    def _apply(  # noqa: PLR0911 - one return per kind of target
        self, rule: Rule, hit: Hit, probe: Probe, pkt: Packet, depth: int
    ) -> tuple[list[End], Packet | None, Packet | None]:
        """(outcomes that end the walk, the packet going on in this chain, the one returning)."""
        target = rule.target or ""
        if target in _ENDS:
            return [End(target, hit, pkt, rule.target_arg("--to-destination"))], None, None
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
        flow = self.walk(hit.table, target, probe, pkt, depth + 1)
        if rule.goto:
            return flow.ends, None, flow.through
        return flow.ends, flow.through, None

    def _tick(self) -> None:
        self._steps += 1
        late = self.deadline is not None and time.monotonic() > self.deadline
        if not self._steps & 0x3FF and late:
            msg = f"the time budget ran out after {self._steps} rules"
            raise NotEvaluatedError(msg)
