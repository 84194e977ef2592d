"""What the reconcile step knows and counts, and the hooks through which it tells the daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from efa_guard import config as configmod


def _nothing(*_args: object) -> None:
    """The default hook."""


@dataclass(frozen=True)
class Hooks:
    """What the reconcile step tells the rest of the daemon."""

    config_changed: Callable[[configmod.Config], None] = _nothing  # sources follow it
    retrying: Callable[[], object] = _nothing  # a long retry must not starve the watchdog
    rules_changed: Callable[[], None] = _nothing  # the exposure survey is stale
    verified: Callable[[configmod.Config], object] = _nothing  # keep it as last-known-good


@dataclass
class Counters:
    """What the step counts."""

    events: int = 0
    checks: int = 0
    corrections: int = 0
    failures: int = 0


@dataclass
class Status:
    """What the step knows, for the journal, StatusText and `check` (times are unix seconds)."""

    ready: bool = False  # a check has succeeded: the policy is known to be in place
    last_hash: str = ""  # observed SHA-256 of the whole policy when last in place
    verified_sha256: str = ""  # SHA-256 of the config text last verified in the kernel
    source: str = "file"  # or "last-known-good" / "shipped default" after a broken file
    rejected: dict[str, str] | None = None  # the file that cannot be used, and why
    last_check: float | None = None
    last_correction: float | None = None
    counts: Counters = field(default_factory=Counters)
