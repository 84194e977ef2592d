"""Which iptables backend to enforce on, and what the other backend holds.

Runs no command itself: it asks `Iptables` objects, the only place that runs iptables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from efa_guard.errors import IptablesMissingError, PrivilegeError, ReadError
from efa_guard.iptables import KINDS, Iptables, Kind, which
from efa_guard.legacycache import LegacyCache
from efa_guard.nftdump import ListingCache
from efa_guard.policy import Policy

_LEGACY_TABLES = {
    "ipv4": Path("/proc/net/ip_tables_names"),
    "ipv6": Path("/proc/net/ip6_tables_names"),
}
# Built-in chains that see traffic arriving on the management interface.
INBOUND: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING",),
    "mangle": ("PREROUTING", "INPUT", "FORWARD"),
    "nat": ("PREROUTING",),
    "filter": ("INPUT", "FORWARD"),
    "security": ("INPUT", "FORWARD"),
}


def legacy_tables(family: str = "ipv4") -> frozenset[str]:
    """The legacy tables the kernel has loaded (reading another one would load it).

    No file: the legacy module is not loaded, so no table. Unreadable: raise, never "none".
    """
    path = _LEGACY_TABLES[family]
    try:
        return frozenset(path.read_text().split())
    except FileNotFoundError:
        return frozenset()
    except PermissionError as e:
        msg = f"not permitted to use iptables (run as root or with CAP_NET_ADMIN): {e}"
        raise PrivilegeError(msg) from e


@dataclass(frozen=True)
class Detection:
    """Which backend `auto` chose, why, and what looked wrong."""

    kind: Kind
    reason: str
    warnings: tuple[str, ...] = ()


def _system_default() -> Kind:
    found = which("iptables")
    if found is not None and "legacy" in Path(found).resolve().name:
        return "legacy"
    return "nft"


def _hint(kind: Kind, notes: list[str]) -> bool:
    """Whether kube-proxy's hint is in this backend's mangle; an unreadable one is a note."""
    try:
        return Iptables(kind).has_kube_hint()
    except ReadError as e:
        notes.append(f"cannot read {kind} mangle for kube-proxy's backend hint: {e}")
        return False


def detect(policy: Policy) -> Detection:
    """Pick the backend kube-proxy uses, as kube-proxy's iptables-wrapper and Calico do."""
    available = {k: which(f"iptables-{k}") is not None for k in KINDS}
    legacy_loaded = legacy_tables() if available["legacy"] else frozenset()
    hints: dict[Kind, bool] = {"nft": False, "legacy": False}
    notes: list[str] = []
    if available["nft"]:
        hints["nft"] = _hint("nft", notes)
    # Reading a legacy table that is not loaded would load it: look first.
    if available["legacy"] and "mangle" in legacy_loaded:
        hints["legacy"] = _hint("legacy", notes)
    if hints["nft"]:
        kind: Kind = "nft"
        reason = "kube-proxy's hint chains are in nft mangle"
    elif hints["legacy"]:
        kind, reason = "legacy", "kube-proxy's hint chains are in legacy mangle"
    else:
        kind, reason = _system_default(), "no kube-proxy hint; the system's iptables"
    if not available[kind]:
        msg = f"iptables-{kind} not found (install the iptables package)"
        raise IptablesMissingError(msg)
    other: Kind = "legacy" if kind == "nft" else "nft"
    held = []
    if hints[other]:
        held.append(f"kube-proxy hint chains in {other} mangle")
    try:
        held += _owned_in(other, policy, legacy_loaded) if available[other] else []
    except ReadError as e:
        notes.append(f"cannot read the {other} backend's owned chains: {e}")
    warnings: tuple[str, ...] = tuple(notes)
    if held:
        warning = (
            f"both iptables backends hold rules ({'; '.join(held)}); "
            f"using {kind}. Rules in both are evaluated by the kernel."
        )
        warnings = (*warnings, warning)
    return Detection(kind=kind, reason=reason, warnings=warnings)


def _owned_in(kind: Kind, policy: Policy, legacy_loaded: frozenset[str]) -> list[str]:
    chains = policy.chains
    if kind == "legacy":
        chains = tuple(c for c in chains if c.table in legacy_loaded)
    if not chains:
        return []
    listings = Iptables(kind).list_chains([(c.table, c.name) for c in chains])
    return [
        f"{c.table}/{c.name} exists in {kind}"
        for c, listing in zip(chains, listings, strict=True)
        if listing is not None
    ]


def other_backend_rules(kind: Kind, families: tuple[str, ...]) -> tuple[str, ...]:
    """Built-in chains of the other backend that see inbound traffic and hold rules.

    The kernel evaluates both backends' rules: a legacy DROP or ACCEPT in INPUT acts while
    efa-guard enforces on nft, and the other way round. Each entry names the backend, family,
    table and chain, how many rules it holds and a policy other than ACCEPT. Legacy tables
    that are not loaded are not read (reading would load them). Empty when the other
    backend's tools are not installed.
    """
    other: Kind = "legacy" if kind == "nft" else "nft"
    if which(f"iptables-{other}") is None:
        return ()
    ipt = Iptables(other)
    nft_tables = ipt.nft_tables() if other == "nft" else None
    requests = []
    for family in families:
        if other == "legacy":
            loaded = legacy_tables(family)
        elif nft_tables is None:
            loaded = frozenset(INBOUND)
        else:
            loaded = frozenset(t for f, t in nft_tables if f == family)
        requests += [
            (family, table, chain)
            for table, chains in INBOUND.items()
            if table in loaded
            for chain in chains
        ]
    found = []
    for (family, table, chain), listing in zip(
        requests, ipt.list_many(requests) if requests else [], strict=True
    ):
        lines = (listing or "").splitlines()
        rules = sum(1 for line in lines if line.startswith("-A "))
        policy = next((line.split()[2] for line in lines if line.startswith("-P ")), "ACCEPT")
        what = [f"{rules} rule(s)"] if rules else []
        what += [f"policy {policy}"] if policy != "ACCEPT" else []
        if what:
            found.append(f"{other} {family} {table}/{chain}: {', '.join(what)}")
    return tuple(found)


def choose(
    backend: Literal["auto", "nft", "legacy"],
    policy: Policy,
    *,
    recorded: str | None = None,
    cache: bool = False,
) -> tuple[Iptables, tuple[str, ...]]:
    """The runner for a configured backend, and warnings about the choice.

    `auto` detects kube-proxy's backend. `recorded` is the backend a running daemon enforces
    on (one-shot commands look where it looks, and warn when detection now differs).
    `cache` (the daemon): reads of a state seen before need no iptables process (nft: by
    netlink fingerprint; legacy: the listings of an unchanged table are reused).
    """

    def runner(kind: Kind) -> Iptables:
        if not cache:
            return Iptables(kind)
        return Iptables(kind, cache=LegacyCache() if kind == "legacy" else ListingCache())

    if backend != "auto":
        return runner(backend), ()
    found = detect(policy)
    if recorded in KINDS and recorded != found.kind:
        warning = (
            f"the daemon enforces on {recorded} but {found.kind} is detected now "
            f"({found.reason}); restart efa-guard to follow it"
        )
        chosen: Kind = "legacy" if recorded == "legacy" else "nft"
        return runner(chosen), (*found.warnings, warning)
    return runner(found.kind), found.warnings
