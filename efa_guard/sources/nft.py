"""nf_tables ruleset events: a thread on a netlink socket in NFNLGRP_NFTABLES.

The decoding is nftdecode.py's; this module subscribes, has the kernel drop datagrams of
foreign tables (nftfilter.py), reads into one reused buffer, re-subscribes after a lost
message (ENOBUFS) or a socket error, and asks for a full check when it had to.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Protocol

from efa_guard.events import Event, Trigger
from efa_guard.sources import Emit, nftfilter
from efa_guard.sources.nftdecode import Decoder, config_chains, config_families
from efa_guard.sources.retry import Stopped, resubscribe

if TYPE_CHECKING:
    from efa_guard.config import Config

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_RCVBUFFORCE = 33
RCVBUF = 32 << 20
RECV_BUFFER = 1 << 20  # nf_tables batches its events into datagrams of a page at most


class NetlinkSocket(nftfilter.Filterable, Protocol):
    """What the watcher needs of a subscribed socket (a fake in unit tests)."""

    def recv_into(self, buffer: bytearray, /) -> int:
        """One datagram into `buffer`; TimeoutError now and then so that stop() is noticed."""
        ...

    def close(self) -> None:
        """Drop the subscription."""
        ...


def subscribe() -> socket.socket:
    """A socket in NFNLGRP_NFTABLES; OSError if the kernel refuses (no nf_tables, no privilege)."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        sock.settimeout(1.0)  # wake up now and then to notice stop()
    except OSError:
        sock.close()
        raise
    return sock


class NftWatcher:
    """A thread reading ruleset events; ENOBUFS means 'something changed': re-open, check."""

    name = "nftables-events"

    def __init__(
        self,
        config: Config,
        *,
        own_pid: Callable[[int], bool],
        emit: Emit,
        open_socket: Callable[[], NetlinkSocket] = subscribe,
    ) -> None:
        self.emit = emit
        self.decoder = Decoder(
            config_families(config),
            frozenset(config.policy.tables),
            own_pid,
            chains=config_chains(config),
        )
        self.open_socket = open_socket
        self.sock: NetlinkSocket | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="nft-events", daemon=True)
        self.overflows = 0
        # Reused for every datagram: a fresh 1 MiB bytes per recv cost more than decoding.
        self.buffer = bytearray(RECV_BUFFER)
        self.filtered = False  # whether the kernel drops foreign tables' datagrams (nftfilter)

    def _filter(
        self,
        sock: NetlinkSocket,
        tables: Collection[str] | None = None,
        chains: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Have the kernel drop datagrams of foreign tables; without it the decoder does it all.

        A filter that could not be replaced must not stay: one for the old tables would drop
        a new table's events. It is removed, or else the socket is closed (the reader then
        subscribes afresh, unfiltered at worst, and asks for a full check).
        """
        try:
            if tables is None:
                tables, chains = self.decoder.tables, self.decoder.chains
            nftfilter.attach(sock, tables, chains)
        except (OSError, ValueError):
            self.filtered = False
            try:
                nftfilter.detach(sock)
            except OSError:
                sock.close()
        else:
            self.filtered = True

    def start(self) -> None:
        """Subscribe (errors surface here) and start reading."""
        self.sock = self.open_socket()
        self._filter(self.sock)
        self.thread.start()

    def stop(self) -> None:
        """Stop reading (a re-subscription in progress ends at once); the thread ends."""
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        if self.sock is not None:
            self.sock.close()

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config's tables and families (the reload's full check follows).

        The filter first: a table added is not dropped by the kernel once the decoder knows it.
        """
        sock, chains = self.sock, config_chains(config)
        if sock is not None:
            self._filter(sock, config.policy.tables, chains)
        self.decoder.follow(
            tables=config.policy.tables, families=config_families(config), chains=chains
        )

    def run(self) -> None:
        """The thread body: read, decode, emit; re-subscribe after any socket error."""
        while not self.stopped.is_set() and self.sock is not None:
            try:
                size = self.sock.recv_into(self.buffer)
            except TimeoutError:
                continue
            except OSError as e:
                if self.stopped.is_set():
                    return
                if e.errno == errno.ENOBUFS:
                    self.overflows += 1
                    why = "netlink receive buffer overflowed; full check"
                else:
                    why = f"nf_tables event socket failed ({e}); re-subscribed, full check"
                try:
                    self._reopen(why)
                except Stopped:
                    return
                continue
            for event in self.decoder.feed(bytes(memoryview(self.buffer)[:size])):
                self.emit(event)

    def _reopen(self, why: str) -> None:
        """Drop the socket and the half-read transaction, subscribe again, ask for a check."""
        self.decoder.reset()
        old, self.sock = self.sock, None
        if old is not None:
            old.close()
        failures: list[str] = []

        def failed(attempt: int, e: BaseException) -> None:
            failures[:] = [f"re-subscribing failed {attempt} time(s), last: {e}"]

        self.sock = resubscribe(self.open_socket, stopped=self.stopped, failed=failed)
        self._filter(self.sock)
        self.emit(Event(Trigger.OVERFLOW, detail="; ".join([why, *failures])))
