"""kube-proxy-like iptables rules, for the benchmarks: the initial load and its resyncs.

About 90 % of the rules go to nat (KUBE-SERVICES -> KUBE-SVC-* with ``statistic`` jumps ->
KUBE-SEP-* with DNAT), about 10 % to filter (KUBE-FIREWALL, KUBE-SERVICES REJECTs, KUBE-*
jumps at the top of INPUT), plus kube-proxy's empty mangle hint chains.  Pure text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import TYPE_CHECKING

from tools.harness import HarnessError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

FILTER_SHARE = 10
"""One foreign rule in this many goes to the filter table, the rest to nat."""


def _hash_name(prefix: str, *parts: object) -> str:
    """A kube-proxy style chain name: prefix plus 16 base32-ish characters."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest().upper()
    return f"{prefix}-{digest[:16]}"


def _cluster_ip(i: int) -> str:
    """The i-th service address in 10.96.0.0/12 (never sent traffic)."""
    i += 1
    return f"10.{96 + (i >> 16) % 16}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def _pod_ip(i: int) -> str:
    """The i-th endpoint address in 10.244.0.0/16."""
    i += 1
    return f"10.244.{(i >> 8) & 0xFF}.{i & 0xFF}"


NAT_HEADER = (
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    (
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully"
    ),
)
NAT_LAST = (
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
    'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
)
FILTER_HEADER = (
    "-I INPUT 1 -j KUBE-FIREWALL",
    (
        '-I INPUT 1 -m comment --comment "kubernetes externally-visible service portals" '
        "-m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES"
    ),
    '-I INPUT 1 -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    (
        '-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        "-j KUBE-SERVICES"
    ),
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    "-A OUTPUT -j KUBE-FIREWALL",
    (
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming '
        'localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP'
    ),
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    (
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        "-m mark --mark 0x4000/0x4000 -j ACCEPT"
    ),
)
MANGLE_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
NAT_BASE = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
FILTER_BASE = ("INPUT", "FORWARD", "OUTPUT")


def _service_rules() -> Iterator[str]:
    """Endless nat rules of services with 1-3 endpoints each, as kube-proxy writes them."""
    endpoint = 0
    for svc in range(1 << 20):
        ip, name = _cluster_ip(svc), f"default/svc-{svc}:http"
        svc_chain = _hash_name("KUBE-SVC", svc)
        yield (
            f'-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment "{name} cluster IP" '
            f"-m tcp --dport 80 -j {svc_chain}"
        )
        yield (
            f'-A {svc_chain} ! -s 10.244.0.0/16 -d {ip}/32 -p tcp -m comment --comment "{name} '
            f'cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ'
        )
        count = svc % 3 + 1
        seps = []
        for k in range(count):
            pod, sep = _pod_ip(endpoint), _hash_name("KUBE-SEP", svc, k)
            endpoint += 1
            seps.append((pod, sep))
            stat = (
                f"-m statistic --mode random --probability {1 / (count - k):.11f} "
                if k < count - 1
                else ""
            )
            yield f'-A {svc_chain} -m comment --comment "{name} -> {pod}:8080" {stat}-j {sep}'
        for pod, sep in seps:
            yield f'-A {sep} -s {pod}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ'
            yield (
                f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp '
                f"-j DNAT --to-destination {pod}:8080"
            )


def _reject_rules() -> Iterator[str]:
    """Endless filter KUBE-SERVICES REJECTs for services without endpoints."""
    for i in range(1 << 20):
        yield (
            f"-A KUBE-SERVICES -d {_cluster_ip((1 << 19) + i)}/32 -p tcp -m comment "
            f'--comment "default/empty-{i}:http has no endpoints" -m tcp --dport 80 '
            "-j REJECT --reject-with icmp-port-unreachable"
        )


def _take(header: Sequence[str], body: Iterator[str], count: int) -> list[str]:
    out = list(header[:count])
    for line in body:
        if len(out) >= count:
            break
        out.append(line)
    return out


def _table(name: str, base: Sequence[str], rules: Sequence[str]) -> str:
    """One ``*table`` block declaring every non-built-in chain the rules use."""
    chains: dict[str, None] = {}
    for rule in rules:
        words = rule.split()
        used = [words[1]]
        if "-j" in words:
            used.append(words[words.index("-j") + 1])
        chains.update((c, None) for c in used if c.startswith("KUBE-") and c not in base)
    lines = [f"*{name}", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def foreign_rules(count: int) -> str:
    """``iptables-restore --noflush`` input holding exactly ``count`` kube-proxy-like rules."""
    n_filter = count // FILTER_SHARE
    n_nat = count - n_filter
    nat = _take((*NAT_HEADER, NAT_LAST), _service_rules(), n_nat)
    if NAT_LAST in nat:  # kube-proxy keeps the nodeports jump last in KUBE-SERVICES
        nat.remove(NAT_LAST)
        nat.append(NAT_LAST)
    filt = _take(FILTER_HEADER, _reject_rules(), n_filter)
    mangle = "*mangle\n" + "".join(f":{c} - [0:0]\n" for c in MANGLE_CHAINS) + "COMMIT\n"
    text = mangle
    if filt:
        text += _table("filter", FILTER_BASE, filt)
    if nat:
        text += _table("nat", NAT_BASE, nat)
    return text


def count_rules(save_output: str) -> int:
    """Rules in ``iptables-save`` output that are not efa-guard's."""
    return sum(
        1 for line in save_output.splitlines() if line.startswith("-A ") and "EFA_" not in line
    )


_BUILTIN_RULE = re.compile(r"^-[AID] (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING)\b")


@dataclasses.dataclass(frozen=True)
class KubeRules:
    """The initial load, and the resync texts derived from it."""

    initial: str
    resync: str
    resync_with_jumps: str
    rules: int

    @classmethod
    def make(cls, count: int) -> KubeRules:
        """``count`` rules shaped like kube-proxy's (see :func:`foreign_rules`), and their resyncs.

        The resync keeps the nat and filter blocks and drops every rule of a built-in
        chain: with ``--noflush`` its ``:KUBE-*`` lines flush those chains and the rules
        refill them, as kube-proxy's full sync does.  The variant also deletes
        kube-proxy's INPUT jumps and inserts them again at position 1.
        """
        initial = foreign_rules(count)
        blocks: list[list[str]] = []
        jumps: list[str] = []
        table = ""
        for line in initial.splitlines():
            if line.startswith("*"):
                table = line[1:]
                if table in {"nat", "filter"}:
                    blocks.append([line])
                continue
            if table not in {"nat", "filter"}:
                continue
            if _BUILTIN_RULE.match(line):
                if table == "filter" and line.startswith("-I INPUT 1 "):
                    jumps.append(line.removeprefix("-I INPUT 1 "))
                continue
            blocks[-1].append(line)
        resync = "".join("\n".join(b) + "\n" for b in blocks)
        moved = []
        for block in blocks:
            if block[0] == "*filter":
                head = [ln for ln in block if ln.startswith((":", "*"))]
                rest = [ln for ln in block if not ln.startswith((":", "*"))]
                ops = [f"-D INPUT {j}" for j in jumps] + [f"-I INPUT 1 {j}" for j in jumps]
                block = [*head, *ops, *rest]  # noqa: PLW2901 - a rebuilt copy
            moved.append("\n".join(block) + "\n")
        if not jumps:
            msg = "the foreign rules hold no INPUT jumps to move"
            raise HarnessError(msg)
        rules = sum(1 for ln in resync.splitlines() if ln.startswith("-A "))
        return cls(initial, resync, "".join(moved), rules)
