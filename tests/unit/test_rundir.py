"""/run/efa-guard: trusted only when it is ours; the daemon's backend only while it runs here."""

from __future__ import annotations

from pathlib import Path

from efa_guard.rundir import clear_backend, read_backend, safe_dir, write_backend


def test_backend_record_round_trip_and_clear(tmp_path: Path) -> None:
    """A record written by this (live) process in this netns is read back; clear removes it."""
    run = tmp_path / "efa-guard"
    write_backend("legacy", run)
    assert (run.stat().st_mode & 0o777) == 0o700
    assert read_backend(run) == "legacy"
    clear_backend(run)
    assert read_backend(run) is None


def test_a_dead_writer_is_ignored(tmp_path: Path) -> None:
    """A record left by a process that is gone is not trusted."""
    run = tmp_path / "efa-guard"
    run.mkdir(mode=0o700)
    (run / "backend").write_text("nft 999999999\n")
    assert read_backend(run) is None


def test_a_directory_open_to_others_is_not_trusted(tmp_path: Path) -> None:
    """A world-writable directory (or a symlink) is refused for locks and records."""
    run = tmp_path / "efa-guard"
    run.mkdir()
    run.chmod(0o777)
    assert safe_dir(run) is None
    link = tmp_path / "link"
    link.symlink_to(run)
    assert safe_dir(link) is None
    write_backend("nft", run)
    assert not (run / "backend").exists()
