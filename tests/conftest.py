"""Shared fixtures. Tests that need the kernel are skipped on a laptop, but fail in CI."""

from __future__ import annotations

import pytest
from support import IN_CI

from tools.harness import DEFAULT_CONFIG

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skip, to turn them into a failure in CI."""
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is an error: the machine must have everything."""
    if IN_CI and _skipped and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CI=true but {len(_skipped)} test(s) were skipped: {', '.join(_skipped)}"
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def default_config_text() -> str:
    """The shipped default policy."""
    return DEFAULT_CONFIG.read_text()
