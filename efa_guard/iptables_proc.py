"""The process core of the iptables runner: finding binaries, starting them, reading errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from efa_guard.errors import (
    CommandError,
    IptablesMissingError,
    PrivilegeError,
    ReadCommandError,
)
from efa_guard.rundir import safe_dir

Kind = Literal["nft", "legacy"]
KINDS: tuple[Kind, ...] = ("nft", "legacy")
Tool = Literal["iptables", "iptables-restore", "iptables-save"]

_SEARCH_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
_NO_PRIVILEGE = ("Permission denied", "Operation not permitted")
_FAILED_LINE = re.compile(r"line (\d+) failed")
_RESOURCE_PROBLEM = 4  # iptables' exit code for "lock held" and similar


def which(name: str) -> str | None:
    """A tool's absolute path, looking in the sbin directories too."""
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=f"{path}:{_SEARCH_PATH}" if path else _SEARCH_PATH)


CREDIT_TTL = 2.0  # seconds an expected close of the xtables lock stays expected


class Activity:
    """The PIDs of our recent iptables processes, and the lock closes ours will cause.

    nf_tables events name the committing PID: the daemon ignores its own writes by it. On
    legacy, the daemon wakes on every close of the xtables lock; our own restore closes it
    too, and its check reads the result back anyway. So each lock-taking command of ours
    leaves a credit per close it will cause, and the watcher spends one instead of waking.
    A credit lasts while its command may still close the lock and CREDIT_TTL after it ended.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._pids: deque[int] = deque(maxlen=256)
        self._credits: deque[list[float]] = deque()  # [pid, deadline], one per expected close
        self._clock = clock
        self._lock = threading.Lock()

    def started(self, pid: int) -> None:
        """One of our commands runs with this PID."""
        with self._lock:
            self._pids.append(pid)

    def is_own(self, pid: int) -> bool:
        """Whether the PID is one of our recent commands."""
        with self._lock:
            return pid in self._pids

    def expect_closes(self, pid: int, count: int, *, within: float) -> None:
        """Our command `pid` will close the xtables lock `count` times, within `within` s."""
        with self._lock:
            now = self._clock()
            while self._credits and self._credits[0][1] <= now:
                self._credits.popleft()  # unused and expired
            self._credits.extend([float(pid), now + within + CREDIT_TTL] for _ in range(count))

    def ended(self, pid: int) -> None:
        """Our command `pid` ended: its closes are behind it, its credits expire soon."""
        with self._lock:
            deadline = self._clock() + CREDIT_TTL
            for credit in self._credits:
                if credit[0] == pid:
                    credit[1] = min(credit[1], deadline)

    def expecting(self) -> bool:
        """Whether a close of ours is still due (a credit not spent and not expired)."""
        with self._lock:
            now = self._clock()
            return any(deadline > now for _, deadline in self._credits)

    def own_lock_close(self) -> bool:
        """A close of the xtables lock was seen: True (one credit spent) if one of ours was due.

        The close may be a foreign writer's that came first; then ours comes later, finds no
        credit and wakes the check, which reads the foreign write too. The inotify queue is in
        order: a foreign close seen first happened before ours, so before our read-back.
        """
        with self._lock:
            now = self._clock()
            while self._credits:
                if self._credits.popleft()[1] > now:
                    return True
            return False


def lock_closes(argv: Sequence[str], text: str | None, *, private: bool) -> int:
    """How often a command closes the shared xtables lock (measured on iptables 1.8.9).

    iptables-legacy (any command, a listing too) once; iptables-legacy-restore once per table
    it commits (`--test` too); iptables-legacy-save never; none with a private lock file.
    """
    name = Path(argv[0]).name if argv else ""
    if private or not name.startswith(("iptables-legacy", "ip6tables-legacy")):
        return 0
    if name.endswith("-save"):
        return 0
    if name.endswith("-restore"):
        return sum(1 for line in (text or "").splitlines() if line.startswith("*"))
    return 1


@dataclass
class Tools:
    """One backend's binaries: their paths, their argv, and processes of them."""

    kind: Kind
    wait_seconds: int = 5
    activity: Activity = field(default_factory=Activity, repr=False)
    commits: int = field(default=0, repr=False)  # successful writes (restores, nft scripts)
    slot_base: int = field(default=0, repr=False)  # private read locks: slot_base + slot
    _paths: dict[str, str] = field(default_factory=dict, repr=False)

    def binary(self, tool: Tool, family: str = "ipv4") -> str:
        """Absolute path of one tool of this backend (ip6tables' for ipv6)."""
        prefix = "ip6tables" if family == "ipv6" else "iptables"
        name = tool.replace("iptables", f"{prefix}-{self.kind}", 1)
        if name not in self._paths:
            found = which(name)
            if found is None:
                msg = f"{name} not found (install the iptables package)"
                raise IptablesMissingError(msg)
            self._paths[name] = found
        return self._paths[name]

    def argv(self, table: str, *args: str, family: str = "ipv4") -> list[str]:
        """An `iptables --wait -t TABLE ARGS...` command line of this backend."""
        tool = self.binary("iptables", family)
        return [tool, f"--wait={self.wait_seconds}", "-t", table, *args]

    def spawn(
        self, argv: Sequence[str], *, stdin: bool = False, slot: int = 0, text: str | None = None
    ) -> subprocess.Popen[str]:
        """Start one command (C locale); a read (no stdin) locks a private file of its slot.

        `text`: what it will be fed (a restore's tables each close the xtables lock).
        """
        env = _env()
        if not stdin:
            # A read: iptables-legacy takes the xtables lock even to list a chain, and the
            # daemon watches that lock's releases for foreign writers: our reads would wake
            # it again and again. A legacy read copies the table from the kernel in one
            # consistent step, so each concurrent read locks a private file of its own (one
            # per slot: they run in parallel). Writes (restore) take the shared lock, as
            # every writer must.
            private = safe_dir()
            if private is not None:  # else the shared lock: correct, only noisier
                env["XTABLES_LOCKFILE"] = str(private / f"read.lock.{self.slot_base + slot}")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.activity.started(proc.pid)
        closes = lock_closes(argv, text, private="XTABLES_LOCKFILE" in env)
        if closes:  # it may wait for the lock (--wait) before it takes and closes it
            self.activity.expect_closes(proc.pid, closes, within=self.wait_seconds)
        return proc

    def run(self, argv: Sequence[str], text: str | None = None) -> tuple[str, str, int]:
        """Run one command to its end (fed `text` on stdin): stdout, stderr, return code."""
        proc = self.spawn(argv, stdin=text is not None, text=text)
        out, err = proc.communicate(text)
        self.activity.ended(proc.pid)
        return out, err, proc.returncode


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # messages we match on are the untranslated ones
    return env


