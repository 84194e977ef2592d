"""The only place that runs iptables: backend choice, reading chains, atomic restore."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from efa_guard.errors import (
    CommandError,
    ConcurrentChangeError,
    ForeignRuleError,
    IptablesMissingError,
    PrivilegeError,
    ReadCommandError,
    ReadError,
    UnstableReadError,
)
from efa_guard.nftchain import NftChain, NftParseError, move_jumps, parse_chain
from efa_guard.nftgen import generation
from efa_guard.observe import ParseError, observe, save_listings
from efa_guard.plan import Transaction
from efa_guard.policy import Policy
from efa_guard.rundir import safe_dir
from efa_guard.state import ChainState

Kind = Literal["nft", "legacy"]
KINDS: tuple[Kind, ...] = ("nft", "legacy")

# kube-proxy and kubelet mark the backend they use with these chains in mangle.
KUBE_HINTS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
_SEARCH_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
_INCOMPATIBLE = "incompatible, use 'nft' tool"  # nft: a missing chain, or unprintable rules
_NO_CHAIN = ("No chain/target/match by that name", "does not exist")
_BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
READ_ATTEMPTS = 5  # nft: reads in a row that may see the generation move before giving up
_READ_PAUSE = 0.01  # seconds before the second attempt, doubling: 150 ms in all
Key = tuple[str, str, str]  # (family, table, chain)
Memo = dict[Key, str | None]
_NO_PRIVILEGE = ("Permission denied", "Operation not permitted")
_FAILED_LINE = re.compile(r"line (\d+) failed")
_RESOURCE_PROBLEM = 4  # iptables' exit code for "lock held" and similar


def which(name: str) -> str | None:
    """A tool's absolute path, looking in the sbin directories too."""
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=f"{path}:{_SEARCH_PATH}" if path else _SEARCH_PATH)


