"""legacy one-shot reads on the real kernel: one copy per table, listings from the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support import Guard

from efa_guard.legacycache import XTABLES_LOCK, LockCloses
from efa_guard.legacystore import NAME
from tools.harness import write_config
from tools.sandbox import Sandbox

# Runs the CLI in-process and writes the argv[0] of every process it started to a file.
COUNTED = """
import json, subprocess, sys
from efa_guard.cli import main
started = []
init = subprocess.Popen.__init__
def counting(self, args, *rest, **kw):
    started.append(str(list(args)[0]))
    init(self, args, *rest, **kw)
subprocess.Popen.__init__ = counting
try:
    code = main(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    json.dump(started, f)
sys.exit(code)
"""


def counted_check(box: Sandbox, config: Path, out: Path) -> tuple[dict[str, object], list[str]]:
    """`check --json` in the guard namespace: its report and the processes it started."""
    argv = [sys.executable, "-c", COUNTED, str(out), "check", "--json", "--config", str(config)]
    done = box.run(argv, check=False)
    assert done.returncode in (0, 1, 2), done.stderr  # OK, WARNING, CRITICAL (drift)
    report: dict[str, object] = json.loads(done.stdout)
    started: list[str] = json.loads(out.read_text())
    return report, started


def _chains(report: dict[str, object]) -> list[dict[str, object]]:
    chains = report["chains"]
    assert isinstance(chains, list)
    return chains


def _chain(report: dict[str, object], name: str) -> dict[str, object]:
    (chain,) = [c for c in _chains(report) if c["chain"] == name]
    return chain


@pytest.fixture
def legacy(box: Sandbox, tmp_path: Path) -> Guard:
    """A sandbox with the policy applied on iptables-legacy."""
    config = write_config(tmp_path / "g.toml", backend="legacy")
    guard = Guard(box=box, backend="legacy", config=config)
    assert guard.efa("apply").returncode == 0
    return guard


def test_a_second_check_starts_no_iptables_process(legacy: Guard, tmp_path: Path) -> None:
    """The first check saves each table and stores its chains; the next reads only the kernel."""
    first, started = counted_check(legacy.box, legacy.config, tmp_path / "1.json")
    assert any(p.endswith("iptables-legacy-save") for p in started), started
    store = tmp_path / "run" / NAME
    assert store.stat().st_mode & 0o777 == 0o600
    second, started = counted_check(legacy.box, legacy.config, tmp_path / "2.json")
    assert started == []
    assert _chains(second) == _chains(first)
    assert second["exposed"] == first["exposed"]
    assert first["drift"] == second["drift"] == []


def test_a_warm_check_sees_a_hand_edit_of_the_same_size(legacy: Guard, tmp_path: Path) -> None:
    """Another port or verdict in a rule of the same size is another digest: drift is found."""
    counted_check(legacy.box, legacy.config, tmp_path / "1.json")
    rule = legacy.ipt("-S", "EFA_INPUT").splitlines()[1]  # "-A EFA_INPUT ..." (rule 1)
    edited = rule.replace(" 1024:", " 1025:", 1).replace("-j DROP", "-j ACCEPT")
    assert edited != rule
    legacy.ipt("-R", "EFA_INPUT", "1", *edited.split()[2:])
    report, started = counted_check(legacy.box, legacy.config, tmp_path / "2.json")
    assert any(p.endswith("iptables-legacy-save") for p in started), started  # not stored yet
    chain = _chain(report, "ipv4 filter/EFA_INPUT")
    assert chain["in_sync"] is False
    assert edited in str(chain["rules"])
    again, started = counted_check(legacy.box, legacy.config, tmp_path / "3.json")
    assert started == []  # the edited state is stored now, and reported the same
    assert _chains(again) == _chains(report)


def test_a_damaged_store_is_replaced_and_changes_no_verdict(legacy: Guard, tmp_path: Path) -> None:
    """A store whose listing does not match its checksum is ignored (read again) and rewritten."""
    first, _ = counted_check(legacy.box, legacy.config, tmp_path / "1.json")
    store = tmp_path / "run" / NAME
    body = json.loads(store.read_text())
    body["entries"][0][1] = "-N EFA_INPUT\n-A EFA_INPUT -j ACCEPT\n"  # a lie, its checksum stale
    store.write_text(json.dumps(body))
    report, started = counted_check(legacy.box, legacy.config, tmp_path / "2.json")
    assert any(p.endswith("iptables-legacy-save") for p in started), started
    assert _chains(report) == _chains(first)
    assert "-A EFA_INPUT -j ACCEPT" not in store.read_text()


def test_holds_more_than_counts_rules_exactly(box: Sandbox) -> None:
    """User and built-in chains: more than N rules is True at N - 1, False at N; none is None."""
    rules = "\n".join(f"-A LONG -s 198.18.{i >> 8}.{i & 255}/32 -j DROP" for i in range(600))
    box.run(
        ["iptables-legacy-restore", "--noflush"],
        input=f"*filter\n:LONG - [0:0]\n:SHORT - [0:0]\n-A SHORT -j DROP\n{rules}\n"
        "-A INPUT -j SHORT\n-A INPUT -j LONG\n-A INPUT -p tcp -j ACCEPT\nCOMMIT\n",
    )
    code = (
        "import json\nfrom efa_guard.legacyshot import holds_more_than as h\n"
        "print(json.dumps([h('ipv4', 'filter', c, n) for c, n in "
        "[('LONG', 599), ('LONG', 600), ('SHORT', 0), ('SHORT', 1), ('NONE', 0),"
        " ('INPUT', 2), ('INPUT', 3), ('OUTPUT', 0)]]))"
    )
    found = json.loads(box.run([sys.executable, "-c", code]).stdout)
    assert found == [True, False, True, False, None, True, False, False]


def test_a_check_closes_no_xtables_lock(legacy: Guard, tmp_path: Path) -> None:
    """A cold and a warm check only read: no close of the lock (the daemon wakes on closes)."""
    assert XTABLES_LOCK.exists()  # the fixture's apply (iptables-legacy-restore) created it
    closes = LockCloses(XTABLES_LOCK)
    assert closes.count() is None  # arming
    before = closes.count()
    assert before is not None  # armed: the count below can move
    _, cold = counted_check(legacy.box, legacy.config, tmp_path / "1.json")
    _, warm = counted_check(legacy.box, legacy.config, tmp_path / "2.json")
    assert any(p.endswith("iptables-legacy-save") for p in cold), cold
    assert warm == []
    assert closes.count() == before