def raise_for_privilege(argv: Sequence[str], rc: int, out: str, err: str) -> None:
    """PrivilegeError when the command failed for want of privilege."""
    if any(s in err for s in _NO_PRIVILEGE):
        msg = f"not permitted to use iptables (run as root or with CAP_NET_ADMIN): {err.strip()}"
        raise PrivilegeError(msg) from CommandError(argv, rc, out, err)


def is_race(rc: int, stderr: str, text: str) -> bool:
    """A held lock, or a delete of a rule that moved since we read it."""
    if rc == _RESOURCE_PROBLEM or "xtables lock" in stderr:
        return True
    m = _FAILED_LINE.search(stderr)
    if not m:
        return False
    lines = text.splitlines()
    n = int(m.group(1))
    return 0 < n <= len(lines) and lines[n - 1].startswith("-D ")


def nft_tables(tools: Tools) -> frozenset[tuple[str, str]] | None:
    """The ("ipv4", "filter")-style tables nf_tables has; None without nft (assume all)."""
    nft = which("nft")
    if nft is None:
        return None
    argv = [nft, "-j", "list", "tables"]
    stdout, err, rc = tools.run(argv)
    raise_for_privilege(argv, rc, stdout, err)
    try:
        if rc != 0:
            raise ValueError(err.strip())  # noqa: TRY301 - one place turns it into evidence
        items = json.loads(stdout)["nftables"]
        families = {"ip": "ipv4", "ip6": "ipv6"}
        return frozenset(
            (families[t["table"]["family"]], t["table"]["name"])
            for t in items
            if "table" in t and t["table"].get("family") in families
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ReadCommandError(argv, rc, stdout, f"{err} {e}".strip()) from e
