"""Listings iptables-legacy printed, kept by what they are a listing of (content-addressed).

iptables prints a chain from its entries alone. So a listing is stored under a digest of
the chain's entries as `legacyblob` normalizes them (counters zeroed, jumps by chain name),
of the chain's name, table and family, and of the iptables binary that printed it (an
upgrade prints anew): an equal digest means an equal listing, whenever and in whichever
network namespace it was stored. The store only saves work; whoever stores must make sure
the listing shows exactly the entries digested (see `legacyshot`).

One small JSON file in the run directory (tmpfs), written whole and renamed into place; it is
used only where the directory and the file belong to this user and nobody else may write
them. Bounded: the newest `_ENTRIES` listings of at most `MAX_LISTING` bytes each, `_TOTAL` in
all. A damaged or foreign file is ignored (the reads happen as if it were empty) and replaced
on the next store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from efa_guard import paths

NAME = "legacy-listings.json"
_VERSION = 1
_ENTRIES = 128  # listings kept: the policy's chains and the survey's, of a few states
MAX_LISTING = 512 * 1024  # bytes: 1,000 rules of ~500 characters (legacyshot stores no more)
_TOTAL = 2 * 1024 * 1024  # characters of all listings: the oldest go first
_FILE = 4 * _TOTAL  # a larger file is not read (JSON escapes may double a listing)


def _private(st: os.stat_result) -> bool:
    """Owned by us and writable by nobody else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _check(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ListingStore:
    """digest (hex) -> listing, read once when made; `add` writes the file again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.usable = False  # the directory is ours: the file may be written
        self._entries: dict[str, str] = {}
        self._used: list[str] = []
        self._load()

    @classmethod
    def default(cls) -> ListingStore:
        """The store in the run directory."""
        return cls(paths.run_dir() / NAME)

    def get(self, digest: str) -> str | None:
        """The listing stored under `digest`, if any."""
        text = self._entries.get(digest)
        if text is not None:
            self._used.append(digest)
        return text

    def add(self, listings: Mapping[str, str]) -> bool:
        """Store these (the ones not too long) with the newest; whether the file was written."""
        known = self._entries
        fresh = {d: t for d, t in listings.items() if len(t) <= MAX_LISTING and d not in known}
        if not self.usable or not fresh:
            return False
        entries = dict(self._entries)
        for digest in self._used:  # listings this command used count as new again
            entries[digest] = entries.pop(digest)
        entries.update(fresh)
        while len(entries) > _ENTRIES or sum(map(len, entries.values())) > _TOTAL:
            del entries[next(iter(entries))]
        body = {"version": _VERSION, "entries": [[d, t, _check(t)] for d, t in entries.items()]}
        tmp = self.path.with_name(f".{NAME}.{os.getpid()}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(tmp, flags, 0o600), "w") as f:
                json.dump(body, f, separators=(",", ":"))
            tmp.replace(self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self._entries = entries
        return True

    def _load(self) -> None:
        try:
            self.usable = _private(self.path.parent.stat())
            if not self.usable:
                return
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > _FILE:
                return
            try:
                body = json.loads(f.read())
                if body["version"] != _VERSION:
                    return
                for digest, text, check in body["entries"]:
                    if isinstance(digest, str) and isinstance(text, str) and check == _check(text):
                        self._entries[digest] = text
            except (ValueError, KeyError, TypeError):
                self._entries.clear()
