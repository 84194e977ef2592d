"""What iptables-nft would print for a chain, fingerprinted straight from nf_tables.

The daemon reads each chain with `iptables-nft -S` (a process each, ~5 ms of CPU). What it
prints is a function of the chain as nf_tables holds it: its policy and its rules' expressions.
So a digest of exactly those (every rule attribute but its handle and position, every
expression but the counters) read over one netlink socket at one ruleset generation identifies
the listing: the same digest, the same listing. `ListingCache` keeps the listings of states
seen before under their digests: the policy in place, and the tampered states a fight repeats.
A miss, an unknown attribute layout or any netlink error only means the full read.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from collections import OrderedDict
from collections.abc import Sequence

from efa_guard import netlink, nftgen

Key = tuple[str, str, str]  # (family, table, chain)

_SUBSYS = 10 << 8  # NFNL_SUBSYS_NFTABLES
_GETTABLE, _GETCHAIN, _GETRULE = 1, 4, 7
_NFGENMSG = struct.Struct("=BBH")
_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
_TABLE, _CHAIN_NAME, _CHAIN_POLICY = 1, 3, 5  # NFTA_CHAIN_*
_RULE_CHAIN, _RULE_EXPRESSIONS = 2, 4  # NFTA_RULE_*
# NFTA_RULE_TABLE, _CHAIN, _HANDLE, _POSITION, _PAD, _ID, _POSITION_ID, _CHAIN_ID: not content
_RULE_SKIP = frozenset({1, 2, 3, 6, 8, 9, 10, 11})
_EXPR_NAME = 1
_COUNTER = b"counter\0"
_ENOENT = 2
ATTEMPTS = 3  # generations that may move during one set of dumps before giving up


def _request(kind: int, family: int, flags: int, attrs: bytes) -> bytes:
    body = _NFGENMSG.pack(family, 0, 0) + attrs
    return netlink.pack(_SUBSYS | kind, body, flags=flags | netlink.NLM_F_REQUEST)


def _names(table: str, chain: str, chain_attr: int) -> bytes:
    return netlink.pack_attr(_TABLE, table.encode() + b"\0") + netlink.pack_attr(
        chain_attr, chain.encode() + b"\0"
    )


def _chain(sock: socket.socket, key: Key) -> bytes | None:
    """The chain's policy attribute (b"" for a user chain); None when it does not exist."""
    family, table, chain = key
    sock.send(_request(_GETCHAIN, _FAMILIES[family], 0, _names(table, chain, _CHAIN_NAME)))
    data = sock.recv(1 << 16)
    for kind, _flags, _seq, _pid, start, end in netlink.messages(data):
        if kind == netlink.NLMSG_ERROR:
            code = netlink.error_code(data, start, end)
            if code == _ENOENT:
                return None
            raise netlink.DumpError(code, f"NFT_MSG_GETCHAIN {table}/{chain} refused")
        found = netlink.find_attrs(data, start + _NFGENMSG.size, end, (_CHAIN_POLICY,))
        return b"P" + found.get(_CHAIN_POLICY, b"")
    raise netlink.DumpError(0, "no reply to NFT_MSG_GETCHAIN")


def _rules(sock: socket.socket, key: Key, digest: hashlib._Hash) -> None:
    """Feed the chain's rules, as iptables would see them, to `digest`."""
    family, table, chain = key
    flags = netlink.NLM_F_DUMP
    request = _request(_GETRULE, _FAMILIES[family], flags, _names(table, chain, _RULE_CHAIN))
    for data, (_kind, _flags, _seq, _pid, start, end) in netlink.dump(sock, request):
        digest.update(b"R")
        for kind, lo, hi in netlink.attrs(data, start + _NFGENMSG.size, end):
            if kind in _RULE_SKIP:
                continue
            if kind != _RULE_EXPRESSIONS:
                digest.update(struct.pack("=HI", kind, hi - lo) + data[lo:hi])
                continue
            for _elem, elo, ehi in netlink.attrs(data, lo, hi):
                first = netlink.first_attr(data, elo, ehi)
                if first is not None and first[0] == _EXPR_NAME and first[1] == _COUNTER:
                    continue  # packet and byte counts: never in a listing
                digest.update(struct.pack("=I", ehi - elo) + data[elo:ehi])


