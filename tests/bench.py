"""Benchmark: what `efa-guard check` costs, and whether it grows with kube-proxy's rules.

For each iptables backend and each count of foreign rules, a fresh sandbox (see
``sandbox.py``: network namespaces created here and always deleted) gets that many
kube-proxy-like rules with one ``iptables-<backend>-restore --noflush``, then
``efa-guard apply``; then, interleaved over the sandboxes of one backend so that
slow drifts of the machine hit every size alike, this script times:

* ``ip netns exec <ns> true``: the namespace-entry overhead (included below);
* ``python -m efa_guard check`` as a whole process (median, p90, min);
* the same with ``backend = "auto"`` on nft (the cost of backend detection);
* ``iptables-<backend>-save`` as a whole process, for comparison;
* in-process ``Iptables(kind).read(policy)`` (the backend read cost), timed by a
  child of this script running inside the namespace (``--child-read``).

Every timed command gets one untimed warm-up run.  The foreign rules are shaped
like kube-proxy's: about 90 % in nat (KUBE-SERVICES -> KUBE-SVC-* with
``statistic`` jumps -> KUBE-SEP-* with DNAT), about 10 % in filter (KUBE-FIREWALL,
KUBE-SERVICES REJECTs, KUBE-* jumps at the top of INPUT), plus kube-proxy's empty
mangle hint chains (also at 0 rules, so that ``auto`` picks nft throughout).

Exit status: 0 when everything ran (targets missed or not), 1 on a failure (a
command failed, ``check`` did not report OK, the rules did not load), 2 on bad
usage; with ``--strict`` a missed target exits 1 too.

Usage: ``python tests/bench.py [--runs N] [--sizes 0,10000,50000]
[--backends nft,legacy] [--json] [--strict]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn

from sandbox import Sandbox, SandboxError, missing_tools, sandbox

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from types import FrameType

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "efa-guard.toml"
BACKEND_LINE = re.compile(r'^backend = "auto"$', re.MULTILINE)

Kind = Literal["nft", "legacy"]
KINDS: tuple[Kind, ...] = ("nft", "legacy")

CHECK_TARGET_MS = 200.0
"""Target: `efa-guard check` median as a whole process, in milliseconds."""
FLAT_TARGET = 1.2
"""Target on nft: check median at the largest size at most this times the one at 0."""

COMMAND_TIMEOUT = 120.0
"""Seconds any single command may take (loading 50k rules included)."""
READ_ROUNDS = 5
"""The in-process read timings of a namespace come from this many child processes."""
FILTER_SHARE = 10
"""One foreign rule in this many goes to the filter table, the rest to nat."""

OK = 0
FAILED = 1


class BenchError(Exception):
    """Something the benchmark needs did not work: an actual failure."""


# -- statistics -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stats:
    """Summary of a series of timings, in milliseconds."""

    median: float
    p90: float
    min: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Median, nearest-rank 90th percentile and minimum of ``samples``."""
        if not samples:
            raise BenchError("no samples")
        ordered = sorted(samples)
        rank = max(1, math.ceil(0.9 * len(ordered)))
        return cls(
            median=statistics.median(ordered),
            p90=ordered[rank - 1],
            min=ordered[0],
            n=len(ordered),
        )

    def as_dict(self) -> dict[str, float | int]:
        """JSON form, rounded to microseconds."""
        return {
            "median_ms": round(self.median, 3),
            "p90_ms": round(self.p90, 3),
            "min_ms": round(self.min, 3),
            "n": self.n,
        }


# -- kube-proxy-like rules --------------------------------------------------


