"""`efa-guard pause` and `resume`: a maintenance window the daemon honours and always ends."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable

from efa_guard import config as configmod
from efa_guard import paths, pause
from efa_guard.cli.daemonview import STATE_FILE, alive_here
from efa_guard.errors import ConfigError
from efa_guard.rundir import read_json

DONE, REFUSED, UNKNOWN = 0, 1, 3
_WAIT = 10.0


def running_daemon() -> int | None:
    """The running daemon's PID, or None."""
    state = read_json(STATE_FILE, paths.run_dir())
    pid = state.get("pid") if state else None
    if state is None or not state.get("running") or not alive_here(pid):
        return None
    return pid if isinstance(pid, int) else None


def _await(pid: int, done: Callable[[dict[str, object]], bool]) -> bool:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        state = read_json(STATE_FILE, paths.run_dir()) or {}
        if state.get("pid") == pid and done(state):
            return True
        time.sleep(0.05)
    return False


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def cmd_pause(args: argparse.Namespace) -> int:
    """Stop correcting for a while; the daemon keeps observing and resumes on its own."""
    try:
        cap = configmod.load(args.config).daemon.pause_max
    except ConfigError:
        cap = configmod.Daemon().pause_max  # a broken file must not block maintenance
    if args.duration > cap:
        print(
            f"efa-guard: --for {args.duration:g} s is longer than daemon.pause_max "
            f"({cap:g} s); nothing changed",
            file=sys.stderr,
        )
        return REFUSED
    pid = running_daemon()
    if pid is None:
        print(
            "efa-guard: no running daemon: there is no enforcement to pause "
            "(systemctl status efa-guard)",
            file=sys.stderr,
        )
        return UNKNOWN
    held = pause.read()
    if held is not None and held.until > time.time():
        print(
            f"efa-guard: already paused by {held.by} until {_when(held.until)} "
            f"({held.reason}); run `efa-guard resume` first",
            file=sys.stderr,
        )
        return REFUSED
    now = time.time()
    wanted = pause.Pause(
        until=now + args.duration,
        by=pause.requester(),
        reason=args.reason,
        since=now,
        boot_id=pause.boot_id(),
    )
    pause.write(wanted)
    os.kill(pid, signal.SIGUSR2)
    if not _await(pid, lambda s: s.get("paused_until") == wanted.until):
        print(
            "efa-guard: the daemon did not confirm the pause; see journalctl -u efa-guard",
            file=sys.stderr,
        )
        return UNKNOWN
    print(
        f"efa-guard: paused until {_when(wanted.until)} ({args.reason}); the daemon keeps "
        "watching and puts the policy back then, or at `efa-guard resume`"
    )
    return DONE


def cmd_resume(args: argparse.Namespace) -> int:  # noqa: ARG001 - same signature as every command
    """End a pause now; the daemon re-asserts the policy at once."""
    pid = running_daemon()
    if pid is None:
        print("efa-guard: no running daemon to resume (systemctl start efa-guard)", file=sys.stderr)
        return UNKNOWN
    if pause.read() is None:
        print("efa-guard: not paused; nothing changed", file=sys.stderr)
        return REFUSED
    pause.write(None)
    os.kill(pid, signal.SIGUSR2)
    if not _await(pid, lambda s: s.get("paused_until") is None and bool(s.get("policy_in_place"))):
        print(
            "efa-guard: the daemon did not confirm the resume; see journalctl -u efa-guard",
            file=sys.stderr,
        )
        return UNKNOWN
    print("efa-guard: resumed; the policy is re-asserted")
    return DONE