def _generation(sock: socket.socket) -> int:
    sock.send(nftgen.request())
    return nftgen.parse(sock.recv(1 << 16))


def fingerprints(keys: Sequence[Key]) -> tuple[int, dict[Key, str]] | None:
    """Each chain's digest, all at one ruleset generation (returned too); None if unsure."""
    try:
        sock = nftgen.channel()
        for _ in range(ATTEMPTS):
            before = _generation(sock)
            out = {key: _fingerprint(sock, key) for key in keys}
            if _generation(sock) == before:
                return before, out
    except (OSError, KeyError):
        nftgen.drop()  # a half-read reply must not be taken for the next one's
        return None
    return None


def _fingerprint(sock: socket.socket, key: Key) -> str:
    policy = _chain(sock, key)
    if policy is None:
        return "missing"
    digest = hashlib.sha256(policy)
    _rules(sock, key, digest)
    return digest.hexdigest()


_UNKNOWN = object()


class ListingCache:
    """Listings of states seen before, by chain and fingerprint; the newest `size` per chain."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._by_key: dict[Key, OrderedDict[str, str | None]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Key, fingerprint: str) -> str | object | None:
        """The listing (None: the chain is missing), or _UNKNOWN."""
        seen = self._by_key.get(key)
        if seen is None or fingerprint not in seen:
            return _UNKNOWN
        seen.move_to_end(fingerprint)
        return seen[fingerprint]

    def known(self, digests: dict[Key, str]) -> dict[Key, str | None]:
        """The listings of the chains whose state was seen before (None: a missing chain)."""
        out: dict[Key, str | None] = {}
        for key, fingerprint in digests.items():
            listing = self.get(key, fingerprint)
            if listing is not _UNKNOWN:
                out[key] = listing if isinstance(listing, str) else None
        if len(out) == len(digests):
            self.hits += 1
        else:
            self.misses += 1
        return out

    def learn(self, key: Key, fingerprint: str, listing: str | None) -> None:
        """Remember what a full read of that state printed."""
        seen = self._by_key.setdefault(key, OrderedDict())
        seen[fingerprint] = listing
        seen.move_to_end(fingerprint)
        while len(seen) > self.size:
            seen.popitem(last=False)


def exists(key: Key) -> bool | None:
    """Whether nf_tables holds the chain now (one GETCHAIN); None when the kernel cannot say."""
    try:
        return _chain(nftgen.channel(), key) is not None
    except (OSError, KeyError):
        nftgen.drop()
        return None


def tables() -> frozenset[tuple[str, str]] | None:
    """The ("ipv4", "filter")-style tables nf_tables holds (one dump); None if it cannot say."""
    request = _request(_GETTABLE, socket.AF_UNSPEC, netlink.NLM_F_DUMP, b"")
    names = {int(family): name for name, family in _FAMILIES.items()}
    found = set()
    try:
        for data, msg in netlink.dump(nftgen.channel(), request):
            start, end = msg[4], msg[5]
            name = netlink.find_attrs(data, start + _NFGENMSG.size, end, (_TABLE,)).get(_TABLE)
            if data[start] in names and name:
                found.add((names[data[start]], netlink.cstring(name)))
    except (OSError, KeyError):
        nftgen.drop()
        return None
    return frozenset(found)


def holds_more_than(key: Key, limit: int) -> bool | None:
    """Whether the chain holds more than `limit` rules, counted from the first of its dump.

    Stops reading at the limit (the rest of the dump is abandoned with the socket): a check
    learns in about a millisecond that a foreign chain is too big to walk within its budget,
    where `iptables-nft -S` would take seconds to print it. None when the kernel cannot say.
    """
    family, table, chain = key
    request = _request(
        _GETRULE, _FAMILIES[family], netlink.NLM_F_DUMP, _names(table, chain, _RULE_CHAIN)
    )
    count = 0
    try:
        for _data, _msg in netlink.dump(nftgen.channel(), request):
            count += 1
            if count > limit:
                nftgen.drop()  # reading on would make the kernel send the rest
                return True
    except (OSError, KeyError):
        nftgen.drop()
        return None
    return False
