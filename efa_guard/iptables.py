"""The only place that runs iptables: backend choice, reading chains, atomic restore."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from efa_guard.errors import (
    CommandError,
    ConcurrentChangeError,
    IptablesMissingError,
    PrivilegeError,
)
from efa_guard.observe import observe
from efa_guard.plan import Transaction
from efa_guard.policy import Policy
from efa_guard.rundir import safe_dir
from efa_guard.state import ChainState

Kind = Literal["nft", "legacy"]
KINDS: tuple[Kind, ...] = ("nft", "legacy")

# kube-proxy and kubelet mark the backend they use with these chains in mangle.
KUBE_HINTS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
_SEARCH_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
_LEGACY_TABLES = Path("/proc/net/ip_tables_names")
_NO_CHAIN = (
    "No chain/target/match by that name",  # legacy
    "incompatible, use 'nft' tool",  # nft, for a chain that does not exist
    "does not exist",
)
_NO_PRIVILEGE = ("Permission denied", "Operation not permitted")
_FAILED_LINE = re.compile(r"line (\d+) failed")
_RESOURCE_PROBLEM = 4  # iptables' exit code for "lock held" and similar


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=f"{path}:{_SEARCH_PATH}" if path else _SEARCH_PATH)


@dataclass(frozen=True)
class Detection:
    """Which backend `auto` chose, why, and what looked wrong."""

    kind: Kind
    reason: str
    warnings: tuple[str, ...] = ()


class Activity:
    """The PIDs of our recent iptables processes.

    nf_tables events name the committing PID: the daemon ignores its own writes by it.
    """

    def __init__(self) -> None:
        self._pids: deque[int] = deque(maxlen=256)
        self._lock = threading.Lock()

    def started(self, pid: int) -> None:
        """One of our commands runs with this PID."""
        with self._lock:
            self._pids.append(pid)

    def is_own(self, pid: int) -> bool:
        """Whether the PID is one of our recent commands."""
        with self._lock:
            return pid in self._pids


class Runner(Protocol):
    """What the reconcile step needs of an iptables runner; the real one and test fakes."""

    @property
    def kind(self) -> Kind:
        """The backend it runs."""
        ...

    @property
    def activity(self) -> Activity:
        """The PIDs of its recent commands."""
        ...

    def read(self, policy: Policy) -> tuple[ChainState, ...]:
        """The observed state of every owned chain, in policy order."""
        ...

    def restore(self, txn: Transaction) -> None:
        """Apply one transaction atomically, or raise with the evidence."""
        ...


@dataclass
class Iptables:
    """Runs one backend's iptables binaries; every failure carries its evidence."""

    kind: Kind
    wait_seconds: int = 5
    activity: Activity = field(default_factory=Activity, repr=False)
    # (family, table, chain) -> listing: set by one-shot commands, which read a snapshot once;
    # the daemon leaves it None and always reads afresh.
    memo: dict[tuple[str, str, str], str | None] | None = field(default=None, repr=False)
    _paths: dict[str, str] = field(default_factory=dict, repr=False)

    def binary(
        self,
        tool: Literal["iptables", "iptables-restore", "iptables-save"],
        family: str = "ipv4",
    ) -> str:
        """Absolute path of one tool of this backend (ip6tables' for ipv6)."""
        prefix = "ip6tables" if family == "ipv6" else "iptables"
        name = tool.replace("iptables", f"{prefix}-{self.kind}", 1)
        if name not in self._paths:
            found = _which(name)
            if found is None:
                msg = f"{name} not found (install the iptables package)"
                raise IptablesMissingError(msg)
            self._paths[name] = found
        return self._paths[name]

    def _argv(self, table: str, *args: str, family: str = "ipv4") -> list[str]:
        tool = self.binary("iptables", family)
        return [tool, f"--wait={self.wait_seconds}", "-t", table, *args]

    def list_chains(
        self, requests: Sequence[tuple[str, str]], family: str = "ipv4"
    ) -> list[str | None]:
        """`-S` listings of (table, chain) pairs, run concurrently; None for a missing chain."""
        return self.list_many([(family, t, c) for t, c in requests])

    def list_many(self, requests: Sequence[tuple[str, str, str]]) -> list[str | None]:
        """`-S` listings of (family, table, chain), run concurrently; None for a missing chain.

        With a `memo` (one-shot commands), a chain is read at most once per process.
        """
        memo = self.memo if self.memo is not None else {}
        todo = list(dict.fromkeys(r for r in requests if r not in memo))
        argvs = [self._argv(t, "-S", c, family=f) for f, t, c in todo]
        procs = [(argv, self._spawn(argv, slot=i)) for i, argv in enumerate(argvs)]
        finished = [(argv, *self._wait(proc), proc.returncode) for argv, proc in procs]
        for key, (argv, out, err, rc) in zip(todo, finished, strict=True):
            if rc == 0:
                memo[key] = out
                continue
            _raise_for_privilege(argv, rc, out, err)
            if rc == 1 and any(s in err for s in _NO_CHAIN):
                memo[key] = None
                continue
            raise CommandError(argv, rc, out, err)
        return [memo[r] for r in requests]

    @staticmethod
    def requests(policy: Policy) -> list[tuple[str, str, str]]:
        """What `read` lists: each owned chain and its hook chain, per family."""
        out: list[tuple[str, str, str]] = []
        for f in policy.families:
            for c in policy.chains:
                out += [(f, c.table, c.name), (f, c.table, c.hook)]
        return out

    def read(self, policy: Policy) -> tuple[ChainState, ...]:
        """Observe each owned chain and the jumps to it: cost independent of foreign rules."""
        pairs = [(f, c) for f in policy.families for c in policy.chains]
        listings = self.list_many(self.requests(policy))
        states = []
        for i, (family, chain) in enumerate(pairs):
            own, hook = listings[2 * i], listings[2 * i + 1]
            if hook is None:
                argv = self._argv(chain.table, "-S", chain.hook, family=family)
                msg = f"built-in chain {family} {chain.table}/{chain.hook} cannot be read"
                raise CommandError(argv, 1, "", msg)
            states.append(observe(chain, own, hook, family))
        return tuple(states)

    def restore(self, txn: Transaction) -> None:
        """Apply one table's transaction atomically with iptables-restore --noflush."""
        tool = self.binary("iptables-restore", txn.family)
        argv = [tool, "--noflush", f"--wait={self.wait_seconds}"]
        proc = self._spawn(argv, stdin=True)
        out, err = self._wait(proc, txn.text)
        rc = proc.returncode
        if rc == 0:
            return
        _raise_for_privilege(argv, rc, out, err)
        if _is_race(rc, err, txn.text):
            raise ConcurrentChangeError(argv, rc, out, err, txn.text)
        raise CommandError(argv, rc, out, err, txn.text)

    def _spawn(
        self, argv: Sequence[str], *, stdin: bool = False, slot: int = 0
    ) -> subprocess.Popen[str]:
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
                env["XTABLES_LOCKFILE"] = str(private / f"read.lock.{slot}")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.activity.started(proc.pid)
        return proc

    def _wait(self, proc: subprocess.Popen[str], text: str | None = None) -> tuple[str, str]:
        return proc.communicate(text)

    def has_kube_hint(self) -> bool:
        """Whether kube-proxy's hint chains exist in mangle.

        Listed by name: listing the whole table costs more as kube-proxy's rules grow, on nft.
        """
        return any(x is not None for x in self.list_chains([("mangle", h) for h in KUBE_HINTS]))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # messages we match on are the untranslated ones
    return env


