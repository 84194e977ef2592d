"""state.json is written when something an operator acts on changes, routine changes batched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fakes import Clock, in_sync, reconciler

from efa_guard.daemon.publish import EVERY, STATE_FILE, Publisher


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private run directory for state.json."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("EFA_GUARD_RUN_DIR", str(directory))
    return directory


def _state(run_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run_dir / STATE_FILE).read_text())
    return data


def test_counters_alone_are_written_at_most_once_per_interval(run_dir: Path) -> None:
    """A second publish with only counters changed waits; next_deadline says when it is owed."""
    pub = Publisher(rec=reconciler(in_sync(), Clock()))
    pub.publish()
    first = _state(run_dir)
    pub.rec.status.counts.checks += 5
    before = time.monotonic()
    pub.publish()
    assert _state(run_dir) == first  # not rewritten yet
    deadline = pub.next_deadline()
    assert deadline is not None
    assert before < deadline <= before + EVERY


def test_what_an_operator_acts_on_is_written_at_once(run_dir: Path) -> None:
    """A change of policy_in_place is written by the very next publish, counters with it."""
    pub = Publisher(rec=reconciler(in_sync(), Clock()))
    pub.publish()
    pub.rec.status.ready = not pub.rec.status.ready
    pub.rec.status.counts.checks += 1
    pub.publish()
    state = _state(run_dir)
    assert state["policy_in_place"] is pub.rec.status.ready
    counters = state["counters"]
    assert isinstance(counters, dict)
    assert counters["checks"] == 1
    assert pub.next_deadline() is None  # nothing owed, metrics off


def test_the_final_state_is_always_written(run_dir: Path) -> None:
    """publish(running=False) at exit is written even right after another write."""
    pub = Publisher(rec=reconciler(in_sync(), Clock()))
    pub.publish()
    pub.publish(running=False)
    assert _state(run_dir)["running"] is False
