"""The nf_tables event filter program: within the kernel's limits and accepted by it."""

from __future__ import annotations

import socket

import pytest

from efa_guard.sources import nftfilter

TABLES = ("filter", "raw", "mangle", "nat", "security")


@pytest.mark.parametrize("count", range(len(TABLES) + 1))
def test_program_fits_the_kernel_limit_for_any_table_set(count: int) -> None:
    """Up to all five iptables tables: at most 4096 instructions, each jump inside the program."""
    code = nftfilter.program(TABLES[:count])
    assert len(code) <= nftfilter.BPF_MAXINSNS
    for n, (op, jt, jf, k) in enumerate(code):
        if op == nftfilter.JMP | nftfilter.JA:
            assert n + 1 + k < len(code)
        elif op & 0x07 == nftfilter.JMP:
            assert n + 1 + max(jt, jf) < len(code)
    assert code[-1] == (nftfilter.RET, 0, 0, nftfilter.ACCEPT)  # past the last message: keep


def test_the_walk_covers_a_page_of_small_messages() -> None:
    """For filter and raw, a page of 64-byte messages is walked whole, not kept unread."""
    code = nftfilter.program(["filter", "raw"])
    blocks = sum(1 for c in code if c == (nftfilter.RET, 0, 0, nftfilter.DROP))
    assert blocks >= 4096 // 64


def test_the_kernel_accepts_the_program() -> None:
    """SO_ATTACH_FILTER on a netlink socket takes it (the kernel checks every jump and load)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    try:
        assert nftfilter.attach(sock, TABLES) > 100
        assert nftfilter.attach(sock, ["filter"]) > 100  # a reload replaces it
    finally:
        sock.close()


def test_a_name_too_long_to_jump_over_is_refused_before_the_kernel() -> None:
    """A table name whose checks cannot be jumped over raises ValueError (the watcher goes on)."""
    with pytest.raises(ValueError, match="out of range"):
        nftfilter.program(["t" * 600])


WATCHED = {"filter": ["EFA_INPUT", "INPUT"], "raw": ["EFA_NODEPORTS", "PREROUTING"]}


def test_chain_tests_fit_and_still_walk_a_kube_proxy_datagram() -> None:
    """With the default policy's watched chains: within the limit, a dozen messages walked."""
    code = nftfilter.program(["filter", "raw"], WATCHED)
    assert len(code) <= nftfilter.BPF_MAXINSNS
    assert code != nftfilter.program(["filter", "raw"])
    blocks = sum(1 for c in code if c == (nftfilter.RET, 0, 0, nftfilter.DROP))
    assert blocks >= 12  # kube-proxy's datagrams hold ~5 rule messages


def test_too_many_watched_chains_filter_on_tables_only() -> None:
    """Chain tests that would not fit a message's block: the program filters on tables alone."""
    many = {"filter": [f"EFA_CHAIN_NUMBER_{i}" for i in range(40)]}
    assert nftfilter.program(["filter"], many) == nftfilter.program(["filter"])


def test_the_kernel_accepts_the_program_with_chains() -> None:
    """SO_ATTACH_FILTER takes the chain-aware program, and a reload's replacement."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    try:
        assert nftfilter.attach(sock, ["filter", "raw"], WATCHED) > 100
        assert nftfilter.attach(sock, ["filter"], {"filter": ["INPUT"]}) > 100
    finally:
        sock.close()
