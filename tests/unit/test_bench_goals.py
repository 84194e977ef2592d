"""The pure parts of `make bench`'s goals table: verdicts, rounding, the table, commit matching."""

from __future__ import annotations

import math
import struct

import pytest

from efa_guard import netlink
from tools.bench_goals import _k, caveats, ordered
from tools.goalkit import Figure, Goal, Target, shown, table, tally
from tools.nftprobe import (
    BATCH_BEGIN,
    BATCH_END,
    NEWGEN,
    NEWTABLE,
    NFTA_GEN_PROC_NAME,
    NFTA_GEN_PROC_PID,
    Commit,
    CommitReader,
    commit_to_commit,
    probe_batch,
    watch_lag,
)


def goal(measured: float | None, reference: float | None, target: Target) -> Goal:
    """A row with figures in ms."""
    return Goal(
        "1a",
        "check @50k vs check @0",
        "nft",
        Figure("check @50k", measured, "ms") if measured is not None else None,
        Figure("check @0", reference, "ms") if reference is not None else None,
        target,
    )


# -- verdicts --------------------------------------------------------------------------------


def test_a_ratio_target_bounds_measured_over_reference() -> None:
    """A ratio target is MET at or below the limit and MISSED above it."""
    assert goal(120.0, 100.0, Target("ratio", 1.2)).mark == "MET"
    assert goal(121.0, 100.0, Target("ratio", 1.2)).mark == "MISSED"
    assert goal(121.0, 100.0, Target("ratio", 1.2)).ratio == pytest.approx(1.21)


def test_a_value_target_bounds_the_figure_whatever_the_reference() -> None:
    """A value target (30 ms, 1 %) is judged on the measured figure; the ratio is context."""
    assert goal(29.0, 1.0, Target("value", 30.0)).mark == "MET"
    assert goal(31.0, 1000.0, Target("value", 30.0)).mark == "MISSED"
    assert goal(0.0, None, Target("value", 0.0)).mark == "MET"


def test_what_cannot_be_judged_is_not_a_verdict() -> None:
    """Nothing measured, or no usable reference for a ratio, is N/A; no target is info."""
    assert goal(None, 100.0, Target("ratio", 1.0)).mark == "N/A"
    assert goal(10.0, 0.0, Target("ratio", 1.0)).mark == "N/A"
    assert goal(10.0, None, Target("ratio", 1.0)).ratio is None
    row = goal(10.0, 5.0, Target("info"))
    assert row.mark == "info"
    assert row.met is None
    assert row.verdict().met is None


def test_a_missed_correction_is_an_infinite_figure_and_a_miss() -> None:
    """An infinite latency (a tamper never corrected) misses and prints as inf, JSON null."""
    row = goal(math.inf, 2.0, Target("ratio", 2.0))
    assert row.mark == "MISSED"
    assert row.cells()[3] == "inf ms"
    assert row.as_dict()["measured"] == {"label": "check @50k", "value": None, "unit": "ms"}
    assert row.as_dict()["ratio"] is None


# -- rounding --------------------------------------------------------------------------------


def test_figures_round_to_their_magnitude() -> None:
    """Two decimals below 10, one below 100, none above; a count has none."""
    assert shown(2.3456, None) == "2.35"
    assert shown(23.456, None) == "23.5"
    assert shown(234.56, None) == "235"
    assert Figure("n", 3, "checks", digits=0).text() == "3 checks"


def test_rounding_never_makes_a_miss_read_like_its_limit() -> None:
    """1.2004 against 1.2 prints as 1.2004 (MISSED), not 1.20; equal values stay short."""
    assert shown(1.2004, 1.2) == "1.2004"
    assert shown(1.2, 1.2) == "1.20"
    assert shown(30.04, 30.0) == "30.04"
    row = goal(120.04, 100.0, Target("ratio", 1.2))
    assert row.mark == "MISSED"
    assert row.cells()[5] == "1.2004x"
    assert goal(30.04, 1.0, Target("value", 30.0)).cells()[3] == "30.04 ms"


