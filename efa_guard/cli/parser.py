"""The argument parser: every command, option and help text (man pages and completion follow it).

Commands are named by "module:function" and imported only when run: `check` never pays for
the daemon's imports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from efa_guard.catalog import EventKind
from efa_guard.cli.argtypes import Parser, VersionAction, duration, positive
from efa_guard.config import DEFAULT_PATH
from efa_guard.log import LOG_FORMATS

DEFAULT_CONFIG = DEFAULT_PATH


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per command."""
    common = Parser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"policy file (default {DEFAULT_CONFIG})",
    )
    parser = Parser(
        prog="efa-guard",
        description="Keep EFA's management-interface iptables policy in place.",
        parents=[common],
    )
    parser.add_argument("--version", action=VersionAction, nargs=0, help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=summary, description=description)
        p.set_defaults(func=func)
        return p

    check = command(
        "check",
        "efa_guard.cli.check:cmd_check",
        "one-shot compliance check (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        "Compare the kernel with the policy, and report on the daemon that should keep it "
        "there. Exit 0 OK, 1 WARNING (in place, with a warning: daemon not running or stale, "
        "a fallback policy, contested, something exposed; or drift corrected by --fix), "
        "2 CRITICAL (drift), 3 UNKNOWN (cannot tell).",
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.add_argument("--fix", action="store_true", help="re-assert the policy if it drifted")
    check.add_argument(
        "--no-exposure",
        action="store_true",
        help="skip the survey of reachable services (on legacy it reads kube-proxy's whole "
        "nat table)",
    )
    check.add_argument(
        "-t",
        "--timeout",
        type=positive,
        default=30.0,
        help="give up with UNKNOWN after this many seconds (default 30)",
    )
    check.add_argument("-V", "--version", action=VersionAction, nargs=0, help="print the version")

    apply = command(
        "apply",
        "efa_guard.cli.commands:cmd_apply",
        "assert the policy (idempotent)",
        "Put the policy in place now, one atomic iptables-restore transaction per table, and "
        "verify it. Exit 0 done (or already in place), 2 could not, 3 cannot read or no config.",
    )
    apply.add_argument(
        "--dry-run", action="store_true", help="print the transaction instead of running it"
    )
    command(
        "render",
        "efa_guard.cli.commands:cmd_render",
        "print the policy as iptables-restore input",
        "Print the policy as iptables-restore --noflush input; touches nothing.",
    )
    validate = command(
        "validate",
        "efa_guard.cli.control:cmd_validate",
        "check a config file without applying it (like nginx -t)",
        "Validate a config file: exit 0 valid, 1 invalid (the file, key and reason on stderr).",
    )
    validate.add_argument("path", nargs="?", type=Path, help="the file (default: --config)")
    reload = command(
        "reload",
        "efa_guard.cli.control:cmd_reload",
        "validate the file, make the daemon load it, wait until it is enforced",
        "Validate the config file (exit 1 with the reason when it is broken), signal the "
        "running daemon, and wait until it reports the new file's policy verified in the "
        "kernel (exit 0) or rejected (exit 1). Exit 3 when no daemon runs or it does not "
        "answer in time. systemctl reload efa-guard runs this.",
    )
    reload.add_argument(
        "--timeout", type=positive, default=30.0, help="seconds to wait (default 30)"
    )
    pause_cmd = command(
        "pause",
        "efa_guard.cli.pausing:cmd_pause",
        "stop correcting for a maintenance window (the daemon keeps watching)",
        "Pause enforcement: the running daemon stops correcting, keeps observing, and logs "
        "every change it sees as drift_observed. The pause always ends: at --for's deadline "
        "the daemon resumes on its own and re-asserts the policy. It survives a daemon "
        "restart, not a reboot. Exit 0 paused, 1 refused (already paused, longer than "
        "daemon.pause_max), 3 no running daemon.",
    )
    pause_cmd.add_argument(
        "--for",
        dest="duration",
        type=duration,
        default=15 * 60.0,
        metavar="DURATION",
        help="how long: 90s, 15m, 2h (default 15m; at most daemon.pause_max, default 4h)",
    )
    pause_cmd.add_argument(
        "--reason", default="maintenance", help="why (shown in the journal and by check)"
    )
    command(
        "resume",
        "efa_guard.cli.pausing:cmd_resume",
        "end a pause now; the policy is re-asserted at once",
        "End a maintenance pause before its deadline. Exit 0 resumed, 1 not paused, 3 no "
        "running daemon.",
    )
    remove = command(
        "remove",
        "efa_guard.cli.remove:cmd_remove",
        "take efa-guard's chains and jumps out of the kernel (both families, every table)",
        "Remove exactly efa-guard's chains and the jumps to them, in every family and table "
        "the config, the last-known-good config or the shipped default names, one atomic "
        "transaction per table. Refuses while the daemon runs (it would put them back): "
        "`systemctl disable --now efa-guard` first. Exit 0 removed, 1 refused or nothing to "
        "remove, 2 a write failed, 3 cannot read.",
    )
    remove.add_argument(
        "--dry-run", action="store_true", help="print the transactions instead of running them"
    )
    run = command(
        "run",
        "efa_guard.cli.commands:cmd_run",
        "the daemon: assert the policy and keep it in place",
        "Assert the policy, then re-assert it whenever nf_tables events, link events, a config "
        "edit, SIGHUP or the timer show drift. SIGTERM stops it; the policy stays in place. "
        "A broken config at start enforces the last-known-good policy (else the shipped "
        "default). Exit 6 when no policy can be enforced at all.",
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="auto: journal under systemd, console on a terminal, JSON lines otherwise",
    )
    expo = command(
        "exposure",
        "efa_guard.cli.check:cmd_exposure",
        "listening sockets and NodePorts, and whether they are reachable from outside",
        "Lists every listening TCP/UDP socket (netlink sock_diag) and kube-proxy NodePort, "
        "with whether a new connection on the management interface gets through the rules in "
        "the kernel now, and which rule decides. Exit 1 when something outside the [exposure] "
        "allowlist is reachable, 3 when the rules cannot be read.",
    )
    expo.add_argument("--json", action="store_true", help="machine-readable")
    hist = command(
        "history",
        "efa_guard.cli.commands:cmd_history",
        "past corrections, fights and failures, read from the journal",
        "Read efa-guard's events from this machine's journal, or from a collector's "
        "(systemd-journal-remote) with --directory or --file. Shows the events an operator "
        "needs to reconstruct what happened (corrections, fights, failures, rejected and "
        "fallback configs, starts and stops) unless --kind says otherwise. Exit 3 if a "
        "journal directory or file does not exist.",
    )
    hist.add_argument(
        "--since", metavar="WHEN", help="as journalctl --since: '1 hour ago', 'today', a date"
    )
    hist.add_argument(
        "--directory",
        type=Path,
        metavar="DIR",
        help="read the journal files in DIR (a collector's)",
    )
    hist.add_argument(
        "--file", action="append", metavar="FILE", help="read this journal file (repeatable)"
    )
    hist.add_argument(
        "--host", action="append", metavar="NAME", help="only this _HOSTNAME (repeatable)"
    )
    hist.add_argument(
        "--kind",
        action="append",
        choices=[k.value for k in EventKind],
        metavar="KIND",
        help="only this event kind (repeatable; default: corrections, failures, fights, "
        "rejected and fallback configs, stops): " + ", ".join(k.value for k in EventKind),
    )
    hist.add_argument("--json", action="store_true", help="machine-readable")
    return parser
