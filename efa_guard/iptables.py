"""The only place that runs iptables: the runner the rest of efa-guard calls.

Its parts: iptables_proc (binaries, processes, errors), iptables_read (nft and legacy reads),
iptables_restore (atomic restore, jumps moved by nft).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from efa_guard import iptables_proc, iptables_read, nftdump
from efa_guard.errors import ReadCommandError
from efa_guard.iptables_proc import KINDS, Activity, Kind, Tools, which
from efa_guard.iptables_read import READ_ATTEMPTS, Key, Memo, MemoReads, Unprintable
from efa_guard.iptables_restore import restore
from efa_guard.legacycache import LegacyCache
from efa_guard.nftdump import ListingCache
from efa_guard.nftgen import generation
from efa_guard.observe import ParseError, observe
from efa_guard.plan import Transaction
from efa_guard.policy import Policy
from efa_guard.state import ChainState

__all__ = [
    "KINDS",
    "KUBE_HINTS",
    "READ_ATTEMPTS",
    "Activity",
    "Iptables",
    "Key",
    "Kind",
    "Mark",
    "Memo",
    "Runner",
    "Unprintable",
    "which",
]

# kube-proxy and kubelet mark the backend they use with these chains in mangle.
KUBE_HINTS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")


class Runner(Protocol):
    """What the reconcile step needs of an iptables runner; the real one and test fakes."""

    @property
    def kind(self) -> Kind:
        """The backend it runs."""
        ...

    @property
    def activity(self) -> Activity:
        """The PIDs of its recent commands."""
        ...

    def read(self, policy: Policy) -> tuple[ChainState, ...]:
        """The observed state of every owned chain, in policy order."""
        ...

    def restore(self, txn: Transaction) -> None:
        """Apply one transaction atomically, or raise with the evidence."""
        ...

    def mark(self) -> Mark | None:
        """Where the last read stood: its ruleset generation and our commits; None if unknown."""
        ...

    def untouched_since(self, mark: Mark) -> bool:
        """Whether nobody but us committed since `mark` (read-back can be skipped)."""
        ...


Mark = tuple[int, int]  # (nf_tables generation a read saw, our commits at that time)


@dataclass
class Iptables(Tools):
    """Runs one backend's iptables binaries; every failure carries its evidence."""

    # (family, table, chain) -> listing: set by one-shot commands, which read a snapshot once;
    # the daemon leaves it None and always reads afresh.
    memo: Memo | None = field(default=None, repr=False)
    # The daemon's: listings of states seen before, read again without iptables processes
    # (nft: by netlink fingerprint, see nftdump; legacy: of an unchanged table, legacycache).
    cache: ListingCache | LegacyCache | None = field(default=None, repr=False)
    # Chains of the last reads that iptables could not print, read through nft instead.
    unprintable: dict[Key, Unprintable] = field(default_factory=dict, repr=False)
    _reads: MemoReads = field(default_factory=MemoReads, repr=False)  # what it knows of `memo`

    @property
    def reads(self) -> MemoReads:
        """What the reads know of `memo` (legacy: the saves kept for later requests)."""
        return self._reads

    def list_chains(
        self, requests: Sequence[tuple[str, str]], family: str = "ipv4"
    ) -> list[str | None]:
        """`-S` listings of (table, chain) pairs; None for a missing chain."""
        return self.list_many([(family, t, c) for t, c in requests])

    def list_many(self, requests: Sequence[tuple[str, str, str]]) -> list[str | None]:
        """`-S` listings of (family, table, chain), one consistent snapshot; None if missing.

        nft: the chains are listed concurrently, between two reads of the ruleset generation;
        when it moved, everything is read again (bounded), else UnstableReadError. legacy: the
        kernel hands out a table in one consistent copy; see `iptables_read.read_legacy`
        (with a `cache`, the daemon's, chains of a table unchanged since they were last read
        are not read again: see `legacycache`).
        With a `memo` (one-shot commands) nothing is read twice, and the memo stays one
        snapshot (nft: a later batch that sees a newer generation re-reads the memo too).
        """
        memo = self.memo if self.memo is not None else {}
        if self.kind == "legacy":
            if self.memo is None and isinstance(self.cache, LegacyCache):
                memo = self.cache.read(requests, self._read_legacy)
            else:  # without a memo to keep, a save is not kept either
                lean = self.memo is None
                iptables_read.read_legacy(self, memo, requests, self._reads, lean=lean)
            return [memo.get(r) for r in requests]
        todo = list(dict.fromkeys(r for r in requests if r not in memo))
        if todo:
            kept = self.memo is not None
            read_at = iptables_read.read_nft(
                memo, todo, self._list_nft, kept=kept, read_at=self._reads.generation
            )
            self._reads.last = read_at
            if kept:
                self._reads.generation = read_at
        return [memo[r] for r in requests]

    def _read_legacy(self, keys: list[Key]) -> Memo:
        memo: Memo = {}
        iptables_read.read_legacy(self, memo, keys, MemoReads(), lean=True)
        return memo

    def _owned(self, requests: list[Key]) -> list[str | None]:
        """The policy's chains: on nft with a cache (the daemon), from states seen before.

        The chains' fingerprints (nftdump) are read in-process; a chain whose fingerprint was
        seen before is what iptables printed then, and only the others are listed. Those
        listings belong to the fingerprints' snapshot when the ruleset generation did not
        move in between (else everything is listed afresh); then they are remembered.
        """
        cache = self.cache
        seen = None
        if isinstance(cache, ListingCache) and self.memo is None and self.kind == "nft":
            seen = nftdump.fingerprints(requests)
        if not isinstance(cache, ListingCache) or seen is None:
            return self.list_many(requests)
        generation_seen, digests = seen
        known = cache.known(digests)
        missing = [k for k in requests if k not in known]
        fresh = dict(zip(missing, self.list_many(missing), strict=True)) if missing else {}
        if missing and self._reads.last != generation_seen:
            return self.list_many(requests)  # a commit since the fingerprints: one snapshot
        self._reads.last = generation_seen
        for key in known:
            self.unprintable.pop(key, None)  # a cached listing is one iptables printed
        for key in missing:
            if key not in self.unprintable:
                cache.learn(key, digests[key], fresh[key])
        return [known[k] if k in known else fresh[k] for k in requests]

    def mark(self) -> Mark | None:
        """nft: the generation the last read saw, and our commits then; legacy: None."""
        if self.kind != "nft" or self._reads.last is None:
            return None
        return (self._reads.last, self.commits)

    def untouched_since(self, mark: Mark) -> bool:
        """nft: the generation moved by exactly the commits we made since `mark`.

        One successful iptables-nft-restore (or nft -f) is one commit, one generation. So
        when the generation equals the read's plus our commits, nobody else wrote in between:
        the kernel holds what we read with our transactions applied on top.
        """
        ours = self.commits - mark[1]
        if self.kind != "nft" or ours < 1:
            return False
        try:
            return generation() == mark[0] + ours
        except OSError:
            return False

    def _list_nft(self, keys: list[Key]) -> Memo:
        return iptables_read.list_nft(self, keys, self.unprintable)

    def nft_tables(self) -> frozenset[tuple[str, str]] | None:
        """The ("ipv4", "filter")-style tables nf_tables has; None without nft (assume all).

        Asked over netlink in-process; the `nft` tool only when that fails.
        """
        found = nftdump.tables()
        return found if found is not None else iptables_proc.nft_tables(self)

    def notes(self) -> tuple[str, ...]:
        """What the last reads found that iptables itself cannot show (check warns)."""
        return tuple(u.describe() for u in self.unprintable.values())

    @staticmethod
    def requests(policy: Policy) -> list[tuple[str, str, str]]:
        """What `read` lists: each owned chain and its hook chain, per family."""
        out: list[tuple[str, str, str]] = []
        for f in policy.families:
            for c in policy.chains:
                out += [(f, c.table, c.name), (f, c.table, c.hook)]
        return out

    def read(self, policy: Policy) -> tuple[ChainState, ...]:
        """Observe each owned chain and the jumps to it, all from one consistent snapshot."""
        pairs = [(f, c) for f in policy.families for c in policy.chains]
        listings = self._owned(self.requests(policy))
        states = []
        for i, (family, chain) in enumerate(pairs):
            own, hook = listings[2 * i], listings[2 * i + 1]
            if hook is None:
                argv = self.argv(chain.table, "-S", chain.hook, family=family)
                msg = f"built-in chain {family} {chain.table}/{chain.hook} cannot be read"
                raise ReadCommandError(argv, 1, "", msg)
            try:
                states.append(observe(chain, own, hook, family))
            except ParseError as e:
                raise ReadCommandError(["(parse)"], 0, "", str(e)) from e
        return tuple(states)

    def restore(self, txn: Transaction) -> None:
        """Apply one table's transaction atomically (see iptables_restore.restore)."""
        restore(self, txn, self.unprintable)

    def has_kube_hint(self) -> bool:
        """Whether kube-proxy's hint chains exist in mangle.

        Listed by name: listing the whole table costs more as kube-proxy's rules grow, on nft.
        """
        return any(x is not None for x in self.list_chains([("mangle", h) for h in KUBE_HINTS]))
