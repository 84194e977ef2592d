"""The node's own addresses, parsed from /proc text."""

from __future__ import annotations

from efa_guard.addresses import parse_fib_trie, parse_if_inet6

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 198.18.0.2
        /32 host LOCAL
     |-- 198.18.0.255
        /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 198.18.0.2
        /32 host LOCAL
"""
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fd000efa000000000000000000000002 02 40 00 80     eth0
fe80000000000000000000fffe000001 02 40 20 80     eth0
"""


def test_fib_trie_gives_local_addresses_without_loopback() -> None:
    """Only `/32 host LOCAL` entries count; 127.0.0.1 and broadcasts do not."""
    assert parse_fib_trie(FIB_TRIE) == frozenset({"198.18.0.2"})


def test_if_inet6_gives_addresses_without_loopback() -> None:
    """32 hex digits per line, compressed like iptables prints them; ::1 left out."""
    assert parse_if_inet6(IF_INET6) == frozenset({"fd00:efa::2", "fe80::ff:fe00:1"})
