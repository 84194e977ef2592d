"""The nf_tables event decoder: datagrams of NFNLGRP_NFTABLES in, one Event per transaction out.

Pure (apart from the `own_pid` callback): unit-tested on synthetic datagrams. A kube-proxy
resync is ~20,000 messages in ~100 ms, nearly all of them rules of tables we do not manage
(nat): a datagram that names none of our tables is skipped whole (one byte search per table,
at C speed), and inside a transaction of ours a foreign message is dropped on its first
attribute (the table name, compared as raw bytes). A NEWGEN message ends each transaction
and names the process that committed it; each Event describes exactly that transaction.
With watched chains (config_chains), a rule message of our table naming a chain the policy
neither owns nor hooks in that table (kube-proxy's own chains in `filter`) is dropped like a
foreign table's: no rule of another chain can alter our chains or where they are jumped to,
and the kernel-side filter (nftfilter) drops the same messages. Table and chain messages of
ours always count: a chain renamed away from our name is announced under its new name.
A transaction is kube-proxy's when it names a KUBE- chain, when a rule of a watched chain
names one (kube-proxy's jumps from INPUT), or when its process is called kube-proxy.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from efa_guard import netlink
from efa_guard.events import Event, Trigger

if TYPE_CHECKING:
    from efa_guard.config import Config

NFNL_SUBSYS_NFTABLES = 10
NFPROTO_INET = 1

NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWGEN = 15
NFTA_TABLE = 1  # NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE}: the kernel puts it first
# The attribute number of the chain name in each message type that names one.
_CHAIN_ATTR = {
    NFT_MSG_NEWTABLE: None,
    NFT_MSG_DELTABLE: None,
    NFT_MSG_NEWCHAIN: 3,
    NFT_MSG_DELCHAIN: 3,
    NFT_MSG_NEWRULE: 2,
    NFT_MSG_DELRULE: 2,
}
_NFT_TYPES = {(NFNL_SUBSYS_NFTABLES << 8) | m: m for m in _CHAIN_ATTR}
_NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
_RULE_TYPES = frozenset({NFT_MSG_NEWRULE, NFT_MSG_DELRULE})
NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME = 2, 3
NFGENMSG = 4  # struct nfgenmsg: family, version, res_id

_FAMILY_NAMES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}
_FAMILY_NUMBERS = {"ipv4": int(socket.AF_INET), "ipv6": int(socket.AF_INET6)}


def config_chains(config: Config) -> dict[str, frozenset[str]]:
    """Per table, the chains whose changes matter: the policy's own, and their hook chains."""
    return {
        t: frozenset(n for c in config.policy.chains_in(t) for n in (c.name, c.hook))
        for t in config.policy.tables
    }


def config_families(config: Config) -> frozenset[int]:
    """The nfgenmsg families whose tables concern this config (inet tables always do)."""
    return frozenset(_FAMILY_NUMBERS[f] for f in config.policy.families) | {NFPROTO_INET}


@dataclass
class Transaction:
    """What one nf_tables transaction touched in our tables, accumulated until its NEWGEN."""

    tables: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)
    raw_chains: set[bytes] = field(default_factory=set)  # as the attributes hold them
    kube: bool = False  # a rule of a watched chain names a KUBE- chain (kube-proxy's jumps)

    def chains(self) -> set[str]:
        """Every chain named, decoded once at the end."""
        return {netlink.cstring(raw) for raw in self.raw_chains} - {""}


