"""The node's own addresses, from /proc (no netlink round trip, no pyroute2 import).

A packet arriving from outside is addressed to one of them (the weak host model: any of
the node's addresses, whichever interface holds it); loopback addresses are left out, as no
packet from another interface can carry one.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

_FIB_TRIE = Path("/proc/net/fib_trie")
_IF_INET6 = Path("/proc/net/if_inet6")


def parse_fib_trie(text: str) -> frozenset[str]:
    """IPv4 addresses marked `/32 host LOCAL` in /proc/net/fib_trie."""
    found: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:]
        elif stripped.startswith("/32 host LOCAL") and last:
            found.add(last)
    return frozenset(a for a in found if not ipaddress.ip_address(a).is_loopback)


def parse_if_inet6(text: str) -> frozenset[str]:
    """IPv6 addresses of /proc/net/if_inet6 (32 hex digits first on each line)."""
    found: set[str] = set()
    for line in text.splitlines():
        digits = line.split()[0] if line.strip() else ""
        if len(digits) == 32:
            address = ipaddress.IPv6Address(int(digits, 16))
            if not address.is_loopback:
                found.add(str(address))
    return frozenset(found)


def local_addresses() -> frozenset[str] | None:
    """Every non-loopback address of this network namespace, or None when unreadable."""
    try:
        v4 = parse_fib_trie(_FIB_TRIE.read_text())
    except OSError:
        return None
    try:
        v6 = parse_if_inet6(_IF_INET6.read_text())
    except FileNotFoundError:  # IPv6 disabled: no addresses
        v6 = frozenset()
    except OSError:
        return None
    return v4 | v6
