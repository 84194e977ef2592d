"""The daemon's legacy reads: listings kept with the fingerprint of the one state they show.

A check on legacy reads a whole table (iptables-legacy-save, ~150 ms at 50k rules) to list
two chains. The daemon checks every `interval` seconds and on every release of the xtables
lock, mostly to find nothing changed. So per table it keeps the listings of its last full
read with a fingerprint of those chains (legacyblob, one in-process copy of the table): a
check whose fingerprint is unchanged starts no process. The listings are kept only when they
belong to one state: the same fingerprint before and after the full read, and no legacy
writer released the xtables lock in between (two writes restoring the first state, A -> B ->
A, would else keep B's listings under A's fingerprint). Any failure means a full read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from efa_guard import inotify, legacyblob

Key = tuple[str, str, str]  # (family, table, chain)
Memo = dict[Key, str | None]
Group = tuple[str, str, tuple[str, ...]]  # (family, table, chains)
XTABLES_LOCK = Path("/run/xtables.lock")
_KEEP = 64  # chain sets remembered; the daemon asks for a handful
_STATES = 8  # states kept per chain set: the policy in place, the tampered states of a fight


class LockCloses:
    """Counts closes of the xtables lock, as the kernel queues them (inotify, no thread).

    A lock-respecting writer closes the lock before it releases it (fsnotify runs before the
    flock is dropped), so two writes by such writers always have a close between them, queued
    before the second write lands.
    """

    def __init__(self, path: Path = XTABLES_LOCK) -> None:
        self.path = path
        self._fd = -1
        self._wd = -1
        self._count = 0
        self._mutex = threading.Lock()

    def count(self) -> int | None:
        """Closes seen so far; None when the lock cannot be watched (then nothing is kept)."""
        with self._mutex:
            try:
                if self._wd < 0:
                    self._arm()
                    return None  # a close before the watch was armed would be missed
                self._drain()
            except OSError:
                return None
            return self._count if self._wd >= 0 else None

    def _arm(self) -> None:
        if self._fd < 0:
            self._fd = inotify.init()
        self._wd = inotify.add_watch(self._fd, self.path, inotify.IN_CLOSE | inotify.IN_GONE)

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return
            for _, mask, _ in inotify.events(data):
                if mask & (inotify.IN_CLOSE | inotify.IN_Q_OVERFLOW):
                    self._count += 1
                if mask & inotify.IN_GONE:
                    self._wd = -1  # replaced or deleted: armed again on the next count
                    self._count += 1


Fingerprint = Callable[[str, str, Sequence[str]], bytes | None]


@dataclass
class LegacyCache:
    """Listings of the daemon's recent full reads, each with its state's fingerprint.

    A few states per chain set (the newest `_STATES`): in a fight the tampered state and the
    policy in place alternate, and each is then answered without a process.
    """

    fingerprint: Fingerprint = legacyblob.fingerprint
    closes: Callable[[], int | None] = field(default_factory=lambda: LockCloses().count)
    hits: int = 0  # groups answered from the cache
    kept: int = 0  # full reads kept
    _groups: dict[Group, OrderedDict[bytes, Memo]] = field(default_factory=dict, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, requests: Sequence[Key], full: Callable[[list[Key]], Memo]) -> Memo:
        """Listings of `requests`: kept ones whose fingerprint is unchanged, the rest by `full`."""
        groups: dict[tuple[str, str], list[str]] = {}
        for family, table, chain in dict.fromkeys(requests):
            groups.setdefault((family, table), []).append(chain)
        mark = self.closes()
        out: Memo = {}
        todo: dict[Group, bytes | None] = {}
        for (family, table), chains in groups.items():
            group = (family, table, tuple(sorted(chains)))
            now = self._fingerprint(group)
            kept = self._kept(group, now)
            if kept is not None:
                out.update(kept)
                self.hits += 1
            else:
                todo[group] = now
        if not todo:
            return out
        fresh = full([(f, t, c) for f, t, chains in todo for c in chains])
        out.update(fresh)
        after = {g: self._fingerprint(g) for g, before in todo.items() if before is not None}
        if mark is None or self.closes() != mark:
            return out  # a writer released the lock meanwhile: the read may show any state
        with self._mutex:
            for group, before in todo.items():
                if before is None or after.get(group) != before:
                    continue
                f, t, names = group
                self._keep(group, before, {(f, t, c): fresh.get((f, t, c)) for c in names})
        return out

    def _kept(self, group: Group, now: bytes | None) -> Memo | None:
        """The listings kept for this state of the group, if any."""
        if now is None:
            return None
        with self._mutex:
            states = self._groups.get(group)
            kept = states.get(now) if states is not None else None
            if kept is not None and states is not None:
                states.move_to_end(now)
        return kept

    def _keep(self, group: Group, state: bytes, listings: Memo) -> None:
        """Remember a full read's listings under its state (the caller holds the mutex)."""
        if group not in self._groups and len(self._groups) >= _KEEP:
            del self._groups[next(iter(self._groups))]
        states = self._groups.setdefault(group, OrderedDict())
        states[state] = listings
        states.move_to_end(state)
        while len(states) > _STATES:
            states.popitem(last=False)
        self.kept += 1

    def _fingerprint(self, group: Group) -> bytes | None:
        try:
            return self.fingerprint(*group)
        except Exception:  # noqa: BLE001 - it only ever saves work: any failure means a full read
            return None
