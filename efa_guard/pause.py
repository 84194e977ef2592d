"""A maintenance pause: who asked, why, until when. Kept in the state directory.

`efa-guard pause` writes it and signals the daemon (SIGUSR2); the daemon stops correcting,
keeps observing, and resumes on its own at the deadline. A pause survives a daemon restart
but not a reboot (the kernel's rules are gone then: the policy goes back in at boot).
"""

from __future__ import annotations

import json
import os
import pwd
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from efa_guard.paths import state_dir

FILE = "pause.json"
DEFAULT_FOR = 15 * 60.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


@dataclass(frozen=True)
class Pause:
    """One pause: until (unix time), by whom, why, in which boot."""

    until: float
    by: str
    reason: str
    since: float
    boot_id: str


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `1d` -> seconds; ValueError naming the text otherwise."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        msg = f"{text!r} is not a duration (e.g. 90s, 15m, 2h)"
        raise ValueError(msg)
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        msg = f"{text!r}: a pause must last longer than 0 s"
        raise ValueError(msg)
    return seconds


def boot_id() -> str:
    """The running boot, as the kernel's boot time (a reboot ends a pause).

    Not /proc/sys/kernel/random/boot_id: sandboxing (ProtectKernelTunables= under
    systemd-nspawn) can show the daemon another one than the command that paused it.
    """
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return line.split()[1]
    except OSError:
        pass
    return ""


def requester() -> str:
    """Who asks: the sudo user, else the login user, else the user running this."""
    sudo = os.environ.get("SUDO_USER")
    if sudo:
        return sudo
    try:
        uid = int(Path("/proc/self/loginuid").read_text().strip())
        if uid != 2**32 - 1:
            return pwd.getpwuid(uid).pw_name
    except (OSError, ValueError, KeyError):
        pass
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def write(pause: Pause | None, directory: Path | None = None) -> None:
    """Record the pause (None: remove it); raises OSError when it cannot."""
    base = directory or state_dir()
    path = base / FILE
    if pause is None:
        path.unlink(missing_ok=True)
        return
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = base / f".{FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(asdict(pause)))
    tmp.replace(path)


def read(directory: Path | None = None) -> Pause | None:
    """The recorded pause of this boot, or None (none, broken, or from an earlier boot)."""
    try:
        data = json.loads(((directory or state_dir()) / FILE).read_text())
        pause = Pause(
            until=float(data["until"]),
            by=str(data["by"]),
            reason=str(data["reason"]),
            since=float(data["since"]),
            boot_id=str(data["boot_id"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pause if pause.boot_id == boot_id() else None
