"""Config validation time against input size, to show that it is linear.

Run from the checkout root: `python -m tools.bench_config` (`--help` for options). For each
series (a rule with a growing `except` list; a chain with a growing number of rules) it prints
the validation time (tomllib and validation, CPU seconds, best of --repeat), the cost per item,
and the growth of that cost between steps; a series passes when the per-item cost of its largest
case is at most --tolerance times that of its smallest. Exits 1 when a series misses.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from efa_guard.config import parse

HEAD = 'interface = "eth0"\n[[chain]]\nname = "EFA_INPUT"\ntable = "filter"\nhook = "INPUT"\n'
PATH = Path("bench.toml")


def with_excepts(n: int) -> str:
    """One rule over 1-65535 excepting n ports (every other port, repeating past 32,000)."""
    cuts = [2 + 2 * (i % 32_000) for i in range(n)]  # holes that cannot merge
    random.Random(n).shuffle(cuts)  # noqa: S311 - a reproducible order, not a secret
    listed = ", ".join(map(str, cuts))
    return HEAD + f'[[chain.rule]]\nprotocol = "tcp"\nports = ["1-65535"]\nexcept = [{listed}]\n'


def with_rules(n: int) -> str:
    """One chain of n rules, each a few ports and one except."""
    rules = []
    for i in range(n):
        base = 1 + (i * 7) % 65000
        proto = "tcp" if i % 2 else "udp"
        ports = f'[{base}, "{base + 2}-{base + 5}"]'
        rules.append(
            f'[[chain.rule]]\nprotocol = "{proto}"\nports = {ports}\nexcept = [{base + 3}]\n'
        )
    return HEAD + "".join(rules)


SERIES: dict[str, tuple[Callable[[int], str], tuple[int, ...]]] = {
    "except ports": (with_excepts, (1_000, 4_000, 16_000, 64_000)),
    "rules": (with_rules, (1_000, 2_500, 10_000)),
}


def best_time(text: str, repeat: int) -> float:
    """The fastest of `repeat` validations of text, in CPU seconds (steadier on a busy host)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        parse(text, path=PATH)
        times.append(time.process_time() - start)
    return min(times)


def run_series(name: str, make: Callable[[int], str], sizes: Sequence[int], repeat: int) -> float:
    """Print one series; return its per-item cost growth (largest over smallest)."""
    out = sys.stdout
    out.write(f"\n{name}\n{'items':>8} {'bytes':>9} {'seconds':>9} {'us/item':>9} {'growth':>7}\n")
    costs: list[float] = []
    for n in sizes:
        text = make(n)
        seconds = best_time(text, repeat)
        costs.append(seconds / n)
        growth = f"{costs[-1] / costs[-2]:7.2f}" if len(costs) > 1 else f"{'':>7}"
        out.write(f"{n:>8} {len(text):>9} {seconds:>9.4f} {costs[-1] * 1e6:>9.2f} {growth}\n")
    return costs[-1] / costs[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every series; 0 when all are linear within the tolerance."""
    ap = argparse.ArgumentParser(prog="python -m tools.bench_config", description=__doc__)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case, best kept (3)")
    ap.add_argument("--tolerance", type=float, default=2.0, help="allowed cost growth (2.0)")
    ap.add_argument("--series", choices=sorted(SERIES), action="append", help="only these")
    args = ap.parse_args(argv)
    missed = 0
    for name in args.series or SERIES:
        make, sizes = SERIES[name]
        growth = run_series(name, make, sizes, args.repeat)
        mark = "PASS" if growth <= args.tolerance else "MISS"
        missed += mark == "MISS"
        sys.stdout.write(
            f"linear: {mark} (per-item cost, largest/smallest: {growth:.2f}; "
            f"allowed {args.tolerance:g})\n"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
