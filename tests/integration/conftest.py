"""Fixtures for tests on the real kernel: a sandbox per test, efa-guard run inside it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Guard, need

from efa_guard.journal import journal_available
from tools.harness import (
    BACKENDS,
    DEFAULT_CONFIG,
    JOURNALD,
    REPO,
    HarnessError,
    journald,
    write_config,
)
from tools.sandbox import Sandbox, missing_tools, sandbox


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
    return Guard(
        box=box, backend=backend, config=write_config(tmp_path / "g.toml", backend=backend)
    )


@pytest.fixture(autouse=True)
def _run_from_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Subprocesses import efa_guard from this checkout and keep their state in tmp_path."""
    monkeypatch.chdir(REPO)
    for name, sub in (
        ("RUN", "run"),
        ("STATE", "state"),
        ("SYSTEMD", "systemd"),
        ("TEXTFILE", "prom"),
    ):
        (tmp_path / sub).mkdir(mode=0o700)
        monkeypatch.setenv(f"EFA_GUARD_{name}_DIR", str(tmp_path / sub))
    monkeypatch.setenv("EFA_GUARD_DEFAULT", str(DEFAULT_CONFIG))


@pytest.fixture(scope="session", name="journald")
def journald_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real systemd-journald: the machine's, or one started here and stopped at the end."""
    need(journal_available() or JOURNALD.exists(), "systemd-journald is not installed")
    stderr = tmp_path_factory.mktemp("journald") / "stderr"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(journald(stderr))
        except HarnessError as exc:
            pytest.fail(str(exc))
        yield
