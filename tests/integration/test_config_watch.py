"""The config watch survives what config-management tools do to /etc/efa-guard, with no SIGHUP.

The daemon runs in a sandbox on the real kernel with a long timer (so only the watch can
explain a reload); each test replaces the config's directory, file or symlink, then edits
the config again, and waits for the daemon's config_reloaded event and the new rule.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import Guard, wait_for

from tools.harness import journal_entries, write_config
from tools.sandbox import Sandbox


@dataclass
class Watched:
    """A daemon whose config lives at etc/efa-guard/efa-guard.toml under a test directory."""

    guard: Guard
    etc: Path
    proc: subprocess.Popen[str]
    started: float  # unix time before the daemon started

    def journal(self, event: str) -> list[dict[str, str]]:
        """The daemon's journal entries of one event type.

        From its start only: PIDs wrap (pid_max is often 32768), and an earlier process with
        the same PID must not answer for this one (it did: a stale policy_asserted let a test
        delete the config before this daemon had read it).
        """
        return journal_entries(self.proc.pid, event, since=self.started)

    def wait_event(self, event: str, count: int = 1) -> dict[str, str]:
        """Wait until the journal holds `count` entries of `event`; return the last."""
        entries = wait_for(
            f"{count} {event} event(s)", lambda: len(e := self.journal(event)) >= count and e
        )
        assert isinstance(entries, list)
        return entries[-1]  # type: ignore[no-any-return]

    def text(self, ports: str) -> str:
        """The config text with the first port list changed."""
        return self.guard.config.read_text().replace("ports = [111]", f"ports = [{ports}]", 1)

    def changes(self) -> int:
        """How many config_reloaded events said the policy changed."""
        return sum(json.loads(e["CHANGED"]) is True for e in self.journal("config_reloaded"))

    def expect_ports(self, ports: str, reloads: int) -> None:
        """The kernel gets the new ports, by the `reloads`-th reload that changed the policy."""
        wait_for(  # a missed inotify event is caught by the watcher's 5 s safety stat
            f"{reloads} config_reloaded event(s) with changes",
            lambda: self.changes() >= reloads,
            timeout=35,
        )
        wait_for(  # at the latest the 30 s timer check enforces the reloaded policy
            f"--dports {ports} in EFA_INPUT",
            lambda: f"--dports {ports} " in self.guard.ipt("-S", "EFA_INPUT"),
            timeout=35,
        )
        assert all(e["DETAIL"] != "SIGHUP" for e in self.journal("config_reloaded"))


@pytest.fixture
def watched(box: Sandbox, journald: None, tmp_path: Path) -> Iterator[Watched]:  # noqa: ARG001 - journald running
    """The daemon (nft backend, 30 s timer) on a config in its own directory; stopped by PID."""
    etc = tmp_path / "etc"
    (etc / "efa-guard").mkdir(parents=True)
    config = write_config(etc / "efa-guard" / "efa-guard.toml", backend="nft")
    config.write_text(config.read_text().replace("interval = 10.0 ", "interval = 30.0 "))
    guard = Guard(box=box, backend="nft", config=config)
    original = config.read_text()
    argv = ["ip", "netns", "exec", box.guard, sys.executable, "-m", "efa_guard", "run"]
    argv += ["--config", str(config), "--log-format", "journal"]
    stderr = (tmp_path / "daemon.stderr").open("w")
    started = time.time()
    proc = subprocess.Popen(argv, stderr=stderr, text=True)
    w = Watched(guard=guard, etc=etc, proc=proc, started=started)
    try:
        w.wait_event("policy_asserted")
        # Keep the pristine text somewhere the tests' replacements cannot touch.
        guard.config = tmp_path / "pristine.toml"
        guard.config.write_text(original)
        yield w
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        stderr.close()
        assert not w.journal("internal_error")


def test_directory_deleted_and_recreated(watched: Watched) -> None:
    """Deleted, re-created, written: reloaded; the loss and the return are said; edits seen."""
    directory = watched.etc / "efa-guard"
    shutil.rmtree(directory)
    lost = watched.wait_event("source_failed")
    assert "config watch lost" in lost["MESSAGE"]
    directory.mkdir()
    (directory / "efa-guard.toml").write_text(watched.text("111,9999"))
    watched.expect_ports("111,9999", reloads=1)
    back = watched.wait_event("source_restored")
    assert "polling stopped" in back["MESSAGE"]
    (directory / "efa-guard.toml").write_text(watched.text("111,9998"))
    watched.expect_ports("111,9998", reloads=2)


def test_file_replaced_by_rename(watched: Watched) -> None:
    """Write a temporary file and rename it over the config: reloaded; an edit after it too."""
    directory = watched.etc / "efa-guard"
    new = directory / ".efa-guard.toml.tmp"
    new.write_text(watched.text("111,9999"))
    new.rename(directory / "efa-guard.toml")
    watched.expect_ports("111,9999", reloads=1)
    (directory / "efa-guard.toml").write_text(watched.text("111,9998"))
    watched.expect_ports("111,9998", reloads=2)


def test_directory_swapped_through_a_symlink(watched: Watched) -> None:
    """etc/efa-guard becomes a symlink, then is swapped to another target: each is followed."""
    etc = watched.etc
    for version, ports in (("v1", "111,9999"), ("v2", "111,9998")):
        (etc / version).mkdir()
        (etc / version / "efa-guard.toml").write_text(watched.text(ports))
    link = etc / "efa-guard.new"
    link.symlink_to("v1")
    shutil.rmtree(etc / "efa-guard")
    link.rename(etc / "efa-guard")  # a directory replaced by a symlink to one
    watched.expect_ports("111,9999", reloads=1)
    link.symlink_to("v2")
    link.replace(etc / "efa-guard")  # the atomic swap `ln -sfn` cannot do
    watched.expect_ports("111,9998", reloads=2)
    (etc / "v2" / "efa-guard.toml").write_text(watched.text("111,9997"))
    watched.expect_ports("111,9997", reloads=3)
    # The old target is no longer the config: writing it changes nothing.
    (etc / "v1" / "efa-guard.toml").write_text(watched.text("111,9996"))
    time.sleep(1.5)
    assert watched.changes() == 3
    assert "--dports 111,9997 " in watched.guard.ipt("-S", "EFA_INPUT")
