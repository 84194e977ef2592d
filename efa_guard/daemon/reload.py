"""Config reload: read and validate the file; a broken edit never replaces the running policy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from efa_guard import config as configmod
from efa_guard.errors import ConfigError


@dataclass(frozen=True)
class Reloaded:
    """A new config is accepted."""

    config: configmod.Config
    changes: tuple[str, ...]  # what differs: "policy", "allowlist", "interface", "daemon"
    dropped: tuple[str, ...]  # chains no longer managed (left in the kernel)


def _changes(old: configmod.Config, new: configmod.Config) -> tuple[str, ...]:
    out = []
    if new.policy != old.policy:
        out.append("policy")
    if new.exposure != old.exposure:
        out.append("allowlist")
    if new.interface != old.interface:
        out.append("interface")
    if new.daemon != old.daemon:
        out.append("daemon")
    return tuple(out)


def reload(old: configmod.Config) -> Reloaded:
    """Load the running config's file again; raise ConfigError naming what is wrong."""
    path = old.path
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), "(file)", f"cannot read: {e.strerror or e}") from e
    digest = hashlib.sha256(raw).hexdigest()
    try:
        new = configmod.parse(raw.decode("utf-8"), path=path)
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "(file)", f"not UTF-8: {e}", sha256=digest) from e
    except ConfigError as e:
        e.sha256 = digest
        raise
    if new.backend != old.backend:
        msg = f"changing backend from {old.backend} to {new.backend} needs a restart"
        raise ConfigError(str(path), "backend", msg, sha256=digest)
    dropped = sorted(
        {f"{c.table}/{c.name}" for c in old.policy.chains}
        - {f"{c.table}/{c.name}" for c in new.policy.chains}
    )
    return Reloaded(config=new, changes=_changes(old, new), dropped=tuple(dropped))
