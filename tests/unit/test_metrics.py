"""Prometheus metrics: values and labels as a scraper parses them, the textfile and the endpoint."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import need

from efa_guard.metrics import (
    TEXTFILE_NAME,
    ListenError,
    Metrics,
    TextfileError,
    output,
    parse_listen,
)
from tools.harness import REPO

NOW = 1_700_000_000.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by name and sorted labels, parsed by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (KeyError if absent)."""
    return samples(text)[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    """A Metrics on a fixed clock, closed afterwards."""
    m = Metrics(version="1.2.3", backend="nft", clock=lambda: NOW)
    yield m
    m.close()


def test_fresh_metrics_say_version_backend_and_heartbeat(metrics: Metrics) -> None:
    """Build info names version and backend; the heartbeat is set at once; no fight yet."""
    text = metrics.text().decode()
    assert value(text, "efa_guard_build_info", version="1.2.3", backend="nft") == 1
    assert value(text, "efa_guard_heartbeat_timestamp_seconds") == NOW
    assert value(text, "efa_guard_contested") == 0
    assert value(text, "efa_guard_contests_total") == 0


def test_no_created_series(metrics: Metrics) -> None:
    """Counters and histograms export no `_created` series (half the series, no use in alerts)."""
    metrics.corrected(trigger="timer", latency_s=0.01, chains=[("ipv4", "filter/X")])
    text = metrics.text().decode()
    assert "efa_guard_corrections_total" in text
    assert "_created" not in text


def test_a_backend_change_replaces_the_build_series(metrics: Metrics) -> None:
    """Only the current backend has a build_info series."""
    metrics.build(version="1.2.3", backend="legacy")
    names = [k for k in samples(metrics.text().decode()) if k[0] == "efa_guard_build_info"]
    assert names == [("efa_guard_build_info", (("backend", "legacy"), ("version", "1.2.3")))]


def test_checks_set_in_sync_per_family_and_chain(metrics: Metrics) -> None:
    """A check records each chain's state, its result, and the last successful check time."""
    metrics.checked(
        ok=True, chains=[("ipv4", "filter/EFA_INPUT", True), ("ipv6", "filter/EFA_INPUT", False)]
    )
    metrics.checked(ok=False)
    text = metrics.text().decode()
    assert value(text, "efa_guard_policy_in_sync", family="ipv4", chain="filter/EFA_INPUT") == 1
    assert value(text, "efa_guard_policy_in_sync", family="ipv6", chain="filter/EFA_INPUT") == 0
    assert value(text, "efa_guard_checks_total", result="drift") == 1
    assert value(text, "efa_guard_checks_total", result="failed") == 1
    assert value(text, "efa_guard_last_successful_check_timestamp_seconds") == NOW


def test_a_failed_check_leaves_the_last_success_time(metrics: Metrics) -> None:
    """Only a check that read the kernel moves the last-successful-check time."""
    metrics.checked(ok=False)
    assert value(metrics.text().decode(), "efa_guard_last_successful_check_timestamp_seconds") == 0


def test_a_correction_counts_observes_latency_and_restores_in_sync(metrics: Metrics) -> None:
    """corrected() bumps its counter, fills the histogram, and marks the chain in sync."""
    metrics.checked(ok=True, chains=[("ipv4", "raw/EFA_PRE", False)])
    chains = [("ipv4", "raw/EFA_PRE")]
    metrics.corrected(trigger="rule-change", latency_s=0.02, chains=chains)
    metrics.corrected(trigger="rule-change", latency_s=0.3, chains=chains)
    text = metrics.text().decode()
    labels = {"trigger": "rule-change", "family": "ipv4", "chain": "raw/EFA_PRE"}
    assert value(text, "efa_guard_corrections_total", **labels) == 2
    assert value(text, "efa_guard_correction_latency_seconds_count", family="ipv4") == 2
    assert (
        value(text, "efa_guard_correction_latency_seconds_bucket", family="ipv4", le="0.025") == 1
    )
    assert value(text, "efa_guard_correction_latency_seconds_sum", family="ipv4") == pytest.approx(
        0.32
    )
    assert value(text, "efa_guard_policy_in_sync", family="ipv4", chain="raw/EFA_PRE") == 1


def test_one_correction_of_several_chains(metrics: Metrics) -> None:
    """Each chain counts; the latency is one observation per family, not per chain."""
    chains = [("ipv4", "filter/EFA_INPUT"), ("ipv4", "raw/EFA_PRE"), ("ipv6", "filter/EFA_INPUT")]
    metrics.corrected(trigger="kube-proxy", latency_s=0.05, chains=chains)
    text = metrics.text().decode()
    for family, chain in chains:
        labels = {"trigger": "kube-proxy", "family": family, "chain": chain}
        assert value(text, "efa_guard_corrections_total", **labels) == 1
    assert value(text, "efa_guard_correction_latency_seconds_count", family="ipv4") == 1
    assert value(text, "efa_guard_correction_latency_seconds_count", family="ipv6") == 1


def test_label_values_stay_bounded(metrics: Metrics) -> None:
    """An unknown trigger or a stage with detail becomes a fixed value, never free text."""
    metrics.corrected(trigger="pid 4242 did it", latency_s=0.01, chains=[("ipv4", "filter/X")])
    metrics.correction_failed("read ipv4+ipv6")
    metrics.correction_failed("something unexpected")
    text = metrics.text().decode()
    assert value(
        text, "efa_guard_corrections_total", trigger="other", family="ipv4", chain="filter/X"
    )
    assert value(text, "efa_guard_correction_failures_total", stage="read") == 1
    assert value(text, "efa_guard_correction_failures_total", stage="other") == 1


def test_contests_count_only_when_a_fight_begins(metrics: Metrics) -> None:
    """contested(True) twice is one fight; after it ends, a new one counts again."""
    metrics.contested(active=True)
    metrics.contested(active=True)
    assert value(metrics.text().decode(), "efa_guard_contested") == 1
    metrics.contested(active=False)
    metrics.contested(active=True)
    text = metrics.text().decode()
    assert value(text, "efa_guard_contests_total") == 2
    assert value(text, "efa_guard_contested") == 1


def test_state_gauges(metrics: Metrics) -> None:
    """Paused, last-known-good, config-rejected and the exposure count read as set."""
    metrics.paused(active=True)
    metrics.last_known_good(active=True)
    metrics.config_rejected(active=True)
    metrics.exposed(3)
    text = metrics.text().decode()
    assert value(text, "efa_guard_enforcement_paused") == 1
    assert value(text, "efa_guard_last_known_good_config") == 1
    assert value(text, "efa_guard_config_rejected") == 1
    assert value(text, "efa_guard_exposed_outside_allowlist") == 3
    metrics.config_rejected(active=False)
    assert value(metrics.text().decode(), "efa_guard_config_rejected") == 0


def test_forget_chains_drops_stale_series(metrics: Metrics) -> None:
    """After a reload that removed a chain, its in_sync series is gone."""
    metrics.checked(ok=True, chains=[("ipv4", "filter/OLD", True)])
    metrics.forget_chains()
    assert not any(k[0] == "efa_guard_policy_in_sync" for k in samples(metrics.text().decode()))


def test_two_instances_do_not_share_a_registry() -> None:
    """Each Metrics has its own registry (several daemons' worth in one process)."""
    a = Metrics(version="1", backend="nft")
    b = Metrics(version="1", backend="nft")
    a.contested(active=True)
    assert value(a.text().decode(), "efa_guard_contested") == 1
    assert value(b.text().decode(), "efa_guard_contested") == 0


def test_textfile_is_written_whole_and_readable_by_node_exporter(
    metrics: Metrics, tmp_path: Path
) -> None:
    """The .prom file parses, is world-readable, and no temporary file is left beside it."""
    old = os.umask(0o077)
    try:
        path = metrics.write_textfile(tmp_path)
    finally:
        os.umask(old)
    assert path == tmp_path / TEXTFILE_NAME
    assert value(path.read_text(), "efa_guard_build_info", version="1.2.3", backend="nft") == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [TEXTFILE_NAME]


def test_textfile_is_replaced_by_rename_never_rewritten(metrics: Metrics, tmp_path: Path) -> None:
    """A rewrite renames a new file over the old one (a reader sees the old or the new, whole)."""
    first = metrics.write_textfile(tmp_path)
    reader = first.open()  # node_exporter in the middle of a read
    metrics.contested(active=True)
    second = metrics.write_textfile(tmp_path)
    with reader:
        assert value(reader.read(), "efa_guard_contested") == 0
    assert value(second.read_text(), "efa_guard_contested") == 1


def test_the_default_directory_is_debians_when_it_exists(
    metrics: Metrics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No directory given: node_exporter's default, or an error saying it does not exist."""
    monkeypatch.setattr(output, "DEFAULT_TEXTFILE_DIRECTORY", tmp_path)
    assert metrics.write_textfile() == tmp_path / TEXTFILE_NAME
    monkeypatch.setattr(output, "DEFAULT_TEXTFILE_DIRECTORY", tmp_path / "absent")
    with pytest.raises(TextfileError, match=f"{tmp_path}/absent does not exist"):
        metrics.write_textfile()


def test_textfile_in_a_missing_directory_names_the_path(metrics: Metrics, tmp_path: Path) -> None:
    """A directory that does not exist is a TextfileError naming the file."""
    missing = tmp_path / "nope"
    with pytest.raises(TextfileError, match=f"{missing}/efa_guard.prom: no such directory"):
        metrics.write_textfile(missing)


def test_textfile_in_an_unwritable_directory_names_the_path(tmp_path: Path) -> None:
    """A directory the daemon may not write to is a TextfileError naming the file, nothing left."""
    need(os.geteuid() == 0, "needs root to run a child as nobody")
    tmp_path.chmod(0o755)
    code = (
        "from pathlib import Path\nfrom efa_guard.metrics import Metrics, TextfileError\n"
        f"try:\n    Metrics(version='1', backend='nft').write_textfile(Path({str(tmp_path)!r}))\n"
        "except TextfileError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        user=65534,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert (
        out.stdout.strip()
        == f"cannot write metrics to {tmp_path}/efa_guard.prom: Permission denied"
    )
    assert list(tmp_path.iterdir()) == []


def test_importing_the_cli_and_metrics_does_not_load_the_client() -> None:
    """`efa-guard check` never pays for prometheus_client: it loads only when a Metrics is made."""
    code = (
        "import sys, efa_guard.cli, efa_guard.metrics\nprint('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_endpoint_serves_the_registry_and_releases_its_port(metrics: Metrics) -> None:
    """serve() answers /metrics on loopback; close() frees the port for the next daemon."""
    host, port = metrics.serve("127.0.0.1:0")
    metrics.contested(active=True)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert value(text, "efa_guard_contested") == 1
    metrics.close()
    with socket.create_server((host, port)):
        pass


def test_the_endpoint_listens_on_ipv6_loopback(metrics: Metrics) -> None:
    """A bracketed IPv6 address binds an AF_INET6 socket."""
    need(socket.has_ipv6 and _ipv6_loopback(), "needs ::1")
    host, port = metrics.serve("[::1]:0")
    with urllib.request.urlopen(f"http://[{host}]:{port}/metrics", timeout=5) as resp:
        assert b"efa_guard_build_info" in resp.read()


def test_a_port_in_use_is_a_listen_error_naming_it(metrics: Metrics) -> None:
    """A taken port gives a ListenError that names the address and says why."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(
            ListenError, match=f"127.0.0.1:{port} for metrics: address already in use"
        ):
            metrics.serve(f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9731", ("127.0.0.1", 9731)), ("[::1]:9731", ("::1", 9731))],
)
def test_parse_listen_accepts(listen: str, expected: tuple[str, int]) -> None:
    """IPv4 and bracketed IPv6 addresses with a port are accepted."""
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "reason"),
    [("9731", "ADDRESS:PORT"), ("::1:9731", "brackets"), ("127.0.0.1:http", "0 to 65535"),
     ("127.0.0.1:70000", "0 to 65535")],
)  # fmt: skip
def test_parse_listen_rejects(listen: str, reason: str) -> None:
    """A malformed listen address is a ValueError that says what is expected."""
    with pytest.raises(ValueError, match=reason):
        parse_listen(listen)


def _ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False
