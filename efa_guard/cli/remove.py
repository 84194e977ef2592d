"""`efa-guard remove`: take efa-guard's chains and jumps out of the kernel, nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from efa_guard import config as configmod
from efa_guard import lastgood
from efa_guard.catalog import EventKind
from efa_guard.cli.common import open_backend
from efa_guard.cli.pausing import running_daemon
from efa_guard.enforce import inspect
from efa_guard.errors import CommandError, ConfigError, EfaGuardError
from efa_guard.plan import Transaction
from efa_guard.removal import ours, transactions

DONE, REFUSED, FAILED, UNKNOWN = 0, 1, 2, 3


def _configs(path: Path) -> list[configmod.Config]:
    """The file (if valid), the last-known-good and the shipped default: all are ours."""
    out = []
    try:
        out.append(configmod.load(path))
    except ConfigError as e:
        print(f"efa-guard: warning: {e}; removing what the fallbacks define", file=sys.stderr)
    found = lastgood.fallback(path)
    if found is not None:
        out.append(found.config)
    return out


def cmd_remove(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per exit code
    """Remove the policy: every family and table, one transaction per table."""
    if running_daemon() is not None and not args.dry_run:
        print(
            "efa-guard: the daemon is running and would put the policy back: "
            "run `systemctl disable --now efa-guard` first; nothing changed",
            file=sys.stderr,
        )
        return REFUSED
    configs = _configs(args.config)
    policy = ours(configs)
    if policy is None:
        print("efa-guard: no config names any chain; nothing changed", file=sys.stderr)
        return UNKNOWN
    try:
        ipt, _warnings = open_backend(configs[0])
        txns = transactions(inspect(ipt, policy).observed)
        if not txns:
            print(
                f"efa-guard: no efa-guard chain or jump on {ipt.kind}: nothing to remove",
                file=sys.stderr,
            )
            return REFUSED
        if args.dry_run:
            _show(txns)
            return DONE
        for txn in txns:
            ipt.restore(txn)
        left = [c for t in transactions(inspect(ipt, policy).observed) for c in t.chains]
    except CommandError as e:
        print(f"efa-guard: could not remove the policy: {e}", file=sys.stderr)
        return FAILED
    except EfaGuardError as e:
        print(f"efa-guard: {e}", file=sys.stderr)
        return UNKNOWN
    if left:
        print(f"efa-guard: something put chains back meanwhile: {', '.join(left)}", file=sys.stderr)
        return FAILED
    removed = [c for t in txns for c in t.chains]
    _journal(removed, ipt.kind)
    print(
        f"efa-guard: removed from {ipt.kind}: {', '.join(removed)}. Nothing guards the "
        "management interface now; `efa-guard apply` puts the policy back."
    )
    return DONE


def _show(txns: tuple[Transaction, ...]) -> None:
    for txn in txns:
        tool = "ip6tables-restore" if txn.family == "ipv6" else "iptables-restore"
        print(f"# {txn.family}: {tool} --noflush")
        print(txn.text, end="")


def _journal(removed: list[str], backend: str) -> None:
    from efa_guard import log  # noqa: PLC0415 - only when something was removed
    from efa_guard.journal import journal_available  # noqa: PLC0415

    if journal_available():
        log.configure("journal")
        log.get_logger().warning(
            EventKind.POLICY_REMOVED,
            message=f"policy removed from {backend} by efa-guard remove: {', '.join(removed)}",
            chains=removed,
            backend=backend,
        )
