"""nft reads: a generation that moved means read again; a memo stays one snapshot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from efa_guard import iptables_read as iptables
from efa_guard.errors import UnstableReadError
from efa_guard.iptables import Iptables, Key, Memo

OWN: Key = ("ipv4", "filter", "EFA_INPUT")
HOOK: Key = ("ipv4", "filter", "INPUT")
NAT: Key = ("ipv4", "nat", "KUBE-NODEPORTS")


class World:
    """A ruleset whose generation and content advance when `commit` is called."""

    def __init__(self, generations: Iterator[int]) -> None:
        self.generations = generations
        self.version = 0
        self.listed: list[list[Key]] = []

    def generation(self) -> int:
        """The next generation the kernel reports."""
        return next(self.generations)

    def list_nft(self, keys: list[Key]) -> Memo:
        """Every chain's listing names the content version it was read at."""
        self.listed.append(list(keys))
        return {k: f"-N {k[2]}\n# v{self.version}\n" for k in keys}


Reads = tuple[Iptables, list[int], World]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """An nft runner whose generation reads come from a list the test fills."""
    gens: list[int] = []
    world = World(iter(gens))
    ipt = Iptables("nft")
    monkeypatch.setattr(iptables, "generation", world.generation)
    monkeypatch.setattr(iptables, "_READ_PAUSE", 0.0)
    monkeypatch.setattr(ipt, "_list_nft", world.list_nft)
    return ipt, gens, world


def test_generation_moved_during_the_read_reads_again(
    reads: Reads,
) -> None:
    """A commit between the reads is not reported: the batch is read again."""
    ipt, gens, _ = reads
    gens += [1, 2, 2, 2]
    assert ipt.list_many([OWN, HOOK]) == ["-N EFA_INPUT\n# v0\n", "-N INPUT\n# v0\n"]
    assert not gens[4:]


def test_always_moving_generation_is_an_error(reads: Reads) -> None:
    """A writer that never pauses gives UnstableReadError, never a state."""
    ipt, gens, _ = reads
    gens += list(range(2 * iptables.READ_ATTEMPTS))
    with pytest.raises(UnstableReadError, match="changed during each of 5 reads"):
        ipt.list_many([OWN, HOOK])


def test_memo_refreshed_whole_when_a_later_batch_sees_a_newer_generation(
    reads: Reads,
) -> None:
    """A later read in a newer generation re-reads what the memo holds: one snapshot."""
    ipt, gens, world = reads
    ipt.memo = {}
    gens += [1, 1, 2, 2]
    ipt.list_many([OWN, HOOK])
    ipt.list_many([NAT])
    assert world.listed == [[OWN, HOOK], [OWN, HOOK, NAT]]
    assert set(ipt.memo) == {OWN, HOOK, NAT}


def test_memo_not_reread_in_the_same_generation(reads: Reads) -> None:
    """In the same generation, a later batch reads only the new chain."""
    ipt, gens, world = reads
    ipt.memo = {}
    gens += [1, 1, 1, 1]
    ipt.list_many([OWN, HOOK])
    ipt.list_many([NAT, OWN])
    assert world.listed == [[OWN, HOOK], [NAT]]
