"""A cheap fingerprint of legacy chains, from the table blob the kernel hands iptables-legacy.

iptables-legacy copies a table with two getsockopt calls on a raw socket: IPT_SO_GET_INFO
(hook offsets, size) and IPT_SO_GET_ENTRIES (every entry, one consistent copy). Doing the
same in-process costs a few ms at 50k rules, against ~150 ms for iptables-legacy-save and
its parsing. The fingerprint of a chain is a SHA-256 of its entries with what `iptables -S`
never prints zeroed (counters, comefrom, nfcache) and each jump's byte offset replaced by the
name of the chain it jumps to: inserts elsewhere in the table shift offsets, not names.
Equal fingerprints mean equal `-S` listings; any doubt while parsing gives None (the caller
then reads the chains as before).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

_GET_INFO, _GET_ENTRIES = 64, 65  # IPT_SO_GET_INFO/ENTRIES; IP6T_ the same at IPPROTO_IPV6
_INFO = struct.Struct("=32sI5I5III")  # struct ipt_getinfo (ip6t_getinfo is the same)
_HEAD = 40  # struct ipt_get_entries: name[32], u32 size, entries aligned to 8
HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_TARGET = struct.Struct("=H29sB")  # xt_entry_target's user header: size, name, revision
_TARGET_HEAD = 32  # sizeof(struct xt_entry_target)
_STANDARD = 40  # XT_ALIGN(sizeof(struct xt_standard_target)): header + int verdict
_ERROR = 64  # XT_ALIGN(sizeof(struct xt_error_target)): header + errorname[30]
_OFFSETS = struct.Struct("=HH")  # target_offset, next_offset
_MAX_SIZE = 1 << 28  # a table blob larger than 256 MB is not read here
MISSING = b"\0missing\0"  # what chain_bytes says of a chain not there


@dataclass(frozen=True)
class Layout:
    """Where an entry's fields sit: ipt_entry (ipv4) or ip6t_entry (ipv6), x86-64 and alike."""

    domain: int  # socket family
    level: int  # getsockopt level
    entry: int  # sizeof(the entry header): a policy entry's target_offset
    nfcache: int  # then target_offset, next_offset (u16 each), comefrom (u32)
    counters: int  # struct xt_counters, 16 bytes, aligned to 8


LAYOUTS = {
    "ipv4": Layout(socket.AF_INET, socket.IPPROTO_IP, 112, 84, 96),
    "ipv6": Layout(socket.AF_INET6, socket.IPPROTO_IPV6, 168, 136, 152),
}


class DoubtError(Exception):
    """The blob does not look as expected: do not trust a fingerprint of it."""


@dataclass(frozen=True)
class Blob:
    """One consistent copy of a table: its hook offsets and its entries."""

    layout: Layout
    valid_hooks: int
    hook_entry: tuple[int, ...]
    underflow: tuple[int, ...]
    entries: bytearray


