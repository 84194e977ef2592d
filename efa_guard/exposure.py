"""What is visible on the management interface.

Listening sockets and NodePorts, each with whether a new connection from outside gets through
the rules in the kernel now, and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from efa_guard.addresses import local_addresses
from efa_guard.backends import legacy_tables
from efa_guard.chainreader import ChainReader
from efa_guard.iptables import Iptables
from efa_guard.matches import Context, Packet, decide
from efa_guard.policy import FAMILIES, Allowlist
from efa_guard.reach import Evaluator, Probe, Verdict
from efa_guard.ruletext import compile_rule
from efa_guard.sockets import Listener, listeners, owners, user_name

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
    user: str | None = None  # the socket's owning user, when its process cannot be seen
    evaluated: bool = True  # False: the survey's budget ran out first (counted reachable)

    @property
    def name(self) -> str:
        """`tcp/3306 ipv4 (mysqld[812])`, how reports name it."""
        if self.process:
            who = f"{self.process}[{self.pid}]"
        elif self.user:
            who = f"user {self.user}; process not visible here"
        else:
            who = self.service or self.kind
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
            "user": self.user,
            "reachable": self.reachable,
            "reason": self.reason,
            "allowed": self.allowed,
            "evaluated": self.evaluated,
        }


@dataclass(frozen=True)
class NodePort:
    """A port kube-proxy DNATs (nat KUBE-NODEPORTS)."""

    protocol: str
    port: int
    target: str  # the chain it jumps to, or "DNAT"
    destination: str | None  # for a direct DNAT
    service: str


def nodeports(listing: list[str] | None, interface: str | None = None) -> list[NodePort]:
    """Parse kube-proxy's KUBE-NODEPORTS chain: one entry per port reachable from outside.

    kube-proxy writes a second rule per NodePort for `-d 127.0.0.0/8` (localhost NodePorts);
    no packet arriving on `interface` can match it, so it is no NodePort of its own.
    """
    out: dict[tuple[str, int], NodePort] = {}
    for line in listing or []:
        if not line.startswith("-A KUBE-NODEPORTS "):
            continue
        rule = compile_rule(0, line)
        proto = rule.protocol.value if rule.protocol and not rule.protocol.negated else ""
        port = rule.dports.value if rule.dports and not rule.dports.negated else ""
        if not port.isdigit() or proto not in ("tcp", "udp") or not rule.target:
            continue
        where = interface or (rule.interface.value if rule.interface else "")
        probe = Probe("ipv4", proto, int(port), where)
        if (proto, int(port)) in out or decide(rule, probe, Packet(), Context("nat")) is False:
            continue
        comment = next((o.value for o in rule.options if o.name == "--comment"), None)
        out[proto, int(port)] = NodePort(
            protocol=proto,
            port=int(port),
            target=rule.target,
            destination=rule.target_arg("--to-destination"),
            service=comment or f"NodePort {port}",
        )
    return list(out.values())


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
            evaluated=verdict.evaluated,
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
        evaluated=verdict.evaluated,
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
            named = replace(f, pid=pid, process=name, service=None, user=user)
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
