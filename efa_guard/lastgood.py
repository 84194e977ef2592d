"""The last-known-good config: every config whose policy the daemon verified in the kernel.

Kept atomically, root-only, under the unit's StateDirectory with its SHA-256, so a broken
file at the next boot still gives a policy: this one, else the package's shipped default.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from efa_guard import config as configmod
from efa_guard.errors import ConfigError
from efa_guard.paths import shipped_default, state_dir

_FILE = "last-good.json"


@dataclass(frozen=True)
class Fallback:
    """A config to enforce instead of a broken file, and where it came from."""

    config: configmod.Config
    source: str  # "last-known-good" | "shipped default"
    saved: float | None  # unix time the last-known-good was verified


def sha256(text: str) -> str:
    """The SHA-256 of a config's text, as recorded and as `check` compares it."""
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes as they are (valid or not): "" when unreadable.

    Reads at most the config size limit (plus one byte): a huge file hashes its head.
    """
    from efa_guard.limits import DEFAULT_LIMITS  # noqa: PLC0415

    try:
        with path.open("rb") as f:
            return hashlib.sha256(f.read(DEFAULT_LIMITS.max_bytes + 1)).hexdigest()
    except (OSError, ValueError):
        return ""


def save(text: str, origin: Path, directory: Path | None = None) -> bool:
    """Keep `text` as the last-known-good config; False when it cannot be written."""
    base = directory or state_dir()
    record = {"sha256": sha256(text), "path": str(origin), "saved": time.time(), "text": text}
    tmp = base / f".{_FILE}.{os.getpid()}.tmp"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(base / _FILE)
    except OSError:
        return False
    return True


def saved_sha256(directory: Path | None = None) -> str | None:
    """The SHA-256 of the kept config, or None."""
    record = _read(directory or state_dir())
    return str(record["sha256"]) if record else None


def _read(base: Path) -> dict[str, object] | None:
    try:
        record = json.loads((base / _FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return None
    if sha256(str(record["text"])) != record.get("sha256"):
        return None  # damaged: never enforce a file that is not what was verified
    return record


def fallback(path: Path, directory: Path | None = None) -> Fallback | None:
    """The last-known-good config, else the shipped default; `path` stays the file to watch."""
    record = _read(directory or state_dir())
    if record is not None:
        try:
            cfg = configmod.parse(str(record["text"]), path=path)
            saved = record.get("saved")
            return Fallback(cfg, "last-known-good", saved if isinstance(saved, float) else None)
        except ConfigError:
            pass  # written by an older version that validated differently: try the default
    try:
        text = shipped_default().read_text()
        return Fallback(configmod.parse(text, path=path), "shipped default", None)
    except (OSError, UnicodeDecodeError, ConfigError):
        return None
