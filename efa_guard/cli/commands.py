"""`apply`, `render`, `run` and `history`."""

from __future__ import annotations

import argparse
import json
import sys

from efa_guard import config as configmod
from efa_guard.catalog import EventKind
from efa_guard.cli.common import log_retry_cli, open_backend
from efa_guard.cli.control import load_or_say
from efa_guard.cli.report import CRITICAL, HISTORY_SCHEMA, OK, UNKNOWN
from efa_guard.enforce import enforce, inspect
from efa_guard.errors import (
    CANNOT_RUN,
    WRITE_FAILED,
    CommandError,
    EfaGuardError,
    IptablesMissingError,
    PrivilegeError,
    ReadError,
)
from efa_guard.iptables import Iptables
from efa_guard.render import restore_text


def cmd_apply(args: argparse.Namespace) -> int:
    """Assert the policy, or with --dry-run print what would be written."""
    try:
        cfg = configmod.load(args.config)
        ipt, warnings = open_backend(cfg)
        for w in warnings:
            print(f"efa-guard: warning: {w}", file=sys.stderr)
        if args.dry_run:
            return _dry_run(cfg, ipt)
        outcome = enforce(ipt, cfg.policy, on_retry=log_retry_cli)
    except CANNOT_RUN as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    except ReadError as e:
        print(f"efa-guard: cannot read iptables: {e}", file=sys.stderr)
        return UNKNOWN
    except WRITE_FAILED as e:
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
    cfg = load_or_say(args.config)
    if cfg is None:
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
    from efa_guard.daemon.main import EXIT_NOT_CONFIGURED  # noqa: PLC0415

    log.configure(args.log_format)
    logger = log.get_logger()
    try:
        return daemon.run(args.config, logger)
    except (IptablesMissingError, PrivilegeError) as e:
        logger.critical(EventKind.CANNOT_START, message=f"cannot start: {e}", error=str(e))
        print(f"efa-guard: {e}", file=sys.stderr)
        return EXIT_NOT_CONFIGURED


def cmd_history(args: argparse.Namespace) -> int:
    """Past corrections from the journal."""
    from efa_guard import history  # noqa: PLC0415

    try:
        entries = history.read(
            since=args.since,
            directory=args.directory,
            files=args.file or (),
            hosts=args.host or (),
            kinds=args.kind or history.EVENTS,
        )
    except EfaGuardError as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    if args.json:
        # An object, not a bare list, so that it can carry its schema version.
        doc = {"schema": HISTORY_SCHEMA, "events": [e.as_dict() for e in entries]}
        print(json.dumps(doc, indent=2))
    else:
        print(history.table(entries))
    return OK
