"""The command line: subcommands, their output and exit codes; nothing else."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from efa_guard import config as configmod
from efa_guard.backends import choose, other_backend_rules
from efa_guard.catalog import EventKind
from efa_guard.enforce import Inspection, Outcome, enforce, inspect, log_retry
from efa_guard.errors import (
    CommandError,
    ConfigError,
    EfaGuardError,
    IptablesMissingError,
    PrivilegeError,
    ReadError,
    VerifyError,
)
from efa_guard.exposure import Finding, prefetch, survey, visible
from efa_guard.exposure import table as exposure_table
from efa_guard.iptables import Iptables
from efa_guard.log import LOG_FORMATS
from efa_guard.render import restore_text
from efa_guard.rundir import read_backend

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_SHOWN_IN_SUMMARY = 3


@dataclass
class Report:
    """A monitoring-plugin style result: one status line, details, and a JSON form."""

    code: int
    summary: str
    details: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)

    @property
    def status_line(self) -> str:
        """The first line, as monitoring systems read it."""
        return f"EFA-GUARD {STATUS[self.code]} - {self.summary}"

    def emit(self, *, as_json: bool) -> int:
        """Print the report; return the exit code."""
        if as_json:
            body = {"status": STATUS[self.code], "exit_code": self.code, "summary": self.summary}
            print(json.dumps(body | self.data, indent=2, sort_keys=True))
        else:
            print(self.status_line)
            for line in self.details:
                print(line)
        return self.code


def _open(cfg: configmod.Config) -> tuple[Iptables, tuple[str, ...]]:
    return choose(cfg.backend, cfg.policy, recorded=read_backend())


def _chains_data(insp: Inspection) -> list[dict[str, object]]:
    return [
        {
            "chain": want.key,
            "family": want.family,
            "hook": want.hook,
            "in_sync": want == have,
            "exists": have.exists,
            "rules": list(have.rules),
            "jump_positions": [j.position for j in have.jumps],
        }
        for want, have in zip(insp.desired, insp.observed, strict=True)
    ]


def _drift_summary(insp: Inspection) -> str:
    shown = "; ".join(d.describe() for d in insp.drifts[:_SHOWN_IN_SUMMARY])
    more = len(insp.drifts) - _SHOWN_IN_SUMMARY
    return shown + (f"; and {more} more" if more > 0 else "")


def _log_retry(attempt: int, wait: float, exc: BaseException) -> None:
    from efa_guard.log import get_logger  # noqa: PLC0415 - lazy import keeps `check` fast

    log_retry(get_logger(), attempt, wait, exc)


def _check_report(
    cfg: configmod.Config,
    ipt: Iptables,
    warnings: tuple[str, ...],
    *,
    fix: bool,
    exposure: bool = True,
) -> Report:
    outcome: Outcome | None = None
    if fix:
        outcome = enforce(ipt, cfg.policy, on_retry=_log_retry)
        insp = outcome.before
    else:
        # One concurrent batch for the policy and the exposure survey: on legacy every read
        # copies a whole table (nat is kube-proxy's biggest), so overlap them.
        ipt.list_many([*ipt.requests(cfg.policy), *(prefetch(ipt) if exposure else [])])
        insp = inspect(ipt, cfg.policy)
    n = len(cfg.policy.chains)
    data: dict[str, object] = {
        "backend": ipt.kind,
        "families": list(cfg.policy.families),
        "drifted_families": sorted({s.family for s in insp.observed if s not in insp.desired}),
        "config": str(cfg.path),
        "desired_sha256": insp.desired_hash,
        "observed_sha256": insp.observed_hash,
        "drift": [d.as_dict() for d in insp.drifts],
        "warnings": list(warnings),
        "chains": _chains_data(insp),
        "corrected": bool(outcome and outcome.changed),
    }
    shown, survey_warning = _exposed(cfg, ipt) if exposure else ([], ())
    warnings += survey_warning + _missing_interfaces(cfg) + ipt.notes() + _other_backend(cfg, ipt)
    data["warnings"] = list(warnings)
    data["exposed"] = [f.as_dict() for f in shown]
    perf = f" | drift={len(insp.drifts)};;1 chains={n} exposed={len(shown)};1"
    details = [f"warning: {w}" for w in warnings]
    details += [f"exposed: {f.name}: {f.reason}" for f in shown]
    if insp.in_sync:
        code = WARNING if warnings or shown else OK
        digest = insp.desired_hash[:12]
        fams = "+".join(cfg.policy.families)
        summary = f"policy in place: {n} chains, {ipt.kind} backend, {fams}, sha256 {digest}"
        if shown:
            names = ", ".join(f.name for f in shown[:_SHOWN_IN_SUMMARY])
            more = len(shown) - _SHOWN_IN_SUMMARY
            summary += f"; reachable outside the allowlist: {names}"
            summary += f" and {more} more" if more > 0 else ""
        if warnings:
            summary += f"; {warnings[0]}"
        return Report(code, summary + perf, details, data)
    details += [f"drift: {d.describe()}" for d in insp.drifts]
    details.append(f"desired sha256 {insp.desired_hash}")
    details.append(f"observed sha256 {insp.observed_hash}")
    if outcome is not None:
        data["observed_after_sha256"] = outcome.after.observed_hash
        summary = f"corrected {len(insp.drifts)} drift(s) on {ipt.kind}: {_drift_summary(insp)}"
        return Report(WARNING, summary + perf, details, data)
    summary = f"{len(insp.drifts)} drift(s) on {ipt.kind}: {_drift_summary(insp)}"
    return Report(CRITICAL, summary + perf, details, data)


def _other_backend(cfg: configmod.Config, ipt: Iptables) -> tuple[str, ...]:
    """Rules in the other backend's inbound chains: the kernel evaluates them too."""
    try:
        found = other_backend_rules(ipt.kind, cfg.policy.families)
    except EfaGuardError as e:
        return (f"cannot read the other iptables backend: {e}",)
    return tuple(f"rules outside the enforced {ipt.kind} backend: {x}" for x in found)


