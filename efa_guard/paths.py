"""Where efa-guard keeps things; each overridable by an environment variable (tests, containers).

EFA_GUARD_RUN_DIR      /run/efa-guard          live state, read locks (the unit's RuntimeDirectory)
EFA_GUARD_STATE_DIR    /var/lib/efa-guard      last-known-good policy, pause (StateDirectory)
EFA_GUARD_DEFAULT      /usr/share/efa-guard/efa-guard.toml   the shipped default policy
EFA_GUARD_SYSTEMD_DIR  /etc/systemd/system     where an enabled unit's symlinks are
"""

from __future__ import annotations

import os
from pathlib import Path

UNIT = "efa-guard.service"


def _env(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default)


def run_dir() -> Path:
    """Live state and private read locks."""
    return _env("EFA_GUARD_RUN_DIR", "/run/efa-guard")


def state_dir() -> Path:
    """What survives a restart: the last-known-good policy, a pause."""
    return _env("EFA_GUARD_STATE_DIR", "/var/lib/efa-guard")


def shipped_default() -> Path:
    """The package's default policy, the fallback of last resort."""
    return _env("EFA_GUARD_DEFAULT", "/usr/share/efa-guard/efa-guard.toml")


def unit_enabled() -> bool:
    """Whether the service is enabled, so a daemon is expected to run (a cheap file look-up)."""
    base = _env("EFA_GUARD_SYSTEMD_DIR", "/etc/systemd/system")
    try:
        return any(os.path.lexists(d / UNIT) for d in base.glob("*.wants"))
    except OSError:
        return False
