"""/run/efa-guard: private lock files for reads, and the backend the daemon chose.

The daemon gets it from systemd (RuntimeDirectory=, removed when it stops); one-shot
commands create it. Anything that is not a directory owned by us and closed to others is
not trusted, and then nothing is read from or written to it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

RUN_DIR = Path("/run/efa-guard")
_BACKEND = "backend"


def safe_dir(path: Path = RUN_DIR) -> Path | None:
    """The directory, created 0700 when missing, or None when it cannot be trusted."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return path


def write_backend(kind: str, path: Path = RUN_DIR) -> None:
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


def read_backend(path: Path = RUN_DIR) -> str | None:
    """The backend recorded by a daemon that is running in this network namespace."""
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


def clear_backend(path: Path = RUN_DIR) -> None:
    """Forget the record when the daemon that wrote it stops."""
    target = path / _BACKEND
    try:
        if target.read_text().split()[1] == str(os.getpid()):
            target.unlink()
    except (OSError, IndexError):
        return
