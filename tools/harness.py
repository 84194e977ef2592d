"""What the demo, the benchmarks and the tests share besides the sandbox.

The checkout's paths, configs derived from the shipped default, the ``efa-guard`` command
line, iptables-save text without its noise, and a systemd-journald for the daemon (the
machine's, or one started here and stopped by PID).  No pytest, no printing: callers report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from efa_guard.catalog import MESSAGE_IDS
from efa_guard.journal import journal_available

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

REPO = Path(__file__).resolve().parent.parent
"""The checkout: its ``efa_guard`` package is the one under test."""
DEFAULT_CONFIG = REPO / "config" / "efa-guard.toml"
"""The shipped default policy."""
BACKENDS = ("nft", "legacy")
"""The iptables backends, as the config's ``backend`` spells them."""
JOURNALD = Path("/lib/systemd/systemd-journald")
"""Started (and stopped again) by :func:`journald` when no journald runs."""
JOURNALD_TIMEOUT = 10.0
"""Seconds for a started journald to open its socket, and to stop."""

_BACKEND_LINE = r'^backend\s*=\s*"[^"]*"'
_COUNTERS = re.compile(r"\s*\[\d+:\d+\]$")


class HarnessError(Exception):
    """Something the tools or tests need did not work; the message names the cause."""


def configure(
    text: str,
    *,
    source: Path,
    backend: str | None = None,
    settings: Mapping[str, float] | None = None,
) -> str:
    """``text`` with ``backend`` pinned (unless None) and each ``[daemon]`` setting replaced.

    Every key (``backend``, ``interval``, ``contest_threshold``, ...) must occur on exactly
    one line of ``text`` (read from ``source``, named in the error); other lines are kept.
    """
    subs = [] if backend is None else [(_BACKEND_LINE, f'backend = "{backend}"')]
    subs += [
        (rf"^{key}\s*=\s*[0-9.]+", f"{key} = {value!r}") for key, value in (settings or {}).items()
    ]
    for pattern, replacement in subs:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            msg = f"{source}: expected one line matching {pattern!r}, found {count}"
            raise HarnessError(msg)
    return text


def write_config(
    path: Path,
    *,
    backend: str,
    text: str | None = None,
    settings: Mapping[str, float] | None = None,
) -> Path:
    """Write the default config (or ``text``) to ``path``, via :func:`configure`; ``path``."""
    body = text if text is not None else DEFAULT_CONFIG.read_text()
    source = DEFAULT_CONFIG if text is None else path
    path.write_text(configure(body, source=source, backend=backend, settings=settings))
    return path


def edit_config(path: Path, settings: Mapping[str, float]) -> None:
    """Replace ``[daemon]`` settings of the config at ``path`` in place, via :func:`configure`."""
    path.write_text(configure(path.read_text(), source=path, settings=settings))


def efa_argv(*args: str, config: Path) -> list[str]:
    """``python -m efa_guard ARGS --config CONFIG`` with this interpreter."""
    return [sys.executable, "-m", "efa_guard", *args, "--config", str(config)]


def pythonpath() -> str:
    """``PYTHONPATH`` that makes this checkout's ``efa_guard`` importable from anywhere."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


def ruleset(save: str) -> list[str]:
    """``iptables-save`` output without its dated comments and packet counters."""
    return [_COUNTERS.sub("", line) for line in save.splitlines() if not line.startswith("#")]


def journal_entries(
    pid: int, event: str | None = None, *, since: float | None = None
) -> list[dict[str, str]]:
    """Journal entries of process ``pid`` (of one event type), oldest first; text fields only.

    ``since`` (unix time) drops an earlier process's entries that had the same PID.
    """
    argv = ["journalctl", "--no-pager", "-o", "json", f"_PID={pid}"]
    if since is not None:
        argv.append(f"--since=@{int(since)}")
    if event is not None:
        argv.append(f"MESSAGE_ID={MESSAGE_IDS[event]}")
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    entries: list[dict[str, str]] = []
    for line in out.splitlines():
        if line.strip():
            record = json.loads(line)
            entries.append({k: v for k, v in record.items() if isinstance(v, str)})
    return entries


@dataclasses.dataclass(frozen=True)
class Journald:
    """The journald in use: ``pid`` is the one :func:`journald` started, or None (the machine's)."""

    pid: int | None


@contextlib.contextmanager
def journald(stderr: Path) -> Iterator[Journald]:
    """The machine's journald, or :data:`JOURNALD` started here and stopped (by PID) on exit.

    A started journald's stderr goes to ``stderr``; raises :class:`HarnessError` if none
    runs and none can be started.
    """
    if journal_available():
        yield Journald(pid=None)
        return
    if not JOURNALD.exists():
        msg = f"no journald runs and {JOURNALD} is not installed"
        raise HarnessError(msg)
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [str(JOURNALD)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + JOURNALD_TIMEOUT
        while not journal_available():
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"{JOURNALD} did not start (exit {proc.poll()}): {stderr.read_text().strip()}"
                raise HarnessError(msg)
            time.sleep(0.05)
        yield Journald(pid=proc.pid)
    finally:
        stop_process(proc, grace=JOURNALD_TIMEOUT)


def stop_process(proc: subprocess.Popen[bytes], *, grace: float) -> bool:
    """SIGTERM a process we started (by PID), SIGKILL after ``grace`` s; reap it.

    True if it stopped on SIGTERM (or had exited already), False if it had to be killed.
    """
    if proc.poll() is not None:
        return True
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
        return False
    return True


STATE_ENV = ("EFA_GUARD_RUN_DIR", "EFA_GUARD_STATE_DIR", "EFA_GUARD_SYSTEMD_DIR")


def isolate_state() -> Path:
    """Point efa-guard's state, run and metrics directories at a private temporary directory.

    The demo and the benchmarks call it first: their daemons must never write the host's
    /run/efa-guard, /var/lib/efa-guard or node_exporter's textfile directory. The
    directory is removed at exit.
    """
    import atexit  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    base = Path(tempfile.mkdtemp(prefix="efa-guard-tools-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    for name in (*STATE_ENV, "EFA_GUARD_TEXTFILE_DIR"):
        sub = base / name.removeprefix("EFA_GUARD_").lower()
        sub.mkdir(mode=0o700)
        os.environ.setdefault(name, str(sub))
    os.environ.setdefault("EFA_GUARD_DEFAULT", str(DEFAULT_CONFIG))
    return base