@dataclass
class Decoder:
    """Turns datagrams into Events. Pure apart from `own_pid`: unit-testable."""

    families: frozenset[int]
    tables: frozenset[str]
    own_pid: Callable[[int], bool]
    chains: Mapping[str, Collection[str]] | None = None  # watched, by table; None: every chain
    current: Transaction = field(default_factory=Transaction)
    skipped: int = 0  # messages of tables we do not manage, dropped on their table name
    skimmed: int = 0  # datagrams dropped whole: no table name of ours anywhere in them
    unwatched: int = 0  # messages of our tables dropped on their chain (not watched)

    def __post_init__(self) -> None:
        self.follow(tables=self.tables, families=self.families, chains=self.chains)

    def follow(
        self,
        *,
        tables: Collection[str],
        families: Collection[int],
        chains: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Take new tables, families, chains (a reload); one assignment each: thread-safe."""
        self.tables = frozenset(tables)
        self.families = frozenset(families)
        self.chains = chains
        self._watched = None if chains is None else _raw_names(chains)
        self._keys = {t.encode() + b"\0": t for t in self.tables}
        # The bare names: a needle holding NUL or other bytes as common in netlink data makes
        # the search several times slower. A name that also occurs elsewhere (a comment) only
        # costs that datagram the exact walk.
        self._needles = tuple(t.encode() for t in self.tables)

    def reset(self) -> None:
        """Forget a half-read transaction (after lost messages)."""
        self.current = Transaction()

    def feed(self, data: bytes) -> list[Event]:
        """Decode one datagram (many messages); return the events of completed transactions."""
        if not self.current.tables and self._foreign(data):
            # Nothing of ours is open, nothing of ours is named (a byte search at C speed):
            # every message is foreign, and a NEWGEN here closes an empty transaction.
            self.skimmed += 1
            return []
        events: list[Event] = []
        types, keys, families = _NFT_TYPES, self._keys, self.families
        for kind, _flags, _seq, _portid, start, end in netlink.messages(data):
            msg = types.get(kind)
            if msg is None:
                if kind == _NEWGEN and start + NFGENMSG <= end:
                    event = self._commit(data, start + NFGENMSG, end)
                    if event is not None:
                        events.append(event)
                continue
            body = start + NFGENMSG
            if body > end or data[start] not in families:
                continue
            # The table is the first attribute: a foreign one is recognised on its raw bytes.
            first = netlink.first_attr(data, body, end)
            if first is not None and first[0] == NFTA_TABLE:
                table = keys.get(first[1])
                if table is None:
                    self.skipped += 1
                else:
                    self._note(msg, table, data[start], first[1], data, body, end)
                continue
            self._touch(msg, data[start], data, body, end)
        return events

    def _foreign(self, data: bytes) -> bool:
        """No table name of ours occurs anywhere in the datagram."""
        return not any(needle in data for needle in self._needles)

    def _note(  # noqa: PLR0913, PLR0917 - the hot path: the parsed pieces, not a parse again
        self, msg: int, table: str, family: int, raw: bytes, data: bytes, body: int, end: int
    ) -> None:
        """A message of our `table` (`raw`: its attribute's payload): note it, and its chain."""
        if msg in _RULE_TYPES:  # the bulk: the chain is the second attribute
            second = netlink.first_attr(data, body + ((len(raw) + 7) & ~3), end)
            if second is not None and second[0] == _CHAIN_ATTR[msg]:
                if not self._watches(table, second[1]):
                    self.unwatched += 1
                    return
                txn = self.current
                txn.tables.add(table)
                txn.families.add(_FAMILY_NAMES.get(family, "inet"))
                txn.raw_chains.add(second[1])
                if data.find(b"KUBE-", body, end) >= 0:
                    txn.kube = True
                return
        self._touch(msg, family, data, body, end)

    def _watches(self, table: str, raw: bytes) -> bool:
        """Whether a message of our `table` naming chain `raw` (payload) counts."""
        watched = self._watched
        return watched is None or raw in watched.get(table, ())

    def _touch(self, msg: int, family: int, data: bytes, body: int, end: int) -> None:
        chain_attr = _CHAIN_ATTR[msg]
        wanted = (NFTA_TABLE,) if chain_attr is None else (NFTA_TABLE, chain_attr)
        found = netlink.find_attrs(data, body, end, wanted)
        table = netlink.cstring(found.get(NFTA_TABLE))
        if table not in self.tables:
            self.skipped += 1
            return
        raw = found.get(chain_attr) if chain_attr is not None else None
        if raw and msg in _RULE_TYPES and not self._watches(table, raw):
            self.unwatched += 1
            return
        self.current.tables.add(table)
        self.current.families.add(_FAMILY_NAMES.get(family, "inet"))
        if raw:
            self.current.raw_chains.add(raw)

    def _commit(self, data: bytes, body: int, end: int) -> Event | None:
        """A NEWGEN: the transaction is over; describe it with its own committer."""
        txn, self.current = self.current, Transaction()
        if not txn.tables:
            return None
        found = netlink.find_attrs(data, body, end, (NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME))
        raw_pid = found.get(NFTA_GEN_PROC_PID)
        pid = struct.unpack(">I", raw_pid)[0] if raw_pid and len(raw_pid) == 4 else None
        if pid is not None and self.own_pid(pid):
            return None
        name = netlink.cstring(found.get(NFTA_GEN_PROC_NAME)) or None
        chains = txn.chains()
        kube = txn.kube or any(c.startswith("KUBE-") for c in chains) or name == "kube-proxy"
        touched = ", ".join(sorted(chains or txn.tables))
        return Event(
            Trigger.KUBE_PROXY if kube else Trigger.RULE_CHANGE,
            detail=f"nf_tables transaction touched {touched}",
            pid=pid,
            process=name,
            # inet tables (family 1) concern both
            families=None if "inet" in txn.families else frozenset(txn.families),
            tables=frozenset(txn.tables),
        )


def _raw_names(chains: Mapping[str, Collection[str]]) -> dict[str, frozenset[bytes]]:
    """Chain names as the attributes hold them (NUL-terminated), by table."""
    return {t: frozenset(c.encode() + b"\0" for c in names) for t, names in chains.items()}
