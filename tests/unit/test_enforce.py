"""enforce() against a stateful fake: lost races are retried, other failures surface at once."""

from __future__ import annotations

import pytest
from fakes import CFG, fake, in_sync

from efa_guard.enforce import Proven, enforce, inspect
from efa_guard.errors import CommandError, ConcurrentChangeError, VerifyError
from efa_guard.iptables_proc import is_race as _is_race


def test_in_sync_writes_nothing() -> None:
    """A compliant system is never 'corrected'."""
    ipt = in_sync()
    out = enforce(ipt, CFG.policy)
    assert not out.changed
    assert ipt.restores == []


def test_one_transaction_per_drifted_table() -> None:
    """Both tables drifted in both families: four restores, then in sync."""
    ipt = fake()
    out = enforce(ipt, CFG.policy)
    assert ipt.restores == ["filter", "raw", "filter", "raw"]
    assert out.after.in_sync
    assert len(out.before.drifts) == 8


def test_lost_races_are_retried_and_logged() -> None:
    """Two lost races, then success; each retry reported with attempt and wait."""
    ipt = fake(races=2)
    seen: list[tuple[int, float]] = []
    out = enforce(ipt, CFG.policy, max_wait=0.01, on_retry=lambda n, w, _e: seen.append((n, w)))
    assert out.after.in_sync
    assert out.attempts == 3
    assert [n for n, _ in seen] == [1, 2]
    assert all(0 <= w <= 0.01 for _, w in seen)


def test_retries_are_capped() -> None:
    """A race that never ends surfaces after the attempt cap."""
    ipt = fake(races=100)
    with pytest.raises(ConcurrentChangeError):
        enforce(ipt, CFG.policy, attempts=3, max_wait=0.001)
    assert len(ipt.restores) == 3


def test_other_failures_are_not_retried() -> None:
    """A plain command error surfaces at once, with its evidence."""
    err = CommandError(["iptables-restore"], 2, "", "line 3 failed", "*filter\n")
    ipt = fake(fail=err)
    with pytest.raises(CommandError) as info:
        enforce(ipt, CFG.policy)
    assert info.value is err
    assert ipt.restores == ["filter"]


def test_accepted_but_ineffective_write_is_a_verify_error() -> None:
    """If reading back still shows drift, enforce says so instead of claiming success."""
    with pytest.raises(VerifyError, match="still differs"):
        enforce(fake(broken=True), CFG.policy)


@pytest.mark.parametrize(
    ("rc", "stderr", "text", "race"),
    [
        (4, "Another app is currently holding the xtables lock.", "", True),
        (1, "iptables-restore: line 2 failed", "*filter\n-D INPUT -j X\nCOMMIT\n", True),
        (1, "iptables-restore: line 2 failed", "*filter\n-A X -j Y\nCOMMIT\n", False),
        (2, "Bad argument", "*filter\n", False),
    ],
)
def test_race_classification(rc: int, stderr: str, text: str, race: bool) -> None:
    """Only a held lock or a failed delete line counts as a lost race."""
    assert _is_race(rc, stderr, text) is race


def test_a_proven_correction_alone_skips_the_read_back() -> None:
    """The second identical correction, with only our commit since the read, is not read back."""
    ipt = fake()
    ipt.generation = 100
    proven = Proven()
    first = enforce(ipt, CFG.policy, proven=proven)
    assert first.after.in_sync
    reads_first = ipt.reads
    assert reads_first == 2  # the read and its read-back
    for key in list(ipt.states):  # the same tamper again: every chain missing
        ipt.states[key] = fake().states[key]
    second = enforce(ipt, CFG.policy, proven=proven)
    assert second.after.in_sync
    assert second.after.observed_hash == second.after.desired_hash
    assert ipt.reads - reads_first == 1  # no read-back
    assert (first.proven, second.proven) == (False, True)  # the caller knows it was not read


def test_a_foreign_commit_forces_the_read_back() -> None:
    """When the generation moved by more than our commits, the proven correction is read back."""
    ipt = fake()
    ipt.generation = 7
    proven = Proven()
    enforce(ipt, CFG.policy, proven=proven)
    for key in list(ipt.states):
        ipt.states[key] = fake().states[key]
    seen = inspect(ipt, CFG.policy)
    assert ipt.generation is not None
    ipt.generation += 1  # somebody else committed after our read
    reads = ipt.reads
    enforce(ipt, CFG.policy, proven=proven, seen=seen)
    assert ipt.reads - reads == 1  # the read-back ran


def test_a_first_correction_is_always_read_back() -> None:
    """A correction never verified before is read back, so a write that does nothing is caught."""
    ipt = fake(broken=True)
    ipt.generation = 1
    with pytest.raises(VerifyError):
        enforce(ipt, CFG.policy, proven=Proven(), attempts=2, max_wait=0.001)


def test_without_a_generation_every_correction_is_read_back() -> None:
    """Legacy (no generation): each correction reads back, proven or not."""
    ipt = fake()
    proven = Proven()
    enforce(ipt, CFG.policy, proven=proven)
    for key in list(ipt.states):
        ipt.states[key] = fake().states[key]
    reads = ipt.reads
    enforce(ipt, CFG.policy, proven=proven)
    assert ipt.reads - reads == 2


def test_proven_keeps_the_newest() -> None:
    """Proven forgets the least recently used correction beyond its size."""
    p = Proven(size=2)
    for k in ("a", "b", "c"):
        p.learn((k, ()))
    assert not p.knows(("a", ()))
    assert p.knows(("b", ()))
    assert p.knows(("c", ()))