def read_blob(family: str, table: str) -> Blob:
    """The table's blob, read as iptables-legacy reads it; OSError or DoubtError if not."""
    layout = LAYOUTS[family]
    name = table.encode()
    with socket.socket(layout.domain, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        info = _getsockopt(sock, layout.level, _GET_INFO, bytearray(_INFO.pack(name, *[0] * 13)))
        _, hooks, *offsets, _, size = _INFO.unpack(info)
        if size > _MAX_SIZE:
            raise DoubtError(size)
        buf = bytearray(_HEAD + size)
        struct.pack_into("=32sI", buf, 0, name, size)
        buf = _getsockopt(sock, layout.level, _GET_ENTRIES, buf)
        # The kernel refuses (EAGAIN) a copy whose size changed since GET_INFO; the hook
        # offsets must belong to this copy too, so the info must not have moved meanwhile.
        again = _getsockopt(sock, layout.level, _GET_INFO, bytearray(_INFO.pack(name, *[0] * 13)))
        if again != info or len(buf) != _HEAD + size:
            raise DoubtError(table)
    del buf[:_HEAD]
    return Blob(layout, hooks, tuple(offsets[:5]), tuple(offsets[5:]), buf)


_libc: ctypes.CDLL | None = None


def _getsockopt(sock: socket.socket, level: int, opt: int, buf: bytearray) -> bytearray:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    length = ctypes.c_uint(len(buf))
    arg = (ctypes.c_char * len(buf)).from_buffer(buf)
    if _libc.getsockopt(sock.fileno(), level, opt, arg, ctypes.byref(length)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"getsockopt {opt}: {os.strerror(errno)}")
    del arg  # releases the buffer export, so the bytearray can be resized
    del buf[length.value :]
    return buf


def entry_at(blob: Blob, at: int) -> tuple[int, int, int, bytes]:
    """(target_offset, next_offset, target_size, target name) of the entry at `at`."""
    e, data = blob.layout, blob.entries
    if at % 8 or at < 0 or at + e.entry > len(data):
        raise DoubtError(at)
    to, nxt = _OFFSETS.unpack_from(data, at + e.nfcache + 4)
    if to < e.entry or nxt % 8 or to + _TARGET_HEAD > nxt or at + nxt > len(data):
        raise DoubtError(at)
    size, name, _ = _TARGET.unpack_from(data, at + to)
    if to + size != nxt:
        raise DoubtError(at)
    return to, nxt, size, name.split(b"\0", 1)[0]


def _head_name(blob: Blob, at: int) -> bytes | None:
    """The chain name if the entry at `at` is a user chain's head (an ERROR entry), else None."""
    to, _, size, name = entry_at(blob, at)
    if name != b"ERROR":
        return None
    if to != blob.layout.entry or size != _ERROR:
        raise DoubtError(at)
    start = at + to + _TARGET_HEAD
    return bytes(blob.entries[start : start + 30]).split(b"\0", 1)[0]


def _chain(blob: Blob, start: int, stop: int | None, heads: dict[bytes, int]) -> bytes:
    """The chain's entries from `start` to `stop` (inclusive) or to the next head.

    Made independent of counters and of where the chains they jump to sit (noted in `heads`).
    """
    e, data = blob.layout, blob.entries
    out = bytearray()
    names: list[bytes] = []
    at = start
    while True:
        to, nxt, size, name = entry_at(blob, at)
        if at != start and stop is None and name == b"ERROR":
            break  # the next chain's head, or the table's final ERROR entry
        entry = bytearray(data[at : at + nxt])
        entry[e.nfcache : e.nfcache + 4] = bytes(4)
        entry[e.nfcache + 8 : e.nfcache + 12] = bytes(4)  # comefrom
        entry[e.counters : e.counters + 16] = bytes(16)
        if not name and size == _STANDARD:
            (verdict,) = struct.unpack_from("=i", entry, to + _TARGET_HEAD)
            if verdict >= 0:
                struct.pack_into("=i", entry, to + _TARGET_HEAD, 0)
                names.append(_jumped_to(blob, at + nxt, verdict, heads))
        out += entry
        if at == stop:
            break
        at += nxt
        if stop is not None and at > stop:
            raise DoubtError(at)
    return bytes(out) + b"\0".join(names)


def _jumped_to(blob: Blob, following: int, verdict: int, heads: dict[bytes, int]) -> bytes:
    if verdict == following:
        return b"\0next"  # a rule without a target falls through to the next entry
    head = verdict - blob.layout.entry - _ERROR  # a user chain's rules follow its head
    name = _head_name(blob, head)
    if not name:
        raise DoubtError(verdict)
    heads[name] = head
    return b"->" + name


def user_chain(blob: Blob, chain: str) -> int | None:
    """The offset of the user chain's head entry; None when the table has no such chain."""
    pattern = _TARGET.pack(_ERROR, b"ERROR", 0) + chain.encode() + b"\0"
    data, back = blob.entries, blob.layout.entry
    found: list[int] = []
    hit = data.find(pattern)
    while hit >= 0:
        if _head_name(blob, hit - back) == chain.encode():
            found.append(hit - back)
        hit = data.find(pattern, hit + 1)
    if len(found) > 1:
        raise DoubtError(chain)
    return found[0] if found else None


def chain_bytes(blob: Blob, chain: str, heads: dict[bytes, int]) -> bytes:
    """What the fingerprint covers of one chain; a marker when the table has no such chain.

    `heads`: user chains' head offsets known from jumps already followed (a scan of the
    whole blob finds the others: ~9 ms at 50k rules). Fills it with the jumps it follows.
    """
    hook = HOOKS.index(chain) if chain in HOOKS else -1
    if hook >= 0 and blob.valid_hooks & (1 << hook):
        start, policy = blob.hook_entry[hook], blob.underflow[hook]
        to, _, size, name = entry_at(blob, policy)
        if name or size != _STANDARD or to != blob.layout.entry:
            raise DoubtError(policy)  # a built-in chain ends with its policy entry
        return _chain(blob, start, policy, heads)
    head = heads.get(chain.encode(), -1)
    if head < 0:
        found = user_chain(blob, chain)
        if found is None:
            return MISSING
        head = found
    return _chain(blob, head, None, heads)


def hooks_first(chain: str) -> tuple[bool, str]:
    """Sort key: built-in chains first, whose jumps locate the user chains without a search."""
    return (chain not in HOOKS, chain)


def fingerprint(family: str, table: str, chains: Sequence[str]) -> bytes | None:
    """SHA-256 over these chains of one table, now; None when it cannot be trusted."""
    try:
        blob = read_blob(family, table)
        h = hashlib.sha256(f"{family} {table}".encode())
        heads: dict[bytes, int] = {}
        # Built-in chains first: their jumps locate the user chains without a scan.
        for chain in sorted(set(chains), key=hooks_first):
            body = chain_bytes(blob, chain, heads)
            h.update(b"%s %d\0" % (chain.encode(), len(body)))
            h.update(body)
    except (OSError, DoubtError, struct.error, ValueError, KeyError):
        return None
    return h.digest()