def _raise_for_privilege(argv: Sequence[str], rc: int, out: str, err: str) -> None:
    if any(s in err for s in _NO_PRIVILEGE):
        msg = f"not permitted to use iptables (run as root or with CAP_NET_ADMIN): {err.strip()}"
        raise PrivilegeError(msg) from CommandError(argv, rc, out, err)


def _is_race(rc: int, stderr: str, text: str) -> bool:
    """A held lock, or a delete of a rule that moved since we read it."""
    if rc == _RESOURCE_PROBLEM or "xtables lock" in stderr:
        return True
    m = _FAILED_LINE.search(stderr)
    if not m:
        return False
    lines = text.splitlines()
    n = int(m.group(1))
    return 0 < n <= len(lines) and lines[n - 1].startswith("-D ")


def _legacy_tables() -> frozenset[str]:
    try:
        return frozenset(_LEGACY_TABLES.read_text().split())
    except OSError:
        return frozenset()


def _system_default() -> Kind:
    found = _which("iptables")
    if found is not None and "legacy" in Path(found).resolve().name:
        return "legacy"
    return "nft"


def detect(policy: Policy) -> Detection:
    """Pick the backend kube-proxy uses, as kube-proxy's iptables-wrapper and Calico do."""
    legacy_loaded = _legacy_tables()
    hints: dict[Kind, bool] = {"nft": False, "legacy": False}
    available = {k: _which(f"iptables-{k}") is not None for k in KINDS}
    if available["nft"]:
        hints["nft"] = Iptables("nft").has_kube_hint()
    # Reading a legacy table that is not loaded would load it: look first.
    if available["legacy"] and "mangle" in legacy_loaded:
        hints["legacy"] = Iptables("legacy").has_kube_hint()
    if hints["nft"]:
        kind: Kind = "nft"
        reason = "kube-proxy's hint chains are in nft mangle"
    elif hints["legacy"]:
        kind, reason = "legacy", "kube-proxy's hint chains are in legacy mangle"
    else:
        kind, reason = _system_default(), "no kube-proxy hint; the system's iptables"
    if not available[kind]:
        msg = f"iptables-{kind} not found (install the iptables package)"
        raise IptablesMissingError(msg)
    other: Kind = "legacy" if kind == "nft" else "nft"
    held = []
    if hints[other]:
        held.append(f"kube-proxy hint chains in {other} mangle")
    held += _owned_in(other, policy, legacy_loaded) if available[other] else []
    warnings: tuple[str, ...] = ()
    if held:
        warning = (
            f"both iptables backends hold rules ({'; '.join(held)}); "
            f"using {kind}. Rules in both are evaluated by the kernel."
        )
        warnings = (warning,)
    return Detection(kind=kind, reason=reason, warnings=warnings)


