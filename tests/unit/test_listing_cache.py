"""The daemon's nft listing cache: states by fingerprint, the newest few per chain."""

from __future__ import annotations

from efa_guard.nftdump import ListingCache

OWN = ("ipv4", "filter", "EFA_INPUT")
HOOK = ("ipv4", "filter", "INPUT")


def test_known_returns_only_states_seen_before() -> None:
    """A chain whose fingerprint was learned is known, the other is left to be read."""
    cache = ListingCache()
    cache.learn(OWN, "a", "-N EFA_INPUT\n")
    assert cache.known({OWN: "a", HOOK: "b"}) == {OWN: "-N EFA_INPUT\n"}
    assert (cache.hits, cache.misses) == (0, 1)


def test_a_missing_chain_is_remembered_as_missing() -> None:
    """A chain that did not exist is known as None, not unknown."""
    cache = ListingCache()
    cache.learn(OWN, "missing", None)
    assert cache.known({OWN: "missing"}) == {OWN: None}
    assert cache.hits == 1


def test_the_oldest_state_of_a_chain_is_forgotten() -> None:
    """Beyond `size` states of one chain, the least recently used one goes."""
    cache = ListingCache(size=2)
    for fp in ("a", "b"):
        cache.learn(HOOK, fp, fp)
    assert cache.known({HOOK: "a"}) == {HOOK: "a"}  # a is now the most recent
    cache.learn(HOOK, "c", "c")
    assert cache.known({HOOK: "b"}) == {}
    assert cache.known({HOOK: "a"}) == {HOOK: "a"}