def test_targets_print_their_limit_and_unit() -> None:
    """``<= 1.2x`` for a ratio, ``<= 30 ms`` for a value, ``info`` for none."""
    assert Target("ratio", 1.2).text("ms") == "<= 1.2x"
    assert Target("value", 30.0).text("ms") == "<= 30 ms"
    assert Target("info").text("ms") == "info"


def test_json_keeps_the_exact_values() -> None:
    """The JSON form carries the unrounded figure and ratio, and the target."""
    doc = goal(123.456789, 100.0, Target("ratio", 1.2)).as_dict()
    assert doc["measured"] == {"label": "check @50k", "value": 123.456789, "unit": "ms"}
    assert doc["ratio"] == pytest.approx(1.234568)
    assert doc["target"] == {"bound": "ratio", "limit": 1.2}
    assert doc["met"] is False


# -- the table -------------------------------------------------------------------------------


def test_the_table_has_every_column_and_aligns_them() -> None:
    """A heading, an underline, one line per row; every line's columns start alike."""
    rows = [
        goal(243.0, 201.0, Target("ratio", 1.2)),
        Goal("7", "VmRSS @50k", "legacy", Figure("@50k", 52.4, "MB"), None, Target("value", 40.0)),
    ]
    lines = table(rows)
    assert lines[0].split() == [
        "#",
        "goal",
        "backend",
        "measured",
        "reference",
        "(same",
        "run)",
        "ratio",
        "target",
    ]
    assert set(lines[1]) == {"-"}
    assert lines[2].startswith("1a")
    assert lines[2].endswith("MISSED")
    assert "check @0 201 ms" in lines[2]
    assert "1.21x" in lines[2]
    assert lines[3].startswith("7 ")
    assert "52.4 MB" in lines[3]
    assert lines[3].endswith("MISSED")
    assert lines[2].index("nft") == lines[3].index("legacy") == lines[0].index("backend")
    assert tally(rows) == "goals: 2 MISSED"


def test_rows_are_ordered_by_goal_then_backend() -> None:
    """Goal numbers sort numerically (2 before 10), nft before legacy within one goal."""
    legacy = Goal("3b", "x", "legacy", None, None, Target("info"))
    nft = Goal("3b", "x", "nft", None, None, Target("info"))
    ten = Goal("10", "x", "nft", None, None, Target("info"))
    two = Goal("2", "x", "nft", None, None, Target("info"))
    assert ordered([ten, legacy, nft, two]) == [two, nft, legacy, ten]


def test_sizes_print_in_thousands_when_near_a_round_count() -> None:
    """50000 is 50k; kube-like rules a few short of 10000 are 10k; odd sizes stay exact."""
    assert _k(50000) == "50k"
    assert _k(9991) == "10k"
    assert _k(0) == "0"
    assert _k(1234) == "1234"


def test_caveats_are_found_anywhere_in_checks_json() -> None:
    """Every "not evaluated" string of check --json is quoted once, wherever it sits."""
    reason = "not evaluated (the time budget ran out after 3072 rules): counted as reachable"
    report = {
        "exposed": [{"reason": reason}, {"reason": reason}, {"reason": "no rule drops it"}],
        "warnings": ["other"],
    }
    assert caveats(report) == [reason]
    assert caveats({"exposed": []}) == []


# -- nf_tables commits -----------------------------------------------------------------------


def newgen(pid: int, name: str) -> bytes:
    """A NEWGEN message naming its committer."""
    body = struct.pack("=BBH", 0, 0, 0)
    body += netlink.pack_attr(NFTA_GEN_PROC_PID, struct.pack(">I", pid))
    body += netlink.pack_attr(NFTA_GEN_PROC_NAME, name.encode() + b"\0")
    return netlink.pack(NEWGEN, body)


