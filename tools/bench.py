"""Benchmark: what `efa-guard check` costs, and whether it grows with kube-proxy's rules.

Two sections, both by default, or one with ``--only``:

``imports``: what ``check`` pays in start-up and imports, on the host (see
``tools/importcost.py``): a whole ``python -m efa_guard check --help`` process against
``python -c pass`` (median of ``--import-runs``, 20 by default), target at most 5x.

``check``: for each iptables backend and each count of foreign rules, a fresh sandbox (see
``tools/sandbox.py``: network namespaces created here and always deleted) gets that many
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

Usage, from the checkout's root: ``python -m tools.bench [--only imports|check]
[--runs N] [--import-runs N] [--sizes 0,10000,50000] [--backends nft,legacy] [--json]
[--strict]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tools.benchkit import (
    FAILED,
    KINDS,
    OK,
    BenchError,
    Kind,
    Verdict,
    environment,
    header,
    interleave,
    kinds,
    ns_ok,
    on_sigterm,
    positive,
    progress,
)
from tools.harness import HarnessError, efa_argv, isolate_state, write_config
from tools.importcost import IMPORT_RUNS, ImportCost
from tools.importcost import measure as measure_imports
from tools.kuberules import count_rules, foreign_rules
from tools.sandbox import Sandbox, missing_tools, sandbox

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


CHECK_TARGET_MS = 200.0
"""Target: `efa-guard check` median as a whole process, in milliseconds."""
FLAT_TARGET = 1.2
"""Target on nft: check median at the largest size at most this times the one at 0."""

READ_ROUNDS = 5
"""The in-process read timings of a namespace come from this many child processes."""
SECTIONS = ("imports", "check")
"""What ``--only`` can pick; both run by default, in this order."""


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
            msg = "no samples"
            raise BenchError(msg)
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
        msg = f"{kind}: loaded {loaded} foreign rules, wanted {t.size}"
        raise BenchError(msg)
    ns_ok(t.ns, efa_argv("apply", config=config))


def check_ok(ns: str, config: Path) -> float:
    """Time one whole-process `efa-guard check`; it must say OK (exit 0)."""
    return ns_ok(ns, efa_argv("check", config=config))[0]


def time_round_robin(
    targets: Sequence[Target], name: str, runs: int, one: Callable[[Target], float]
) -> None:
    """Warm up, then time ``one`` ``runs`` times per target, rotating the order."""
    jobs = [(str(i), functools.partial(one, t)) for i, t in enumerate(targets)]
    samples = interleave(jobs, runs)
    for i, t in enumerate(targets):
        t.samples[name] = samples[str(i)]


def child_read(t: Target, config: Path, runs: int) -> list[float]:
    """Run this script's ``--child-read`` mode in the namespace; its timings in ms."""
    argv = [sys.executable, "-m", "tools.bench", "--child-read", str(config)]
    _, out = ns_ok(t.ns, [*argv, "--runs", str(runs)])
    try:
        data = json.loads(out)
        timings = [float(x) for x in data["read_ms"]]
    except (ValueError, KeyError, TypeError) as e:
        msg = f"--child-read printed {out[:500]!r}: {e}"
        raise BenchError(msg) from None
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
            progress("bench", f"{kind}: loading {t.size} foreign rules into {t.ns}")
            prepare(t, kind, config)
        progress("bench", f"{kind}: timing ({runs} runs each)")

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
    lines = header(head)
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


# -- entry points ------------------------------------------------------------


def run_child_read(config: Path, runs: int) -> int:
    """``--child-read``: time ``Iptables(kind).read(policy)`` in this process, print JSON."""
    from efa_guard.config import load  # noqa: PLC0415 - child mode only
    from efa_guard.iptables import Iptables  # noqa: PLC0415 - same

    cfg = load(config)
    if cfg.backend == "auto":
        msg = "--child-read needs a config with backend nft or legacy"
        raise BenchError(msg)
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--runs", type=positive, default=30, help="timed runs per measurement")
    p.add_argument("--sizes", type=_int_list, default=[0, 10000, 50000], help="foreign rules")
    p.add_argument("--backends", type=kinds, default=list(KINDS), help="nft,legacy")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--only", choices=SECTIONS, help="run one section (default: all)")
    p.add_argument(
        "--import-runs", type=positive, default=IMPORT_RUNS, help="timed runs, imports section"
    )
    p.add_argument("--child-read", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report; return the exit status."""
    isolate_state()
    args = parse_args(argv)
    if args.child_read is not None:
        return run_child_read(args.child_read, args.runs)
    sections = [args.only] if args.only else list(SECTIONS)
    missing = missing_tools() if "check" in sections else []
    if missing:
        print(f"bench: cannot run, missing: {', '.join(missing)}", file=sys.stderr)
        return FAILED
    signal.signal(signal.SIGTERM, on_sigterm)
    sizes = sorted(args.sizes)
    started = time.perf_counter()
    imports: ImportCost | None = None
    rows: list[Row] = []
    try:
        if "imports" in sections:
            progress("bench", f"imports: {args.import_runs} runs each")
            imports = measure_imports(args.import_runs)
        if "check" in sections:
            with tempfile.TemporaryDirectory(prefix="efa-bench-") as tmp:
                configs = {
                    b: write_config(Path(tmp) / f"efa-guard-{b}.toml", backend=b)
                    for b in ("auto", *KINDS)
                }
                for kind in args.backends:
                    rows += bench_backend(kind, sizes, args.runs, configs)
    except (HarnessError, OSError) as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print("bench: interrupted (namespaces deleted)", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - started
    results = [imports.verdict()] if imports else []
    results += verdicts(rows) if "check" in sections else []
    grown = growth(rows)
    if args.json:
        report = {
            "runs": args.runs,
            "elapsed_s": round(elapsed, 1),
            "environment": environment(),
            "imports": imports.as_dict() if imports else None,
            "rows": [r.as_dict() for r in rows],
            "growth": [g.as_dict() for g in grown],
            "targets": [v.as_dict() for v in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print_report(args.runs, elapsed, imports, rows, results)
    missed = any(v.met is False for v in results)
    return FAILED if args.strict and missed else OK


def print_report(
    runs: int,
    elapsed: float,
    imports: ImportCost | None,
    rows: Sequence[Row],
    results: Sequence[Verdict],
) -> None:
    """The human-readable report on stdout."""
    env = environment()
    what = f"{runs} runs each" if rows else "imports only"
    print(
        f"efa-guard bench: {what}, {elapsed:.0f} s; "
        + ", ".join(f"{k} {v}" for k, v in env.items())
    )
    print()
    if imports is not None:
        print("\n".join(imports.lines()))
        print()
    if rows:
        print(table(rows))
        print()
        for g in growth(rows):
            print(g.describe())
        print()
    for v in results:
        print(v.line())


if __name__ == "__main__":
    sys.exit(main())
