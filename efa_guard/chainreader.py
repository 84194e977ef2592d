"""Chain listings for the evaluator, read on demand, within an optional time budget.

Reads go through `Iptables.list_many` (its memo included). With a deadline, a read runs in
a worker thread; if it has not finished by then, the iptables process that thread started
is ended (by its PID, found in /proc/self/task/<thread>/children) and the walk that needed
the chain stops with NotEvaluatedError: a check reports what it could not evaluate instead
of waiting seconds for a foreign 50k-rule chain, and leaves no process behind. On nft a
chain known to be too long for the budget (TOO_BIG) is not even started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from efa_guard import legacyshot, nftdump
from efa_guard.iptables import Iptables
from efa_guard.reach import Fetch, NotEvaluatedError

Key = tuple[str, str, str]  # (family, table, chain)
# A foreign chain longer than this is not even started within a budget: iptables-nft prints
# about 10k rules a second, so it could not be read in time; counting its first rules over
# netlink (nftdump) takes about a millisecond, where starting the read costs the budget.
TOO_BIG = 500
_REAP = 1.0  # seconds to wait for an ended read to be collected


@dataclass
class ChainReader:
    """Listings by (family, table, chain), read once."""

    ipt: Iptables
    deadline: float | None = None  # time.monotonic() after which no read is waited for
    budget: float | None = None  # the budget in seconds, for messages
    _listings: dict[Key, str | None] = field(default_factory=dict)

    def prefetch(self, keys: Sequence[Key]) -> None:
        """Read these together (concurrently), without a deadline."""
        self._listings.update(zip(keys, self.ipt.list_many(keys), strict=True))

    def fetch(self, family: str) -> Fetch:
        """The evaluator's fetch for one family."""

        def fetch(table: str, chain: str) -> list[str] | None:
            key = (family, table, chain)
            if key not in self._listings:
                self._listings[key] = self._read(key)
            text = self._listings[key]
            return text.splitlines() if text is not None else None

        return fetch

    def _read(self, key: Key) -> str | None:
        memo = self.ipt.memo
        if self.deadline is None or (memo is not None and key in memo):
            return self.ipt.list_many([key])[0]
        if _too_big(self.ipt, key):
            family, table, chain = key
            msg = (
                f"{family} {table}/{chain} holds more than {TOO_BIG} rules: too many to read "
                f"within the {self.budget or 0:g} s budget (efa-guard exposure walks it)"
            )
            raise NotEvaluatedError(msg)
        result: list[str | None] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                result.append(self.ipt.list_many([key])[0])
            except Exception as e:  # noqa: BLE001 - handed to the caller below
                error.append(e)

        worker = threading.Thread(target=run, name=f"read {key}", daemon=True)
        worker.start()
        worker.join(max(0.0, self.deadline - time.monotonic()))
        if worker.is_alive():
            _end_children(worker.native_id)
            worker.join(_REAP)  # the read sees its process end and collects it
            family, table, chain = key
            msg = (
                f"reading {family} {table}/{chain} did not finish within the "
                f"{self.budget or 0:g} s budget"
            )
            raise NotEvaluatedError(msg)
        if error:
            raise error[0]
        return result[0]


def _too_big(ipt: Iptables, key: Key) -> bool:
    """Whether a foreign chain is known to be too long to read within a budget.

    nft: its first TOO_BIG + 1 rules counted over netlink. legacy, one-shot (`check`): its
    rules counted in the save of its table or in the table's copy, whichever the prefetch
    read. legacy, the daemon's survey (whose reads keep no whole table): its first TOO_BIG + 1
    entries walked in one in-process copy of the table.
    """
    if ipt.kind == "nft":
        return nftdump.holds_more_than(key, TOO_BIG) is True
    if ipt.memo is not None:  # `check`: each table is read once, and counted in
        return ipt.reads.rules_over(key, TOO_BIG)
    return legacyshot.holds_more_than(*key, TOO_BIG) is True


def _end_children(thread_id: int | None) -> None:
    """End the processes one of our threads started (an abandoned read), by PID."""
    if thread_id is None:
        return
    try:
        children = Path(f"/proc/self/task/{thread_id}/children").read_text().split()
    except OSError:
        return
    for pid in map(int, children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
