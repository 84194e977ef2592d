"""A real Prometheus scraping three real daemons (`efa-guard run`, `[metrics] listen`).

Each node is a sandbox whose guard namespace also has a veth to a monitoring namespace the
test creates; Prometheus runs there and scrapes `198.19.N.2:9731` (benchmarking range). The
alert rules are the shipped file. Nothing outside the namespaces made here is touched.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
from daemons import GuardDaemon, launch
from support import Guard, need

from tools.fleet import address, monitoring, node_config, node_env, writer
from tools.prom import prometheus, prometheus_binary
from tools.sandbox import Sandbox, missing_tools, sandbox

pytestmark = [pytest.mark.usefixtures("journald"), pytest.mark.slow]


def _node(n: int, box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GuardDaemon:
    """Node n's daemon (nft), serving /metrics on its fleet0 address, with state of its own."""
    home = tmp_path / f"node{n}"
    home.mkdir()
    for key, value in node_env(home).items():
        monkeypatch.setenv(key, value)
    return launch(Guard(box=box, backend="nft", config=node_config(n, home)), home)


def test_prometheus_sees_the_tamper_and_the_fight_on_the_right_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 2's corrections rise under its instance; node 3 fires EfaGuardContested; 1 quiet."""
    missing = missing_tools()
    need(not missing, f"missing: {', '.join(missing)}")
    need(prometheus_binary() is not None, "prometheus missing (apt-get install prometheus)")
    with contextlib.ExitStack() as stack:
        boxes = [stack.enter_context(sandbox(prefix="efaf")) for _ in range(3)]
        mon = stack.enter_context(monitoring(boxes))
        daemons: list[GuardDaemon] = []
        stack.callback(lambda: [d.stop() for d in daemons])
        for n, box in enumerate(boxes, start=1):
            daemons.append(_node(n, box, tmp_path, monkeypatch))
        node1, node2, node3 = (address(n) for n in (1, 2, 3))
        prom = stack.enter_context(prometheus(tmp_path, [node1, node2, node3], netns=mon))
        prom.wait("three daemons up", lambda: len(prom.query('up{job="efa-guard"} == 1')) == 3)

        def corrections() -> dict[str, float]:
            result = prom.query("sum by (instance) (efa_guard_corrections_total)")
            return {r["metric"]["instance"]: float(r["value"][1]) for r in result}

        prom.wait("build_info of three", lambda: len(prom.query("efa_guard_build_info")) == 3)
        before = corrections().get(node2, 0.0)
        boxes[1].run(["iptables-nft", "-D", "EFA_INPUT", "1"])
        prom.wait("node 2's correction scraped", lambda: corrections().get(node2, 0.0) > before)
        series = f'efa_guard_corrections_total{{instance="{node2}",trigger="rule-change",'
        series += 'family="ipv4",chain="filter/EFA_INPUT"} > 0'
        assert len(prom.query(series)) == 1, "node 2's correction lacks its labels"

        fight = writer(boxes[2], 0.3, 40)
        stack.callback(fight.wait, timeout=15)
        stack.callback(fight.terminate)
        prom.wait("EfaGuardContested firing", lambda: bool(prom.firing()), timeout=45)
        firing = [(a["alertname"], a.get("instance")) for a in prom.firing()]
        assert firing == [("EfaGuardContested", node3)]

        contested = prom.query("efa_guard_contested")
        assert {r["metric"]["instance"]: r["value"][1] for r in contested} == {
            node1: "0", node2: "0", node3: "1",
        }  # fmt: skip
        counted = corrections()
        assert counted.get(node1, 0.0) == 0, counted
        assert counted[node2] > before
        assert counted[node3] > 0
        fights = prom.query("efa_guard_contests_total > 0")
        assert [r["metric"]["instance"] for r in fights] == [node3]
        assert all(d.proc.poll() is None for d in daemons), "a daemon died"
        names = {*(b.guard for b in boxes), mon}
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert not names & {line.split()[0] for line in left.stdout.splitlines() if line.strip()}