def _hash_name(prefix: str, *parts: object) -> str:
    """A kube-proxy style chain name: prefix plus 16 base32-ish characters."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest().upper()
    return f"{prefix}-{digest[:16]}"


def _cluster_ip(i: int) -> str:
    """The i-th service address in 10.96.0.0/12 (never sent traffic)."""
    i += 1
    return f"10.{96 + (i >> 16) % 16}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def _pod_ip(i: int) -> str:
    """The i-th endpoint address in 10.244.0.0/16."""
    i += 1
    return f"10.244.{(i >> 8) & 0xFF}.{i & 0xFF}"


NAT_HEADER = (
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    (
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully"
    ),
)
NAT_LAST = (
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
    'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
)
FILTER_HEADER = (
    "-I INPUT 1 -j KUBE-FIREWALL",
    (
        '-I INPUT 1 -m comment --comment "kubernetes externally-visible service portals" '
        "-m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES"
    ),
    '-I INPUT 1 -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    (
        '-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        "-j KUBE-SERVICES"
    ),
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    "-A OUTPUT -j KUBE-FIREWALL",
    (
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming '
        'localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP'
    ),
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    (
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        "-m mark --mark 0x4000/0x4000 -j ACCEPT"
    ),
)
MANGLE_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
NAT_BASE = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
FILTER_BASE = ("INPUT", "FORWARD", "OUTPUT")


def _service_rules() -> Iterator[str]:
    """Endless nat rules of services with 1-3 endpoints each, as kube-proxy writes them."""
    endpoint = 0
    for svc in range(1 << 20):
        ip, name = _cluster_ip(svc), f"default/svc-{svc}:http"
        svc_chain = _hash_name("KUBE-SVC", svc)
        yield (
            f'-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment "{name} cluster IP" '
            f"-m tcp --dport 80 -j {svc_chain}"
        )
        yield (
            f'-A {svc_chain} ! -s 10.244.0.0/16 -d {ip}/32 -p tcp -m comment --comment "{name} '
            f'cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ'
        )
        count = svc % 3 + 1
        seps = []
        for k in range(count):
            pod, sep = _pod_ip(endpoint), _hash_name("KUBE-SEP", svc, k)
            endpoint += 1
            seps.append((pod, sep))
            stat = (
                f"-m statistic --mode random --probability {1 / (count - k):.11f} "
                if k < count - 1
                else ""
            )
            yield f'-A {svc_chain} -m comment --comment "{name} -> {pod}:8080" {stat}-j {sep}'
        for pod, sep in seps:
            yield f'-A {sep} -s {pod}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ'
            yield (
                f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp '
                f"-j DNAT --to-destination {pod}:8080"
            )


def _reject_rules() -> Iterator[str]:
    """Endless filter KUBE-SERVICES REJECTs for services without endpoints."""
    for i in range(1 << 20):
        yield (
            f"-A KUBE-SERVICES -d {_cluster_ip((1 << 19) + i)}/32 -p tcp -m comment "
            f'--comment "default/empty-{i}:http has no endpoints" -m tcp --dport 80 '
            "-j REJECT --reject-with icmp-port-unreachable"
        )


def _take(header: Sequence[str], body: Iterator[str], count: int) -> list[str]:
    out = list(header[:count])
    for line in body:
        if len(out) >= count:
            break
        out.append(line)
    return out


def _table(name: str, base: Sequence[str], rules: Sequence[str]) -> str:
    """One ``*table`` block declaring every non-built-in chain the rules use."""
    chains: dict[str, None] = {}
    for rule in rules:
        words = rule.split()
        used = [words[1]]
        if "-j" in words:
            used.append(words[words.index("-j") + 1])
        chains.update((c, None) for c in used if c.startswith("KUBE-") and c not in base)
    lines = [f"*{name}", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def foreign_rules(count: int) -> str:
    """``iptables-restore --noflush`` input holding exactly ``count`` kube-proxy-like rules."""
    n_filter = count // FILTER_SHARE
    n_nat = count - n_filter
    nat = _take((*NAT_HEADER, NAT_LAST), _service_rules(), n_nat)
    if NAT_LAST in nat:  # kube-proxy keeps the nodeports jump last in KUBE-SERVICES
        nat.remove(NAT_LAST)
        nat.append(NAT_LAST)
    filt = _take(FILTER_HEADER, _reject_rules(), n_filter)
    mangle = "*mangle\n" + "".join(f":{c} - [0:0]\n" for c in MANGLE_CHAINS) + "COMMIT\n"
    text = mangle
    if filt:
        text += _table("filter", FILTER_BASE, filt)
    if nat:
        text += _table("nat", NAT_BASE, nat)
    return text


def count_rules(save_output: str) -> int:
    """Rules in ``iptables-save`` output that are not efa-guard's."""
    return sum(
        1 for line in save_output.splitlines() if line.startswith("-A ") and "EFA_" not in line
    )


