"""nf_tables ruleset events: one Event per foreign transaction that touches our tables.

Reads NFNLGRP_NFTABLES with a plain netlink socket and decodes only the headers and the
table/chain attributes it needs: a kube-proxy resync is ~20,000 messages in ~100 ms, and
full decoding would cost more CPU than the checks it triggers. A NEWGEN message ends each
transaction and names the process that committed it.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from efa_guard.events import Event, Trigger
from efa_guard.sources import Emit

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_RCVBUFFORCE = 33
NFNL_SUBSYS_NFTABLES = 10
NFPROTO_INET = 1

NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWGEN = 15
# Attribute numbers of the table and chain names in each message type.
_NAMES = {
    NFT_MSG_NEWTABLE: (1, None),
    NFT_MSG_DELTABLE: (1, None),
    NFT_MSG_NEWCHAIN: (1, 3),
    NFT_MSG_DELCHAIN: (1, 3),
    NFT_MSG_NEWRULE: (1, 2),
    NFT_MSG_DELRULE: (1, 2),
}
NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME = 2, 3

_FAMILY_NAMES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}
_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
RCVBUF = 32 << 20


def _attrs(data: bytes, start: int, end: int, wanted: Collection[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = start
    while pos + 4 <= end and len(out) < len(wanted):
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4:
            break
        kind &= 0x3FFF
        if kind in wanted:
            out[kind] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out


def _name(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") if raw else ""


@dataclass
class Transaction:
    """What one nf_tables transaction touched, accumulated until its NEWGEN."""

    tables: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)


@dataclass
class Decoder:
    """Turns datagrams into Events. Pure apart from the callbacks: unit-testable."""

    families: frozenset[int]
    tables: frozenset[str]
    own_pid: Callable[[int], bool]
    current: Transaction = field(default_factory=Transaction)

    def feed(self, data: bytes) -> list[Event]:
        """Decode one datagram (many messages); return the events of completed transactions."""
        events: list[Event] = []
        pos = 0
        while pos + _NLMSG.size <= len(data):
            length, kind, _flags, _seq, _portid = _NLMSG.unpack_from(data, pos)
            if length < _NLMSG.size:
                break
            end = min(pos + length, len(data))
            if kind >> 8 == NFNL_SUBSYS_NFTABLES:
                event = self._message(kind & 0xFF, data, pos + _NLMSG.size, end)
                if event is not None:
                    events.append(event)
            pos += (length + 3) & ~3
        return events

    def _message(self, msg: int, data: bytes, start: int, end: int) -> Event | None:
        if start + 4 > end:
            return None
        family = data[start]
        body = start + 4  # struct nfgenmsg
        if msg == NFT_MSG_NEWGEN:
            attrs = _attrs(data, body, end, (NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME))
            txn, self.current = self.current, Transaction()
            raw_pid = attrs.get(NFTA_GEN_PROC_PID)
            pid = struct.unpack(">I", raw_pid)[0] if raw_pid and len(raw_pid) == 4 else None
            if not txn.tables or (pid is not None and self.own_pid(pid)):
                return None
            name = _name(attrs.get(NFTA_GEN_PROC_NAME)) or None
            kube = any(c.startswith("KUBE-") for c in txn.chains) or name == "kube-proxy"
            touched = ", ".join(sorted(txn.chains or txn.tables))
            return Event(
                Trigger.KUBE_PROXY if kube else Trigger.RULE_CHANGE,
                detail=f"nf_tables transaction touched {touched}",
                pid=pid,
                process=name,
                # inet tables (family 1) concern both
                families=None if "inet" in txn.families else frozenset(txn.families),
            )
        if msg not in _NAMES or family not in self.families:
            return None
        table_attr, chain_attr = _NAMES[msg]
        wanted = (table_attr,) if chain_attr is None else (table_attr, chain_attr)
        attrs = _attrs(data, body, end, wanted)
        table = _name(attrs.get(table_attr))
        if table not in self.tables:
            return None
        self.current.tables.add(table)
        self.current.families.add(_FAMILY_NAMES.get(family, "inet"))
        if chain_attr is not None:
            chain = _name(attrs.get(chain_attr))
            if chain:
                self.current.chains.add(chain)
        return None


class NftWatcher:
    """A thread reading ruleset events; ENOBUFS means 'something changed': re-open, check."""

    def __init__(
        self,
        emit: Emit,
        *,
        tables: Collection[str],
        own_pid: Callable[[int], bool],
        families: Collection[int] = (socket.AF_INET,),
    ) -> None:
        self.emit = emit
        self.decoder = Decoder(frozenset(families) | {NFPROTO_INET}, frozenset(tables), own_pid)
        self.sock: socket.socket | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nft-events", daemon=True)
        self.overflows = 0

    def open(self) -> None:
        """Subscribe; raises OSError if the kernel refuses (no nf_tables, no privilege)."""
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        sock.settimeout(1.0)  # wake up now and then to notice stop()
        self.sock = sock

    def start(self) -> None:
        """Open the socket (errors surface here) and start reading."""
        self.open()
        self.thread.start()

    def stop(self) -> None:
        """Stop reading; the thread ends at its next wake-up."""
        self.stopped.set()
        self.thread.join(timeout=2)
        if self.sock is not None:
            self.sock.close()

    def _run(self) -> None:
        while not self.stopped.is_set():
            sock = self.sock
            if sock is None:
                return
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as e:
                if self.stopped.is_set():
                    return
                if e.errno == errno.ENOBUFS:
                    self.overflows += 1
                    self._reopen("netlink receive buffer overflowed; full check")
                else:
                    self._reopen(f"nf_tables event socket failed ({e}); re-subscribed, full check")
                continue
            if not data:
                if self.stopped.is_set():
                    return
                continue
            for event in self.decoder.feed(data):
                self.emit(event)

    def _reopen(self, why: str) -> None:
        """Drop the socket and the half-read transaction, subscribe again, ask for a check."""
        self.decoder.current = Transaction()
        old, self.sock = self.sock, None
        if old is not None:
            old.close()
        delay = 0.1
        while not self.stopped.is_set():
            try:
                self.open()
                break
            except OSError as e:  # EMFILE, ENOMEM: keep trying, the timer covers meanwhile
                why = f"{why}; re-subscribing failed ({e}), retrying"
                self.stopped.wait(delay)
                delay = min(delay * 2, 5.0)
        self.emit(Event(Trigger.OVERFLOW, detail=why))
