"""legacy, one-shot commands (check, exposure): one kernel copy per table, listings from a store.

iptables-legacy-save of a 50k-rule table costs ~130 ms, ~40 of them the kernel's copy of
the table, and `check` paid it on every run. Now a one-shot command first copies each table
it reads in-process (`legacyblob`: one consistent copy, kept for the whole command) and takes
a chain's listing from the listings store (`legacystore`, content-addressed by the chain's
entries) when it holds one; a chain the copy does not hold is missing, with no process.
When any chain of a table cannot be answered so, the table is saved as before and every
chain of it this command took is taken from that save again (one state per table).

What a save showed is learned: the table is copied again after it, and a chain's listing is
stored only when its entries are the same in both copies and no lock-respecting writer
released the xtables lock in between (a writer closes the lock before it releases it; two
writes, A -> B -> A, need two lock holders, so a close between the copies). A writer that
ignores the lock and writes twice within the save is the case nobody can see; the daemon's
`legacycache` makes the same bet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from efa_guard import legacyblob
from efa_guard.legacyblob import Blob, DoubtError
from efa_guard.legacycache import XTABLES_LOCK, Key, LockCloses, Memo
from efa_guard.legacystore import ListingStore

Table = tuple[str, str]  # (family, table)
STORED_RULES = 1000  # a longer chain is read every time (its listing is not stored)
_DOUBT = (OSError, DoubtError, struct.error, ValueError, KeyError, IndexError)


def rules_over(
    blob: Blob, chain: str, limit: int, heads: dict[bytes, int] | None = None
) -> bool | None:
    """Whether the chain holds more than `limit` rules (at most limit + 2 entries walked).

    None when the table has no such chain. A user chain's head is taken from `heads` (found
    by following jumps, see legacyblob.chain_bytes) or found by one search of the blob (~10
    ms at 50k rules); its rules are not walked past the limit.
    """
    hook = legacyblob.HOOKS.index(chain) if chain in legacyblob.HOOKS else -1
    stop: int | None = None
    if hook >= 0 and blob.valid_hooks & (1 << hook):
        at, stop = blob.hook_entry[hook], blob.underflow[hook]
    else:
        known = {} if heads is None else heads
        head = known.get(chain.encode())
        if head is None:
            head = legacyblob.user_chain(blob, chain)
            if head is None:
                return None
            known[chain.encode()] = head
        at = head + legacyblob.entry_at(blob, head)[1]
    # A built-in chain ends at its policy entry; a user chain with its RETURN entry.
    for _ in range(limit + 1 if stop is not None else limit + 2):
        if at == stop:
            return False
        _, nxt, _, name = legacyblob.entry_at(blob, at)
        if stop is None and name == b"ERROR":
            return False  # the next chain's head, or the table's final entry
        at += nxt
        if stop is not None and at > stop:
            raise DoubtError(at)
    return True


def holds_more_than(family: str, table: str, chain: str, limit: int) -> bool | None:
    """`rules_over` in one copy of the table now; None when it cannot be read or trusted."""
    try:
        return rules_over(legacyblob.read_blob(family, table), chain, limit)
    except _DOUBT:
        return None


class Snapshot(Protocol):
    """One state of a table, as a copy of it answers."""

    def digest(self, tool: str, key: Key) -> bytes | None:
        """The chain's store key; None when the table does not hold it (DoubtError: unsure)."""
        ...

    def over(self, chain: str, limit: int) -> bool | None:
        """Whether the chain holds more than `limit` rules; None without such a chain."""
        ...


@dataclass
class TableCopy:
    """One copy of a table (a Snapshot) and the user chains' heads found in it."""

    blob: Blob
    heads: dict[bytes, int] = field(default_factory=dict)

    def digest(self, tool: str, key: Key) -> bytes | None:
        """The chain's store key in this copy; None when the copy does not hold the chain.

        DoubtError for a chain too long to store (not hashed: ~5 µs a rule).
        """
        if rules_over(self.blob, key[2], STORED_RULES, self.heads):
            raise DoubtError(key)
        body = legacyblob.chain_bytes(self.blob, key[2], self.heads)
        if body == legacyblob.MISSING:
            return None
        h = hashlib.sha256("\0".join((tool, *key)).encode() + b"\0")
        h.update(body)
        return h.digest()

    def over(self, chain: str, limit: int) -> bool | None:
        """`rules_over` in this copy."""
        return rules_over(self.blob, chain, limit, self.heads)


