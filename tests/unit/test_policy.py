"""Port-set arithmetic and the multiport split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efa_guard.policy import (
    MULTIPORT_SLOTS,
    PortRange,
    multiport_chunks,
    normalize,
    subtract,
)


def ports_of(ranges: tuple[PortRange, ...]) -> set[int]:
    """Expand ranges to the set of ports they cover."""
    return {p for r in ranges for p in range(r.first, r.last + 1)}


small_range = st.tuples(st.integers(1, 300), st.integers(0, 40)).map(
    lambda t: PortRange(t[0], min(t[0] + t[1], 65535))
)


def test_seed_tcp_rule_is_reproduced() -> None:
    """1024-65535 minus 6514 and 8078 is exactly the seed's multiport list."""
    got = subtract([PortRange(1024, 65535)], [PortRange(6514, 6514), PortRange(8078, 8078)])
    assert ",".join(map(str, got)) == "1024:6513,6515:8077,8079:65535"


@given(st.lists(small_range, max_size=12))
def test_normalize_keeps_the_port_set(ranges: list[PortRange]) -> None:
    """Normalizing covers the same ports, sorted, with no overlap or adjacency."""
    got = normalize(ranges)
    assert ports_of(got) == ports_of(tuple(ranges))
    for a, b in itertools.pairwise(got):
        assert a.last + 1 < b.first


@given(st.lists(small_range, max_size=8), st.lists(small_range, max_size=8))
def test_subtract_is_set_difference(keep: list[PortRange], cut: list[PortRange]) -> None:
    """subtract() removes exactly the cut ports."""
    assert ports_of(subtract(keep, cut)) == ports_of(tuple(keep)) - ports_of(tuple(cut))


@given(st.lists(small_range, max_size=40))
def test_multiport_chunks_fit_and_keep_order(ranges: list[PortRange]) -> None:
    """Each chunk fits multiport's 15 slots and the chunks concatenate to the input."""
    norm = normalize(ranges)
    chunks = multiport_chunks(norm)
    assert tuple(r for c in chunks for r in c) == norm
    for c in chunks:
        assert 0 < sum(r.multiport_slots for r in c) <= MULTIPORT_SLOTS


def test_port_range_rejects_nonsense() -> None:
    """A reversed or out-of-range PortRange cannot be built."""
    with pytest.raises(ValueError, match="invalid port range"):
        PortRange(10, 5)
    with pytest.raises(ValueError, match="invalid port range"):
        PortRange(0, 5)
