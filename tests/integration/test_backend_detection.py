"""backend = "auto" picks the backend kube-proxy uses, and warns when both hold rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support import Guard

from tools.harness import DEFAULT_CONFIG
from tools.sandbox import Sandbox


def check(box: Sandbox) -> tuple[int, dict[str, object]]:
    """`check --json` with the default (auto) config in the guard namespace."""
    argv = [sys.executable, "-m", "efa_guard", "check", "--json", "--config", str(DEFAULT_CONFIG)]
    out = box.run(argv, check=False)
    data: dict[str, object] = json.loads(out.stdout)
    return out.returncode, data


def hint(box: Sandbox, kind: str, chain: str = "KUBE-IPTABLES-HINT") -> None:
    """Create kube-proxy's hint chain in one backend's mangle table."""
    box.run([f"iptables-{kind}", "-t", "mangle", "-N", chain])


def system_default() -> str:
    """What /usr/sbin/iptables points at on this machine."""
    return "legacy" if "legacy" in Path("/usr/sbin/iptables").resolve().name else "nft"


def test_without_hints_auto_uses_the_system_iptables(box: Sandbox) -> None:
    """No kube-proxy: auto follows the system's iptables alternative, with no warning."""
    _, data = check(box)
    assert data["backend"] == system_default()
    assert data["warnings"] == []


def test_legacy_hint_selects_legacy(box: Sandbox) -> None:
    """KUBE-KUBELET-CANARY in legacy mangle alone selects legacy."""
    hint(box, "legacy", "KUBE-KUBELET-CANARY")
    _, data = check(box)
    assert data["backend"] == "legacy"
    assert data["warnings"] == []


def test_nft_hint_selects_nft(box: Sandbox) -> None:
    """KUBE-IPTABLES-HINT in nft mangle selects nft."""
    hint(box, "nft")
    _, data = check(box)
    assert data["backend"] == "nft"


def test_hints_in_both_warn_and_prefer_nft(box: Sandbox) -> None:
    """Hints in both backends: nft wins, and an otherwise compliant check is a WARNING."""
    hint(box, "nft")
    hint(box, "legacy")
    argv = [sys.executable, "-m", "efa_guard", "apply", "--config", str(DEFAULT_CONFIG)]
    applied = box.run(argv, check=False)
    assert applied.returncode == 0
    assert "both iptables backends hold rules" in applied.stderr
    code, data = check(box)
    assert code == 1
    assert data["status"] == "WARNING"
    assert data["backend"] == "nft"
    assert "kube-proxy hint chains in legacy mangle" in str(data["warnings"])


def test_stale_policy_in_the_other_backend_warns(box: Sandbox) -> None:
    """Our chain left behind in legacy while nft is in use is reported: both are evaluated."""
    hint(box, "nft")
    box.run(["iptables-legacy", "-N", "EFA_INPUT"])
    _, data = check(box)
    assert data["backend"] == "nft"
    assert "filter/EFA_INPUT exists in legacy" in str(data["warnings"])


def test_rules_in_the_other_backend_are_a_warning(guard: Guard) -> None:
    """A rule in the other backend's INPUT makes a compliant check a WARNING naming the chain."""
    other = "legacy" if guard.backend == "nft" else "nft"
    assert guard.efa("apply").returncode == 0
    assert guard.efa("check", "--no-exposure").returncode == 0
    guard.box.run([f"iptables-{other}", "-A", "INPUT", "-s", "192.0.2.9", "-j", "DROP"])
    guard.box.run([f"iptables-{other}", "-t", "raw", "-P", "PREROUTING", "DROP"])
    out = guard.efa("check", "--no-exposure")
    assert out.returncode == 1, out.stdout
    assert f"{other} ipv4 filter/INPUT: 1 rule(s)" in out.stdout
    assert f"{other} ipv4 raw/PREROUTING: policy DROP" in out.stdout
    assert "ipv6" not in out.stdout.split("|")[0].split("rules outside")[-1]
