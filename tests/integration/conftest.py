"""Fixtures for tests on the real kernel: a sandbox per test, efa-guard run inside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import Sandbox, missing_tools, sandbox
from support import BACKENDS, REPO, Guard, need, write_config


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """A fresh outside <-> guard <-> pod sandbox, always deleted."""
    missing = missing_tools()
    need(not missing, f"missing: {', '.join(missing)}")
    with sandbox(prefix="efat") as sb:
        yield sb


@pytest.fixture(params=BACKENDS)
def guard(request: pytest.FixtureRequest, box: Sandbox, tmp_path: Path) -> Guard:
    """A sandbox and a config pinned to one backend (each test runs on both)."""
    backend: str = request.param
    return Guard(box=box, backend=backend, config=write_config(tmp_path / "g.toml", backend))


@pytest.fixture(autouse=True)
def _run_from_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses import efa_guard from this checkout."""
    monkeypatch.chdir(REPO)
