"""Time `efa-guard check --json` with a foreign chain jumped from INPUT (issue #12).

For each backend and size, a fresh sandbox: the default policy applied, a listener on tcp/80
(outside the allowlist, so the check's survey must walk INPUT past our chain), and a chain
BIG of `size` kube-proxy-like REJECTs for ClusterIPs jumped from INPUT. Prints the median
wall time of `check --json`, `check --no-exposure`, `exposure --json`, `iptables -S BIG` and
`iptables-save -t filter`. Needs root; everything runs in namespaces it deletes.

Usage: ``python tests/bench_exposure.py [--sizes 0,5000,50000] [--backends nft,legacy]
[--runs 3]`` from the repository root (subprocesses import this checkout).
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools.harness import REPO, isolate_state
from tools.sandbox import Sandbox, sandbox


def big_chain(count: int) -> str:
    """iptables-restore input: INPUT jumps to BIG, `count` REJECTs of tcp/80 to ClusterIPs."""
    lines = ["*filter", ":BIG - [0:0]", "-A INPUT -j BIG"]
    for i in range(count):
        a = i + 1
        ip = f"10.{96 + (a >> 16) % 16}.{(a >> 8) & 255}.{a & 255}"
        lines.append(
            f'-A BIG -d {ip}/32 -p tcp -m comment --comment "default/empty-{i}:http has no '
            'endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable'
        )
    return "\n".join([*lines, "COMMIT", ""])


def median_seconds(box: Sandbox, argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of `argv` in the guard namespace.

    One warm-up run first. CPU time is the steadier figure on a loaded machine.
    """
    wall, cpu = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        box.run(argv, check=False, timeout=600)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i:
            wall.append(elapsed)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(wall), statistics.median(cpu)


def bench(backend: str, size: int, runs: int, config: Path) -> str:
    """One line of results for a backend and size."""
    efa = [sys.executable, "-m", "efa_guard"]
    cfg = ["--config", str(config)]
    commands = {
        "check": [*efa, "check", "--json", *cfg],
        "check --no-exposure": [*efa, "check", "--no-exposure", *cfg],
        "exposure": [*efa, "exposure", "--json", *cfg],
        "-S BIG": [f"iptables-{backend}", "-S", "BIG"],
        "save -t filter": [f"iptables-{backend}-save", "-t", "filter"],
    }
    with sandbox(prefix="hbe") as box:
        box.run([*efa, "apply", *cfg])
        box.run([f"iptables-{backend}-restore", "--noflush"], input=big_chain(size), timeout=600)
        box.start_listeners(tcp=(80,), udp=())
        times = {name: median_seconds(box, argv, runs) for name, argv in commands.items()}
    return f"{backend:6} {size:6} " + "  ".join(
        f"{k}={w:.3f}s (cpu {c:.3f}s)" for k, (w, c) in times.items()
    )


def main() -> int:
    """Run the grid and print one line per backend and size."""
    isolate_state()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="0,5000,50000")
    p.add_argument("--backends", default="nft,legacy")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            config = Path(tmp) / f"{backend}.toml"
            text = (REPO / "config" / "efa-guard.toml").read_text()
            config.write_text(re.sub(r'(?m)^backend = "auto"$', f'backend = "{backend}"', text))
            for size in map(int, args.sizes.split(",")):
                print(bench(backend, size, args.runs, config), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
