"""What several commands share: opening the backend, the shape of a check's data."""

from __future__ import annotations

from efa_guard import config as configmod
from efa_guard.backends import choose
from efa_guard.cli.report import SHOWN_IN_SUMMARY
from efa_guard.enforce import Inspection, log_retry
from efa_guard.errors import CommandError, EfaGuardError
from efa_guard.iptables import Iptables
from efa_guard.rundir import read_backend


def open_backend(cfg: configmod.Config) -> tuple[Iptables, tuple[str, ...]]:
    """The runner for the config's backend (following a running daemon's choice), and warnings."""
    return choose(cfg.backend, cfg.policy, recorded=read_backend())


def chains_data(insp: Inspection) -> list[dict[str, object]]:
    """Per-chain facts of an inspection, for --json."""
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


def drift_summary(insp: Inspection) -> str:
    """The first few drifts, in one line."""
    shown = "; ".join(d.describe() for d in insp.drifts[:SHOWN_IN_SUMMARY])
    more = len(insp.drifts) - SHOWN_IN_SUMMARY
    return shown + (f"; and {more} more" if more > 0 else "")


def log_retry_cli(attempt: int, wait: float, exc: BaseException) -> None:
    """Log a retry of a one-shot command."""
    from efa_guard.log import get_logger  # noqa: PLC0415 - lazy import keeps `check` fast

    log_retry(get_logger(), attempt, wait, exc)


def evidence(e: EfaGuardError) -> dict[str, object]:
    """The failed command's argv, return code and stderr, for --json."""
    if not isinstance(e, CommandError):
        return {}
    return {"argv": list(e.argv), "returncode": e.returncode, "stderr": e.stderr}