def read_copy(table: Table) -> Snapshot | None:
    """One copy of the table now; None when it cannot be read or trusted."""
    try:
        return TableCopy(legacyblob.read_blob(*table))
    except _DOUBT:
        return None


def binary_id(path: str) -> str:
    """What names the iptables build that prints: its resolved path, inode, size and mtime."""
    real = Path(path).resolve()
    st = real.stat()
    return f"{real}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


@dataclass
class Copies:
    """A one-shot command's copies of the legacy tables it reads, and what they answered."""

    tool: Callable[[str], str]  # family -> the path of the iptables-legacy-save that prints
    store: ListingStore = field(default_factory=ListingStore.default)
    closes: Callable[[], int | None] = field(default_factory=lambda: LockCloses(XTABLES_LOCK).count)
    read: Callable[[Table], Snapshot | None] = read_copy
    stored: int = 0  # listings added to the store
    _first: dict[Table, Snapshot | None] = field(default_factory=dict)
    _after: dict[Table, Snapshot | None] = field(default_factory=dict)
    _mark: int | None = None
    _learn: set[Table] = field(default_factory=set)  # a chain the store lacked: learn the save
    _tools: dict[str, str] = field(default_factory=dict)

    def answer(self, memo: Memo, table: Table, keys: Sequence[Key]) -> bool:
        """Fill `memo` with these chains of one table from its copy; False if not all can be.

        Without a usable store (no run directory of ours) no copy is taken: reads as before.
        """
        if not self.store.usable:
            return False
        copy = self._copy(table)
        if copy is None:
            return False
        found: Memo = {}
        try:
            for key in sorted(keys, key=lambda k: legacyblob.hooks_first(k[2])):
                digest = copy.digest(self._tool(key[0]), key)
                found[key] = None if digest is None else self.store.get(digest.hex())
                if digest is not None and found[key] is None:
                    self._learn.add(table)
                    return False
        except _DOUBT:
            return False
        memo.update(found)
        return True

    def has(self, table: Table) -> bool:
        """Whether the table was copied (its saves are learned from)."""
        return self._first.get(table) is not None

    def over(self, key: Key, limit: int) -> bool | None:
        """The chain holds more than `limit` rules, in the table's copy; None if not known."""
        copy = self._first.get(key[:2])
        if copy is None:
            return None
        try:
            return copy.over(key[2], limit)
        except _DOUBT:
            return None

    def saved(self, table: Table) -> None:
        """The table was just saved: copy it again, unless a writer may have come in between."""
        if self._first.get(table) is None or table in self._after or table not in self._learn:
            return  # nothing to learn (e.g. only a chain too long to store was asked for)
        after = self.read(table)
        quiet = self._mark is not None and self.closes() == self._mark
        self._after[table] = after if quiet else None

    def learn(self, memo: Memo, keys: Sequence[Key]) -> None:
        """Store listings of saved tables whose chain is the same in both copies."""
        fresh: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            before, after, text = self._first.get(key[:2]), self._after.get(key[:2]), memo.get(key)
            if before is None or after is None or text is None:
                continue
            try:
                tool = self._tool(key[0])
                digest = before.digest(tool, key)
                if digest is not None and digest == after.digest(tool, key):
                    fresh[digest.hex()] = text
            except _DOUBT:
                continue
        if fresh and self.store.add(fresh):
            self.stored += len(fresh)

    def _copy(self, table: Table) -> Snapshot | None:
        if table not in self._first:
            if not self._first:  # the lock is watched before the first copy is taken
                # Created (as iptables creates it) only when missing: a close of the lock
                # wakes the daemon's check, and this is no write.
                with contextlib.suppress(OSError):
                    flags = os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                    os.close(os.open(XTABLES_LOCK, flags, 0o600))
                self.closes()  # arms the watch
                self._mark = self.closes()
            self._first[table] = self.read(table)
        return self._first[table]

    def _tool(self, family: str) -> str:
        if family not in self._tools:
            self._tools[family] = binary_id(self.tool(family))
        return self._tools[family]
