"""`validate` and `reload`: a config is checked before the daemon sees it, and reload waits."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from efa_guard import config as configmod
from efa_guard import lastgood, paths
from efa_guard.cli.daemonview import STATE_FILE, alive_here
from efa_guard.errors import ConfigError
from efa_guard.rundir import read_json

VALID, INVALID, UNKNOWN = 0, 1, 3
_POLL = 0.05


def load_or_say(path: Path, why: str = "") -> configmod.Config | None:
    """The config at `path`, or None once stderr says why not (`why` leads the reason)."""
    try:
        return configmod.load(path)
    except ConfigError as e:
        print(f"efa-guard: {why}{e}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a config file without applying it."""
    path = args.path or args.config
    cfg = load_or_say(path, "invalid: ")
    if cfg is None:
        return INVALID
    chains = ", ".join(f"{c.table}/{c.name}" for c in cfg.policy.chains)
    families = "+".join(cfg.policy.families)
    digest = lastgood.sha256(cfg.text)[:12]
    print(f"efa-guard: {path} is valid: {chains}; {families}; sha256 {digest}")
    return VALID


def cmd_reload(args: argparse.Namespace) -> int:
    """Validate, signal the daemon, and wait until it enforces the file or rejects it."""
    cfg = load_or_say(args.config, "not reloaded, the file is invalid: ")
    if cfg is None:
        return INVALID
    want = lastgood.sha256(cfg.text)
    state = read_json(STATE_FILE, paths.run_dir())
    pid = state.get("pid") if state else None
    if state is None or not state.get("running") or not alive_here(pid):
        print(
            "efa-guard: no running daemon to reload (is efa-guard.service running?)",
            file=sys.stderr,
        )
        return UNKNOWN
    assert isinstance(pid, int)  # noqa: S101 - alive_here() checked it
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(_POLL)
        state = read_json(STATE_FILE, paths.run_dir()) or {}
        if state.get("pid") != pid or not state.get("running"):
            print("efa-guard: the daemon stopped while reloading", file=sys.stderr)
            return UNKNOWN
        rejected = state.get("rejected")
        if isinstance(rejected, dict) and rejected.get("sha256") == want:
            print(
                f"efa-guard: the daemon rejected the file: {rejected.get('key')}: "
                f"{rejected.get('reason')}",
                file=sys.stderr,
            )
            return INVALID
        if state.get("config_sha256") == want and state.get("verified_sha256") == want:
            print(
                f"efa-guard: reloaded; the policy of {args.config} is verified in the kernel "
                f"(sha256 {want[:12]})"
            )
            return VALID
    print(
        f"efa-guard: the daemon did not confirm the new policy within {args.timeout:g} s "
        "(see journalctl -u efa-guard)",
        file=sys.stderr,
    )
    return UNKNOWN
