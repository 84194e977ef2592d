"""The event decoders: nf_tables netlink datagrams and link state changes, without a kernel."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from efa_guard.config import Config, parse
from efa_guard.events import Event, Trigger
from efa_guard.policy import any_interface_matches as matches
from efa_guard.sources.links import IFF_LOWER_UP, IFF_UP, LinkTracker, LinkWatcher
from efa_guard.sources.nft import (
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_DELCHAIN,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWRULE,
    Decoder,
    NftWatcher,
)
from efa_guard.sources.retry import Stopped, resubscribe

MINIMAL = """
interface = "eth0"
families = ["ipv4"]
[[chain]]
name = "EFA_INPUT"
table = "filter"
hook = "INPUT"
[[chain.rule]]
protocol = "tcp"
ports = [3306]
"""


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(msg: int, attrs: bytes, family: int = socket.AF_INET) -> bytes:
    """One nfnetlink message of the nftables subsystem."""
    body = struct.pack("=BBH", family, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, 0, 0, 0) + body


def rule(table: str, chain: str, family: int = socket.AF_INET) -> bytes:
    """A NEWRULE for table/chain (expressions omitted)."""
    return message(
        NFT_MSG_NEWRULE, nla(1, table.encode() + b"\0") + nla(2, chain.encode() + b"\0"), family
    )


def gen(pid: int, name: str) -> bytes:
    """The NEWGEN that ends a transaction."""
    attrs = (
        nla(1, struct.pack(">I", 7))
        + nla(2, struct.pack(">I", pid))
        + nla(3, name.encode() + b"\0")
    )
    return message(NFT_MSG_NEWGEN, attrs, family=0)


def decoder(own: set[int] | None = None) -> Decoder:
    """A decoder for the default policy's tables."""
    mine = own or set()
    return Decoder(frozenset({socket.AF_INET, 1}), frozenset({"filter", "raw"}), mine.__contains__)


def test_transaction_on_our_table_is_one_event_naming_the_process() -> None:
    """Rule messages then NEWGEN: one rule-change event with the committer's pid and name."""
    (event,) = decoder().feed(
        rule("filter", "INPUT") + rule("filter", "INPUT") + gen(42, "iptables-nft")
    )
    assert event.trigger is Trigger.RULE_CHANGE
    assert (event.pid, event.process) == (42, "iptables-nft")
    assert "INPUT" in event.detail


def test_kube_chains_label_kube_proxy() -> None:
    """A transaction touching KUBE-* chains is kube-proxy activity."""
    (event,) = decoder().feed(rule("filter", "KUBE-SERVICES") + gen(7, "iptables-nft-re"))
    assert event.trigger is Trigger.KUBE_PROXY


def test_foreign_tables_families_and_own_writes_are_ignored() -> None:
    """nat-only resyncs, IPv6 tables and our own restores cause no check at all."""
    d = decoder(own={99})
    assert d.feed(rule("nat", "KUBE-SVC-X") * 100 + gen(1, "kube-proxy")) == []
    assert d.feed(rule("filter", "INPUT", family=socket.AF_INET6) + gen(1, "ip6tables")) == []
    assert d.feed(rule("filter", "EFA_INPUT") + gen(99, "iptables-nft-re")) == []


def test_transactions_split_across_datagrams() -> None:
    """A transaction may span datagrams; each NEWGEN closes one."""
    d = decoder()
    assert d.feed(rule("raw", "PREROUTING")) == []
    chain_del = message(NFT_MSG_DELCHAIN, nla(1, b"raw\0") + nla(3, b"EFA_NODEPORTS\0"))
    events = d.feed(chain_del + gen(5, "nft") + rule("filter", "X") + gen(6, "nft"))
    assert [e.pid for e in events] == [5, 6]
    assert "EFA_NODEPORTS" in events[0].detail


def test_truncated_input_is_ignored() -> None:
    """A short or corrupt datagram yields nothing and does not raise."""
    d = decoder()
    whole = rule("filter", "INPUT") + gen(1, "x")
    for cut in range(len(whole)):
        d.feed(whole[:cut])
    assert d.feed(b"\xff" * 40) == []


def test_link_tracker_describes_changes_of_managed_interfaces() -> None:
    """Down, up, carrier, rename, delete and re-create of eth0 are named; others ignored."""
    t = LinkTracker(["eth0"])
    up = IFF_UP | IFF_LOWER_UP
    assert t.update("RTM_NEWLINK", 2, "eth0", up) == "eth0 appeared (up, carrier)"
    assert t.update("RTM_NEWLINK", 2, "eth0", up) is None
    assert t.update("RTM_NEWLINK", 2, "eth0", IFF_UP) == "eth0 carrier lost"
    assert t.update("RTM_NEWLINK", 2, "eth0", 0) == "eth0 down"
    assert t.update("RTM_NEWLINK", 2, "eth0", up) == "eth0 up"
    assert t.update("RTM_NEWLINK", 2, "mgmt0", up) == "eth0 renamed to mgmt0"
    assert t.update("RTM_NEWLINK", 3, "eth1", up) is None
    assert t.update("RTM_DELLINK", 3, "eth1", 0) is None
    assert t.update("RTM_NEWLINK", 4, "eth0", 0) == "eth0 appeared (down)"
    assert t.update("RTM_DELLINK", 4, "eth0", 0) == "eth0 deleted"


def test_wildcard_interfaces_match_like_iptables() -> None:
    """A trailing + matches by prefix, as in iptables -i."""
    assert matches("eth7", ["eth+"])
    assert not matches("veth7", ["eth+"])
    assert matches("eth0", ["eth0"])
    assert not matches("eth00", ["eth0"])


