"""The kernel-side filter of nf_tables events drops foreign tables' datagrams, none of ours."""

from __future__ import annotations

import json
import subprocess
import sys

from tools.sandbox import Sandbox

# Two subscriptions in the guard namespace, one filtered for filter and raw; after "go" on
# stdin both are drained and decoded with the same decoder; their events and counts printed.
LISTENER = """
import json, sys
from efa_guard.sources.nft import subscribe
from efa_guard.sources.nftdecode import Decoder
from efa_guard.sources.nftfilter import attach

plain, filtered = subscribe(), subscribe()
attach(filtered, ["filter", "raw"])
print("ready", flush=True)
sys.stdin.readline()
out = {}
for name, sock in (("plain", plain), ("filtered", filtered)):
    sock.settimeout(0.5)
    decoder = Decoder(frozenset({1, 2, 10}), frozenset({"filter", "raw"}), lambda pid: False)
    buffer, count, events = bytearray(1 << 20), 0, []
    while True:
        try:
            size = sock.recv_into(buffer)
        except TimeoutError:
            break
        count += 1
        for e in decoder.feed(bytes(buffer[:size])):
            events.append([e.trigger.value, e.detail, sorted(e.tables or ()),
                           None if e.families is None else sorted(e.families)])
    out[name] = {"datagrams": count, "events": events}
print(json.dumps(out))
"""


def _restore(box: Sandbox, text: str) -> None:
    box.run(["iptables-nft-restore", "--noflush"], input=text)


def _nat_rules(chain: str, count: int) -> str:
    return "".join(
        f"-A {chain} -s 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32 -j RETURN\n"
        for i in range(count)
    )


def test_filtered_events_equal_unfiltered_ones_with_far_fewer_datagrams(box: Sandbox) -> None:
    """Bursts in nat, mixed nat+filter transactions, raw, mangle, inet: same events, less data."""
    child = subprocess.Popen(
        ["ip", "netns", "exec", box.guard, sys.executable, "-c", LISTENER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # A 3000-rule burst in nat alone: nothing of ours.
        _restore(box, "*nat\n:KUBE-BURST - [0:0]\n" + _nat_rules("KUBE-BURST", 3000) + "COMMIT\n")
        # One transaction: many nat rules, then one filter rule (they share datagrams).
        _restore(
            box,
            "*nat\n:KUBE-MIX - [0:0]\n"
            + _nat_rules("KUBE-MIX", 40)
            + "COMMIT\n*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -j ACCEPT\nCOMMIT\n",
        )
        # The filter part first, then nat.
        _restore(
            box,
            "*filter\n-A INPUT -s 198.18.0.1/32 -j ACCEPT\nCOMMIT\n*nat\n"
            + _nat_rules("KUBE-MIX", 40)
            + "COMMIT\n",
        )
        box.run(["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT"])
        box.run(["iptables-nft", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"])
        box.run(["ip6tables-nft", "-A", "INPUT", "-s", "2001:db8::1", "-j", "ACCEPT"])
        box.run(["iptables-nft", "-D", "INPUT", "-s", "198.18.0.1/32", "-j", "ACCEPT"])
        box.run(
            [
                "nft",
                "add table inet filter; add chain inet filter guarded; delete table inet filter",
            ]
        )
        box.run(["iptables-nft", "-t", "nat", "-F", "KUBE-BURST"])
        out, _ = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    seen = json.loads(out)
    plain, filtered = seen["plain"], seen["filtered"]
    assert filtered["events"] == plain["events"]
    assert [e[2] for e in plain["events"]] == [
        ["filter"],
        ["filter"],
        ["raw"],
        ["filter"],
        ["filter"],
        ["filter"],
    ]
    assert "KUBE-FORWARD" in plain["events"][0][1]
    assert plain["events"][5][3] is None  # the inet table concerns both families
    assert plain["datagrams"] > 300, plain["datagrams"]
    assert filtered["datagrams"] * 5 < plain["datagrams"], filtered["datagrams"]
