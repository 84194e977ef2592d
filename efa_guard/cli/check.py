"""`efa-guard check` and `efa-guard exposure`: what the kernel holds, and what is reachable."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from pathlib import Path

from efa_guard import config as configmod
from efa_guard import lastgood
from efa_guard.cli import daemonview
from efa_guard.cli.common import (
    chains_data,
    drift_summary,
    evidence,
    log_retry_cli,
    open_backend,
)
from efa_guard.cli.report import (
    CRITICAL,
    EXPOSURE_SCHEMA,
    OK,
    SHOWN_IN_SUMMARY,
    UNKNOWN,
    WARNING,
    Report,
)
from efa_guard.enforce import Outcome, enforce, inspect
from efa_guard.errors import (
    CANNOT_RUN,
    WRITE_FAILED,
    ConfigError,
    EfaGuardError,
    IptablesMissingError,
    PrivilegeError,
    ReadError,
)
from efa_guard.exposure import Finding, prefetch, survey, visible
from efa_guard.exposure import table as exposure_table
from efa_guard.iptables import Iptables


def _check_report(  # noqa: PLR0913 - keyword-only switches of one report
    cfg: configmod.Config,
    ipt: Iptables,
    warnings: tuple[str, ...],
    *,
    fix: bool,
    exposure: bool = True,
    paused: bool = False,
) -> Report:
    outcome: Outcome | None = None
    if fix:
        outcome = enforce(ipt, cfg.policy, on_retry=log_retry_cli)
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
        "chains": chains_data(insp),
        "corrected": bool(outcome and outcome.changed),
    }
    shown, survey_warning = _exposed(cfg, ipt) if exposure else ([], ())
    warnings += survey_warning + _missing_interfaces(cfg) + ipt.notes() + _other_backend(cfg, ipt)
    data["warnings"] = list(warnings)
    data["exposed"] = [f.as_dict() for f in shown]
    # Monitoring Plugins ranges: CRITICAL above 0 drifts, WARNING above 0 exposed services.
    perf = f" | drift={len(insp.drifts)};;0;0; chains={n};;;0; exposed={len(shown)};0;;0;"
    details = [f"warning: {w}" for w in warnings]
    details += [f"exposed: {f.name}: {f.reason}" for f in shown]
    if insp.in_sync:
        code = WARNING if warnings or shown else OK
        digest = insp.desired_hash[:12]
        fams = "+".join(cfg.policy.families)
        summary = f"policy in place: {n} chains, {ipt.kind} backend, {fams}, sha256 {digest}"
        if shown:
            names = ", ".join(f.name for f in shown[:SHOWN_IN_SUMMARY])
            more = len(shown) - SHOWN_IN_SUMMARY
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
        summary = f"corrected {len(insp.drifts)} drift(s) on {ipt.kind}: {drift_summary(insp)}"
        return Report(WARNING, summary + perf, details, data)
    summary = f"{len(insp.drifts)} drift(s) on {ipt.kind}: {drift_summary(insp)}"
    if paused:  # the operator's maintenance: loud, but not an incident
        perf = perf.replace(";;0;0;", ";;;0;", 1)
        return Report(WARNING, f"enforcement PAUSED, {summary}{perf}", details, data)
    return Report(CRITICAL, summary + perf, details, data)


def _other_backend(cfg: configmod.Config, ipt: Iptables) -> tuple[str, ...]:
    """Rules in the other backend's inbound chains: the kernel evaluates them too."""
    from efa_guard.backends import other_backend_rules  # noqa: PLC0415

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
        ipt, warnings = open_backend(cfg)
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
            "schema": EXPOSURE_SCHEMA,
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


def _load(path: Path) -> tuple[configmod.Config, str, tuple[str, ...]]:
    """The config to check against, the file's SHA-256, and a warning when it is broken.

    A broken file is checked against what the daemon falls back to (last-known-good, else
    the shipped default), when a daemon has run here: there is a policy that should be in
    place. Without one (a plain install, nothing ever verified) a broken file is UNKNOWN.
    """
    try:
        cfg = configmod.load(path)
    except ConfigError as e:
        found = lastgood.fallback(path) if _daemon_fell_back() else None
        if found is None:
            raise
        digest = lastgood.file_sha256(path)
        warning = f"the config file is broken ({e}); checked against the {found.source} policy"
        return found.config, digest, (warning,)
    return cfg, lastgood.sha256(cfg.text), ()


def _daemon_fell_back() -> bool:
    """Whether a policy should be in place although the file is broken."""
    if lastgood.saved_sha256() is not None:
        return True
    state = daemonview.published()
    return bool(state and state.get("running") and state.get("config_source") != "file")


class _TimedOutError(BaseException):
    """The check ran past --timeout (a BaseException: no catch-all may swallow it)."""


def _alarm(_signum: int, _frame: object) -> None:
    raise _TimedOutError


def cmd_check(args: argparse.Namespace) -> int:
    """One-shot compliance check; never runs past --timeout (UNKNOWN then)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        report = _check(args)
    except _TimedOutError:
        report = Report(UNKNOWN, f"timed out after {args.timeout:g} s", data={"error": "timeout"})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return report.emit(as_json=args.json)


def _check(args: argparse.Namespace) -> Report:
    try:
        cfg, file_sha, broken = _load(args.config)
        ipt, warnings = open_backend(cfg)
        view = daemonview.observe(file_sha)
        if any("config file" in w for w in view.warnings):
            broken = ()  # the daemon's own words say it, with what it enforces
        warnings = (*broken, *view.warnings, *warnings)
        ipt.memo = None if args.fix else {}  # one snapshot: the exposure survey reuses reads
        report = _check_report(
            cfg, ipt, warnings, fix=args.fix, exposure=not args.no_exposure, paused=view.paused
        )
        report.data["daemon"] = view.data
    except CANNOT_RUN as e:
        report = Report(UNKNOWN, str(e), data={"error": str(e), "config": str(args.config)})
    except ReadError as e:
        what = f"cannot read iptables: {e}"
        report = Report(UNKNOWN, what, data={"error": str(e), **evidence(e)})
    except WRITE_FAILED as e:
        code = CRITICAL if args.fix else UNKNOWN
        what = "could not correct drift" if args.fix else "cannot read iptables"
        report = Report(code, f"{what}: {e}", data={"error": str(e), **evidence(e)})
    except Exception as e:  # noqa: BLE001 - monitoring must get UNKNOWN, never a traceback
        report = Report(UNKNOWN, f"internal error: {e!r}", data={"error": repr(e)})
    return report
