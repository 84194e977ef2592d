"""Which matches always hold, never hold, or cannot be known for a packet from outside."""

from __future__ import annotations

import shlex
import time

import pytest

from efa_guard.matches import Context, Packet, Probe, decide
from efa_guard.reach import Evaluator, NotEvaluatedError
from efa_guard.reach_walk import foreign_host
from efa_guard.ruletext import compile_rule, split

PROBE = Probe("ipv4", "tcp", 80, "eth0")
NODE = frozenset({"192.168.0.2", "198.18.0.2"})


def judge(matches: str, *, table: str = "filter", pkt: Packet | None = None) -> bool | None:
    """decide() on `-A X <matches> -j DROP` for a new tcp/80 connection on eth0."""
    rule = compile_rule(1, f"-A X {matches} -j DROP")
    return decide(rule, PROBE, pkt or Packet(), Context(table, NODE))


@pytest.mark.parametrize(
    "matches",
    [
        "-m recent --set --name KUBE-SEP-X --mask 255.255.255.255 --rsource",
        '-m comment --comment "a b c"',
        "-m nfacct --nfacct-name localhost_nps_accepted_pkts",
        "! -s 127.0.0.0/8",
        "-m addrtype --dst-type LOCAL",
        "-m addrtype ! --src-type LOCAL",
        "-m conntrack --ctstate NEW",
        "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT",
        "-m mark ! --mark 0x4000/0x4000",
        "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN",
        "-s 0.0.0.0/0 -d 0.0.0.0/0",
        "-i eth+",
    ],
)
def test_always_true(matches: str) -> None:
    """These hold for every new connection from outside."""
    assert judge(matches) is True


@pytest.mark.parametrize(
    "matches",
    [
        "-s 127.0.0.0/8",
        "-d 127.0.0.0/8",
        "-s ::1/128",
        "-m addrtype --src-type LOCAL",
        "-m addrtype --dst-type UNICAST",
        "-d 172.30.0.41/32",
        "-m mark --mark 0x4000/0x4000",
        "-f",
        "-i lo",
        "-p udp",
        "-m multiport --dports 1:79,81:65535",
    ],
)
def test_never_true(matches: str) -> None:
    """No new connection arriving on eth0 matches these."""
    assert judge(matches) is False


@pytest.mark.parametrize(
    "matches",
    [
        "-m recent --name KUBE-SEP-X --rcheck --seconds 10800 --reap",
        "-s 10.0.0.0/8",
        "-m statistic --mode random --probability 0.5",
        "-m limit --limit 5/sec",
        "-m set --match-set allowed src",
        "--sport 1024:65535",
        "-d 192.168.0.0/16",
    ],
)
def test_undecidable(matches: str) -> None:
    """These depend on what the rules cannot tell (source, history, chance)."""
    assert judge(matches) is None


def test_a_false_match_wins_over_an_undecidable_one() -> None:
    """`-s 10/8 -i lo`: never, whatever the source."""
    assert judge("-s 10.0.0.0/8 -i lo") is False


def test_ctstate_follows_notrack_and_dnat() -> None:
    """UNTRACKED after a NOTRACK; DNAT once kube-proxy's DNAT ran; unknown in raw."""
    assert judge("-m conntrack --ctstate NEW", pkt=Packet(untracked=True)) is False
    assert judge("-m conntrack --ctstate DNAT", pkt=Packet(dnat=True)) is True
    assert judge("-m conntrack --ctstate NEW", table="raw") is None


@pytest.mark.parametrize(
    "line",
    [
        '-A X -m comment --comment "ns/svc:p80 cluster IP" -p tcp -j KUBE-SVC-X',
        '-A X -m comment --comment "say \\"hi\\" -p udp" -j LOG --log-prefix "x y"',
        "-A X -p tcp -m multiport --dports 1024:6513 -m conntrack --ctstate NEW -j DROP",
        '-A X -m string --string "a\\\\b" --algo bm -j DROP',
    ],
)
def test_the_fast_tokenizer_agrees_with_shlex(line: str) -> None:
    """`iptables -S` quoting: the fast split gives what a shell would."""
    assert split(line) == shlex.split(line)


def test_a_quoted_comment_cannot_fake_a_match() -> None:
    """`-p udp` inside a comment is text, not a protocol match."""
    rule = compile_rule(1, '-A X -m comment --comment "x -p udp -i lo" -p tcp -j DROP')
    assert rule.protocol is not None
    assert rule.protocol.value == "tcp"
    assert rule.interface is None


