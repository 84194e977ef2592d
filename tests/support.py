"""pytest-side helpers of the tests (a plain module, not a conftest); the harness is in tools/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.harness import efa_argv, ruleset
from tools.sandbox import Sandbox

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def wait_for(
    what: str,
    predicate: Callable[[], object],
    timeout: float = 15.0,
    every: float = 0.05,
    seen: Callable[[], object] | None = None,
) -> object:
    """Poll every `every` s until predicate() is truthy and return its value.

    On timeout fail naming `what`, and what `seen()` returns then (the state that was seen).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    shown = f"; seen: {seen()}" if seen is not None else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}{shown}")


def need(condition: bool, reason: str) -> None:
    """Skip the test when `condition` is false; in CI, fail it instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a requirement is missing: {reason}")
    pytest.skip(reason)


@dataclass
class Guard:
    """One sandbox plus the efa-guard config for one backend."""

    box: Sandbox
    backend: str
    config: Path

    @property
    def iptables(self) -> str:
        """The iptables binary of this backend."""
        return f"iptables-{self.backend}"

    def efa(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the efa-guard CLI inside the guard namespace (never raises on exit code)."""
        return self.box.run(efa_argv(*args, config=config or self.config), check=False)

    def ipt(self, *args: str) -> str:
        """Run this backend's iptables in the guard namespace; return stdout."""
        return self.box.run([self.iptables, *args]).stdout

    def save(self) -> str:
        """The whole ruleset of this backend, without timestamps and counters."""
        return "\n".join(ruleset(self.box.save(iptables=self.iptables))) + "\n"

    def check_json(self) -> dict[str, object]:
        """`efa-guard check --json`, parsed."""
        data: dict[str, object] = json.loads(self.efa("check", "--json").stdout)
        return data

    def python(self, code: str) -> str:
        """Run Python code in the guard namespace with efa_guard importable; return stdout."""
        return self.box.run([sys.executable, "-c", code]).stdout


# Two states of EFA_INPUT and the INPUT jump, each written in one iptables-restore.
STATES = {
    "a": "-A EFA_INPUT -p tcp -m tcp --dport 1111 -j DROP\n-F INPUT\n"
    "-A INPUT -j EFA_INPUT\n-A INPUT -s 10.1.1.1/32 -j ACCEPT\n",
    "b": "-A EFA_INPUT -p tcp -m tcp --dport 2222 -j DROP\n-F INPUT\n"
    "-A INPUT -s 10.2.2.2/32 -j ACCEPT\n-A INPUT -j EFA_INPUT\n",
}
WRITER = """
import signal, subprocess, sys, time
texts = [f"*filter\\n:EFA_INPUT - [0:0]\\n{s}COMMIT\\n" for s in sys.argv[2:]]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("started", flush=True)
while not stop:
    for text in texts:
        subprocess.run([sys.argv[1], "--noflush"], input=text, text=True, check=True)
        time.sleep(0.002)
"""
