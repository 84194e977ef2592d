"""The legacy fingerprint on the real kernel, both families: what moves it, what does not."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from support import Guard

from tools.harness import write_config
from tools.sandbox import GUARD_ADDR, GUARD_ADDR6, Sandbox

FAMILIES = [("ipv4", "iptables-legacy"), ("ipv6", "ip6tables-legacy")]
FP = """
import json, sys
from efa_guard import legacyblob as lb
family, table, *chains = sys.argv[1:]
fp = lb.fingerprint(family, table, chains)
print(json.dumps({
    "fp": fp.hex() if fp else None,
    "own": lb.user_chain(lb.read_blob(family, table), "EFA_INPUT"),
}))
"""
SEND = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as s:
    for _ in range(5):
        s.sendto(b"x", (sys.argv[1], 5000))
"""
OWN = ("EFA_INPUT", "INPUT")


def applied(box: Sandbox, tmp_path: Path) -> Guard:
    """The shipped default policy, applied on legacy in the guard namespace."""
    guard = Guard(box, "legacy", write_config(tmp_path / "g.toml", backend="legacy"))
    result = guard.efa("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    return guard


def _fp(box: Sandbox, family: str, chains: tuple[str, ...] = OWN) -> tuple[str | None, int]:
    """The fingerprint of the chains of filter, and where EFA_INPUT's head sits (-1: none)."""
    out = box.run([sys.executable, "-c", FP, family, "filter", *chains]).stdout
    data = json.loads(out)
    return data["fp"], -1 if data["own"] is None else data["own"]


def _ipt(box: Sandbox, tool: str, *args: str) -> None:
    box.run([tool, "-w", *args])


def _counters(box: Sandbox, tool: str) -> list[int]:
    """Packet counters of the filter table's rules and policies."""
    save = box.run([f"{tool}-save", "-c", "-t", "filter"]).stdout
    return [int(n) for n in re.findall(r"\[(\d+):\d+\]", save)]


@pytest.mark.parametrize(("family", "tool"), FAMILIES)
def test_counters_do_not_move_the_fingerprint(
    box: Sandbox, tmp_path: Path, family: str, tool: str
) -> None:
    """Traffic through our rules moves their counters, never the fingerprint."""
    applied(box, tmp_path)
    before, _ = _fp(box, family)
    assert before is not None
    counted = sum(_counters(box, tool))
    address = GUARD_ADDR6 if family == "ipv6" else GUARD_ADDR
    box.run([sys.executable, "-c", SEND, address], ns=box.outside)
    assert sum(_counters(box, tool)) > counted  # the packets went through the chains
    assert _fp(box, family)[0] == before


@pytest.mark.parametrize(("family", "tool"), FAMILIES)
def test_foreign_changes_elsewhere_keep_the_fingerprint(
    box: Sandbox, tmp_path: Path, family: str, tool: str
) -> None:
    """Rules added and deleted in other chains, also ahead of ours, shift it but keep it."""
    applied(box, tmp_path)
    before, head = _fp(box, family)
    _ipt(box, tool, "-N", "A-FOREIGN")  # sorts before EFA_INPUT: its rules sit ahead of ours
    _ipt(box, tool, "-N", "ZZ-FOREIGN")
    for port in range(20):
        _ipt(box, tool, "-A", "A-FOREIGN", "-p", "tcp", "--dport", str(4000 + port), "-j", "DROP")
        _ipt(box, tool, "-A", "ZZ-FOREIGN", "-p", "udp", "--dport", str(4000 + port), "-j", "DROP")
    _ipt(box, tool, "-A", "FORWARD", "-j", "A-FOREIGN")  # a built-in chain ahead of ours
    _ipt(box, tool, "-I", "OUTPUT", "1", "-j", "ZZ-FOREIGN")
    shifted, moved = _fp(box, family)
    assert moved > head  # EFA_INPUT moved in the blob: the jump to it has a new offset
    assert shifted == before
    _ipt(box, tool, "-D", "FORWARD", "-j", "A-FOREIGN")
    _ipt(box, tool, "-D", "A-FOREIGN", "3")
    _ipt(box, tool, "-A", "A-FOREIGN", "-s", "10.9.9.9" if family == "ipv4" else "fd00:9::9")
    after, again = _fp(box, family)
    assert again not in {head, moved}
    assert after == before


@pytest.mark.parametrize(("family", "tool"), FAMILIES)
def test_changes_to_our_chains_move_the_fingerprint(
    box: Sandbox, tmp_path: Path, family: str, tool: str
) -> None:
    """A rule of ours, a jump in INPUT added, moved, removed or retargeted, the policy."""
    applied(box, tmp_path)
    for chain in ("A-FOREIGN", "B-FOREIGN"):
        _ipt(box, tool, "-N", chain)
    seen = {"applied": _fp(box, family)[0]}
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("our rule changed", ("-R", "EFA_INPUT", "1", "-p", "tcp", "--dport", "9", "-j", "DROP")),
        ("jump added behind ours", ("-A", "INPUT", "-j", "A-FOREIGN")),
        ("that jump now a goto", ("-R", "INPUT", "2", "-g", "A-FOREIGN")),
        ("retargeted", ("-R", "INPUT", "2", "-j", "B-FOREIGN")),
        ("moved ahead of ours", ("-D", "INPUT", "2")),  # then inserted first, below
        ("policy DROP", ("-P", "INPUT", "DROP")),
    ]
    for what, args in steps:
        _ipt(box, tool, *args)
        if what == "moved ahead of ours":
            seen["removed"] = _fp(box, family)[0]
            _ipt(box, tool, "-I", "INPUT", "1", "-j", "B-FOREIGN")
        seen[what] = _fp(box, family)[0]
    assert None not in seen.values()
    assert seen.pop("removed") == seen["our rule changed"]  # the same state again
    assert len(set(seen.values())) == len(seen), seen  # every other state its own print
    _ipt(box, tool, "-P", "INPUT", "ACCEPT")
    assert _fp(box, family)[0] == seen["moved ahead of ours"]  # the same state again


