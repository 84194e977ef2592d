"""apply and check on the real kernel, both backends: round trip, idempotence, evidence."""

from __future__ import annotations

import json

from support import Guard

# `iptables -v -nL` columns after the counters; iptables 1.8.9 prints protocols by number.
SEED_LINES = [
    (
        "DROP 6 -- eth0 * 0.0.0.0/0 0.0.0.0/0 "
        "multiport dports 1024:6513,6515:8077,8079:65535 ctstate NEW"
    ),
    "DROP 17 -- eth0 * 0.0.0.0/0 0.0.0.0/0 multiport dports 1024:65535 ctstate NEW",
]


def test_apply_then_check_is_ok(guard: Guard) -> None:
    """After apply, check exits 0 with an OK status line, and a second apply changes nothing."""
    first = guard.efa("apply")
    assert first.returncode == 0, first.stderr
    assert "policy asserted" in first.stdout
    assert "corrected: ipv4 filter/EFA_INPUT: chain missing" in first.stdout
    assert "corrected: ipv6 filter/EFA_INPUT: chain missing" in first.stdout
    check = guard.efa("check")
    assert check.returncode == 0, check.stdout
    assert check.stdout.startswith(f"EFA-GUARD OK - policy in place: 2 chains, {guard.backend}")
    before = guard.save()
    again = guard.efa("apply")
    assert again.returncode == 0
    assert "no change" in again.stdout
    assert guard.save() == before


def test_kernel_holds_the_seed_rules_first(guard: Guard) -> None:
    """`iptables -v -nL EFA_INPUT` shows the seed's two rules first, then 111, jump first."""
    assert guard.efa("apply").returncode == 0
    listing = guard.ipt("-v", "-n", "-L", "EFA_INPUT").splitlines()
    assert listing[0] == "Chain EFA_INPUT (1 references)"
    rows = [" ".join(line.split()[2:]) for line in listing[2:]]
    assert rows[:2] == SEED_LINES
    assert "multiport dports 111" in rows[2]
    assert "multiport dports 111" in rows[3]
    assert guard.ipt("-S", "INPUT").splitlines()[1] == "-A INPUT -j EFA_INPUT"
    raw = guard.ipt("-t", "raw", "-S", "PREROUTING").splitlines()
    assert raw[1] == "-A PREROUTING -j EFA_NODEPORTS"


def test_render_round_trips_through_the_kernel(guard: Guard) -> None:
    """100 in-process reads after apply all equal the rendered policy (no false drift)."""
    assert guard.efa("apply").returncode == 0
    code = f"""
import json
from pathlib import Path
from efa_guard.config import load
from efa_guard.enforce import inspect
from efa_guard.iptables import Iptables
cfg = load(Path({str(guard.config)!r}))
ipt = Iptables({guard.backend!r})
results = [inspect(ipt, cfg.policy) for _ in range(100)]
print(json.dumps({{"in_sync": sum(r.in_sync for r in results),
                   "hashes": sorted({{r.observed_hash for r in results}}),
                   "desired": results[0].desired_hash}}))
"""
    got = json.loads(guard.python(code))
    assert got["in_sync"] == 100
    assert got["hashes"] == [got["desired"]]


def test_render_touches_nothing(guard: Guard) -> None:
    """`render` prints the restore text and leaves the kernel as it was."""
    before = guard.save()
    out = guard.efa("render")
    assert out.returncode == 0
    assert "-I INPUT 1 -j EFA_INPUT" in out.stdout
    assert guard.save() == before


def test_dry_run_prints_the_transaction_and_writes_nothing(guard: Guard) -> None:
    """`apply --dry-run` shows the drift and the exact transaction, and changes nothing."""
    assert guard.efa("apply").returncode == 0
    guard.ipt("-D", "EFA_INPUT", "3")
    before = guard.save()
    out = guard.efa("apply", "--dry-run")
    assert out.returncode == 0
    assert "# drift: ipv4 filter/EFA_INPUT: rule 3 missing" in out.stdout
    assert ":EFA_INPUT - [0:0]" in out.stdout
    assert guard.save() == before


def test_check_json_is_machine_readable(guard: Guard) -> None:
    """`check --json` reports status, backend, hashes, chains and drift as data."""
    missing = guard.check_json()
    assert missing["status"] == "CRITICAL"
    assert missing["exit_code"] == 2
    kinds = [d["kind"] for d in missing["drift"]]  # type: ignore[attr-defined]
    assert kinds == ["chain-missing", "jump-missing"] * 4
    assert missing["drifted_families"] == ["ipv4", "ipv6"]
    assert guard.efa("apply").returncode == 0
    ok = guard.check_json()
    assert ok["status"] == "OK"
    assert ok["backend"] == guard.backend
    assert ok["desired_sha256"] == ok["observed_sha256"]
    assert ok["drift"] == []
