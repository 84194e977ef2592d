"""Address matches of one rule (`-s`, `-d`) for a packet arriving from outside. Pure."""

from __future__ import annotations

import ipaddress


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def source(value: str) -> bool | None:
    """`-s`: any source matches /0; a loopback one never arrives from outside; else unknown."""
    net = _network(value)
    if net is None:
        return None
    if net.prefixlen == 0:
        return True
    return False if net.is_loopback else None


def destination(  # noqa: PLR0911 - one return per case reads best
    value: str, known: str | None, local: frozenset[str] | None
) -> bool | None:
    """`-d`: the node's own addresses (`local`), or once known (a DNAT's) `known`, decide it."""
    host = _host(value) if known is None else None
    if host is not None and not host.startswith("127.") and host != "::1":
        if local is None:
            return None
        mine = [a for a in local if (":" in a) == (":" in host)]
        if host not in mine:
            return False  # the fast answer for kube-proxy's thousands of `-d IP/32`
        return True if len(mine) == 1 else None
    net = _network(value)
    if net is None:
        return None
    if known is not None:
        return ipaddress.ip_address(known) in net
    if net.prefixlen == 0:
        return True
    if net.is_loopback:
        return False  # no packet from another interface is addressed to loopback
    if local is None:
        return None
    ours = [a for a in map(ipaddress.ip_address, local) if a.version == net.version]
    inside = sum(a in net for a in ours)
    if inside == 0:
        return False
    return True if inside == len(ours) else None


def _host(value: str) -> str | None:
    """The address of a host-sized network as iptables prints it, else None."""
    if "/" not in value:
        return value
    address, _, bits = value.partition("/")
    return address if bits == ("128" if ":" in address else "32") else None
