"""The nf_tables ruleset generation (NFT_MSG_GETGEN): equal before and after means no commit.

Self-contained on purpose: one request, one reply, over a raw NETLINK_NETFILTER socket.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_NEWGEN = 15
_NFT_MSG_GETGEN = 16
_NFTA_GEN_ID = 1
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, 0 here)
_NLA = struct.Struct("=HH")  # len, type
_NLA_TYPE_MASK = 0x3FFF


def request(seq: int = 1) -> bytes:
    """The GETGEN request message."""
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    kind = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETGEN
    return _NLMSG.pack(_NLMSG.size + len(body), kind, _NLM_F_REQUEST, seq, 0) + body


def parse(data: bytes) -> int:
    """The generation id in a NEWGEN reply; OSError for a netlink error or a bad reply."""
    if len(data) < _NLMSG.size:
        raise OSError(errno.EPROTO, "short netlink reply to NFT_MSG_GETGEN")
    length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data)
    if kind == _NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", data, _NLMSG.size)
        raise OSError(-code, f"NFT_MSG_GETGEN: {os.strerror(-code)}")
    if kind != (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_NEWGEN:
        raise OSError(errno.EPROTO, f"unexpected netlink message type {kind:#x} to GETGEN")
    off = _NLMSG.size + _NFGENMSG.size
    end = min(length, len(data))
    while off + _NLA.size <= end:
        alen, atype = _NLA.unpack_from(data, off)
        if alen < _NLA.size:
            break
        if atype & _NLA_TYPE_MASK == _NFTA_GEN_ID:
            (gen,) = struct.unpack_from(">I", data, off + _NLA.size)
            return int(gen)
        off += (alen + 3) & ~3
    raise OSError(errno.EPROTO, "NFT_MSG_NEWGEN without NFTA_GEN_ID")


_local = threading.local()


def channel() -> socket.socket:
    """The calling thread's NETLINK_NETFILTER socket, opened once and kept.

    Opening one per request was measured to cost milliseconds of wall time in the daemon
    (closing a netlink socket waits); what an earlier, abandoned request left unread is
    drained first, so every reply read belongs to the request just sent.
    """
    sock: socket.socket | None = getattr(_local, "sock", None)
    if sock is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        sock.settimeout(5)
        sock.bind((0, 0))
        _local.sock = sock
    sock.settimeout(0.0)  # non-blocking: a timeout would make each recv wait for data first
    try:
        while True:
            sock.recv(1 << 16)
    except BlockingIOError:
        return sock
    finally:
        sock.settimeout(5)


def drop() -> None:
    """Close this thread's socket (after an error: the next request opens a new one)."""
    sock: socket.socket | None = getattr(_local, "sock", None)
    _local.sock = None
    if sock is not None:
        sock.close()


def generation() -> int:
    """The current ruleset generation of this network namespace (needs CAP_NET_ADMIN)."""
    sock = channel()
    try:
        sock.send(request())
        return parse(sock.recv(65536))
    except OSError:
        drop()
        raise