def _owned_in(kind: Kind, policy: Policy, legacy_loaded: frozenset[str]) -> list[str]:
    chains = policy.chains
    if kind == "legacy":
        chains = tuple(c for c in chains if c.table in legacy_loaded)
    if not chains:
        return []
    listings = Iptables(kind).list_chains([(c.table, c.name) for c in chains])
    return [
        f"{c.table}/{c.name} exists in {kind}"
        for c, listing in zip(chains, listings, strict=True)
        if listing is not None
    ]


def choose(
    backend: Literal["auto", "nft", "legacy"],
    policy: Policy,
    *,
    recorded: str | None = None,
) -> tuple[Iptables, tuple[str, ...]]:
    """The runner for a configured backend, and warnings about the choice.

    `auto` detects kube-proxy's backend. `recorded` is the backend a running daemon enforces
    on (one-shot commands look where it looks, and warn when detection now differs).
    """
    if backend != "auto":
        return Iptables(backend), ()
    found = detect(policy)
    if recorded in KINDS and recorded != found.kind:
        warning = (
            f"the daemon enforces on {recorded} but {found.kind} is detected now "
            f"({found.reason}); restart efa-guard to follow it"
        )
        chosen: Kind = "legacy" if recorded == "legacy" else "nft"
        return Iptables(chosen), (*found.warnings, warning)
    return Iptables(found.kind), found.warnings
