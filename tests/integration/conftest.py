"""Fixtures for tests on the real kernel: a sandbox per test, efa-guard run inside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import Sandbox, missing_tools, sandbox
from support import BACKENDS, DEFAULT_CONFIG, REPO, Guard, need, write_config


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


@pytest.fixture(scope="session")
def journald() -> Iterator[None]:
    """A real systemd-journald: the machine's, or one started here and stopped at the end."""
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415

    from efa_guard.journal import journal_available  # noqa: PLC0415

    if journal_available():
        yield
        return
    exe = Path("/lib/systemd/systemd-journald")
    need(exe.exists(), "systemd-journald is not installed")
    proc = subprocess.Popen([str(exe)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not journal_available():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"systemd-journald did not start: {err}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)
