"""The kernel-side filter of nf_tables events drops what the decoder would drop, nothing more."""

from __future__ import annotations

import json
import subprocess
import sys

from tools.sandbox import Sandbox

WATCHED = {"filter": ["EFA_INPUT", "INPUT"], "raw": ["EFA_NODEPORTS", "PREROUTING"]}

# Three subscriptions in the guard namespace: none filtered, one filtered on our tables, one
# on our tables and watched chains. After "go" on stdin all are drained; the plain one is
# decoded twice (as each filtered one is: on tables, and on tables and chains).
LISTENER = """
import json, sys
from efa_guard.sources.nft import subscribe
from efa_guard.sources.nftdecode import Decoder
from efa_guard.sources.nftfilter import attach

WATCHED = json.loads(sys.argv[1])
plain, tables, watched = subscribe(), subscribe(), subscribe()
attach(tables, ["filter", "raw"])
attach(watched, ["filter", "raw"], WATCHED)
print("ready", flush=True)
sys.stdin.readline()

def drain(sock):
    sock.settimeout(0.5)
    buffer, got = bytearray(1 << 20), []
    while True:
        try:
            size = sock.recv_into(buffer)
        except TimeoutError:
            return got
        got.append(bytes(buffer[:size]))

def decode(datagrams, chains):
    decoder = Decoder(frozenset({1, 2, 10}), frozenset({"filter", "raw"}), lambda pid: False,
                      chains=chains)
    events = []
    for data in datagrams:
        for e in decoder.feed(data):
            events.append([e.trigger.value, e.detail, sorted(e.tables or ()),
                           None if e.families is None else sorted(e.families)])
    return events

got = {name: drain(sock) for name, sock in
       (("plain", plain), ("tables", tables), ("watched", watched))}
print(json.dumps({
    "datagrams": {name: len(d) for name, d in got.items()},
    "plain_tables": decode(got["plain"], None),
    "tables": decode(got["tables"], None),
    "plain_watched": decode(got["plain"], WATCHED),
    "watched": decode(got["watched"], WATCHED),
}))
"""


def _restore(box: Sandbox, text: str) -> None:
    box.run(["iptables-nft-restore", "--noflush"], input=text)


def _rules(chain: str, count: int, target: str = "RETURN") -> str:
    return "".join(
        f"-A {chain} -s 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32 -j {target}\n"
        for i in range(count)
    )


def _scenario(box: Sandbox) -> None:
    """Bursts and single writes in our tables, others, our chains and kube-proxy's."""
    # A 3000-rule burst in nat alone: nothing of ours.
    _restore(box, "*nat\n:KUBE-BURST - [0:0]\n" + _rules("KUBE-BURST", 3000) + "COMMIT\n")
    # One transaction: many nat rules, then chains of kube-proxy's in filter (shared datagrams).
    _restore(
        box,
        "*nat\n:KUBE-MIX - [0:0]\n"
        + _rules("KUBE-MIX", 40)
        + "COMMIT\n*filter\n:KUBE-FORWARD - [0:0]\n:KUBE-SERVICES - [0:0]\n"
        + "-A KUBE-FORWARD -j ACCEPT\nCOMMIT\n",
    )
    # A rule in INPUT first, then nat.
    _restore(
        box,
        "*filter\n-A INPUT -s 198.18.0.1/32 -j ACCEPT\nCOMMIT\n*nat\n"
        + _rules("KUBE-MIX", 40)
        + "COMMIT\n",
    )
    box.run(["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT"])
    box.run(["iptables-nft", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"])
    box.run(["ip6tables-nft", "-A", "INPUT", "-s", "2001:db8::1", "-j", "ACCEPT"])
    box.run(["iptables-nft", "-D", "INPUT", "-s", "198.18.0.1/32", "-j", "ACCEPT"])
    box.run(
        ["nft", "add table inet filter; add chain inet filter guarded; delete table inet filter"]
    )
    box.run(["iptables-nft", "-t", "nat", "-F", "KUBE-BURST"])
    # kube-proxy's resync of its own (existing) chain in filter: 2000 rules, none in ours.
    _restore(
        box,
        "*filter\n:KUBE-SERVICES - [0:0]\n" + _rules("KUBE-SERVICES", 2000, "REJECT") + "COMMIT\n",
    )
    # Its jump from INPUT with its chain, in one transaction: the jump names KUBE-FIREWALL.
    _restore(
        box,
        "*filter\n:KUBE-FIREWALL - [0:0]\n"
        + _rules("KUBE-FIREWALL", 30, "DROP")
        + "-I INPUT 1 -j KUBE-FIREWALL\nCOMMIT\n",
    )
    # A chain of ours renamed away: announced under its new name, a chain message: it counts.
    box.run(["iptables-nft", "-N", "EFA_INPUT"])
    box.run(["iptables-nft", "-E", "EFA_INPUT", "GONE"])


def test_filtered_events_equal_the_decoders_own_with_far_fewer_datagrams(box: Sandbox) -> None:
    """On tables, and on tables and watched chains: the events of the decoder alone, less data."""
    child = subprocess.Popen(
        ["ip", "netns", "exec", box.guard, sys.executable, "-c", LISTENER, json.dumps(WATCHED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        _scenario(box)
        out, _ = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    seen = json.loads(out)
    assert seen["tables"] == seen["plain_tables"]
    assert seen["watched"] == seen["plain_watched"]
    on_tables = seen["tables"]
    assert [(e[0], e[2]) for e in on_tables] == [
        ("kube-proxy", ["filter"]),  # KUBE-FORWARD, KUBE-SERVICES
        ("rule-change", ["filter"]),  # INPUT
        ("rule-change", ["raw"]),
        ("rule-change", ["filter"]),  # ip6 INPUT
        ("rule-change", ["filter"]),  # -D INPUT
        ("rule-change", ["filter"]),  # the inet table
        ("kube-proxy", ["filter"]),  # the KUBE-SERVICES resync
        ("kube-proxy", ["filter"]),  # KUBE-FIREWALL and its jump
        ("rule-change", ["filter"]),  # -N EFA_INPUT
        ("rule-change", ["filter"]),  # -E EFA_INPUT GONE
    ]
    assert "KUBE-FORWARD" in on_tables[0][1]
    assert on_tables[5][3] is None  # the inet table concerns both families
    # Watched: a resync of kube-proxy's own chain is no event; its new chains (chain
    # messages), its jump from INPUT and a chain of ours renamed away are.
    watched = seen["watched"]
    assert [(e[0], e[2]) for e in watched] == [
        ("kube-proxy", ["filter"]),
        ("rule-change", ["filter"]),
        ("rule-change", ["raw"]),
        ("rule-change", ["filter"]),
        ("rule-change", ["filter"]),
        ("rule-change", ["filter"]),
        ("kube-proxy", ["filter"]),
        ("rule-change", ["filter"]),
        ("rule-change", ["filter"]),
    ]
    assert "INPUT" in watched[6][1]
    assert watched[-1][1] == "nf_tables transaction touched GONE"
    datagrams = seen["datagrams"]
    assert datagrams["plain"] > 300, datagrams
    assert datagrams["tables"] * 3 < datagrams["plain"], datagrams  # nat is most of it
    assert datagrams["watched"] * 5 < datagrams["tables"], datagrams