def _missing_interfaces(cfg: configmod.Config) -> tuple[str, ...]:
    """Configured interfaces that match no link here: their rules match nothing."""
    from efa_guard.policy import any_interface_matches as matches  # noqa: PLC0415

    names = [name for _index, name in socket.if_nameindex()]
    wanted = sorted({r.interface for c in cfg.policy.chains for r in c.rules})
    return tuple(
        f"interface {i} does not exist here: the rules on it match nothing"
        for i in wanted
        if not any(matches(n, [i]) for n in names)
    )


def _exposed(cfg: configmod.Config, ipt: Iptables) -> tuple[list[Finding], tuple[str, ...]]:
    """What is reachable on the management interface but not allowlisted."""
    try:
        found = survey(ipt, cfg.interface, cfg.exposure, skip_allowed=True)
    except (OSError, EfaGuardError) as e:
        return [], (f"cannot tell what is exposed: {e}",)
    return visible(found), ()


def cmd_exposure(args: argparse.Namespace) -> int:
    """Every listening socket and NodePort, and whether it is reachable from outside."""
    try:
        cfg = configmod.load(args.config)
        ipt, warnings = _open(cfg)
        found = survey(ipt, cfg.interface, cfg.exposure)
    except (ConfigError, IptablesMissingError, PrivilegeError, OSError) as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    except EfaGuardError as e:
        print(f"efa-guard: cannot read iptables: {e}", file=sys.stderr)
        return UNKNOWN
    shown = visible(found)
    if args.json:
        doc = {
            "interface": cfg.interface,
            "backend": ipt.kind,
            "services": [f.as_dict() for f in found],
            "exposed": [f.as_dict() for f in shown],
            "warnings": list(warnings),
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"on {cfg.interface}, {ipt.kind} backend:")
        print(exposure_table(found))
        for w in warnings:
            print(f"warning: {w}")
        if shown:
            print("reachable outside the allowlist: " + ", ".join(f.name for f in shown))
    return WARNING if shown else OK


