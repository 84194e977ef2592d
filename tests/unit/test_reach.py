"""The reachability evaluator on hand-written `iptables -S` listings (no kernel)."""

from __future__ import annotations

from efa_guard.exposure import nodeports
from efa_guard.reach import Evaluator, Probe

RULES: dict[tuple[str, str], list[str]] = {
    ("raw", "PREROUTING"): ["-P PREROUTING ACCEPT", "-A PREROUTING -j EFA_NODEPORTS"],
    ("raw", "EFA_NODEPORTS"): [
        "-N EFA_NODEPORTS",
        "-A EFA_NODEPORTS -i eth0 -p tcp -m multiport --dports 30148,31672 -j DROP",
    ],
    ("filter", "INPUT"): [
        "-P INPUT ACCEPT",
        "-A INPUT -j EFA_INPUT",
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "k8s portals" -j KUBE-SERVICES',
        "-A INPUT -j KUBE-FIREWALL",
        "-A INPUT -s 10.9.9.9/32 -p tcp -m tcp --dport 8080 -j DROP",
        "-A INPUT -i lo -p tcp --dport 22 -j DROP",
    ],
    ("filter", "EFA_INPUT"): [
        "-N EFA_INPUT",
        (
            "-A EFA_INPUT -i eth0 -p tcp -m multiport --dports 1024:6513,6515:8077,8079:65535 "
            "-m conntrack --ctstate NEW -j DROP"
        ),
    ],
    ("filter", "KUBE-SERVICES"): [
        "-N KUBE-SERVICES",
        (
            '-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m comment --comment "x has no endpoints" '
            "-m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"
        ),
    ],
    ("filter", "KUBE-FIREWALL"): [
        "-N KUBE-FIREWALL",
        (
            "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate "
            "RELATED,ESTABLISHED,DNAT -j DROP"
        ),
        "-A KUBE-FIREWALL -p udp -j RETURN",
        "-A KUBE-FIREWALL -p udp --dport 53 -j DROP",
    ],
    ("filter", "FORWARD"): ["-P FORWARD DROP", "-A FORWARD -d 10.244.1.5/32 -j ACCEPT"],
    ("nat", "KUBE-NODEPORTS"): [
        "-N KUBE-NODEPORTS",
        (
            '-A KUBE-NODEPORTS -p tcp -m comment --comment "ns/rabbit:amqp" -m tcp --dport 31672 '
            "-j KUBE-EXT-RABBIT"
        ),
        (
            '-A KUBE-NODEPORTS -p tcp -m comment --comment "ns/web" -m tcp --dport 30080 '
            "-j KUBE-EXT-WEB"
        ),
    ],
    ("nat", "KUBE-EXT-RABBIT"): ["-N KUBE-EXT-RABBIT", "-A KUBE-EXT-RABBIT -j KUBE-SVC-RABBIT"],
    ("nat", "KUBE-SVC-RABBIT"): [
        "-N KUBE-SVC-RABBIT",
        "-A KUBE-SVC-RABBIT -m statistic --mode random --probability 0.5 -j KUBE-SEP-A",
        "-A KUBE-SVC-RABBIT -j KUBE-SEP-B",
    ],
    ("nat", "KUBE-SEP-A"): [
        "-N KUBE-SEP-A",
        "-A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.244.1.4:5672",
    ],
    ("nat", "KUBE-SEP-B"): [
        "-N KUBE-SEP-B",
        "-A KUBE-SEP-B -p tcp -j DNAT --to-destination 10.244.1.5:5672",
    ],
    ("nat", "KUBE-EXT-WEB"): [
        "-N KUBE-EXT-WEB",
        "-A KUBE-EXT-WEB -p tcp -j DNAT --to-destination 10.244.1.5:80",
    ],
}


def evaluator() -> Evaluator:
    """An evaluator over RULES."""
    return Evaluator(fetch=lambda t, c: RULES.get((t, c)), family="ipv4")


def tcp(port: int) -> Probe:
    """A new TCP connection on eth0."""
    return Probe("ipv4", "tcp", port, "eth0")


def test_our_chain_drops_and_says_which_rule() -> None:
    """3306 is dropped by EFA_INPUT rule 1, named in the reason."""
    v = evaluator().local(tcp(3306))
    assert not v.reachable
    assert v.by is not None
    assert (v.by.table, v.by.chain, v.by.position) == ("filter", "EFA_INPUT", 1)
    assert v.reason.startswith("dropped by ipv4 filter/EFA_INPUT rule 1: -A EFA_INPUT")


def test_exceptions_and_low_ports_are_reachable() -> None:
    """6514 passes everything; loopback-only and other-interface rules do not apply."""
    assert evaluator().local(tcp(6514)).reachable
    assert evaluator().local(tcp(22)).reachable


def test_unknown_match_is_a_caveat_not_a_verdict() -> None:
    """A DROP on a source address we cannot know: reachable, unless that rule matches."""
    v = evaluator().local(tcp(80))
    assert v.reachable
    assert "unless ipv4 filter/KUBE-SERVICES rule 1" in v.reason
    v = evaluator().local(Probe("ipv4", "tcp", 80, "eth1"))
    assert len(v.caveats) == 1


def test_return_ends_a_user_chain() -> None:
    """UDP returns from KUBE-FIREWALL before the DROP of 53."""
    assert evaluator().local(Probe("ipv4", "udp", 53, "eth0")).reachable