def big_chain(count: int, last: str) -> dict[tuple[str, str], list[str]]:
    """INPUT jumps to BIG: `count` kube-proxy REJECTs for ClusterIPs, then `last`."""
    rules = [
        f'-A BIG -d 10.96.{i >> 8 & 255}.{i & 255}/32 -p tcp -m comment --comment "ns/s{i} '
        'has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable'
        for i in range(count)
    ]
    return {
        ("filter", "INPUT"): ["-P INPUT ACCEPT", "-A INPUT -j BIG"],
        ("filter", "BIG"): ["-N BIG", *rules, f"-A BIG {last}"],
    }


def test_the_deciding_rule_after_20k_others_is_found() -> None:
    """20k REJECTs for addresses the node does not have, then a DROP: rule 20001 decides."""
    chains = big_chain(20000, "-p tcp -m tcp --dport 80 -j DROP")
    ev = Evaluator(fetch=lambda t, c: chains.get((t, c)), family="ipv4", addresses=NODE)
    v = ev.local(PROBE)
    assert not v.reachable
    assert v.by is not None
    assert (v.by.chain, v.by.position) == ("BIG", 20001)
    assert ev.local(Probe("ipv4", "tcp", 81, "eth0")).reachable


def test_many_undecidable_drops_are_named_briefly() -> None:
    """Unknown node addresses: 2000 caveats, three named, the rest counted."""
    chains = big_chain(2000, "-p udp -j DROP")
    v = Evaluator(fetch=lambda t, c: chains.get((t, c)), family="ipv4").local(PROBE)
    assert v.reachable
    assert len(v.caveats) == 2000
    assert v.reason.endswith("; and 1997 more)")


def test_a_spent_budget_is_reported_not_guessed() -> None:
    """Past the deadline, the walk stops: not evaluated, counted as reachable."""
    chains = big_chain(5000, "-p tcp -j DROP")
    ev = Evaluator(
        fetch=lambda t, c: chains.get((t, c)),
        family="ipv4",
        addresses=NODE,
        deadline=time.monotonic() - 1,
    )
    v = ev.local(PROBE)
    assert v.reachable
    assert not v.evaluated
    assert v.reason.startswith("not evaluated (the time budget ran out after 1024 rules)")


def test_an_unreadable_chain_in_time_is_reported() -> None:
    """A fetch that gives up (the check's budget) makes the verdict `not evaluated`."""

    def fetch(table: str, chain: str) -> list[str] | None:
        if chain == "BIG":
            msg = "reading ipv4 filter/BIG did not finish within the 0.05 s budget"
            raise NotEvaluatedError(msg)
        return big_chain(1, "-j DROP").get((table, chain))

    v = Evaluator(fetch=fetch, family="ipv4").local(PROBE)
    assert (v.reachable, v.evaluated) == (True, False)
    assert "reading ipv4 filter/BIG did not finish within the 0.05 s budget" in v.reason


@pytest.mark.parametrize(
    ("line", "skipped"),
    [
        ("-A BIG -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j REJECT", True),
        ('-A BIG -d 10.96.0.2/32 -p tcp -m comment --comment "x" -j ACCEPT', True),
        ("-A BIG -d 2001:db8::5/128 -p tcp -j DROP", True),
        ("-A BIG -d 192.168.0.2/32 -p tcp -j DROP", False),  # the node's own
        ("-A BIG -d 127.0.0.1/32 -j DROP", False),  # loopback: decide's own rule
        ("-A BIG ! -d 10.96.0.1/32 -j DROP", False),  # negated
        ("-A BIG -d 10.96.0.0/12 -j DROP", False),  # a network, not a host
        ("-A BIG -s 10.0.0.1/32 -d 10.96.0.1/32 -j DROP", False),  # not first: the slow path
        ("-A BIG -j DROP", False),
    ],
)
def testforeign_host_rules_are_skipped_exactly_where_decide_says_false(
    line: str, *, skipped: bool
) -> None:
    """The walk's fast test skips a line only where decide() answers False for it."""
    foreign = foreign_host(NODE)
    assert foreign is not None
    assert foreign(line) is skipped
    if skipped:
        probe = PROBE if ":" not in line else Probe("ipv6", "tcp", 80, "eth0")
        assert decide(compile_rule(1, line), probe, Packet(), Context("filter", NODE)) is False
    assert foreign_host(None) is None  # the node's addresses unknown: no shortcut