def cmd_check(args: argparse.Namespace) -> int:
    """One-shot compliance check."""
    try:
        cfg = configmod.load(args.config)
        ipt, warnings = _open(cfg)
        ipt.memo = None if args.fix else {}  # one snapshot: the exposure survey reuses reads
        report = _check_report(cfg, ipt, warnings, fix=args.fix, exposure=not args.no_exposure)
    except (ConfigError, IptablesMissingError, PrivilegeError) as e:
        report = Report(UNKNOWN, str(e), data={"error": str(e), "config": str(args.config)})
    except ReadError as e:
        what = f"cannot read iptables: {e}"
        report = Report(UNKNOWN, what, data={"error": str(e), **_evidence(e)})
    except (CommandError, VerifyError) as e:
        code = CRITICAL if args.fix else UNKNOWN
        what = "could not correct drift" if args.fix else "cannot read iptables"
        report = Report(code, f"{what}: {e}", data={"error": str(e), **_evidence(e)})
    except Exception as e:  # noqa: BLE001 - monitoring must get UNKNOWN, never a traceback
        report = Report(UNKNOWN, f"internal error: {e!r}", data={"error": repr(e)})
    return report.emit(as_json=args.json)


def _evidence(e: EfaGuardError) -> dict[str, object]:
    if not isinstance(e, CommandError):
        return {}
    return {"argv": list(e.argv), "returncode": e.returncode, "stderr": e.stderr}


def cmd_apply(args: argparse.Namespace) -> int:
    """Assert the policy, or with --dry-run print what would be written."""
    try:
        cfg = configmod.load(args.config)
        ipt, warnings = _open(cfg)
        for w in warnings:
            print(f"efa-guard: warning: {w}", file=sys.stderr)
        if args.dry_run:
            return _dry_run(cfg, ipt)
        outcome = enforce(ipt, cfg.policy, on_retry=_log_retry)
    except (ConfigError, IptablesMissingError, PrivilegeError) as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    except ReadError as e:
        print(f"efa-guard: cannot read iptables: {e}", file=sys.stderr)
        return UNKNOWN
    except (CommandError, VerifyError) as e:
        print(f"efa-guard: could not assert the policy: {e}", file=sys.stderr)
        if isinstance(e, CommandError) and e.stdin:
            print("efa-guard: transaction was:\n" + e.stdin, file=sys.stderr, end="")
        return CRITICAL
    digest = outcome.after.observed_hash[:12]
    if not outcome.changed:
        print(f"efa-guard: policy already in place on {ipt.kind} (sha256 {digest}); no change")
        return OK
    tables = ", ".join(f"{t.family} {t.table}" for t in outcome.written)
    print(f"efa-guard: policy asserted on {ipt.kind} (sha256 {digest}); rewrote tables: {tables}")
    for d in outcome.before.drifts:
        print(f"  corrected: {d.describe()}")
    return OK


def _dry_run(cfg: configmod.Config, ipt: Iptables) -> int:
    insp = inspect(ipt, cfg.policy)
    for d in insp.drifts:
        print(f"# drift: {d.describe()}")
    for txn in insp.transactions():
        print(txn.text, end="")
    if insp.in_sync:
        print(f"# policy in place on {ipt.kind}; nothing to write")
    return OK


