"""What is visible on the management interface.

Listening sockets and NodePorts, each with whether a new connection from outside gets through
the rules in the kernel now, and why.
"""

from __future__ import annotations

import time
from dataclasses import replace

from efa_guard.addresses import local_addresses
from efa_guard.backends import legacy_tables
from efa_guard.chainreader import ChainReader
from efa_guard.findings import Finding, NodePort, Owner, Visibility, nodeports, table, visible
from efa_guard.iptables import Iptables
from efa_guard.policy import FAMILIES, Allowlist
from efa_guard.reach import Evaluator, Probe, Verdict
from efa_guard.sockets import Listener, listeners, owners, user_name

__all__ = [
    "CHECK_BUDGET",
    "Finding",
    "NodePort",
    "nodeports",
    "prefetch",
    "survey",
    "table",
    "visible",
]

# Read together, concurrently, before evaluating (raw PREROUTING and filter INPUT are
# usually in the one-shot memo already); other chains are read only when a walk needs them.
_PREFETCH = (
    ("raw", "PREROUTING"),
    ("mangle", "PREROUTING"),
    ("mangle", "INPUT"),
    ("filter", "INPUT"),
    ("nat", "KUBE-NODEPORTS"),
)
# Seconds the check's survey may spend on chains beyond the prefetch (reading and walking):
# a monitoring check must not take seconds because of someone else's 50k-rule chain. What
# it could not evaluate in time is reported as such, and counted as reachable.
CHECK_BUDGET = 0.03


def _present_tables(kind: str, family: str) -> frozenset[str] | None:
    """On legacy, the tables the kernel has (reading another would load it); nft: all."""
    if kind != "legacy":
        return None
    return legacy_tables(family)  # raises when unreadable: never "no tables"


def _present(ipt: Iptables) -> dict[str, frozenset[str] | None]:
    return {f: _present_tables(ipt.kind, f) for f in FAMILIES}


def prefetch(
    ipt: Iptables, present: dict[str, frozenset[str] | None] | None = None
) -> list[tuple[str, str, str]]:
    """The chains every survey reads first: (family, table, chain).

    On legacy only tables the kernel already has: reading another would load it.
    """
    tables = _present(ipt) if present is None else present
    return [
        (family, t, c)
        for family, have in tables.items()
        for t, c in _PREFETCH
        if have is None or t in have
    ]


def survey(
    ipt: Iptables,
    interface: str,
    allow: Allowlist,
    *,
    skip_allowed: bool = False,
    budget: float | None = None,
) -> list[Finding]:
    """Every listening socket and NodePort, with its reachability on `interface`.

    With `skip_allowed` (the check: only what may be visible against the list matters),
    allowlisted and loopback-only services are not evaluated, a NodePort that nothing drops
    before kube-proxy's DNAT counts as visible without following the DNAT, owners are
    looked up only for services found reachable. Reading and walking chains beyond the
    prefetch is bounded by `budget` seconds: by default CHECK_BUDGET for a one-shot check
    (`skip_allowed` on a runner with a `memo`), unbounded otherwise (`efa-guard exposure`,
    the daemon). What is left unevaluated is reported as such, and counted as reachable.
    """
    socks = listeners()
    present = _present(ipt)
    if budget is None and skip_allowed and ipt.memo is not None:
        budget = CHECK_BUDGET
    reader = ChainReader(ipt, budget=budget)
    reader.prefetch(prefetch(ipt, present))
    reader.deadline = None if budget is None else time.monotonic() + budget
    addresses = local_addresses()
    evaluators: dict[str, Evaluator] = {
        f: Evaluator(
            fetch=reader.fetch(f),
            family=f,
            tables=present[f],
            addresses=addresses,
            deadline=reader.deadline,
        )
        for f in FAMILIES
    }
    findings: list[Finding] = []
    for sock in socks:
        for family in sock.families:
            allowed = allow.allows(sock.protocol, sock.port)
            if skip_allowed and (allowed or sock.loopback_only):
                continue
            if sock.loopback_only:
                verdict = Verdict(reachable=False, reason=f"bound to loopback {sock.address}")
            else:
                probe = Probe(family, sock.protocol, sock.port, interface)
                verdict = evaluators[family].local(probe)
            findings.append(_socket_finding(sock, family, verdict, allowed=allowed))
    for family, ev in evaluators.items():
        findings += _nodeport_findings(ev, family, interface, allow, skip_allowed=skip_allowed)
    return _with_owners(findings, socks, only_reachable=skip_allowed)


def _nodeport_findings(
    ev: Evaluator, family: str, interface: str, allow: Allowlist, *, skip_allowed: bool
) -> list[Finding]:
    out = []
    for np in nodeports(ev.chain("nat", "KUBE-NODEPORTS"), interface):
        allowed = allow.allows(np.protocol, np.port)
        if skip_allowed and allowed:
            continue
        probe = Probe(family, np.protocol, np.port, interface)
        verdict = ev.forwarded(probe, follow_dnat=not skip_allowed)
        seen = Visibility(verdict.reachable, verdict.reason, allowed, verdict.evaluated)
        out.append(
            Finding("nodeport", np.protocol, np.port, family, "*", seen, Owner(service=np.service))
        )
    return out


def _socket_finding(sock: Listener, family: str, verdict: Verdict, *, allowed: bool) -> Finding:
    address = sock.address if sock.family == family else f"{sock.address} (dual-stack)"
    seen = Visibility(verdict.reachable, verdict.reason, allowed, verdict.evaluated)
    return Finding(
        "socket", sock.protocol, sock.port, family, address, seen, Owner(service=str(sock.inode))
    )


def _with_owners(
    findings: list[Finding], socks: list[Listener], *, only_reachable: bool
) -> list[Finding]:
    inode_of = {str(s.inode): s.inode for s in socks}
    uid_of = {s.inode: s.uid for s in socks}
    wanted = {
        inode_of[f.service]
        for f in findings
        if f.kind == "socket" and f.service in inode_of and (f.reachable or not only_reachable)
    }
    found = owners(wanted)
    out = []
    for f in findings:
        named = f
        if f.kind == "socket":
            inode = inode_of.get(f.service or "")
            pid, name = found.get(inode, (None, None)) if inode is not None else (None, None)
            # Under the hardened unit other processes' fds cannot be read (no CAP_SYS_PTRACE,
            # ProtectProc=invisible): the kernel's socket owner still names who it is.
            user = None if name else user_name(uid_of.get(inode) if inode is not None else None)
            named = replace(f, owner=Owner(pid=pid, process=name, user=user))
        out.append(named)
    return sorted(out, key=lambda f: (f.protocol, f.port, f.family, f.kind))
