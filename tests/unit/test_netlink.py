"""Netlink framing: messages, attributes, alignment, errors and the end of a dump, on bytes."""

from __future__ import annotations

import errno
import struct

import pytest

from efa_guard import netlink


def test_messages_walk_padded_messages_in_order() -> None:
    """Two messages with odd-length bodies are found with their headers and payload bounds."""
    data = netlink.pack(16, b"abc", flags=1, seq=7, portid=9) + netlink.pack(17, b"hello")
    found = list(netlink.messages(data))
    assert [(k, f, s, p) for k, f, s, p, _lo, _hi in found] == [(16, 1, 7, 9), (17, 0, 0, 0)]
    (_, _, _, _, lo1, hi1), (_, _, _, _, lo2, hi2) = found
    assert (data[lo1:hi1], data[lo2:hi2]) == (b"abc", b"hello")
    assert lo2 == 20 + netlink.HEADER.size  # the first message was padded from 19 to 20 bytes


def test_attributes_are_aligned_and_types_masked() -> None:
    """Attributes are padded to 4 bytes; NLA_F_NESTED and NLA_F_NET_BYTEORDER are dropped."""
    raw = netlink.pack_attr(1, b"filter\0") + netlink.pack_attr(0x8000 | 2, b"\1\2\3\4\5")
    assert len(raw) == 12 + 12
    found = [(k, raw[lo:hi]) for k, lo, hi in netlink.attrs(raw, 0, len(raw))]
    assert found == [(1, b"filter\0"), (2, b"\1\2\3\4\5")]
    assert netlink.find_attrs(raw, 0, len(raw), (2,)) == {2: b"\1\2\3\4\5"}
    assert netlink.cstring(netlink.find_attrs(raw, 0, len(raw), (1,))[1]) == "filter"
    assert netlink.cstring(None) == ""
    assert netlink.first_attr(raw, 0, len(raw)) == (1, b"filter\0")
    assert netlink.first_attr(raw, 0, 10) is None  # cut short


def test_truncated_and_corrupt_input_ends_the_walk() -> None:
    """A cut message, an attribute longer than its message or a zero length stops, never raises."""
    whole = netlink.pack(16, netlink.pack_attr(1, b"abcdefgh"))
    for cut in range(len(whole)):
        for kind, _f, _s, _p, lo, hi in netlink.messages(whole[:cut]):
            assert kind == 16
            assert hi <= cut
            assert all(h <= hi for _k, _l, h in netlink.attrs(whole, lo, hi))
    assert list(netlink.messages(struct.pack("=IHHII", 3, 16, 0, 0, 0))) == []
    assert list(netlink.attrs(struct.pack("=HH", 0, 1) * 4, 0, 16)) == []


def test_dump_part_stops_at_done_and_raises_on_error() -> None:
    """Data then NLMSG_DONE ends the dump; an NLMSG_ERROR names its errno; an ACK ends it."""
    data = netlink.pack(20, b"x") + netlink.pack(netlink.NLMSG_DONE, struct.pack("=i", 0))
    found, done = netlink.dump_part(data)
    assert done
    assert [m[0] for m in found] == [20]
    assert netlink.dump_part(netlink.pack(20, b"x")) == ([(20, 0, 0, 0, 16, 17)], False)
    refused = netlink.pack(netlink.NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + b"\0" * 16)
    with pytest.raises(netlink.DumpError) as caught:
        netlink.dump_part(refused)
    assert caught.value.errno == errno.EPERM
    assert "not permitted" in str(caught.value)
    ack = netlink.pack(netlink.NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)
    assert netlink.dump_part(ack) == ([], True)


class Replies:
    """A socket that records the request and answers with scripted datagrams."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.sent: list[bytes] = []

    def send(self, data: bytes, /) -> int:
        """Record the request."""
        self.sent.append(data)
        return len(data)

    def recv(self, _size: int, /) -> bytes:
        """The next reply; b"" once the script is over."""
        return self.replies.pop(0) if self.replies else b""


def test_dump_reads_datagrams_until_done() -> None:
    """A dump spread over two datagrams yields every data message, then ends at DONE."""
    sock = Replies(
        [
            netlink.pack(20, b"a") + netlink.pack(20, b"b"),
            netlink.pack(20, b"c") + netlink.pack(netlink.NLMSG_DONE, b"\0" * 4),
            netlink.pack(20, b"never read"),
        ]
    )
    request = netlink.pack(20, b"req", flags=netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP)
    got = [data[lo:hi] for data, (_k, _f, _s, _p, lo, hi) in netlink.dump(sock, request)]
    assert got == [b"a", b"b", b"c"]
    assert sock.sent == [request]
    assert len(sock.replies) == 1


def test_dump_cut_short_is_an_error() -> None:
    """A socket that ends before NLMSG_DONE raises instead of returning a partial answer."""
    with pytest.raises(netlink.DumpError, match="middle of a dump"):
        list(netlink.dump(Replies([netlink.pack(20, b"a")]), b"req"))
