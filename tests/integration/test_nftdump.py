"""nft fingerprints read straight from nf_tables identify what iptables prints, on the kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import STATES, WRITER, Guard

from tools.harness import write_config
from tools.sandbox import Sandbox

KEYS = "[('ipv4', 'filter', 'EFA_INPUT'), ('ipv4', 'filter', 'INPUT'), ('ipv6', 'filter', 'INPUT')]"
FINGERPRINT = f"""
import json
from efa_guard.nftdump import fingerprints
gen, out = fingerprints({KEYS})
print(json.dumps([out[k] for k in {KEYS}]))
"""
TRAFFIC = """
import socket
for _ in range(5):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9))
"""


@pytest.fixture
def nft(box: Sandbox, tmp_path: Path) -> Guard:
    """A sandbox with the policy applied on nft."""
    guard = Guard(box=box, backend="nft", config=write_config(tmp_path / "g.toml", backend="nft"))
    guard.efa("apply")
    return guard


def _prints(guard: Guard) -> list[str]:
    result: list[str] = json.loads(guard.python(FINGERPRINT))
    return result


def test_counters_and_foreign_chains_leave_fingerprints_alone(nft: Guard) -> None:
    """Packets through our rules and a foreign chain elsewhere change no fingerprint."""
    before = _prints(nft)
    nft.box.run(["ip", "link", "set", "lo", "up"])
    nft.python(TRAFFIC)
    listing = nft.ipt("-L", "INPUT", "-v", "-n", "-x")
    assert any(
        line.split()[0].isdigit() and int(line.split()[0]) > 0 for line in listing.splitlines()[2:]
    )
    nft.ipt("-N", "FOREIGN")
    nft.ipt("-A", "FOREIGN", "-s", "198.18.7.7", "-j", "DROP")
    assert _prints(nft) == before


def test_each_change_iptables_would_print_changes_its_fingerprint(nft: Guard) -> None:
    """A flush, a foreign rule in INPUT and INPUT's policy each change exactly that chain's."""
    start = _prints(nft)
    nft.ipt("-F", "EFA_INPUT")
    flushed = _prints(nft)
    assert flushed[0] != start[0]
    assert flushed[1:] == start[1:]
    nft.ipt("-I", "INPUT", "1", "-s", "198.18.7.7", "-j", "ACCEPT")
    inserted = _prints(nft)
    assert inserted[1] != flushed[1]
    assert inserted[2] == flushed[2]  # the ipv6 ruleset is another chain
    nft.ipt("-P", "INPUT", "DROP")
    assert _prints(nft)[1] != inserted[1]
    nft.ipt("-P", "INPUT", "ACCEPT")
    nft.ipt("-D", "INPUT", "1")
    nft.efa("apply")
    assert _prints(nft) == start  # the same state again: the same fingerprints


def test_a_missing_chain_is_told_apart_from_an_empty_one(nft: Guard) -> None:
    """An empty EFA_INPUT and no EFA_INPUT fingerprint differently."""
    nft.ipt("-F", "EFA_INPUT")
    empty = _prints(nft)[0]
    nft.ipt("-D", "INPUT", "-j", "EFA_INPUT")
    nft.ipt("-X", "EFA_INPUT")
    assert _prints(nft)[0] == "missing" != empty


CACHED = """
import json, sys
from pathlib import Path
from efa_guard.config import load
from efa_guard.errors import UnstableReadError
from efa_guard.iptables import Iptables
from efa_guard.nftdump import ListingCache
from efa_guard.policy import Policy
from dataclasses import replace
policy = load(Path(sys.argv[1])).policy
filter_chains = tuple(c for c in policy.chains if c.table == "filter")
policy = replace(policy, families=("ipv4",), chains=filter_chains)
ipt = Iptables("nft")
ipt.cache = ListingCache()
seen, unstable = {}, 0
for _ in range(int(sys.argv[2])):
    try:
        (state,) = ipt.read(policy)
    except UnstableReadError:
        unstable += 1
        continue
    key = json.dumps([list(state.rules), [[j.position, j.rule] for j in state.jumps]])
    seen[key] = seen.get(key, 0) + 1
print(json.dumps({"seen": seen, "unstable": unstable, "hits": ipt.cache.hits}))
"""


def test_cached_reads_racing_a_writer_see_only_written_states(nft: Guard) -> None:
    """With the listing cache, reads racing a writer of two states see only those two."""
    ns = ["ip", "netns", "exec", nft.box.guard]
    writer = subprocess.Popen(
        [*ns, sys.executable, "-c", WRITER, "iptables-nft-restore", *STATES.values()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "started"
        out = nft.box.run([sys.executable, "-c", CACHED, str(nft.config), "300"], timeout=300)
    finally:
        writer.terminate()  # our own process, by its PID
        writer.wait(timeout=10)
    result = json.loads(out.stdout)
    assert len(result["seen"]) == 2, result  # each state, never a mix of both
    assert result["hits"] > 0  # states seen before came from the cache


def test_a_long_chain_is_told_long_from_its_first_rules(nft: Guard) -> None:
    """holds_more_than counts a chain's rules up to the limit, without reading the rest."""
    rules = "\n".join(f"-A LONG -s 198.18.{i >> 8}.{i & 255} -j DROP" for i in range(600))
    nft.box.run(
        ["iptables-nft-restore", "--noflush"], input=f"*filter\n:LONG - [0:0]\n{rules}\nCOMMIT\n"
    )
    code = """
import json
from efa_guard.nftdump import holds_more_than, fingerprints
key = ("ipv4", "filter", "LONG")
none = ("ipv4", "filter", "NONE")
out = [holds_more_than(key, 500), holds_more_than(key, 600), holds_more_than(none, 1)]
out.append(fingerprints([("ipv4", "filter", "INPUT")]) is not None)  # the socket works after
print(json.dumps(out))
"""
    assert json.loads(nft.python(code)) == [True, False, False, True]


TABLES = """
import json
from efa_guard import iptables_proc, nftdump
from efa_guard.iptables import Iptables
tool = iptables_proc.nft_tables(Iptables("nft")) or ()
print(json.dumps([sorted(nftdump.tables() or ()), sorted(tool)]))
"""


def test_the_tables_over_netlink_are_those_nft_lists(nft: Guard) -> None:
    """nftdump.tables() (in-process, for `check`) names exactly the ip/ip6 tables `nft` lists."""
    nft.box.run(["nft", "add table ip6 mytable; add table inet both; add table ip bare"])
    netlink, tool = json.loads(nft.python(TABLES))
    assert netlink == tool
    assert ["ipv4", "bare"] in netlink
    assert ["ipv6", "mytable"] in netlink
    assert ["ipv4", "filter"] in netlink  # the policy's
    assert not any(name == "both" for _, name in netlink)  # inet: neither family's own