def cmd_render(args: argparse.Namespace) -> int:
    """Print the iptables-restore input of the policy; touches nothing."""
    try:
        cfg = configmod.load(args.config)
    except ConfigError as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    print(f"# efa-guard policy from {cfg.path}, as iptables-restore --noflush input.")
    print("# For a node without the policy: it inserts the jumps, so on a node that has it")
    print("# they would be doubled. `efa-guard apply` corrects any state atomically.")
    text = restore_text(cfg.policy)
    for family in cfg.policy.families:
        tool = "ip6tables-restore" if family == "ipv6" else "iptables-restore"
        print(f"# {family}: {tool} --noflush")
        print(text, end="")
    return OK


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon."""
    from efa_guard import daemon, log  # noqa: PLC0415 - heavy imports, daemon only

    log.configure(args.log_format)
    logger = log.get_logger()
    try:
        cfg = configmod.load(args.config)
    except ConfigError as e:
        logger.error(
            "config_rejected",
            message=f"cannot start: {e}",
            path=e.path,
            key=e.key,
            reason=e.reason,
        )
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    try:
        return daemon.run(cfg, logger)
    except (IptablesMissingError, PrivilegeError) as e:
        logger.error(EventKind.CANNOT_START, message=f"cannot start: {e}", error=str(e))
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN


def cmd_history(args: argparse.Namespace) -> int:
    """Past corrections from the journal."""
    from efa_guard import history  # noqa: PLC0415

    try:
        entries = history.read(since=args.since)
    except EfaGuardError as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
    else:
        print(history.table(entries))
    return OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"policy file (default {configmod.DEFAULT_PATH})",
    )
    parser = argparse.ArgumentParser(
        prog="efa-guard",
        description="Keep EFA's management-interface iptables policy in place.",
        parents=[common],
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="one-shot compliance check (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        description="Compare the kernel with the policy. Exit 0 OK, 1 WARNING (in place, with "
        "a warning; or drift found and corrected by --fix), 2 CRITICAL (drift), 3 UNKNOWN.",
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.add_argument("--fix", action="store_true", help="re-assert the policy if it drifted")
    check.add_argument(
        "--no-exposure",
        action="store_true",
        help="skip the survey of reachable services (on legacy it reads kube-proxy's whole "
        "nat table)",
    )
    check.set_defaults(func=cmd_check)

    apply = sub.add_parser("apply", parents=[common], help="assert the policy (idempotent)")
    apply.add_argument(
        "--dry-run", action="store_true", help="print the transaction instead of running it"
    )
    apply.set_defaults(func=cmd_apply)

    render = sub.add_parser(
        "render", parents=[common], help="print the policy as iptables-restore input"
    )
    render.set_defaults(func=cmd_render)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="the daemon: assert the policy and keep it in place",
        description="Assert the policy, then re-assert it whenever nf_tables events, link "
        "events, a config edit, SIGHUP or the timer show drift. SIGTERM stops it; the policy "
        "stays in place.",
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="auto: journal under systemd, console on a terminal, JSON lines otherwise",
    )
    run.set_defaults(func=cmd_run)

    expo = sub.add_parser(
        "exposure",
        parents=[common],
        help="listening sockets and NodePorts, and whether they are reachable from outside",
        description="Lists every listening TCP/UDP socket (netlink sock_diag) and kube-proxy "
        "NodePort, with whether a new connection on the management interface gets through the "
        "rules in the kernel now, and which rule decides. Exit 1 when something outside the "
        "[exposure] allowlist is reachable.",
    )
    expo.add_argument("--json", action="store_true", help="machine-readable")
    expo.set_defaults(func=cmd_exposure)

    hist = sub.add_parser(
        "history", parents=[common], help="past corrections, read from the journal"
    )
    hist.add_argument("--since", help="as journalctl --since: '1 hour ago', 'today', a date")
    hist.add_argument("--json", action="store_true", help="machine-readable")
    hist.set_defaults(func=cmd_history)
    return parser


class _VersionAction(argparse.Action):
    """--version, resolved only when asked (importlib.metadata is slow to import)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,  # noqa: ARG002 - argparse's signature
        values: object,  # noqa: ARG002
        option_string: str | None = None,  # noqa: ARG002
    ) -> None:
        from efa_guard import __version__  # noqa: PLC0415

        print(f"efa-guard {__version__}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `efa-guard` console script."""
    args = build_parser().parse_args(argv)
    if not hasattr(args, "config"):
        args.config = configmod.DEFAULT_PATH
    code: int = args.func(args)
    return code