# -- running things in a namespace ------------------------------------------


def ns_run(
    ns: str, argv: Sequence[str], *, capture: bool = True, stdin: str | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``ip netns exec ns *argv`` from the repo root; return (wall ms, result)."""
    full = ["ip", "netns", "exec", ns, *argv]
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            full,
            check=False,
            cwd=REPO,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {COMMAND_TIMEOUT} s: {full}") from None
    elapsed = (time.perf_counter() - start) * 1000.0
    return elapsed, proc


def ns_ok(
    ns: str, argv: Sequence[str], *, capture: bool = True, stdin: str | None = None
) -> tuple[float, str]:
    """Like :func:`ns_run`, but a non-zero exit is a :class:`BenchError`."""
    ms, proc = ns_run(ns, argv, capture=capture, stdin=stdin)
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} in {ns} exited {proc.returncode}\n"
            f"stdout: {(proc.stdout or '')[-2000:]}\nstderr: {(proc.stderr or '')[-2000:]}"
        )
    return ms, proc.stdout or ""


def write_config(directory: Path, backend: str) -> Path:
    """A copy of the default config with ``backend`` set; the path of the copy."""
    text, n = BACKEND_LINE.subn(f'backend = "{backend}"', DEFAULT_CONFIG.read_text())
    if n != 1:
        raise BenchError(f'{DEFAULT_CONFIG}: expected one line `backend = "auto"`, found {n}')
    path = directory / f"efa-guard-{backend}.toml"
    path.write_text(text)
    return path


# -- one backend -------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """One namespace under test: its size, and the timings gathered in it."""

    size: int
    sb: Sandbox
    load_ms: float = 0.0
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @property
    def ns(self) -> str:
        """The guard namespace."""
        return self.sb.guard


@dataclasses.dataclass(frozen=True)
class Row:
    """Results for one backend and foreign-rule count."""

    backend: Kind
    size: int
    load_ms: float
    exec_overhead: Stats
    python_startup: Stats
    check: Stats
    check_auto: Stats | None
    read: Stats
    save: Stats
    ratio: float | None

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "backend": self.backend,
            "foreign_rules": self.size,
            "load_ms": round(self.load_ms, 1),
            "exec_overhead": self.exec_overhead.as_dict(),
            "python_startup": self.python_startup.as_dict(),
            "check": self.check.as_dict(),
            "check_auto": self.check_auto.as_dict() if self.check_auto else None,
            "read": self.read.as_dict(),
            "save": self.save.as_dict(),
            "check_ratio_vs_0": round(self.ratio, 3) if self.ratio is not None else None,
        }


def prepare(t: Target, kind: Kind, config: Path) -> None:
    """Load the foreign rules, verify their count, apply the policy."""
    text = foreign_rules(t.size)
    t.load_ms, _ = ns_ok(t.ns, [f"iptables-{kind}-restore", "--noflush"], stdin=text)
    _, saved = ns_ok(t.ns, [f"iptables-{kind}-save"])
    loaded = count_rules(saved)
    if loaded != t.size:
        raise BenchError(f"{kind}: loaded {loaded} foreign rules, wanted {t.size}")
    ns_ok(t.ns, [sys.executable, "-m", "efa_guard", "apply", "--config", str(config)])


def check_ok(ns: str, config: Path) -> float:
    """Time one whole-process `efa-guard check`; it must say OK (exit 0)."""
    return ns_ok(ns, [sys.executable, "-m", "efa_guard", "check", "--config", str(config)])[0]


def time_round_robin(
    targets: Sequence[Target], name: str, runs: int, one: Callable[[Target], float]
) -> None:
    """Warm up, then time ``one`` ``runs`` times per target, rotating the order."""
    for t in targets:
        one(t)
        t.samples[name] = []
    for i in range(runs):
        k = i % len(targets)
        for t in (*targets[k:], *targets[:k]):
            t.samples[name].append(one(t))


def child_read(t: Target, config: Path, runs: int) -> list[float]:
    """Run this script's ``--child-read`` mode in the namespace; its timings in ms."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-read", str(config)]
    _, out = ns_ok(t.ns, [*argv, "--runs", str(runs)])
    try:
        data = json.loads(out)
        timings = [float(x) for x in data["read_ms"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"--child-read printed {out[:500]!r}: {e}") from None
    return timings


def time_reads(targets: Sequence[Target], config: Path, runs: int) -> None:
    """Time the in-process read ``runs`` times per target, in rotating rounds of children."""
    rounds = min(runs, READ_ROUNDS)
    for t in targets:
        t.samples["read"] = []
    for i in range(rounds):
        chunk = runs // rounds + (1 if i < runs % rounds else 0)
        k = i % len(targets)
        for t in (*targets[k:], *targets[:k]):
            t.samples["read"] += child_read(t, config, chunk)


def bench_backend(
    kind: Kind, sizes: Sequence[int], runs: int, configs: dict[str, Path]
) -> list[Row]:
    """Measure one backend at every size, in one fresh sandbox per size."""
    config = configs[kind]
    with contextlib.ExitStack() as stack:
        targets = [Target(size, stack.enter_context(sandbox(prefix="efab"))) for size in sizes]
        for t in targets:
            progress(f"{kind}: loading {t.size} foreign rules into {t.ns}")
            prepare(t, kind, config)
        progress(f"{kind}: timing ({runs} runs each)")

        def quiet(argv: Sequence[str]) -> Callable[[Target], float]:
            return lambda t: ns_ok(t.ns, argv, capture=False)[0]

        time_round_robin(targets, "exec", runs, quiet(["true"]))
        time_round_robin(targets, "python", runs, quiet([sys.executable, "-c", "pass"]))
        time_round_robin(targets, "check", runs, lambda t: check_ok(t.ns, config))
        if kind == "nft":
            auto = configs["auto"]
            time_round_robin(targets, "auto", runs, lambda t: check_ok(t.ns, auto))
        time_round_robin(targets, "save", runs, quiet([f"iptables-{kind}-save"]))
        time_reads(targets, config, runs)
    return rows_of(kind, targets)


def rows_of(kind: Kind, targets: Sequence[Target]) -> list[Row]:
    """Summarise the samples of one backend's targets."""
    base = next((t for t in targets if t.size == 0), None)
    base_median = Stats.of(base.samples["check"]).median if base else None
    rows = []
    for t in targets:
        check = Stats.of(t.samples["check"])
        rows.append(
            Row(
                backend=kind,
                size=t.size,
                load_ms=t.load_ms,
                exec_overhead=Stats.of(t.samples["exec"]),
                python_startup=Stats.of(t.samples["python"]),
                check=check,
                check_auto=Stats.of(t.samples["auto"]) if "auto" in t.samples else None,
                read=Stats.of(t.samples["read"]),
                save=Stats.of(t.samples["save"]),
                ratio=check.median / base_median if base_median else None,
            )
        )
    return rows


# -- targets and output ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One target: what it asks, what was measured, whether it is met."""

    name: str
    measured: str
    met: bool | None  # None: not evaluated with these options

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"target": self.name, "measured": self.measured, "met": self.met}


def verdicts(rows: Sequence[Row]) -> list[Verdict]:
    """Evaluate the targets on the measured rows."""
    checks = [(f"{r.backend}@{r.size}", r.check.median) for r in rows]
    checks += [(f"auto@{r.size}", r.check_auto.median) for r in rows if r.check_auto]
    worst = max(checks, key=lambda c: c[1], default=None)
    out = [
        Verdict(
            f"check median <= {CHECK_TARGET_MS:.0f} ms (whole process, every row)",
            f"worst {worst[1]:.1f} ms ({worst[0]})" if worst else "no rows",
            worst[1] <= CHECK_TARGET_MS if worst else None,
        )
    ]
    nft = [r for r in rows if r.backend == "nft"]
    top = max(nft, key=lambda r: r.size, default=None)
    flat = f"nft check median at the largest size <= {FLAT_TARGET}x its median at 0"
    if top is None or top.ratio is None or top.size == 0:
        out.append(Verdict(flat, "not measured (needs nft, size 0 and a larger size)", None))
    else:
        measured = f"{top.ratio:.3f}x at {top.size}"
        out.append(Verdict(flat, measured, top.ratio <= FLAT_TARGET))
    return out


@dataclasses.dataclass(frozen=True)
class Growth:
    """How one backend's measured parts grow from 0 foreign rules to the largest size."""

    backend: Kind
    size: int
    ratio: dict[str, float]
    delta_ms: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: each part's ratio and difference of medians."""
        parts = ", ".join(
            f"{k} {self.ratio[k]:.2f}x ({self.delta_ms[k]:+.1f} ms)" for k in self.ratio
        )
        return f"growth {self.backend} 0 -> {self.size} rules (median): {parts}"


def growth(rows: Sequence[Row]) -> list[Growth]:
    """Per backend: each measured part's median at the largest size against the one at 0."""
    out: list[Growth] = []
    for kind in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == kind]
        base = next((r for r in mine if r.size == 0), None)
        top = max(mine, key=lambda r: r.size)
        if base is None or top.size == 0:
            continue
        parts = {"check": (base.check, top.check)}
        if base.check_auto and top.check_auto:
            parts["auto"] = (base.check_auto, top.check_auto)
        parts |= {"read": (base.read, top.read), "save": (base.save, top.save)}
        ratio = {k: round(t.median / b.median, 3) for k, (b, t) in parts.items() if b.median > 0}
        delta = {k: round(t.median - b.median, 1) for k, (b, t) in parts.items() if k in ratio}
        out.append(Growth(kind, top.size, ratio, delta))
    return out


