"""Chain listings for the evaluator, read on demand, within an optional time budget.

Reads go through `Iptables.list_many` (its memo included). With a deadline, a read that
has not finished by then is left to finish in the background (its result still lands in
the memo) and the walk that needed it stops with NotEvaluatedError: a check reports what it
could not evaluate instead of waiting seconds for a foreign 50k-rule chain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from efa_guard.iptables import Iptables
from efa_guard.reach import Fetch, NotEvaluatedError

Key = tuple[str, str, str]  # (family, table, chain)


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
        if error:
            raise error[0]
        if not result:
            family, table, chain = key
            msg = (
                f"reading {family} {table}/{chain} did not finish within the "
                f"{self.budget or 0:g} s budget"
            )
            raise NotEvaluatedError(msg)
        return result[0]