def test_a_newgen_names_its_committer_and_counts_the_transaction() -> None:
    """Messages before a NEWGEN count towards its transaction; the count starts over after it."""
    other = netlink.pack(NEWTABLE, b"\0" * 4)
    reader = CommitReader()
    assert reader.feed(other + other, 1.0) == []
    [first] = reader.feed(other + newgen(42, "iptables-nft"), 2.0)
    assert first == Commit(2.0, 42, "iptables-nft", 3)
    [second] = reader.feed(newgen(43, "iptables-nft-re"), 3.0)
    assert second.messages == 0


def test_commit_lines_round_trip() -> None:
    """What the watching child prints, the parent reads back; other lines are not commits."""
    c = Commit(12.5, 42, "iptables-nft-re", 7, ppid=40)
    assert Commit.parse(c.line()) == c
    assert Commit.parse("overflow 12.5") is None
    assert Commit.parse("ready") is None


def test_the_probe_batch_is_one_acked_table_change() -> None:
    """Batch begin, one acked NEWTABLE (or DELTABLE) of the scratch table, batch end."""
    data = probe_batch(create=True, seq=1)
    kinds = [(kind, flags) for kind, flags, _s, _p, _a, _b in netlink.messages(data)]
    assert [k for k, _ in kinds] == [BATCH_BEGIN, NEWTABLE, BATCH_END]
    assert kinds[1][1] & 0x4  # NLM_F_ACK
    assert b"efa_bench_probe\0" in data
    assert [k for k, *_ in netlink.messages(probe_batch(create=False, seq=4))][1] != NEWTABLE


def test_commit_to_commit_runs_from_the_tamper_to_the_daemons_restore() -> None:
    """The tamper's commit, then the first later commit of the daemon's child, in the window."""
    commits = [
        Commit(0.5, 99, "iptables-nft-re", 4, ppid=7),  # an earlier correction: outside
        Commit(1.000, 10, "iptables-nft", 1, ppid=1),  # the tamper
        Commit(1.001, 11, "xtables-nft-mul", 9000, ppid=1),  # the resync loop's
        Commit(1.004, 12, "iptables-nft-re", 5, ppid=7),  # the daemon's restore
        Commit(1.010, 13, "iptables-nft-re", 5, ppid=7),
    ]
    ms = commit_to_commit(
        commits,
        tamper_pid=10,
        window=(0.9, 2.0),
        daemon_pid=7,
        foreign=frozenset({"xtables-nft-mul"}),
    )
    assert ms == pytest.approx(4.0)


def test_a_restore_whose_parent_is_gone_is_known_by_its_name() -> None:
    """An unreadable parent (-1) still counts, unless the name is a foreign writer's."""
    commits = [
        Commit(1.000, 10, "iptables-nft", 1),
        Commit(1.002, 11, "xtables-nft-mul", 9000),
        Commit(1.003, 12, "iptables-nft-re", 5),
    ]
    foreign = frozenset({"xtables-nft-mul"})
    ms = commit_to_commit(commits, tamper_pid=10, window=(0.0, 2.0), daemon_pid=7, foreign=foreign)
    assert ms == pytest.approx(3.0)


def test_no_restore_in_the_window_is_no_figure() -> None:
    """Without the tamper's commit, or without a restore before the window ends: None."""
    tamper = Commit(1.0, 10, "iptables-nft", 1)
    late = Commit(3.0, 12, "iptables-nft-re", 5, ppid=7)
    assert commit_to_commit([tamper, late], tamper_pid=10, window=(0, 2), daemon_pid=7) is None
    assert commit_to_commit([late], tamper_pid=10, window=(0, 4), daemon_pid=7) is None


def test_a_commit_read_after_its_process_exited_was_read_late() -> None:
    """The watch's lag: how long after the committer's exit its NEWGEN was read (0 if before)."""
    commits = [Commit(1.0, 9, "iptables-nft", 1), Commit(2.050, 10, "iptables-nft", 1)]
    assert watch_lag(commits, pid=10, start=2.0, exited=2.010) == pytest.approx(40.0)
    assert watch_lag(commits, pid=10, start=2.0, exited=2.060) == 0.0
    assert watch_lag(commits, pid=11, start=0.0, exited=3.0) is None
