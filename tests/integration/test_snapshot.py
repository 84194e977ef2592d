"""Reads are one consistent snapshot: a concurrent writer never yields a state nobody wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import STATES, WRITER, Guard

from tools.harness import write_config
from tools.sandbox import Sandbox

CHECKER = """
import json, sys
from efa_guard.errors import UnstableReadError
from efa_guard.iptables import Iptables
ipt = Iptables(sys.argv[1])
seen, unstable = {}, 0
for _ in range(int(sys.argv[2])):
    try:
        own, hook = ipt.list_many([("ipv4", "filter", "EFA_INPUT"), ("ipv4", "filter", "INPUT")])
    except UnstableReadError:
        unstable += 1
        continue
    key = json.dumps([own, hook])
    seen[key] = seen.get(key, 0) + 1
print(json.dumps({"seen": seen, "unstable": unstable}))
"""


def _write(guard: Guard, state: str) -> tuple[str | None, str | None]:
    text = f"*filter\n:EFA_INPUT - [0:0]\n{STATES[state]}COMMIT\n"
    guard.box.run([f"{guard.iptables}-restore", "--noflush"], input=text)
    return guard.ipt("-S", "EFA_INPUT"), guard.ipt("-S", "INPUT")


def test_concurrent_writer_never_yields_a_torn_state(guard: Guard) -> None:
    """Checks racing a writer of two states only ever observe one of those two states."""
    written = {json.dumps(list(_write(guard, s))) for s in STATES}
    ns = ["ip", "netns", "exec", guard.box.guard]
    restore = f"{guard.iptables}-restore"
    writer = subprocess.Popen(
        [*ns, sys.executable, "-c", WRITER, restore, *STATES.values()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "started"
        out = guard.box.run(
            [sys.executable, "-c", CHECKER, guard.backend, "300"], timeout=300
        ).stdout
    finally:
        writer.terminate()  # our own process, by its PID: it stops after its current write
        writer.wait(timeout=10)
    result = json.loads(out)
    seen = set(result["seen"])
    assert seen <= written, f"torn reads: {seen - written}"
    assert sum(result["seen"].values()) >= 100, result["unstable"]  # most reads succeed
    assert len(seen) == 2


LISTS = """
import json, sys
from efa_guard.iptables import Iptables
keys = [tuple(k) for k in json.loads(sys.argv[1])]
print(json.dumps(Iptables("legacy").list_many(keys)))
"""


def test_legacy_table_reads_match_dash_s(box: Sandbox, tmp_path: Path) -> None:
    """Every chain parsed from one iptables-legacy-save equals `iptables-legacy -S CHAIN`."""
    guard = Guard(box, "legacy", write_config(tmp_path / "g.toml", backend="legacy"))
    assert guard.efa("apply").returncode == 0
    box.add_foreign_rules(iptables="iptables-legacy")
    box.add_nodeport(iptables="iptables-legacy")
    box.add_nodeport6(ip6tables="ip6tables-legacy")
    expected: dict[tuple[str, str, str], str] = {}
    for family, tool in (("ipv4", "iptables-legacy"), ("ipv6", "ip6tables-legacy")):
        for table in ("filter", "raw", "nat", "mangle"):
            for line in box.run([tool, "-t", table, "-S"]).stdout.splitlines():
                if line.startswith(("-N ", "-P ")):
                    chain = line.split()[1]
                    listing = box.run([tool, "-t", table, "-S", chain]).stdout
                    expected[(family, table, chain)] = listing
    keys = [*expected, ("ipv4", "filter", "NO-SUCH-CHAIN")]
    got = json.loads(box.run([sys.executable, "-c", LISTS, json.dumps(keys)]).stdout)
    assert got == [*expected.values(), None]
    assert any("KUBE-NODEPORTS" in k for k in expected)  # the walk saw kube-proxy's chains
