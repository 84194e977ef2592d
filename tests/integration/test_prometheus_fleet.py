"""A real Prometheus scraping three nodes' /metrics endpoints, with the shipped alert rules.

The "nodes" are three Metrics in this process, each serving on its own loopback port, as three
daemons with `[metrics] listen` would; the daemon test drives the same through `efa-guard run`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import need

from efa_guard.metrics import Metrics
from tools.prom import prometheus, prometheus_binary

CHAIN = ("ipv4", "filter/EFA_INPUT")


@pytest.fixture
def nodes() -> Iterator[dict[str, Metrics]]:
    """Three nodes serving /metrics on loopback, keyed by their scrape address."""
    started = []
    try:
        out = {}
        for _ in range(3):
            m = Metrics(version="1.2.3", backend="nft")
            started.append(m)
            host, port = m.serve("127.0.0.1:0")
            m.checked(ok=True, chains=[(*CHAIN, True)])
            out[f"{host}:{port}"] = m
        yield out
    finally:
        for m in started:
            m.close()


def test_prometheus_sees_a_correction_and_a_fight_on_the_right_nodes(
    tmp_path: Path, nodes: dict[str, Metrics]
) -> None:
    """Node 2's corrections rise under its instance; node 3's fight fires; node 1 stays quiet."""
    need(prometheus_binary() is not None, "prometheus missing (apt-get install prometheus)")
    node1, node2, node3 = nodes
    with prometheus(tmp_path, list(nodes)) as prom:
        prom.wait("three targets up", lambda: len(prom.query('up{job="efa-guard"} == 1')) == 3)
        nodes[node2].corrected(trigger="rule-change", latency_s=0.02, chains=[CHAIN])
        nodes[node3].contested(active=True)

        def corrections() -> dict[str, float]:
            result = prom.query("sum by (instance) (efa_guard_corrections_total)")
            return {r["metric"]["instance"]: float(r["value"][1]) for r in result}

        prom.wait("node 2's correction scraped", lambda: corrections().get(node2) == 1)
        prom.wait("EfaGuardContested firing", lambda: bool(prom.firing()))
        firing = prom.firing()
        assert [(a["alertname"], a["instance"]) for a in firing] == [("EfaGuardContested", node3)]
        assert set(corrections()) == {node2}
        fights = prom.query("efa_guard_contests_total")
        assert {r["metric"]["instance"]: r["value"][1] for r in fights} == {
            node1: "0", node2: "0", node3: "1",
        }  # fmt: skip
