"""`efa-guard history` on a collector: real journal files written by systemd-journal-remote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from support import need

from efa_guard.journal import encode, journal_fields
from tools.harness import REPO

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
JOURNAL_UPLOAD = Path("/lib/systemd/systemd-journal-upload")
T0 = 1_764_500_000.0  # 2025-11-30 10:53:20 UTC

DRIFT = {
    "event": "drift_corrected",
    "message": "drift corrected (rule-change by iptables-nft[4242]) in 19.3 ms",
    "trigger": "rule-change",
    "drift": ["filter/EFA_INPUT: rule 1 missing"],
    "latency_ms": 19.3,
    "culprit_pid": 4242,
    "culprit_name": "iptables-nft",
}
NODE1 = (
    (T0, "info", {"event": "started", "message": "started"}),
    (T0 + 10, "warning", DRIFT),
    (T0 + 40, "info", {"event": "status", "message": "status"}),
    (T0 + 50, "info", {"event": "stopping", "message": "stopping on SIGTERM"}),
    (T0 + 60, "error", {"event": "cannot_start", "message": "cannot start: no iptables"}),
)
FIGHT = {
    "event": "contested",
    "message": "contested by kube-proxy[77]",
    "trigger": "kube-proxy",
    "culprit_pid": 77,
    "culprit_name": "kube-proxy",
}
NODE2 = (
    (T0 + 20, "critical", FIGHT),
    (T0 + 30, "error", {"event": "config_rejected", "message": "config rejected: bad port"}),
)


def write_journal(
    path: Path, host: str, events: tuple[tuple[float, str, Mapping[str, Any]], ...]
) -> Path:
    """Feed events, as the daemon would log them, to systemd-journal-remote in export format."""
    need(
        JOURNAL_REMOTE.exists(),
        "systemd-journal-remote missing (apt-get install systemd-journal-remote)",
    )
    boot = uuid.uuid4().hex
    stream = bytearray()
    for i, (when, method, event) in enumerate(events):
        trusted = {
            "__REALTIME_TIMESTAMP": str(int(when * 1e6)),
            "__MONOTONIC_TIMESTAMP": str(i + 1),
            "_BOOT_ID": boot,
            "_HOSTNAME": host,
            "_PID": "900",
        }
        stream += encode(trusted | journal_fields(method, event)) + b"\n"
    stream += encode({"__REALTIME_TIMESTAMP": str(int(T0 * 1e6) + 1), "__MONOTONIC_TIMESTAMP": "99",
                      "_BOOT_ID": boot, "_HOSTNAME": host, "SYSLOG_IDENTIFIER": "sshd",
                      "MESSAGE": "not ours"}) + b"\n"  # fmt: skip
    subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={path}", "-"], input=bytes(stream), check=True,
        capture_output=True,
    )  # fmt: skip
    return path


@pytest.fixture
def collector(tmp_path: Path) -> Path:
    """A collector directory with one journal file per node, as journal-remote's host split."""
    d = tmp_path / "remote"
    d.mkdir()
    write_journal(d / "remote-node1.journal", "node1", NODE1)
    write_journal(d / "remote-node2.journal", "node2", NODE2)
    return d


def history(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `efa-guard history` from this checkout (never raises on exit code)."""
    env = os.environ | {"TZ": "UTC"}
    return subprocess.run(
        [sys.executable, "-m", "efa_guard", "history", *args],
        capture_output=True, text=True, check=False, cwd=REPO, env=env,
    )  # fmt: skip


def events(proc: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    """(host, event) of each JSON entry, in order."""
    assert proc.returncode == 0, proc.stderr
    return [(e["host"], e["event"]) for e in json.loads(proc.stdout)["events"]]


def test_a_collector_directory_shows_every_node_in_time_order(collector: Path) -> None:
    """All nodes' default kinds interleave by time; started, status and other programs stay out."""
    got = events(history("--directory", str(collector), "--json"))
    assert got == [
        ("node1", "drift_corrected"),
        ("node2", "contested"),
        ("node2", "config_rejected"),
        ("node1", "stopping"),
        ("node1", "cannot_start"),
    ]


def test_the_table_has_a_host_column_and_the_story(collector: Path) -> None:
    """The table names the host, trigger, latency and culprit of a correction."""
    proc = history("--directory", str(collector))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:5] == ["TIME", "(UTC)", "HOST", "EVENT", "TRIGGER"]
    assert lines[1].split()[2:8] == [
        "node1", "drift_corrected", "rule-change", "19.3", "ms", "iptables-nft[4242]",
    ]  # fmt: skip
    assert "filter/EFA_INPUT: rule 1 missing" in lines[1]


def test_host_and_kind_filter(collector: Path) -> None:
    """--host keeps one node; --kind picks kinds, also ones not shown by default."""
    assert events(history("--directory", str(collector), "--host", "node2", "--json")) == [
        ("node2", "contested"),
        ("node2", "config_rejected"),
    ]
    got = events(history("--directory", str(collector), "--kind", "started", "--kind",
                         "contested", "--json"))  # fmt: skip
    assert got == [("node1", "started"), ("node2", "contested")]


def test_files_and_since(collector: Path) -> None:
    """--file reads named journal files (repeatable); --since drops what came before."""
    files = ["--file", str(collector / "remote-node1.journal")]
    files += ["--file", str(collector / "remote-node2.journal")]
    got = events(history(*files, "--since", "2025-11-30 10:53:45", "--json"))
    assert got == [("node2", "config_rejected"), ("node1", "stopping"), ("node1", "cannot_start")]


def test_json_carries_host_and_culprit(collector: Path) -> None:
    """The JSON form of a fight names the host, trigger and culprit."""
    proc = history("--directory", str(collector), "--kind", "contested", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)["events"]
    assert (entry["host"], entry["trigger"], entry["culprit"]) == (
        "node2",
        "kube-proxy",
        "kube-proxy[77]",
    )


@pytest.mark.parametrize("option", ["--directory", "--file"])
def test_a_missing_source_is_unknown_and_named(tmp_path: Path, option: str) -> None:
    """A collector directory or journal file that is not there: exit 3, and the path named."""
    missing = tmp_path / "no-such"
    proc = history(option, str(missing))
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert f"{missing} does not exist" in proc.stderr


def test_uploaded_over_http_the_nodes_keep_their_hosts(tmp_path: Path) -> None:
    """journal-upload to journal-remote on loopback: history on the collector names each node."""
    need(JOURNAL_UPLOAD.exists(), "systemd-journal-upload missing (systemd-journal-remote)")
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    sources = [
        write_journal(nodes / "node1.journal", "node1", NODE1),
        write_journal(nodes / "node2.journal", "node2", NODE2),
    ]
    collected = tmp_path / "collector"
    collected.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    remote = subprocess.Popen(
        [str(JOURNAL_REMOTE), f"--listen-http=127.0.0.1:{port}", f"--output={collected}/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for i, source in enumerate(sources):
            upload = [str(JOURNAL_UPLOAD), f"--url=http://127.0.0.1:{port}", f"--file={source}"]
            upload += ["--follow=no", f"--save-state={tmp_path}/state{i}"]
            for _ in range(50):  # until journal-remote listens
                if subprocess.run(upload, capture_output=True, check=False).returncode == 0:
                    break
                time.sleep(0.1)
    finally:
        remote.terminate()
        remote.wait(timeout=10)
    got = events(history("--directory", str(collected), "--json"))
    assert sorted(got) == sorted(
        [("node1", "drift_corrected"), ("node1", "stopping"), ("node1", "cannot_start"),
         ("node2", "contested"), ("node2", "config_rejected")]
    )  # fmt: skip
