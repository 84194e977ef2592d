"""What `efa-guard check` pays before it does anything: interpreter start plus imports.

Times whole processes on the host (no namespace, no root needed), interleaved: ``python -c
pass`` and ``python -m efa_guard check --help`` (argparse exits before any iptables runs, so
what remains is start-up and the CLI's imports), each after one untimed warm-up; then
``python -X importtime -c "import efa_guard.cli"`` for the cumulative import time of the
CLI module alone.  Issue 12's goal: the whole ``check`` process at most
:data:`IMPORT_TARGET` times ``python -c pass``.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys

from tools.benchkit import COMMAND_TIMEOUT, BenchError, Verdict, byte_compile, run_ok
from tools.harness import REPO

IMPORT_RUNS = 20
"""Timed runs of each whole process."""
IMPORTTIME_RUNS = 5
"""Runs of ``-X importtime``; the median is reported."""
IMPORT_TARGET = 5.0
"""Target (issue 12): a whole `check` process at most this many times `python -c pass`."""
CLI_MODULE = "efa_guard.cli"

PASS_ARGV = (sys.executable, "-c", "pass")
CHECK_ARGV = (sys.executable, "-m", "efa_guard", "check", "--help")
IMPORTTIME_ARGV = (sys.executable, "-X", "importtime", "-c", f"import {CLI_MODULE}")


@dataclasses.dataclass(frozen=True)
class ImportCost:
    """Medians in milliseconds, and the runs they come from."""

    python_ms: float
    check_ms: float
    cli_import_ms: float
    runs: int

    @property
    def ratio(self) -> float:
        """The whole check process against the bare interpreter."""
        return self.check_ms / self.python_ms

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "runs": self.runs,
            "python_pass_median_ms": round(self.python_ms, 3),
            "check_help_median_ms": round(self.check_ms, 3),
            "cli_import_cumulative_ms": round(self.cli_import_ms, 3),
            "ratio": round(self.ratio, 3),
            "target_ratio": IMPORT_TARGET,
        }

    def verdict(self) -> Verdict:
        """The issue-12 target."""
        return Verdict(
            f"check process <= {IMPORT_TARGET:g}x `python -c pass` (check --help, median)",
            f"{self.ratio:.2f}x ({self.check_ms:.1f} ms / {self.python_ms:.1f} ms)",
            self.ratio <= IMPORT_TARGET,
        )

    def lines(self) -> list[str]:
        """The human-readable section."""
        mark = "MET" if self.verdict().met else "MISSED"
        return [
            f"check's import cost ({self.runs} runs each, whole processes on the host, median):",
            f"  {'python -c pass':<36} {self.python_ms:8.1f} ms",
            f"  {'python -m efa_guard check --help':<36} {self.check_ms:8.1f} ms",
            f"  ratio {self.ratio:.2f}x, target <= {IMPORT_TARGET:g}x: {mark}",
            (
                f"  import {CLI_MODULE} alone (-X importtime, efa_guard's cumulative, median"
                f" of {IMPORTTIME_RUNS}): {self.cli_import_ms:.1f} ms"
            ),
        ]


def cli_import_ms(stderr: str) -> float:
    """What ``import efa_guard.cli`` costs in ``-X importtime`` output, in ms.

    The cumulative times of the top-level ``efa_guard*`` lines: the package, then the CLI
    module with everything it pulls in that was not imported yet.
    """
    total_us = 0
    found = False
    for line in stderr.splitlines():
        # each line: `import time: <self us> | <cumulative us> | <indented module name>`
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3:
            continue
        name = parts[2]
        top_level = len(name) - len(name.lstrip()) == 1
        if top_level and name.strip().split(".")[0] == "efa_guard":
            total_us += int(parts[1])
            found = found or name.strip() == CLI_MODULE
    if not found:
        msg = f"no {CLI_MODULE} line in -X importtime output: {stderr[-500:]!r}"
        raise BenchError(msg)
    return total_us / 1000.0


def measure(runs: int = IMPORT_RUNS) -> ImportCost:
    """Time both processes ``runs`` times each, alternating, and the CLI's import."""
    byte_compile()
    run_ok(PASS_ARGV)
    run_ok(CHECK_ARGV)
    bare: list[float] = []
    check: list[float] = []
    for _ in range(runs):
        bare.append(run_ok(PASS_ARGV)[0])
        check.append(run_ok(CHECK_ARGV)[0])
    imports = [cli_import_ms(_importtime()) for _ in range(IMPORTTIME_RUNS)]
    return ImportCost(
        python_ms=statistics.median(bare),
        check_ms=statistics.median(check),
        cli_import_ms=statistics.median(imports),
        runs=runs,
    )


def _importtime() -> str:
    """The stderr of one ``-X importtime`` run."""
    proc = subprocess.run(
        IMPORTTIME_ARGV,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=COMMAND_TIMEOUT,
    )
    if proc.returncode != 0:
        msg = f"{' '.join(IMPORTTIME_ARGV)} exited {proc.returncode}: {proc.stderr[-2000:]}"
        raise BenchError(msg)
    return proc.stderr
