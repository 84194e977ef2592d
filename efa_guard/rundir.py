"""/run/efa-guard: private lock files for reads, and the backend the daemon chose.

The daemon gets it from systemd (RuntimeDirectory=, removed when it stops); one-shot
commands create it. Anything that is not a directory owned by us and closed to others is
not trusted, and then nothing is read from or written to it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from efa_guard.paths import run_dir

_BACKEND = "backend"


def safe_dir(path: Path | None = None) -> Path | None:
    """The directory, created 0700 when missing, or None when it cannot be trusted."""
    path = path or run_dir()
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return path


def write_backend(kind: str, path: Path | None = None) -> None:
    """Record the backend the daemon enforces, for `check` with backend = "auto"."""
    directory = safe_dir(path)
    if directory is None:
        return
    tmp = directory / f".{_BACKEND}.{os.getpid()}.tmp"
    try:
        tmp.write_text(f"{kind} {os.getpid()}\n")
        tmp.replace(directory / _BACKEND)
    except OSError:
        return


def read_backend(path: Path | None = None) -> str | None:
    """The backend recorded by a daemon that is running in this network namespace."""
    path = path or run_dir()
    try:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        kind, pid = (path / _BACKEND).read_text().split()
        theirs = Path(f"/proc/{int(pid)}/ns/net").stat().st_ino
        ours = Path("/proc/self/ns/net").stat().st_ino
    except (OSError, ValueError):
        return None
    return kind if kind in ("nft", "legacy") and theirs == ours else None


def clear_backend(path: Path | None = None) -> None:
    """Forget the record when the daemon that wrote it stops."""
    path = path or run_dir()
    target = path / _BACKEND
    try:
        if target.read_text().split()[1] == str(os.getpid()):
            target.unlink()
    except (OSError, IndexError):
        return


def write_json(name: str, data: dict[str, object], directory: Path | None = None) -> bool:
    """Atomically replace `name` in the trusted directory; False when it cannot be written."""
    safe = safe_dir(directory)
    if safe is None:
        return False
    tmp = safe / f".{name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(data, sort_keys=True) + "\n")
        tmp.replace(safe / name)
    except OSError:
        return False
    return True


def read_json(name: str, directory: Path | None = None) -> dict[str, object] | None:
    """The JSON object `name` in the trusted directory, or None (missing, untrusted, broken)."""
    path = directory or run_dir()
    try:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        data = json.loads((path / name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