def table(rows: Sequence[Row]) -> str:
    """The human-readable results table."""
    head = (
        f"{'backend':<7} {'rules':>6} {'check med':>9} {'p90':>7} {'min':>7} {'x@0':>6} "
        f"{'auto med':>8} {'read med':>8} {'save med':>8} {'exec med':>8} {'py med':>6} "
        f"{'load':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        auto = f"{r.check_auto.median:8.1f}" if r.check_auto else f"{'-':>8}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'-':>6}"
        lines.append(
            f"{r.backend:<7} {r.size:>6} {r.check.median:9.1f} {r.check.p90:7.1f} "
            f"{r.check.min:7.1f} {ratio} {auto} {r.read.median:8.1f} {r.save.median:8.1f} "
            f"{r.exec_overhead.median:8.1f} {r.python_startup.median:6.1f} {r.load_ms / 1000:6.2f}s"
        )
    lines += [
        "",
        "all times in ms except load; check/auto/save are whole processes run with",
        "`ip netns exec` (exec med = `ip netns exec <ns> true`, not subtracted); read =",
        "in-process Iptables(kind).read(policy); x@0 = check median / check median at 0 rules;",
        'auto = check with backend = "auto" (nft only); py med = `python -c pass` (interpreter',
        "startup, exec included); load = the one iptables-restore of the foreign rules.",
    ]
    return "\n".join(lines)


