"""Listening TCP and UDP sockets of this network namespace, read through netlink sock_diag.

A plain netlink socket, not pyroute2's DiagSocket: importing pyroute2 alone takes ~150 ms,
most of `efa-guard check`'s budget. Owners are found in /proc (the kernel gives the inode).
"""

from __future__ import annotations

import ipaddress
import pwd
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from efa_guard import netlink

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCP_LISTEN, TCP_CLOSE = 10, 7
INET_DIAG_SKV6ONLY = 11

_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2 with an empty inet_diag_sockid
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # inet_diag_msg


@dataclass(frozen=True)
class Listener:
    """A socket waiting for connections (TCP) or datagrams (unconnected UDP)."""

    protocol: str  # tcp | udp
    family: str  # ipv4 | ipv6: the socket's own family
    address: str
    port: int
    inode: int
    v6only: bool | None = None  # for ipv6 sockets
    uid: int | None = None  # the socket's owner, from the kernel (needs no privilege)

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
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
    return netlink.pack(SOCK_DIAG_BY_FAMILY, body, flags=flags, seq=seq)


def _listener(data: bytes, start: int, end: int, protocol: int) -> Listener | None:
    """One inet_diag_msg; None for a connected UDP socket or a short message."""
    if start + _MSG.size > end:
        return None
    fields = _MSG.unpack_from(data, start)
    # The kernel filtered by state already (LISTEN for TCP, CLOSE for UDP).
    fam, sport, src, dst = fields[0], fields[4], fields[6], fields[7]
    uid, inode = fields[13], fields[14]
    v6only = None
    for kind, lo, hi in netlink.attrs(data, start + _MSG.size, end):
        if kind == INET_DIAG_SKV6ONLY and hi > lo:
            v6only = bool(data[lo])
    width = 4 if fam == socket.AF_INET else 16
    remote = ipaddress.ip_address(dst[:width])
    if protocol != socket.IPPROTO_TCP and not remote.is_unspecified:
        return None
    return Listener(
        protocol="tcp" if protocol == socket.IPPROTO_TCP else "udp",
        family="ipv4" if fam == socket.AF_INET else "ipv6",
        address=str(ipaddress.ip_address(src[:width])),
        port=struct.unpack(">H", sport)[0],
        inode=inode,
        v6only=v6only if fam == socket.AF_INET6 else None,
        uid=uid,
    )


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
                request = _request(family, protocol, states, seq)
                for data, (kind, _f, _s, _p, start, end) in netlink.dump(sock, request):
                    if kind == SOCK_DIAG_BY_FAMILY:
                        listener = _listener(data, start, end, protocol)
                        if listener is not None:
                            out.append(listener)
    return sorted(set(out), key=lambda x: (x.protocol, x.port, x.family, x.address))


def user_name(uid: int | None) -> str | None:
    """`mysql (uid 110)`: who owns a socket when its process cannot be seen."""
    if uid is None:
        return None
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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
