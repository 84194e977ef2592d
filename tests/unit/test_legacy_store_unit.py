"""The listings store and the one-shot legacy copies, on files and a fake kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from efa_guard import legacystore
from efa_guard.legacyblob import DoubtError
from efa_guard.legacycache import Key, Memo
from efa_guard.legacyshot import Copies, Table
from efa_guard.legacystore import NAME, ListingStore

OWN: Key = ("ipv4", "filter", "EFA_INPUT")
HOOK: Key = ("ipv4", "filter", "INPUT")
GONE: Key = ("ipv4", "filter", "GONE")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A private run directory."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


def test_a_stored_listing_is_read_by_the_next_command(run: Path) -> None:
    """What one store adds, a store made later (the next command) finds; the file is 0600."""
    assert ListingStore(run / NAME).add({"ab": "-N X\n"})
    assert ListingStore(run / NAME).get("ab") == "-N X\n"
    assert (run / NAME).stat().st_mode & 0o777 == 0o600
    assert ListingStore(run / NAME).get("cd") is None


def test_a_listing_whose_checksum_fails_is_not_used(run: Path) -> None:
    """An edited listing (its checksum stale) is ignored; the others still count."""
    ListingStore(run / NAME).add({"ab": "-N X\n", "cd": "-N Y\n"})
    body = json.loads((run / NAME).read_text())
    body["entries"][0][1] = "-N X\n-A X -j ACCEPT\n"
    (run / NAME).write_text(json.dumps(body))
    store = ListingStore(run / NAME)
    assert store.get("ab") is None
    assert store.get("cd") == "-N Y\n"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": 1}', '{"version": 2, "entries": []}'])
def test_a_damaged_file_reads_as_empty_and_is_replaced(run: Path, text: str) -> None:
    """Garbage, another shape or another version: nothing is taken from it, the next add writes."""
    (run / NAME).write_text(text)
    (run / NAME).chmod(0o600)
    store = ListingStore(run / NAME)
    assert store.get("ab") is None
    assert store.add({"ab": "-N X\n"})
    assert ListingStore(run / NAME).get("ab") == "-N X\n"


def test_a_file_or_directory_others_may_write_is_not_used(run: Path) -> None:
    """A group-writable file is not read; in a group-writable directory nothing is written."""
    ListingStore(run / NAME).add({"ab": "-N X\n"})
    (run / NAME).chmod(0o620)
    assert ListingStore(run / NAME).get("ab") is None
    (run / NAME).chmod(0o600)
    run.chmod(0o770)
    store = ListingStore(run / NAME)
    assert store.get("ab") is None
    assert not store.add({"cd": "-N Y\n"})
    assert not store.usable


def test_a_symlink_is_not_followed(run: Path, tmp_path: Path) -> None:
    """The file is opened without following a link (someone else's file stays unread)."""
    ListingStore(tmp_path / NAME).add({"ab": "-N X\n"})
    (run / NAME).symlink_to(tmp_path / NAME)
    assert ListingStore(run / NAME).get("ab") is None


def test_a_missing_run_directory_means_no_store(tmp_path: Path) -> None:
    """No run directory: nothing is read or written, and it is not created."""
    store = ListingStore(tmp_path / "none" / NAME)
    assert not store.add({"ab": "-N X\n"})
    assert not (tmp_path / "none").exists()


def test_the_store_is_bounded(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oldest go first past the entry count; a listing too long is never stored."""
    monkeypatch.setattr(legacystore, "_ENTRIES", 3)
    store = ListingStore(run / NAME)
    for i in range(5):
        store.add({f"d{i}": f"-N C{i}\n"})
    kept = ListingStore(run / NAME)
    assert [kept.get(f"d{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert not store.add({"long": "x" * (legacystore.MAX_LISTING + 1)})


def test_a_listing_used_is_kept_over_older_ones(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that used a listing and stores others keeps the used one (newest again)."""
    monkeypatch.setattr(legacystore, "_ENTRIES", 2)
    ListingStore(run / NAME).add({"old": "-N A\n"})
    ListingStore(run / NAME).add({"mid": "-N B\n"})
    store = ListingStore(run / NAME)
    assert store.get("old") == "-N A\n"
    store.add({"new": "-N C\n"})
    kept = ListingStore(run / NAME)
    assert (kept.get("old"), kept.get("mid"), kept.get("new")) == ("-N A\n", None, "-N C\n")


class Kernel:
    """Tables with a state each; copies of them as Snapshots; lock closes counted."""

    def __init__(self) -> None:
        self.state = {("ipv4", "filter"): "A"}
        self.closes = 0
        self.gone: set[str] = {"GONE"}

    def read(self, table: Table) -> FakeCopy | None:
        """A copy of the table in its state now."""
        state = self.state.get(table)
        return None if state is None else FakeCopy(state, set(self.gone))

    def count(self) -> int | None:
        """Lock closes so far."""
        return self.closes


class FakeCopy:
    """A Snapshot: a digest per (state, chain)."""

    def __init__(self, state: str, gone: set[str]) -> None:
        self.state = state
        self.gone = gone

    def digest(self, tool: str, key: Key) -> bytes | None:
        """None for a chain not there, else one digest per state and chain."""
        if key[2] in self.gone:
            return None
        if key[2] == "HUGE":
            raise DoubtError(key)
        return f"{tool}|{self.state}|{key}".encode()

    def over(self, chain: str, limit: int) -> bool | None:  # noqa: ARG002 - Snapshot's signature
        """Only HUGE holds many rules."""
        return chain == "HUGE"


def copies(kernel: Kernel, run: Path) -> Copies:
    """A command's copies over the fake kernel (the tool: this Python binary)."""
    return Copies(
        lambda _: sys.executable,
        store=ListingStore(run / NAME),
        closes=kernel.count,
        read=kernel.read,
    )


def saved(kernel: Kernel, c: Copies, memo: Memo, keys: list[Key], text: str = "T") -> None:
    """What read_legacy does on a miss: the save's listings into the memo, then learn."""
    memo.update({k: f"{text} {k[2]}" for k in keys if k[2] not in kernel.gone})
    c.saved(("ipv4", "filter"))
    c.learn(memo, keys)


def test_a_state_saved_while_nobody_wrote_is_answered_later(run: Path) -> None:
    """Learned from a quiet save, the same state is answered by the next command, GONE is None."""
    kernel = Kernel()
    first = copies(kernel, run)
    memo: Memo = {}
    assert not first.answer(memo, ("ipv4", "filter"), [OWN, HOOK])
    assert memo == {}
    saved(kernel, first, memo, [OWN, HOOK])
    assert first.stored == 2
    later: Memo = {}
    assert copies(kernel, run).answer(later, ("ipv4", "filter"), [OWN, HOOK, GONE])
    assert later == {OWN: "T EFA_INPUT", HOOK: "T INPUT", GONE: None}


def test_a_lock_close_during_the_save_stores_nothing(run: Path) -> None:
    """A writer released the xtables lock between the copies: the save may show another state."""
    kernel = Kernel()
    c = copies(kernel, run)
    memo: Memo = {}
    c.answer(memo, ("ipv4", "filter"), [OWN])
    kernel.closes += 1
    saved(kernel, c, memo, [OWN])
    assert c.stored == 0
    assert not copies(kernel, run).answer({}, ("ipv4", "filter"), [OWN])


def test_a_state_that_moved_during_the_save_stores_nothing(run: Path) -> None:
    """The copies before and after the save differ (a writer that ignores the lock): not stored."""
    kernel = Kernel()
    c = copies(kernel, run)
    memo: Memo = {}
    c.answer(memo, ("ipv4", "filter"), [OWN])
    kernel.state["ipv4", "filter"] = "B"
    saved(kernel, c, memo, [OWN])
    assert c.stored == 0
    assert not copies(kernel, run).answer({}, ("ipv4", "filter"), [OWN])


def test_another_state_is_not_answered_by_a_stored_one(run: Path) -> None:
    """Stored for state A, the chain in state B is read again; all of a table or none of it."""
    kernel = Kernel()
    c = copies(kernel, run)
    memo: Memo = {}
    c.answer(memo, ("ipv4", "filter"), [OWN, HOOK])
    saved(kernel, c, memo, [OWN, HOOK])
    kernel.state["ipv4", "filter"] = "B"
    later: Memo = {}
    assert not copies(kernel, run).answer(later, ("ipv4", "filter"), [OWN, HOOK])
    assert later == {}


def test_a_long_chain_or_an_unreadable_table_is_not_answered(run: Path) -> None:
    """A chain too long to store, or a table no copy could be taken of, goes to the save."""
    kernel = Kernel()
    c = copies(kernel, run)
    assert not c.answer({}, ("ipv4", "filter"), [("ipv4", "filter", "HUGE")])
    assert c.over(("ipv4", "filter", "HUGE"), 500) is True
    assert not c.answer({}, ("ipv4", "raw"), [("ipv4", "raw", "PREROUTING")])
    assert c.over(("ipv4", "raw", "PREROUTING"), 500) is None
    assert not c.has(("ipv4", "raw"))


def test_without_a_usable_store_no_copy_is_taken(tmp_path: Path) -> None:
    """No run directory of ours: the tables are read as before, not copied for nothing."""
    kernel = Kernel()
    reads: list[Table] = []

    def read(table: Table) -> FakeCopy | None:
        reads.append(table)
        return kernel.read(table)

    c = Copies(
        lambda _: sys.executable,
        store=ListingStore(tmp_path / "none" / NAME),
        closes=kernel.count,
        read=read,
    )
    assert not c.answer({}, ("ipv4", "filter"), [OWN])
    assert reads == []
    assert not c.has(("ipv4", "filter"))
