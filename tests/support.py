"""Helpers shared by the tests, the demo and the benchmark (a plain module, not a conftest)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sandbox import Sandbox

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "efa-guard.toml"
BACKENDS = ("nft", "legacy")


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
        argv = [sys.executable, "-m", "efa_guard", *args, "--config", str(config or self.config)]
        return self.box.run(argv, check=False)

    def ipt(self, *args: str) -> str:
        """Run this backend's iptables in the guard namespace; return stdout."""
        return self.box.run([self.iptables, *args]).stdout

    def save(self) -> str:
        """The whole ruleset of this backend, without timestamps and counters."""
        return normalize_save(self.box.save(iptables=self.iptables))

    def check_json(self) -> dict[str, object]:
        """`efa-guard check --json`, parsed."""
        data: dict[str, object] = json.loads(self.efa("check", "--json").stdout)
        return data

    def python(self, code: str) -> str:
        """Run Python code in the guard namespace with efa_guard importable; return stdout."""
        return self.box.run([sys.executable, "-c", code]).stdout


def normalize_save(text: str) -> str:
    """iptables-save output minus its dated comments and packet counters."""
    lines = (line for line in text.splitlines() if not line.startswith("#"))
    return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in lines) + "\n"


def write_config(path: Path, backend: str, text: str | None = None) -> Path:
    """The default config (or `text`) with the backend pinned."""
    body = text if text is not None else DEFAULT_CONFIG.read_text()
    path.write_text(re.sub(r'(?m)^backend = "auto"$', f'backend = "{backend}"', body))
    return path