@pytest.mark.parametrize(("family", "tool"), FAMILIES)
def test_a_missing_chain_has_its_own_fingerprint(box: Sandbox, family: str, tool: str) -> None:
    """A missing chain differs from an empty one, and is the same when missing again."""
    missing, head = _fp(box, family)
    assert missing is not None
    assert head == -1
    _ipt(box, tool, "-N", "EFA_INPUT")
    empty, head = _fp(box, family)
    assert head >= 0
    assert empty not in {None, missing}
    _ipt(box, tool, "-X", "EFA_INPUT")
    assert _fp(box, family)[0] == missing


FIFTY_K = """
import statistics, subprocess, sys, time
from efa_guard import legacyblob
from efa_guard.observe import save_listings
family, save = sys.argv[1], sys.argv[2]
def timed(f):
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        f()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)
def full():
    out = subprocess.run([save, "-t", "filter"], capture_output=True, text=True).stdout
    save_listings(out, "filter")
fp = timed(lambda: legacyblob.fingerprint(family, "filter", ["EFA_INPUT", "INPUT"]))
print(fp, timed(full))
"""


def _rules(family: str, count: int) -> str:
    lines = ["*filter", ":KUBE-SERVICES - [0:0]", "-A INPUT -j KUBE-SERVICES"]
    for i in range(count):
        dest = (
            f"fd00:96::{i:x}"
            if family == "ipv6"
            else f"10.{96 + (i >> 16)}.{i >> 8 & 255}.{i & 255}"
        )
        lines.append(
            f'-A KUBE-SERVICES -d {dest} -p tcp -m comment --comment "ns/svc-{i}:http has no '
            f'endpoints" -m tcp --dport {1 + i % 60000} -j REJECT'
        )
    return "\n".join([*lines, "COMMIT", ""])


@pytest.mark.slow
@pytest.mark.parametrize(("family", "tool"), FAMILIES)
def test_the_fingerprint_costs_a_fraction_of_a_full_read_at_50k_rules(
    box: Sandbox, tmp_path: Path, family: str, tool: str
) -> None:
    """At 50k kube-proxy-like filter rules, a fingerprint costs at most half a save+parse."""
    applied(box, tmp_path)
    box.run([f"{tool}-restore", "--noflush", "-w"], input=_rules(family, 50_000), timeout=300)
    out = box.run([sys.executable, "-c", FIFTY_K, family, f"{tool}-save"], timeout=300).stdout
    fp, full = map(float, out.split())
    measured = f"{family} at 50k rules: fingerprint {fp * 1e3:.1f} ms, save+parse {full * 1e3:.1f}"
    sys.stderr.write(f"{measured} ms\n")  # shown with -rA or on failure
    assert fp <= full / 2, measured
