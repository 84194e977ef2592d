"""Netlink framing, shared by the nf_tables event decoder and the sock_diag reader.

Pure functions over bytes (plus `dump`, which drives one request on a socket): message headers
(struct nlmsghdr), attributes (struct nlattr) with their 4-byte alignment, and the
NLMSG_ERROR / NLMSG_DONE control messages. Offsets, not copies: the event decoder walks
~20,000 messages per kube-proxy resync and must not slice what it does not read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Iterator
from typing import Protocol

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLA_TYPE_MASK = 0x3FFF  # drops NLA_F_NESTED and NLA_F_NET_BYTEORDER

HEADER = struct.Struct("=IHHII")  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
ATTR = struct.Struct("=HH")  # nla_len, nla_type
_ERRNO = struct.Struct("=i")

# (type, flags, seq, portid, payload start, end): a tuple, cheap to make 20,000 times.
Message = tuple[int, int, int, int, int, int]


def align(length: int) -> int:
    """Round up to the 4-byte boundary of netlink messages and attributes."""
    return (length + 3) & ~3


def pack(kind: int, body: bytes, *, flags: int = 0, seq: int = 0, portid: int = 0) -> bytes:
    """One netlink message: header plus body, padded."""
    raw = HEADER.pack(HEADER.size + len(body), kind, flags, seq, portid) + body
    return raw + b"\0" * (align(len(raw)) - len(raw))


def pack_attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded."""
    raw = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (align(len(raw)) - len(raw))


def messages(data: bytes) -> Iterator[Message]:
    """The messages of one datagram; a truncated or corrupt tail ends the walk."""
    pos, size, total = 0, HEADER.size, len(data)
    unpack = HEADER.unpack_from
    while pos + size <= total:
        length, kind, flags, seq, portid = unpack(data, pos)
        if length < size:
            return
        end = pos + length
        end = min(end, total)
        yield kind, flags, seq, portid, pos + size, end
        pos += (length + 3) & ~3


def attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[start:end]."""
    pos = start
    unpack = ATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(data, pos)
        if length < 4 or pos + length > end:
            return
        yield kind & NLA_TYPE_MASK, pos + 4, pos + length
        pos += (length + 3) & ~3


def first_attr(data: bytes, start: int, end: int) -> tuple[int, bytes] | None:
    """The type and payload of the first attribute in data[start:end], if it is whole."""
    if start + ATTR.size > end:
        return None
    length, kind = ATTR.unpack_from(data, start)
    if length < ATTR.size or start + length > end:
        return None
    return kind & NLA_TYPE_MASK, data[start + ATTR.size : start + length]


def find_attrs(data: bytes, start: int, end: int, wanted: Collection[int]) -> dict[int, bytes]:
    """The payloads of the wanted attribute types; stops as soon as all were seen."""
    out: dict[int, bytes] = {}
    for kind, lo, hi in attrs(data, start, end):
        if kind in wanted:
            out[kind] = data[lo:hi]
            if len(out) == len(wanted):
                break
    return out


def cstring(raw: bytes | None) -> str:
    """A NUL-terminated string attribute as text ("" when absent)."""
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") if raw else ""


def error_code(data: bytes, start: int, end: int) -> int:
    """The (positive) errno of an NLMSG_ERROR payload; 0 is an acknowledgement."""
    if start + _ERRNO.size > end:
        return 0
    (code,) = _ERRNO.unpack_from(data, start)
    return -int(code)


class DumpError(OSError):
    """The kernel answered a request with NLMSG_ERROR."""


def dump_part(data: bytes) -> tuple[list[Message], bool]:
    """The data messages of one datagram of a dump reply, and whether the dump is over.

    NLMSG_DONE ends the dump; an NLMSG_ERROR with an errno raises DumpError naming it.
    """
    out: list[Message] = []
    for msg in messages(data):
        kind, _flags, _seq, _portid, start, end = msg
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            code = error_code(data, start, end)
            if code:
                raise DumpError(code, f"netlink request refused: {os.strerror(code)}")
            return out, True
        out.append(msg)
    return out, False


class Socket(Protocol):
    """The part of socket.socket that `dump` needs."""

    def send(self, data: bytes, /) -> int:
        """Send one datagram."""
        ...

    def recv(self, size: int, /) -> bytes:
        """Receive one datagram."""
        ...


def dump(
    sock: Socket, request: bytes, *, bufsize: int = 1 << 16
) -> Iterator[tuple[bytes, Message]]:
    """Send a dump request; yield (datagram, message) for every reply until NLMSG_DONE."""
    sock.send(request)
    while True:
        data = sock.recv(bufsize)
        if not data:
            why = "netlink socket closed in the middle of a dump"
            raise DumpError(0, why)
        found, done = dump_part(data)
        for msg in found:
            yield data, msg
        if done:
            return