def progress(message: str) -> None:
    """Progress on stderr, so that stdout stays the report."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def environment() -> dict[str, str]:
    """What the numbers were measured on."""
    version = subprocess.run(
        ["iptables-nft", "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "iptables": version,
        "cpus": str(os.cpu_count()),
    }


# -- entry points ------------------------------------------------------------


def run_child_read(config: Path, runs: int) -> int:
    """``--child-read``: time ``Iptables(kind).read(policy)`` in this process, print JSON."""
    sys.path.insert(0, str(REPO))
    from efa_guard.config import load  # noqa: PLC0415 - child mode only, after the path fix
    from efa_guard.iptables import Iptables  # noqa: PLC0415 - same

    cfg = load(config)
    if cfg.backend == "auto":
        raise BenchError("--child-read needs a config with backend nft or legacy")
    ipt = Iptables(cfg.backend)
    ipt.read(cfg.policy)  # warm-up: resolves the binaries' paths
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        ipt.read(cfg.policy)
        timings.append((time.perf_counter() - start) * 1000.0)
    print(json.dumps({"backend": cfg.backend, "read_ms": timings}))
    return OK


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"need distinct non-negative integers: {text!r}")
    return values


def _kinds(text: str) -> list[Kind]:
    known: dict[str, Kind] = {k: k for k in KINDS}
    out: list[Kind] = []
    for v in (v.strip() for v in text.split(",") if v.strip()):
        if v not in known:
            raise argparse.ArgumentTypeError(f"backend must be nft or legacy, got {v!r}")
        out.append(known[v])
    if not out or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"need distinct backends: {text!r}")
    return out


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a positive integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--runs", type=_positive, default=30, help="timed runs per measurement")
    p.add_argument("--sizes", type=_int_list, default=[0, 10000, 50000], help="foreign rules")
    p.add_argument("--backends", type=_kinds, default=list(KINDS), help="nft,legacy")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--child-read", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    del frame
    raise SystemExit(128 + signum)  # unwinds the `with`, which deletes the namespaces


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report; return the exit status."""
    args = parse_args(argv)
    if args.child_read is not None:
        return run_child_read(args.child_read, args.runs)
    missing = missing_tools()
    if missing:
        print(f"bench: cannot run, missing: {', '.join(missing)}", file=sys.stderr)
        return FAILED
    signal.signal(signal.SIGTERM, _on_sigterm)
    sizes = sorted(args.sizes)
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="efa-bench-") as tmp:
            configs = {b: write_config(Path(tmp), b) for b in ("auto", *KINDS)}
            for kind in args.backends:
                rows += bench_backend(kind, sizes, args.runs, configs)
    except (BenchError, SandboxError, OSError) as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print("bench: interrupted (namespaces deleted)", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - started
    results = verdicts(rows)
    grown = growth(rows)
    if args.json:
        report = {
            "runs": args.runs,
            "elapsed_s": round(elapsed, 1),
            "environment": environment(),
            "rows": [r.as_dict() for r in rows],
            "growth": [g.as_dict() for g in grown],
            "targets": [v.as_dict() for v in results],
        }
        print(json.dumps(report, indent=2))
    else:
        env = environment()
        print(
            f"efa-guard bench: {args.runs} runs each, {elapsed:.0f} s; "
            + ", ".join(f"{k} {v}" for k, v in env.items())
        )
        print()
        print(table(rows))
        print()
        for g in grown:
            print(g.describe())
        print()
        for v in results:
            state = {True: "MET", False: "MISSED", None: "N/A"}[v.met]
            print(f"target {state:<6} {v.name}: {v.measured}")
    missed = any(v.met is False for v in results)
    return FAILED if args.strict and missed else OK


if __name__ == "__main__":
    sys.exit(main())
