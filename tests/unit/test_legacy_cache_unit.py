"""The daemon's legacy read cache, on a fake kernel: kept only for one state, used only then."""

from __future__ import annotations

from collections.abc import Sequence

from efa_guard.legacycache import Key, LegacyCache, Memo

F_OWN = ("ipv4", "filter", "EFA_INPUT")
F_HOOK = ("ipv4", "filter", "INPUT")
R_OWN = ("ipv4", "raw", "EFA_NODEPORTS")
R_HOOK = ("ipv4", "raw", "PREROUTING")
REQUESTS = [F_OWN, F_HOOK, R_OWN, R_HOOK]


class Kernel:
    """Listings per chain and a version per table; full reads and lock closes counted."""

    def __init__(self) -> None:
        self.listings: dict[Key, str | None] = {k: f"-N {k[2]}\n" for k in REQUESTS}
        self.versions = {"filter": 0, "raw": 0}
        self.reads: list[list[Key]] = []
        self.lock_closes = 0
        self.during_read: list[str] = []  # tables a writer changes while a full read runs
        self.close_during_read = False
        self.broken = False

    def fingerprint(self, family: str, table: str, chains: Sequence[str]) -> bytes | None:
        """A stand-in for legacyblob.fingerprint: the table's version."""
        if self.broken:
            return None
        return f"{family} {table} {sorted(chains)} {self.versions[table]}".encode()

    def full(self, keys: list[Key]) -> Memo:
        """A full read: what the kernel holds; a writer may act while it runs."""
        self.reads.append(keys)
        out = {k: self.listings[k] for k in keys}
        for table in self.during_read:
            self.versions[table] += 1
        if self.close_during_read:
            self.lock_closes += 1
        return out

    def write(self, key: Key, text: str | None) -> None:
        """A foreign write through iptables-legacy: a new version, a close of the lock."""
        self.listings[key] = text
        self.versions[key[1]] += 1
        self.lock_closes += 1


def _cache(kernel: Kernel) -> LegacyCache:
    return LegacyCache(fingerprint=kernel.fingerprint, closes=lambda: kernel.lock_closes)


def test_unchanged_tables_are_not_read_again() -> None:
    """A second read of an unchanged state starts no full read and gives the same listings."""
    kernel = Kernel()
    cache = _cache(kernel)
    first = cache.read(REQUESTS, kernel.full)
    second = cache.read(REQUESTS, kernel.full)
    assert second == first == {k: kernel.listings[k] for k in REQUESTS}
    assert len(kernel.reads) == 1
    assert cache.hits == 2


def test_only_the_changed_table_is_read_again() -> None:
    """A write to one table: only that table's chains are read again, and the change shows."""
    kernel = Kernel()
    cache = _cache(kernel)
    cache.read(REQUESTS, kernel.full)
    kernel.write(F_OWN, "-N EFA_INPUT\n-A EFA_INPUT -j DROP\n")
    got = cache.read(REQUESTS, kernel.full)
    assert kernel.reads[-1] == [F_OWN, F_HOOK]
    assert got[F_OWN] == "-N EFA_INPUT\n-A EFA_INPUT -j DROP\n"


def test_a_read_across_a_change_is_not_kept() -> None:
    """Fingerprints before and after a full read differ: its listings are not kept."""
    kernel = Kernel()
    cache = _cache(kernel)
    kernel.during_read = ["filter"]
    cache.read(REQUESTS, kernel.full)
    kernel.during_read = []
    cache.read(REQUESTS, kernel.full)
    assert kernel.reads[-1] == [F_OWN, F_HOOK]  # raw was kept, filter was not
    assert cache.kept == 2  # raw the first time, filter the second


def test_a_lock_close_during_a_read_keeps_nothing() -> None:
    """A writer released the lock during the read (A -> B -> A is possible): nothing kept."""
    kernel = Kernel()
    cache = _cache(kernel)
    kernel.close_during_read = True
    cache.read(REQUESTS, kernel.full)
    assert cache.kept == 0
    kernel.close_during_read = False
    cache.read(REQUESTS, kernel.full)
    assert len(kernel.reads) == 2
    assert cache.kept == 2


def test_no_fingerprint_means_a_full_read_every_time() -> None:
    """When the fingerprint cannot be taken, every read is a full read."""
    kernel = Kernel()
    kernel.broken = True
    cache = _cache(kernel)
    for _ in range(3):
        cache.read(REQUESTS, kernel.full)
    assert len(kernel.reads) == 3
    assert cache.kept == 0


def test_a_failing_fingerprint_means_a_full_read() -> None:
    """A fingerprint that raises is a full read, not an error."""
    kernel = Kernel()

    def failing(family: str, table: str, chains: Sequence[str]) -> bytes | None:
        raise RuntimeError((family, table, chains))

    cache = LegacyCache(fingerprint=failing, closes=lambda: 0)
    assert cache.read(REQUESTS, kernel.full) == {k: kernel.listings[k] for k in REQUESTS}
    assert cache.read(REQUESTS, kernel.full)
    assert len(kernel.reads) == 2


def test_no_lock_watch_keeps_nothing() -> None:
    """Without a watch on the xtables lock, listings are never kept."""
    kernel = Kernel()
    cache = LegacyCache(fingerprint=kernel.fingerprint, closes=lambda: None)
    cache.read(REQUESTS, kernel.full)
    cache.read(REQUESTS, kernel.full)
    assert len(kernel.reads) == 2


def test_a_missing_chain_is_kept_as_missing() -> None:
    """A chain the full read did not find is kept as None, and given as None."""
    kernel = Kernel()
    kernel.listings[F_OWN] = None
    cache = _cache(kernel)
    cache.read(REQUESTS, kernel.full)
    assert cache.read(REQUESTS, kernel.full)[F_OWN] is None
    assert len(kernel.reads) == 1


def test_another_set_of_chains_is_its_own_entry() -> None:
    """Listings kept for one set of chains do not answer a request for another set."""
    kernel = Kernel()
    cache = _cache(kernel)
    cache.read([F_OWN, F_HOOK], kernel.full)
    cache.read([F_HOOK], kernel.full)
    assert kernel.reads == [[F_OWN, F_HOOK], [F_HOOK]]


def test_a_fight_alternating_two_states_reads_each_only_once() -> None:
    """States are kept by content: the tampered state and the policy, each read fully once."""
    kernel = Kernel()

    def by_content(family: str, table: str, chains: Sequence[str]) -> bytes:
        return repr([kernel.listings[(family, table, c)] for c in sorted(chains)]).encode()

    cache = LegacyCache(fingerprint=by_content, closes=lambda: kernel.lock_closes)
    policy, tampered = "-N EFA_INPUT\n-A EFA_INPUT -j DROP\n", "-N EFA_INPUT\n"
    seen = []
    for _ in range(3):
        for text in (tampered, policy):
            kernel.write(F_OWN, text)
            seen.append(cache.read([F_OWN, F_HOOK], kernel.full)[F_OWN])
    assert seen == [tampered, policy] * 3
    assert len(kernel.reads) == 2  # one full read per state, then fingerprints only