def test_nodeports_are_parsed_and_followed_to_the_pod() -> None:
    """kube-proxy's KUBE-NODEPORTS: the raw chain drops 31672; 30080 is DNATed and forwarded."""
    ev = evaluator()
    found = {n.port: n for n in nodeports(ev.chain("nat", "KUBE-NODEPORTS"))}
    assert set(found) == {31672, 30080}
    assert found[31672].service == "ns/rabbit:amqp"
    rabbit = ev.forwarded(tcp(31672))
    assert not rabbit.reachable
    assert "raw/EFA_NODEPORTS rule 1" in rabbit.reason
    web = ev.forwarded(tcp(30080))
    assert web.reachable
    assert web.reason == "DNAT to 10.244.1.5:80, forwarded"


def test_forward_policy_drop_is_a_verdict() -> None:
    """A DNAT to a pod the FORWARD chain does not accept is dropped by the policy."""
    RULES[("nat", "KUBE-EXT-X")] = [
        "-N KUBE-EXT-X",
        "-A KUBE-EXT-X -p tcp -j DNAT --to-destination 10.244.9.9:80",
    ]
    RULES[("nat", "KUBE-NODEPORTS")].append(
        "-A KUBE-NODEPORTS -p tcp -m tcp --dport 30090 -j KUBE-EXT-X"
    )
    try:
        v = evaluator().forwarded(tcp(30090))
    finally:
        del RULES[("nat", "KUBE-EXT-X")]
        RULES[("nat", "KUBE-NODEPORTS")].pop()
    assert not v.reachable
    assert v.reason == "dropped by ipv4 filter/FORWARD policy: -P FORWARD DROP"


def test_shallow_nodeport_stops_before_the_dnat() -> None:
    """The check's shallow mode: not dropped before the DNAT counts as reachable."""
    ev = evaluator()
    assert not ev.forwarded(tcp(31672), follow_dnat=False).reachable
    v = ev.forwarded(tcp(30080), follow_dnat=False)
    assert v.reachable
    assert v.reason == "nothing drops it before kube-proxy's DNAT"


def test_notrack_in_raw_defeats_a_ctstate_new_drop() -> None:
    """A raw-table NOTRACK for 3306 makes the `ctstate NEW` DROP miss: reachable."""
    RULES[("raw", "PREROUTING")].append("-A PREROUTING -i eth0 -p tcp --dport 3306 -j CT --notrack")
    try:
        v = evaluator().local(tcp(3306))
        w = evaluator().local(tcp(3307))
    finally:
        RULES[("raw", "PREROUTING")].pop()
    assert v.reachable
    assert not w.reachable


def test_an_undecidable_accept_before_the_drop_opens_a_path() -> None:
    """An ACCEPT on a source we cannot know, before the drop: reachable when it matches."""
    RULES[("filter", "INPUT")].insert(1, "-A INPUT -s 10.0.0.0/8 -j ACCEPT")
    try:
        v = evaluator().local(tcp(3306))
    finally:
        RULES[("filter", "INPUT")].pop(1)
    assert v.reachable
    assert v.reason.startswith("reachable when ipv4 filter/INPUT rule 1: -A INPUT -s 10.0.0.0/8")
    assert "; otherwise dropped by ipv4 filter/EFA_INPUT rule 1" in v.reason
    assert [c.position for c in v.caveats] == [1]


def test_the_mark_is_followed_from_zero() -> None:
    """A packet arrives with mark 0: `--mark 0x4000` misses until a MARK rule sets it."""
    accept = "-A INPUT -m mark --mark 0x4000/0x4000 -j ACCEPT"
    mark = "-A PREROUTING -p tcp -m tcp --dport 3306 -j MARK --set-xmark 0x4000/0x4000"
    RULES[("filter", "INPUT")].insert(1, accept)
    try:
        unmarked = evaluator().local(tcp(3306))
        RULES[("raw", "PREROUTING")].append(mark)
        marked = evaluator().local(tcp(3306))
        other = evaluator().local(tcp(3307))
    finally:
        RULES[("filter", "INPUT")].pop(1)
        RULES[("raw", "PREROUTING")].remove(mark)
    assert not unmarked.reachable
    assert marked.reachable
    assert not other.reachable


def test_dnat_destinations_in_every_form() -> None:
    """IPv4 with port, bare IPv6, a range, a port alone: each judged, none crashes the walk."""
    # FORWARD accepts 10.244.1.5 only; an unknown destination meets that ACCEPT undecided.
    unknown = "reachable when ipv4 filter/FORWARD rule 1: -A FORWARD -d 10.244.1.5/32 -j ACCEPT"
    for dest, reachable, reason in (
        ("10.244.1.5:80", True, "DNAT to 10.244.1.5:80, forwarded"),
        ("fd00::5", False, "dropped by ipv4 filter/FORWARD policy: -P FORWARD DROP"),
        ("10.244.1.5-10.244.1.9:80", True, unknown),
        (":8080", True, unknown),
    ):
        RULES[("nat", "KUBE-NODEPORTS")].append(
            f"-A KUBE-NODEPORTS -p tcp -m tcp --dport 30095 -j DNAT --to-destination {dest}"
        )
        try:
            v = evaluator().forwarded(tcp(30095))
        finally:
            RULES[("nat", "KUBE-NODEPORTS")].pop()
        assert v.reachable is reachable, dest
        assert v.reason.startswith(reason), (dest, v.reason)
