"""The shipped Prometheus alerting rules: valid, tested by promtool, and about metrics we export."""

from __future__ import annotations

import re
import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families
from support import need

from efa_guard.metrics import Metrics
from tools.harness import REPO

RULES = REPO / "config" / "prometheus" / "efa-guard-alerts.yml"
RULE_TESTS = REPO / "tests" / "prometheus" / "efa-guard-alerts.test.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    need(exe is not None, "promtool missing (apt-get install prometheus)")
    assert exe is not None
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False, cwd=REPO)


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` finds every rule valid."""
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_tests_pass() -> None:
    """`promtool test rules`: each alert fires on the faulty node only, annotations and all."""
    proc = _promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert in the rules has a promtool case where it fires and one where it does not."""
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    tests = RULE_TESTS.read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    silent = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests))
    assert alerts
    assert alerts - firing == set()
    assert alerts - silent == set()


def test_the_rules_name_only_metrics_we_export() -> None:
    """Every efa_guard_* name in an alert expression is a series a Metrics exports."""
    exprs = "\n".join(re.findall(r"expr: (.*)", RULES.read_text()))
    used = set(re.findall(r"\befa_guard_\w+", exprs))
    text = Metrics(version="1", backend="nft").text().decode()
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    exported |= {f.name for f in text_string_to_metric_families(text)}
    assert used
    assert used - exported == set()


def test_the_readme_documents_every_metric_and_alert() -> None:
    """The README's Fleet tables name exactly the metric families and alerts that exist."""
    readme = (REPO / "README.md").read_text()
    documented = set(
        re.findall(r"^\| `(efa_guard_\w+)` \| (?:gauge|counter|histogram) \|", readme, re.MULTILINE)
    )
    text = Metrics(version="1", backend="nft").text().decode()
    families = {f"{f.name}_total" if f.type == "counter" else f.name
                for f in text_string_to_metric_families(text)}  # fmt: skip
    assert documented == families
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert set(re.findall(r"^\| `(EfaGuard\w+)` \|", readme, re.MULTILINE)) == alerts