@dataclass(frozen=True)
class Unprintable:
    """A chain iptables-nft refused to print, as nft lists it, and what iptables said."""

    chain: NftChain
    iptables_stderr: str

    def describe(self) -> str:
        """Names the chain, each foreign rule with its position, and iptables' own words."""
        c = self.chain
        jump = next((r.position for r in c.rules if r.plain), None)
        where = f"ahead of the jump at position {jump}" if jump else "and no jump of ours"
        ahead = tuple(r for r in c.foreign() if jump is None or r.position < jump)
        shown = c.describe(ahead) if ahead else c.describe()
        if jump is not None and not ahead:
            where = f"behind the jump at position {jump}"
        if not shown:
            shown = f"none told apart from iptables' own: see nft list chain {c.family} {c.table}"
        return (
            f"{c.family} {c.table} {c.name} holds nft-native rules iptables cannot print "
            f"({shown}), {where} (iptables: {self.iptables_stderr})"
        )


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
    # Chains of the last reads that iptables could not print, read through nft instead.
    unprintable: dict[Key, Unprintable] = field(default_factory=dict, repr=False)
    _paths: dict[str, str] = field(default_factory=dict, repr=False)
    _generation_read: int | None = field(default=None, repr=False)  # the memo's generation
    # legacy: the memo these sets describe, its tables read whole, and those read by one -S
    _legacy_of: Memo | None = field(default=None, repr=False)
    _legacy_whole: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _legacy_part: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def binary(
        self,
        tool: Literal["iptables", "iptables-restore", "iptables-save"],
        family: str = "ipv4",
    ) -> str:
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

    def _argv(self, table: str, *args: str, family: str = "ipv4") -> list[str]:
        tool = self.binary("iptables", family)
        return [tool, f"--wait={self.wait_seconds}", "-t", table, *args]

    def list_chains(
        self, requests: Sequence[tuple[str, str]], family: str = "ipv4"
    ) -> list[str | None]:
        """`-S` listings of (table, chain) pairs; None for a missing chain."""
        return self.list_many([(family, t, c) for t, c in requests])

    def list_many(self, requests: Sequence[tuple[str, str, str]]) -> list[str | None]:
        """`-S` listings of (family, table, chain), one consistent snapshot; None if missing.

        nft: the chains are listed concurrently, between two reads of the ruleset generation;
        when it moved, everything is read again (bounded), else UnstableReadError. legacy: the
        kernel hands out a table in one consistent copy; see `_read_legacy`.
        With a `memo` (one-shot commands) nothing is read twice, and the memo stays one
        snapshot (nft: a later batch that sees a newer generation re-reads the memo too).
        """
        memo = self.memo if self.memo is not None else {}
        if self.kind == "legacy":
            self._read_legacy(memo, requests)
            return [memo.get(r) for r in requests]
        todo = list(dict.fromkeys(r for r in requests if r not in memo))
        if todo:
            self._read_nft(memo, todo)
        return [memo[r] for r in requests]

    def _read_nft(self, memo: Memo, todo: list[Key]) -> None:
        keys, before = todo, -1
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                time.sleep(_READ_PAUSE * 2 ** (attempt - 1))  # let a writer's burst finish
            before = self._generation()
            if self.memo is not None and self._generation_read not in (None, before):
                keys = list(dict.fromkeys([*memo, *todo]))  # the memo is older: refresh it
            fresh = self._list_nft(keys)
            if self._generation() == before:
                if keys is not todo:
                    memo.clear()
                memo.update(fresh)
                self._generation_read = before if self.memo is not None else None
                return
        msg = (
            f"the nf_tables ruleset changed during each of {READ_ATTEMPTS} reads (generation "
            f"now {before}): another writer is busy, no consistent state to report"
        )
        raise UnstableReadError(msg)

    def _generation(self) -> int:
        try:
            return generation()
        except PermissionError as e:
            msg = f"not permitted to use iptables (run as root or with CAP_NET_ADMIN): {e}"
            raise PrivilegeError(msg) from e
        except OSError as e:
            msg = f"cannot read the nf_tables ruleset generation: {e}"
            raise ReadError(msg) from e

    def _list_nft(self, keys: list[Key]) -> Memo:
        argvs = [self._argv(t, "-S", c, family=f) for f, t, c in keys]
        procs = [(argv, self._spawn(argv, slot=i)) for i, argv in enumerate(argvs)]
        finished = [(argv, *self._wait(proc), proc.returncode) for argv, proc in procs]
        out: Memo = {}
        for key, (argv, stdout, err, rc) in zip(keys, finished, strict=True):
            self.unprintable.pop(key, None)
            if rc == 0 and stdout.strip():
                out[key] = stdout
                continue
            _raise_for_privilege(argv, rc, stdout, err)
            if rc == 1 and _INCOMPATIBLE in err:
                # A missing chain, or one holding rules iptables cannot print: nft knows.
                out[key] = self._nft_chain(key, err)
            elif rc == 1 and any(s in err for s in _NO_CHAIN):
                out[key] = None
            else:
                raise ReadCommandError(argv, rc, stdout, err or "(printed nothing)")
        return out

    def _nft_chain(self, key: Key, iptables_err: str) -> str | None:
        family, table, chain = key
        nft = which("nft")
        nft_family = "ip6" if family == "ipv6" else "ip"
        if nft is None:
            if chain not in _BUILTIN:
                # iptables-nft says "incompatible" for a user chain that does not exist;
                # without nft it cannot be told from one holding nft-native rules.
                return None
            msg = f"nft not found (install nftables) to read {nft_family} {table} {chain}"
            raise ReadCommandError([], 1, "", f"{iptables_err.strip()}; {msg}")
        argv = [nft, "-j", "list", "chain", nft_family, table, chain]
        proc = self._spawn(argv)
        stdout, err = self._wait(proc)
        if proc.returncode != 0:
            _raise_for_privilege(argv, proc.returncode, stdout, err)
            if "No such file or directory" in err:
                return None
            raise ReadCommandError(argv, proc.returncode, stdout, err)
        try:
            parsed = parse_chain(stdout, nft_family, table, chain)
        except NftParseError as e:
            raise ReadCommandError(argv, 0, stdout, str(e)) from e
        self.unprintable[key] = Unprintable(parsed, iptables_err.strip())
        return parsed.listing()

    def _read_legacy(self, memo: Memo, requests: Sequence[Key]) -> None:
        """Each process reads one table in one consistent copy; never a table twice per batch.

        Two or more chains of a table, or a table this memo already read a chain of: one
        `iptables-legacy-save -t TABLE`, every chain taken from it (later requests are free).
        A single chain: `-S CHAIN`, which copies the table too but prints only that chain
        (measured at 50k rules: the save of kube-proxy's nat table and parsing it cost more
        than the -S of KUBE-NODEPORTS the check needs).
        """
        if self._legacy_of is not memo:
            self._legacy_of, self._legacy_whole, self._legacy_part = memo, set(), set()
        whole, part = self._legacy_whole, self._legacy_part
        groups: dict[tuple[str, str], list[Key]] = {}
        for r in dict.fromkeys(requests):
            if r not in memo and r[:2] not in whole:
                groups.setdefault(r[:2], []).append(r)
        saves = [t for t, keys in groups.items() if len(keys) > 1 or t in part]
        singles = [keys[0] for t, keys in groups.items() if t not in saves]
        argvs = [[self.binary("iptables-save", f), "-t", t] for f, t in saves]
        argvs += [self._argv(t, "-S", c, family=f) for f, t, c in singles]
        procs = [(argv, self._spawn(argv, slot=i)) for i, argv in enumerate(argvs)]
        for key, (argv, proc) in zip([*saves, *singles], procs, strict=True):
            stdout, err = self._wait(proc)
            rc = proc.returncode
            _raise_for_privilege(argv, rc, stdout, err)
            if len(key) == 3 and rc == 1 and any(s in err for s in _NO_CHAIN):
                memo[key] = None
            elif rc != 0 or not stdout.strip():
                raise ReadCommandError(argv, rc, stdout, err or "(printed nothing)")
            elif len(key) == 3:
                memo[key] = stdout
                part.add(key[:2])
            else:
                family, table = key[0], key[1]
                try:
                    chains = save_listings(stdout, table)
                except ParseError as e:
                    raise ReadCommandError(argv, rc, stdout, f"{err} {e}".strip()) from e
                memo.update({(family, table, c): text for c, text in chains.items()})
                whole.add((family, table))

    def nft_tables(self) -> frozenset[tuple[str, str]] | None:
        """The ("ipv4", "filter")-style tables nf_tables has; None without nft (assume all)."""
        nft = which("nft")
        if nft is None:
            return None
        argv = [nft, "-j", "list", "tables"]
        proc = self._spawn(argv)
        stdout, err = self._wait(proc)
        _raise_for_privilege(argv, proc.returncode, stdout, err)
        try:
            if proc.returncode != 0:
                raise ValueError(err.strip())  # noqa: TRY301 - one place turns it into evidence
            items = json.loads(stdout)["nftables"]
            families = {"ip": "ipv4", "ip6": "ipv6"}
            return frozenset(
                (families[t["table"]["family"]], t["table"]["name"])
                for t in items
                if "table" in t and t["table"].get("family") in families
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ReadCommandError(argv, proc.returncode, stdout, f"{err} {e}".strip()) from e

    def notes(self) -> tuple[str, ...]:
        """What the last reads found that iptables itself cannot show (check warns)."""
        return tuple(u.describe() for u in self.unprintable.values())

    @staticmethod
    def requests(policy: Policy) -> list[tuple[str, str, str]]:
        """What `read` lists: each owned chain and its hook chain, per family."""
        out: list[tuple[str, str, str]] = []
        for f in policy.families:
            for c in policy.chains:
                out += [(f, c.table, c.name), (f, c.table, c.hook)]
        return out

    def read(self, policy: Policy) -> tuple[ChainState, ...]:
        """Observe each owned chain and the jumps to it, all from one consistent snapshot."""
        pairs = [(f, c) for f in policy.families for c in policy.chains]
        listings = self.list_many(self.requests(policy))
        states = []
        for i, (family, chain) in enumerate(pairs):
            own, hook = listings[2 * i], listings[2 * i + 1]
            if hook is None:
                argv = self._argv(chain.table, "-S", chain.hook, family=family)
                msg = f"built-in chain {family} {chain.table}/{chain.hook} cannot be read"
                raise ReadCommandError(argv, 1, "", msg)
            try:
                states.append(observe(chain, own, hook, family))
            except ParseError as e:
                raise ReadCommandError(["(parse)"], 0, "", str(e)) from e
        return tuple(states)

    def restore(self, txn: Transaction) -> None:
        """Apply one table's transaction atomically with iptables-restore --noflush.

        On nft, jumps in a hook chain iptables cannot change (foreign nft-native rules) are
        moved by one nft script instead, after the rest: see nftchain.move_jumps.
        """
        hooks = {
            chain: u.chain
            for (f, t, chain), u in self.unprintable.items()
            if (f, t) == (txn.family, txn.table) and u.chain.policy is not None
        }
        split = move_jumps(txn.text, hooks) if hooks and which("nft") else None
        if split is None:
            self._restore(txn, txn.text)
            return
        rest, script = split
        if rest.strip() != f"*{txn.table}\nCOMMIT":
            self._restore(txn, rest)
        self._nft_script(script)

    def _restore(self, txn: Transaction, text: str) -> None:
        tool = self.binary("iptables-restore", txn.family)
        argv = [tool, "--noflush", f"--wait={self.wait_seconds}"]
        proc = self._spawn(argv, stdin=True)
        out, err = self._wait(proc, text)
        rc = proc.returncode
        if rc == 0:
            return
        _raise_for_privilege(argv, rc, out, err)
        if _is_race(rc, err, text):
            raise ConcurrentChangeError(argv, rc, out, err, text)
        foreign = [
            u for (f, t, _), u in self.unprintable.items() if (f, t) == (txn.family, txn.table)
        ]
        if foreign:
            cause = "; ".join(u.describe() for u in foreign)
            msg = f"{cause}; so iptables cannot make the change: {err.strip()}"
            raise ForeignRuleError(argv, rc, out, msg, text)
        raise CommandError(argv, rc, out, err, text)

    def _nft_script(self, script: str) -> None:
        argv = [which("nft") or "nft", "-f", "-"]
        proc = self._spawn(argv, stdin=True)
        out, err = self._wait(proc, script)
        if proc.returncode == 0:
            return
        _raise_for_privilege(argv, proc.returncode, out, err)
        if "No such file or directory" in err:  # a jump we delete by handle is gone
            raise ConcurrentChangeError(argv, proc.returncode, out, err, script)
        raise CommandError(argv, proc.returncode, out, err, script)

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
