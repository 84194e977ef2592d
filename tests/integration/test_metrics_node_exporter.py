"""The textfile as the real node_exporter reads it: every series arrives, and no error."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support import need

from efa_guard.metrics import Metrics


def scrape(url: str, timeout: float = 10.0) -> str:
    """GET `url`, retrying until the exporter answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a local http URL
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_node_exporter_serves_the_textfile(tmp_path: Path) -> None:
    """node_exporter's textfile collector takes efa_guard.prom whole, with labels, and no error."""
    exe = shutil.which("prometheus-node-exporter")
    need(
        exe is not None,
        "prometheus-node-exporter missing (apt-get install prometheus-node-exporter)",
    )
    assert exe is not None
    m = Metrics(version="1.2.3", backend="nft")
    m.checked(ok=True, chains=[("ipv4", "filter/EFA_INPUT", True)])
    m.corrected(trigger="rule-change", latency_s=0.02, chains=[("ipv4", "filter/EFA_INPUT")])
    m.contested(active=True)
    m.write_textfile(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    argv = [exe, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults"]
    argv += ["--collector.textfile", f"--collector.textfile.directory={tmp_path}"]
    exporter = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        text = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
    got = _samples(text)
    assert got[("node_textfile_scrape_error", ())] == 0
    labels = (("chain", "filter/EFA_INPUT"), ("family", "ipv4"), ("trigger", "rule-change"))
    assert got[("efa_guard_corrections_total", labels)] == 1
    assert got[("efa_guard_contested", ())] == 1
    assert got[("efa_guard_build_info", (("backend", "nft"), ("version", "1.2.3")))] == 1
    ours = {k for k in got if k[0].startswith("efa_guard_")}
    assert ours == set(_samples(m.text().decode()))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by name and labels; `le` as a number (node_exporter writes 1, the client 1.0)."""

    def label(k: str, v: str) -> tuple[str, str]:
        return (k, str(float(v))) if k == "le" else (k, v)

    return {
        (s.name, tuple(sorted(label(k, v) for k, v in s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
