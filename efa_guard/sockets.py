"""Listening TCP and UDP sockets of this network namespace, read through netlink sock_diag.

A plain netlink socket, not pyroute2's DiagSocket: importing pyroute2 alone takes ~150 ms,
most of `efa-guard check`'s budget. Owners are found in /proc (the kernel gives the inode).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN, TCP_CLOSE = 10, 7
INET_DIAG_SKV6ONLY = 11

_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2 with an empty inet_diag_sockid
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # inet_diag_msg
_NLA = struct.Struct("=HH")


@dataclass(frozen=True)
class Listener:
    """A socket waiting for connections (TCP) or datagrams (unconnected UDP)."""

    protocol: str  # tcp | udp
    family: str  # ipv4 | ipv6: the socket's own family
    address: str
    port: int
    inode: int
    v6only: bool | None = None  # for ipv6 sockets

    @property
    def families(self) -> tuple[str, ...]:
        """The families it accepts: a dual-stack [::] socket serves IPv4 too."""
        if self.family == "ipv6" and self.v6only is False and self.address == "::":
            return ("ipv4", "ipv6")
        return (self.family,)

    @property
    def loopback_only(self) -> bool:
        """Bound to 127.0.0.0/8 or ::1: unreachable from any interface."""
        return ipaddress.ip_address(self.address).is_loopback


def _request(family: int, protocol: int, states: int, seq: int) -> bytes:
    body = _REQ.pack(family, protocol, 0, states)
    return (
        _NLMSG.pack(
            _NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        + body
    )


def _decode(data: bytes, protocol: int) -> Iterable[Listener]:
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size:
            return
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, pos + _NLMSG.size)
            if errno:
                raise OSError(-errno, os.strerror(-errno))
        if kind == SOCK_DIAG_BY_FAMILY and pos + _NLMSG.size + _MSG.size <= len(data):
            fields = _MSG.unpack_from(data, pos + _NLMSG.size)
            # The kernel filtered by state already (LISTEN for TCP, CLOSE for UDP).
            fam, sport, src, dst, inode = (fields[0], fields[4], fields[6], fields[7], fields[14])
            v6only = None
            attr = pos + _NLMSG.size + _MSG.size
            while attr + 4 <= pos + length:
                alen, atype = _NLA.unpack_from(data, attr)
                if alen < 4:
                    break
                if atype == INET_DIAG_SKV6ONLY and alen >= 5:
                    v6only = bool(data[attr + 4])
                attr += (alen + 3) & ~3
            width = 4 if fam == socket.AF_INET else 16
            remote = ipaddress.ip_address(dst[:width])
            if protocol == socket.IPPROTO_TCP or remote.is_unspecified:
                yield Listener(
                    protocol="tcp" if protocol == socket.IPPROTO_TCP else "udp",
                    family="ipv4" if fam == socket.AF_INET else "ipv6",
                    address=str(ipaddress.ip_address(src[:width])),
                    port=struct.unpack(">H", sport)[0],
                    inode=inode,
                    v6only=v6only if fam == socket.AF_INET6 else None,
                )
        pos += (length + 3) & ~3


def listeners() -> list[Listener]:
    """Every listening TCP socket and unconnected UDP socket, both families."""
    out: list[Listener] = []
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
    ) as sock:
        sock.bind((0, 0))
        sock.settimeout(5)
        seq = 0
        for family in (socket.AF_INET, socket.AF_INET6):
            for protocol, states in (
                (socket.IPPROTO_TCP, 1 << TCP_LISTEN),
                (socket.IPPROTO_UDP, 1 << TCP_CLOSE),
            ):
                seq += 1
                sock.send(_request(family, protocol, states, seq))
                done = False
                while not done:
                    data = sock.recv(1 << 16)
                    done = _is_done(data)
                    out.extend(_decode(data, protocol))
    return sorted(set(out), key=lambda x: (x.protocol, x.port, x.family, x.address))


def _is_done(data: bytes) -> bool:
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, kind, *_ = _NLMSG.unpack_from(data, pos)
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return True
        if length < _NLMSG.size:
            return True
        pos += (length + 3) & ~3
    return False


def owners(inodes: Iterable[int], proc: Path = Path("/proc")) -> dict[int, tuple[int, str]]:
    """Map socket inodes to (pid, command name), from /proc/*/fd."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, tuple[int, str]] = {}
    if not wanted:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                inode = wanted.get(str(fd.readlink()))
                if inode is not None and inode not in found:
                    name = (entry / "comm").read_text().strip()
                    found[inode] = (int(entry.name), name)
        except OSError:
            continue
        if len(found) == len(wanted):
            break
    return found
