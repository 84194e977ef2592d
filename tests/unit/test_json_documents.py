"""The --json documents and state.json carry `schema`, and efa-guard(8) names their members."""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from manpage import MAN8, mentions, roff, sections

from efa_guard import history
from efa_guard.cli import check, commands, common, report
from efa_guard.daemon import publish
from efa_guard.daemon.step import Reconciler
from efa_guard.exposure import Finding
from efa_guard.findings import Visibility
from efa_guard.plan import Drift, DriftKind
from tools.harness import DEFAULT_CONFIG


def documented(name: str) -> str:
    """The subsection of JSON DOCUMENTS in efa-guard(8) that describes one document."""
    return sections(sections(roff(MAN8), "SH")["JSON"], "SS")[name]


def literal_keys(func: object) -> set[str]:
    """String keys a function puts in dicts: `{"k": ...}` literals and `d["k"] = ...`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))  # type: ignore[arg-type]
    keys: set[object] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys |= {k.value for k in node.keys if isinstance(k, ast.Constant)}
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.slice, ast.Constant)
        ):
            keys.add(node.slice.value)
    return {k for k in keys if isinstance(k, str)}


def test_check_document(capsys: pytest.CaptureFixture[str]) -> None:
    """`check --json` has schema 1 and every member it can carry is in efa-guard(8)."""
    code = report.Report(report.WARNING, "s", data={"backend": "nft"}).emit(as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert code == report.WARNING
    assert doc["schema"] == report.CHECK_SCHEMA == 1
    members = set(doc) | literal_keys(check._check_report) | literal_keys(check._check)  # noqa: SLF001 - the report's own builders
    members |= literal_keys(common.chains_data) | literal_keys(common.evidence)
    members |= set(Drift(DriftKind.RULE_MISSING, "filter/X").as_dict())
    section = documented("check")
    assert {"schema", "drift", "chains", "daemon", "exposed", "error"} <= members
    for member in members:
        assert mentions(section, member), member


def finding() -> Finding:
    """One reachable socket."""
    seen = Visibility(True, "no rule drops it", False)  # noqa: FBT003
    return Finding("socket", "tcp", 3306, "ipv4", "0.0.0.0", seen)  # noqa: S104


def test_exposure_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`exposure --json` has schema 1, and every member (and a finding's) is in efa-guard(8)."""
    fake = SimpleNamespace(kind="nft")
    monkeypatch.setattr(check, "open_backend", lambda _cfg: (fake, ("w",)))
    monkeypatch.setattr(check, "survey", lambda *_a, **_k: [finding()])
    code = check.cmd_exposure(argparse.Namespace(config=DEFAULT_CONFIG, json=True))
    doc = json.loads(capsys.readouterr().out)
    assert code == report.WARNING
    assert doc["schema"] == report.EXPOSURE_SCHEMA == 1
    assert doc["exposed"] == [finding().as_dict()]
    section = documented("exposure")
    for member in set(doc) | set(finding().as_dict()):
        assert mentions(section, member), member


def test_history_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`history --json` is {"schema": 1, "events": [...]}, each member in efa-guard(8)."""
    entry = history.Entry(
        time=datetime(2026, 12, 1, tzinfo=UTC),
        host="node1",
        event="drift_corrected",
        trigger="timer",
        drift=("filter/EFA_INPUT: rule 1 missing",),
        culprit="",
        message="drift corrected",
        fields={"LATENCY_MS": "1.5", "_PID": "42"},
    )
    monkeypatch.setattr(history, "read", lambda **_kw: [entry])
    args = argparse.Namespace(since=None, directory=None, file=None, host=None, kind=None)
    args.json = True
    assert commands.cmd_history(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"schema": report.HISTORY_SCHEMA, "events": [entry.as_dict()]}
    assert report.HISTORY_SCHEMA == 1
    section = documented("history")
    assert '{"schema": 1, "events": [...]}' in section
    for member in entry.as_dict():
        assert mentions(section, member), member


def test_state_document() -> None:
    """state.json has schema 1, and every member the daemon writes is in efa-guard(8)."""
    members = literal_keys(publish.Publisher.snapshot)
    assert publish.SCHEMA == 1
    assert "schema" in members
    section = documented("/run/efa-guard/state.json")
    for member in members:
        assert mentions(section, member), member
    for member in literal_keys(Reconciler.counters):
        assert mentions(section, member), member


def test_schema_sections_exist() -> None:
    """efa-guard(8) describes each of the four documents, and the README's JSON section too."""
    assert set(sections(sections(roff(MAN8), "SH")["JSON"], "SS")) == {
        "check",
        "exposure",
        "history",
        "/run/efa-guard/state.json",
    }
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "### JSON documents" in readme
