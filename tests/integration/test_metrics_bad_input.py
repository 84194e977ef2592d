"""Metrics that cannot go out, on a real daemon: one metrics_failed naming why; it still guards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import GuardDaemon, daemon_config, launch
from support import Guard, wait_for

pytestmark = pytest.mark.usefixtures("journald")

PORT = 9731


def _start(guard: Guard, tmp_path: Path, metrics: str) -> GuardDaemon:
    """The daemon with a [metrics] section (legacy has only the timer: a short one)."""
    daemon_config(guard, 30.0 if guard.backend == "nft" else 0.5)
    guard.config.write_text(guard.config.read_text() + f"\n[metrics]\n{metrics}\n")
    return launch(guard, tmp_path)


def _failed_then_corrects(d: GuardDaemon, *names: str) -> None:
    """One metrics_failed naming every one of `names`; then a tamper is still corrected."""
    try:
        entry = d.wait_event("metrics_failed")
        for name in names:
            assert name in entry["MESSAGE"], entry["MESSAGE"]
        assert entry["PRIORITY"] == "3"
        before = d.corrections()
        d.guard.ipt("-D", "EFA_INPUT", "1")
        wait_for("the tamper corrected", lambda: d.corrections() > before)
        assert "1024:6513" in d.guard.ipt("-S", "EFA_INPUT")
        assert d.proc.poll() is None
        assert len(d.journal("metrics_failed")) == 1  # logged once, not on every write
    finally:
        d.stop()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only bind mount (what ProtectSystem= makes of an unlisted path)."""
    where = tmp_path / "ro"
    where.mkdir()
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_textfile_directory_absent(guard: Guard, tmp_path: Path) -> None:
    """A textfile directory that does not exist: named, 'no such directory', tamper corrected."""
    where = tmp_path / "absent"
    d = _start(guard, tmp_path, f'textfile_directory = "{where}"\ninterval = 1.0')
    _failed_then_corrects(d, str(where), "no such directory")


def test_textfile_directory_is_a_file(guard: Guard, tmp_path: Path) -> None:
    """A textfile 'directory' that is a regular file: named with the cause, tamper corrected."""
    where = tmp_path / "plain"
    where.write_text("")
    d = _start(guard, tmp_path, f'textfile_directory = "{where}"\ninterval = 1.0')
    _failed_then_corrects(d, str(where), "Not a directory")


def test_textfile_directory_read_only(guard: Guard, tmp_path: Path, read_only: Path) -> None:
    """A read-only textfile directory: named with the cause, tamper corrected."""
    d = _start(guard, tmp_path, f'textfile_directory = "{read_only}"\ninterval = 1.0')
    _failed_then_corrects(d, str(read_only), "Read-only file system")


def test_listen_port_in_use(guard: Guard, tmp_path: Path) -> None:
    """A port another process listens on: the address named, in use, tamper corrected."""
    guard.box.start_listeners(tcp=[PORT], udp=[], host="127.0.0.1")
    d = _start(guard, tmp_path, f'textfile_directory = ""\nlisten = "127.0.0.1:{PORT}"')
    _failed_then_corrects(d, f"127.0.0.1:{PORT}", "address already in use")
