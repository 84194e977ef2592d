"""What is visible on the management interface.

Listening sockets and NodePorts, each with whether a new connection from outside gets through
the rules in the kernel now, and why.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from efa_guard.backends import legacy_tables
from efa_guard.iptables import Iptables
from efa_guard.policy import FAMILIES, Allowlist
from efa_guard.reach import Evaluator, Probe, Verdict
from efa_guard.sockets import Listener, listeners, owners

# Read together, concurrently, before evaluating (raw PREROUTING and filter INPUT are
# usually in the one-shot memo already); other chains are read only when a walk needs them.
_PREFETCH = (("raw", "PREROUTING"), ("filter", "INPUT"), ("nat", "KUBE-NODEPORTS"))


@dataclass(frozen=True)
class Finding:
    """One service and whether it can be reached from outside."""

    kind: str  # socket | nodeport
    protocol: str
    port: int
    family: str
    address: str
    reachable: bool
    reason: str
    allowed: bool
    pid: int | None = None
    process: str | None = None
    service: str | None = None

    @property
    def name(self) -> str:
        """`tcp/3306 ipv4 (mysqld[812])`, how reports name it."""
        who = f"{self.process}[{self.pid}]" if self.process else self.service or self.kind
        return f"{self.protocol}/{self.port} {self.family} ({who})"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "protocol": self.protocol,
            "port": self.port,
            "family": self.family,
            "address": self.address,
            "pid": self.pid,
            "process": self.process,
            "service": self.service,
            "reachable": self.reachable,
            "reason": self.reason,
            "allowed": self.allowed,
        }


@dataclass(frozen=True)
class NodePort:
    """A port kube-proxy DNATs (nat KUBE-NODEPORTS)."""

    protocol: str
    port: int
    target: str  # the chain it jumps to, or "DNAT"
    destination: str | None  # for a direct DNAT
    service: str


def nodeports(listing: list[str] | None) -> list[NodePort]:
    """Parse kube-proxy's KUBE-NODEPORTS chain."""
    out = []
    for line in listing or []:
        if not line.startswith("-A KUBE-NODEPORTS "):
            continue
        tokens = shlex.split(line)
        opts = dict(zip(tokens[::1], [*tokens[1:], ""], strict=True))
        port = opts.get("--dport", "")
        proto = opts.get("-p", "")
        target = opts.get("-j", "")
        if not port.isdigit() or proto not in ("tcp", "udp") or not target:
            continue
        out.append(
            NodePort(
                protocol=proto,
                port=int(port),
                target=target,
                destination=opts.get("--to-destination"),
                service=opts.get("--comment") or f"NodePort {port}",
            )
        )
    return out


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
    ipt: Iptables, interface: str, allow: Allowlist, *, skip_allowed: bool = False
) -> list[Finding]:
    """Every listening socket and NodePort, with its reachability on `interface`.

    With `skip_allowed` (the check: only what may be visible against the list matters),
    allowlisted and loopback-only services are not evaluated, a NodePort that nothing drops
    before kube-proxy's DNAT counts as visible without following the DNAT, and owners are
    looked up only for services found reachable.
    """
    socks = listeners()
    present = _present(ipt)
    wanted = prefetch(ipt, present)
    listings: dict[tuple[str, str, str], str | None] = dict(
        zip(wanted, ipt.list_many(wanted), strict=True)
    )

    def fetcher(family: str) -> Evaluator:
        def fetch(table: str, chain: str) -> list[str] | None:
            key = (family, table, chain)
            if key not in listings:
                listings[key] = ipt.list_many([key])[0]
            text = listings[key]
            return text.splitlines() if text is not None else None

        return Evaluator(fetch=fetch, family=family, tables=present[family])

    evaluators: dict[str, Evaluator] = {f: fetcher(f) for f in FAMILIES}
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
    for np in nodeports(ev.chain("nat", "KUBE-NODEPORTS")):
        allowed = allow.allows(np.protocol, np.port)
        if skip_allowed and allowed:
            continue
        probe = Probe(family, np.protocol, np.port, interface)
        verdict = ev.forwarded(
            probe,
            nodeport_target=np.target,
            destination=np.destination,
            follow_dnat=not skip_allowed,
        )
        finding = Finding(
            "nodeport",
            np.protocol,
            np.port,
            family,
            "*",
            verdict.reachable,
            verdict.reason,
            allowed,
            service=np.service,
        )
        out.append(finding)
    return out


def _socket_finding(sock: Listener, family: str, verdict: Verdict, *, allowed: bool) -> Finding:
    address = sock.address if sock.family == family else f"{sock.address} (dual-stack)"
    return Finding(
        "socket",
        sock.protocol,
        sock.port,
        family,
        address,
        verdict.reachable,
        verdict.reason,
        allowed,
        service=str(sock.inode),
    )


def _with_owners(
    findings: list[Finding], socks: list[Listener], *, only_reachable: bool
) -> list[Finding]:
    inode_of = {str(s.inode): s.inode for s in socks}
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
            named = Finding(
                f.kind,
                f.protocol,
                f.port,
                f.family,
                f.address,
                f.reachable,
                f.reason,
                f.allowed,
                pid,
                name,
                None,
            )
        out.append(named)
    return sorted(out, key=lambda f: (f.protocol, f.port, f.family, f.kind))


def visible(findings: list[Finding]) -> list[Finding]:
    """Reachable and not on the allowlist."""
    return [f for f in findings if f.reachable and not f.allowed]


def table(findings: list[Finding]) -> str:
    """A human table."""
    if not findings:
        return "no listening sockets or NodePorts"
    rows = [("PROTO", "PORT", "FAMILY", "ADDRESS", "OWNER", "REACHABLE", "WHY")]
    for f in findings:
        who = f"{f.process}[{f.pid}]" if f.process else (f.service or "-")
        state = ("yes" if f.reachable else "no") + (" (allowed)" if f.allowed else "")
        rows.append((f.protocol, str(f.port), f.family, f.address, who, state, f.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6]
        for r in rows
    )