def test_events_name_the_families_they_touch() -> None:
    """An ip6tables change concerns ipv6 only; an inet table concerns both."""
    d = Decoder(
        frozenset({socket.AF_INET, socket.AF_INET6, 1}), frozenset({"filter"}), set().__contains__
    )
    (six,) = d.feed(rule("filter", "INPUT", family=socket.AF_INET6) + gen(3, "ip6tables-nft"))
    assert six.families == frozenset({"ipv6"})
    (both,) = d.feed(rule("filter", "INPUT", family=1) + gen(4, "nft"))
    assert both.families is None


class FakeNetlink:
    """A socket whose recv plays a script: bytes are returned, exceptions raised."""

    def __init__(self, script: list[bytes | OSError], stopped: threading.Event) -> None:
        self.script = script
        self.stopped = stopped
        self.closed = False

    def recv(self, _size: int, /) -> bytes:
        """The next scripted datagram or error; stops the watcher when done."""
        if not self.script:
            self.stopped.set()
            return b""
        item = self.script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def close(self) -> None:
        """Remember the close."""
        self.closed = True


def config(text: str = MINIMAL) -> Config:
    """A parsed config."""
    return parse(text, path=Path("/etc/efa-guard/efa-guard.toml"))


def scripted(
    scripts: list[list[bytes | OSError]], events: list[Event]
) -> tuple[NftWatcher, list[FakeNetlink]]:
    """A watcher whose successive subscriptions play the given scripts."""
    stopped = threading.Event()
    sockets = [FakeNetlink(s, stopped) for s in scripts]
    handed = iter(sockets)
    watcher = NftWatcher(
        config(), own_pid=lambda _pid: False, emit=events.append, open_socket=lambda: next(handed)
    )
    watcher.stopped = stopped
    watcher.sock = next(handed)
    return watcher, sockets


def test_enobufs_reopens_the_socket_and_asks_for_a_full_check() -> None:
    """After ENOBUFS the socket is re-created, an overflow event is emitted, reading goes on."""
    events: list[Event] = []
    watcher, (first, second) = scripted(
        [
            [rule("filter", "INPUT"), OSError(errno.ENOBUFS, "No buffer space")],
            [rule("filter", "INPUT") + gen(9, "iptables-nft")],
        ],
        events,
    )
    watcher.run()
    assert first.closed
    assert not second.script
    assert [e.trigger for e in events] == [Trigger.OVERFLOW, Trigger.RULE_CHANGE]
    assert events[1].pid == 9  # the half-read transaction before the overflow was dropped
    assert watcher.overflows == 1


def test_other_socket_errors_resubscribe_instead_of_killing_the_thread() -> None:
    """Any socket error re-creates the subscription and asks for a full check."""
    events: list[Event] = []
    watcher, _ = scripted([[OSError(errno.EBADF, "Bad file descriptor")], []], events)
    watcher.run()
    assert [e.trigger for e in events] == [Trigger.OVERFLOW]
    assert "re-subscribed" in events[0].detail
    assert watcher.overflows == 0


def test_failed_resubscriptions_are_retried_and_reported() -> None:
    """Subscribing fails twice (EMFILE), then works: both failures are reported, in order."""
    stopped = threading.Event()
    outcomes: list[FakeNetlink | OSError] = [
        OSError(errno.EMFILE, "Too many open files"),
        OSError(errno.EMFILE, "Too many open files"),
        FakeNetlink([], stopped),
    ]

    def subscribe() -> FakeNetlink:
        item = outcomes.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    failed: list[int] = []
    sock = resubscribe(
        subscribe, stopped=stopped, failed=lambda n, _e: failed.append(n), first_wait=0.001
    )
    assert isinstance(sock, FakeNetlink)
    assert failed == [1, 2]
    assert not outcomes


def test_resubscribing_ends_promptly_on_stop() -> None:
    """A subscription that never works is retried until stop(), which ends the wait at once."""
    stopped = threading.Event()
    attempts: list[int] = []

    def never() -> None:
        attempts.append(1)
        if len(attempts) == 3:
            threading.Timer(0.05, stopped.set).start()
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    began = time.monotonic()
    with pytest.raises(Stopped):
        resubscribe(never, stopped=stopped, first_wait=0.001, max_wait=60.0)
    assert time.monotonic() - began < 5.0
    assert len(attempts) >= 3


def test_nft_watcher_follows_a_reloaded_config() -> None:
    """After reconfigure, the new table and family count and the old ones no longer do."""
    events: list[Event] = []
    watcher = NftWatcher(config(), own_pid=lambda _pid: False, emit=events.append)
    six = rule("raw", "PREROUTING", family=socket.AF_INET6) + gen(3, "ip6tables-nft")
    assert watcher.decoder.feed(six) == []
    raw = MINIMAL.replace('"filter"', '"raw"').replace('"INPUT"', '"PREROUTING"')
    watcher.reconfigure(config(raw.replace('["ipv4"]', '["ipv6"]')))
    (event,) = watcher.decoder.feed(six)
    assert event.families == frozenset({"ipv6"})
    assert watcher.decoder.feed(rule("filter", "INPUT") + gen(4, "iptables-nft")) == []


def test_link_watcher_follows_a_reloaded_config() -> None:
    """After reconfigure, the new interface is tracked and the old one is not."""
    watcher = LinkWatcher(config(), emit=lambda _e: None)
    up = IFF_UP | IFF_LOWER_UP
    assert watcher.tracker.update("RTM_NEWLINK", 2, "mgmt0", up) is None
    watcher.reconfigure(config(MINIMAL.replace('"eth0"', '"mgmt+"')))
    assert watcher.tracker.update("RTM_NEWLINK", 2, "mgmt0", 0) == "mgmt0 down"
    assert watcher.tracker.update("RTM_NEWLINK", 3, "eth0", up) is None
