"""What the exposure survey finds, as values: findings, kube-proxy's NodePorts, a table."""

from __future__ import annotations

from dataclasses import dataclass

from efa_guard.matches import Context, Packet, Probe, decide
from efa_guard.ruletext import compile_rule


@dataclass(frozen=True)
class Owner:
    """Who stands behind a port: a process, else its socket's user, else a service."""

    pid: int | None = None
    process: str | None = None
    service: str | None = None  # a NodePort's service (a socket's inode until owners are read)
    user: str | None = None  # the socket's owning user, when its process cannot be seen


@dataclass(frozen=True)
class Visibility:
    """Whether a port can be reached from outside, why, and whether that is allowed."""

    reachable: bool
    reason: str
    allowed: bool
    evaluated: bool = True  # False: the survey's budget ran out first (counted reachable)


@dataclass(frozen=True)
class Finding:
    """One service and whether it can be reached from outside."""

    kind: str  # socket | nodeport
    protocol: str
    port: int
    family: str
    address: str
    seen: Visibility
    owner: Owner = Owner()

    @property
    def reachable(self) -> bool:
        """Whether a new connection from outside gets through."""
        return self.seen.reachable

    @property
    def reason(self) -> str:
        """Why (the rule that decides, or the path that lets it through)."""
        return self.seen.reason

    @property
    def allowed(self) -> bool:
        """Whether the allowlist lets it be visible."""
        return self.seen.allowed

    @property
    def pid(self) -> int | None:
        """The owning process's PID, when known."""
        return self.owner.pid

    @property
    def process(self) -> str | None:
        """The owning process's name, when known."""
        return self.owner.process

    @property
    def service(self) -> str | None:
        """The NodePort's service."""
        return self.owner.service

    @property
    def name(self) -> str:
        """`tcp/3306 ipv4 (mysqld[812])`, how reports name it."""
        if self.process:
            who = f"{self.process}[{self.pid}]"
        elif self.owner.user:
            who = f"user {self.owner.user}; process not visible here"
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
            "user": self.owner.user,
            "reachable": self.reachable,
            "reason": self.reason,
            "allowed": self.allowed,
            "evaluated": self.seen.evaluated,
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
