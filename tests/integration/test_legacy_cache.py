"""The daemon's legacy read cache on the real kernel: it gives what a fresh read gives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support import Guard

from tools.harness import write_config
from tools.runner import PRIVATE_RUN
from tools.sandbox import Sandbox

FAMILIES = [("ipv4", "iptables-legacy"), ("ipv6", "ip6tables-legacy")]
OWN = ("EFA_INPUT", "INPUT")


@pytest.fixture
def applied(box: Sandbox, tmp_path: Path) -> Sandbox:
    """The sandbox with the shipped default policy applied on legacy."""
    guard = Guard(box, "legacy", write_config(tmp_path / "g.toml", backend="legacy"))
    result = guard.efa("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    return box


# The scripts run with a /run of their own (PRIVATE_RUN): the cache watches /run/xtables.lock,
# which every legacy iptables on the host (other test runs) closes too.
CACHED = """
import json, subprocess, sys
from efa_guard.iptables import Iptables
from efa_guard.legacycache import LegacyCache
keys = [tuple(k) for k in json.loads(sys.argv[1])]
cache = LegacyCache()
cached, fresh = Iptables("legacy", cache=cache), Iptables("legacy")
out = []
for step in [[]] + json.loads(sys.argv[2]):
    for argv in step:
        subprocess.run(argv, check=True, capture_output=True)
    hits = cache.hits
    got = [cached.list_many(keys) for _ in range(3)]
    out.append({"same": all(g == fresh.list_many(keys) for g in got), "hits": cache.hits - hits})
print(json.dumps(out))
"""


def test_cached_listings_equal_a_fresh_read(applied: Sandbox) -> None:
    """After each change, listings from the cache equal a fresh full read, and hits happen."""
    box = applied
    keys = [(f, "filter", c) for f, _ in FAMILIES for c in OWN]
    keys += [(f, "raw", c) for f, _ in FAMILIES for c in ("EFA_NODEPORTS", "PREROUTING")]
    steps = []
    for family, tool in FAMILIES:
        src = "10.1.1.1" if family == "ipv4" else "fd00:1::1"
        steps += [
            [[tool, "-w", "-N", "A-FOREIGN"], [tool, "-w", "-A", "A-FOREIGN", "-s", src]],
            [[tool, "-w", "-I", "INPUT", "1", "-j", "A-FOREIGN"]],
            [[tool, "-w", "-F", "EFA_INPUT"]],
            [[tool, "-w", "-D", "INPUT", "-j", "EFA_INPUT"], [tool, "-w", "-X", "EFA_INPUT"]],
            [[tool, "-w", "-t", "raw", "-I", "PREROUTING", "2", "-s", src]],
            [[tool, "-w", "-P", "INPUT", "DROP"]],
        ]
    argv = [*PRIVATE_RUN, sys.executable, "-c", CACHED, json.dumps(keys), json.dumps(steps)]
    result = json.loads(box.run(argv).stdout)
    assert all(r["same"] for r in result), result
    assert all(r["hits"] >= 4 for r in result[1:]), result  # 2 of 3 reads, 2 of 4 tables


ABA = """
import json, subprocess, sys
from efa_guard.iptables import Iptables
from efa_guard.legacycache import LegacyCache
B = "*filter\\n-I INPUT 1 -s 10.2.2.2/32 -j ACCEPT\\nCOMMIT\\n"
A = "*filter\\n-D INPUT -s 10.2.2.2/32 -j ACCEPT\\nCOMMIT\\n"
def restore(text):
    subprocess.run(["iptables-legacy-restore", "--noflush"], input=text, text=True, check=True)
class Racing(Iptables):
    def _read_legacy(self, keys):  # a writer turns A into B and back while the read runs
        restore(B)
        try:
            return super()._read_legacy(keys)
        finally:
            restore(A)
keys = [("ipv4", "filter", "EFA_INPUT"), ("ipv4", "filter", "INPUT")]
cache = LegacyCache() if sys.argv[1] == "watched" else LegacyCache(closes=lambda: 0)
racing, fresh = Racing("legacy", cache=cache), Iptables("legacy")
racing.list_many(keys)  # arms the lock watch
seen_b = racing.list_many(keys)  # read in state B, between two prints of state A
plain = Iptables("legacy", cache=cache)  # no more writes: the same cache, asked again
print(json.dumps({"b": seen_b != fresh.list_many(keys) and seen_b[1].count("-A") == 2,
                  "right": plain.list_many(keys) == fresh.list_many(keys)}))
"""


@pytest.mark.parametrize("lock", ["watched", "unwatched"])
def test_a_read_between_two_writes_restoring_a_state_is_not_kept(
    applied: Sandbox, lock: str
) -> None:
    """A -> B -> A around a full read: listings of B are never kept under A's fingerprint.

    With the lock watch (the daemon's) the next read is right; without it (a cache that
    sees no lock closes) B's listings would be given for A: the guard is what prevents it.
    """
    argv = [*PRIVATE_RUN, sys.executable, "-c", ABA, lock]
    result = json.loads(applied.run(argv).stdout)
    assert result["b"], result  # the read did see B
    assert result["right"] is (lock == "watched"), result
