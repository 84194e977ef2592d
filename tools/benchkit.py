"""What the benchmarks share: timed commands, targets and their verdicts, options, the machine."""

from __future__ import annotations

import argparse
import compileall
import contextlib
import dataclasses
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn, TypeVar

from tools.harness import REPO, HarnessError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence
    from types import FrameType

Kind = Literal["nft", "legacy"]
KINDS: tuple[Kind, ...] = ("nft", "legacy")

T = TypeVar("T")

OK = 0
FAILED = 1
INTERRUPTED = 130
COMMAND_TIMEOUT = 120.0
"""Seconds any single command may take (loading 50k rules included)."""


class BenchError(HarnessError):
    """Something a benchmark needs did not work: an actual failure."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One target: what it asks, what was measured, whether it is met."""

    name: str
    measured: str
    met: bool | None  # None: not evaluated with these options

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"target": self.name, "measured": self.measured, "met": self.met}

    def line(self) -> str:
        """``target MET|MISSED|N/A name: measured``."""
        state = {True: "MET", False: "MISSED", None: "N/A"}[self.met]
        return f"target {state:<6} {self.name}: {self.measured}"


def run_ok(
    full: Sequence[str],
    *,
    capture: bool = True,
    stdin: str | None = None,
    ok: Collection[int] = (0,),
) -> tuple[float, str]:
    """Run ``full`` from the repo root; (wall ms, stdout).  An exit status not in ``ok`` fails."""
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
        msg = f"timed out after {COMMAND_TIMEOUT} s: {list(full)}"
        raise BenchError(msg) from None
    elapsed = (time.perf_counter() - start) * 1000.0
    if proc.returncode not in ok:
        msg = (
            f"{' '.join(full)} exited {proc.returncode}\n"
            f"stdout: {(proc.stdout or '')[-2000:]}\nstderr: {(proc.stderr or '')[-2000:]}"
        )
        raise BenchError(msg)
    return elapsed, proc.stdout or ""


def ns_ok(
    ns: str,
    argv: Sequence[str],
    *,
    capture: bool = True,
    stdin: str | None = None,
    ok: Collection[int] = (0,),
) -> tuple[float, str]:
    """:func:`run_ok` of ``ip netns exec NS *argv``."""
    return run_ok(["ip", "netns", "exec", ns, *argv], capture=capture, stdin=stdin, ok=ok)


def interleave(
    jobs: Sequence[tuple[str, Callable[[], float]]], runs: int
) -> dict[str, list[float]]:
    """Time every job ``runs`` times, in rounds whose order rotates; one untimed warm-up each.

    Slow drifts of a shared machine then hit every job alike: ratios of jobs from one call
    compare like with like.
    """
    for _, one in jobs:
        one()
    out: dict[str, list[float]] = {name: [] for name, _ in jobs}
    for i in range(runs):
        k = i % len(jobs) if jobs else 0
        for name, one in (*jobs[k:], *jobs[:k]):
            out[name].append(one())
    return out


def progress(tool: str, message: str) -> None:
    """Progress on stderr, so that stdout stays the report."""
    sys.stderr.write(f"{tool}: {message}\n")
    sys.stderr.flush()


def environment(*, load: bool = False) -> dict[str, str]:
    """What the numbers were measured on (with ``load``: the 1-minute load average too)."""
    version = subprocess.run(
        ["iptables-nft", "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()
    out = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "iptables": version,
        "cpus": str(os.cpu_count()),
    }
    with contextlib.suppress(OSError):
        if load:
            out["load"] = Path("/proc/loadavg").read_text().split()[0]
    return out


def positive(text: str) -> int:
    """A positive integer (an argparse type)."""
    with contextlib.suppress(ValueError):
        if (value := int(text)) >= 1:
            return value
    msg = f"need a positive integer, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def seconds(text: str) -> float:
    """A positive, finite number of seconds (an argparse type)."""
    with contextlib.suppress(ValueError):
        if (value := float(text)) > 0 and not math.isinf(value):
            return value
    msg = f"need a positive number of seconds, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def kinds(text: str) -> list[Kind]:
    """Comma-separated distinct iptables backends (an argparse type)."""
    known: dict[str, Kind] = {k: k for k in KINDS}
    out: list[Kind] = []
    for v in (v.strip() for v in text.split(",") if v.strip()):
        if v not in known:
            msg = f"backend must be nft or legacy, got {v!r}"
            raise argparse.ArgumentTypeError(msg)
        out.append(known[v])
    if not out or len(set(out)) != len(out):
        msg = f"need distinct backends: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return out


def header(head: str) -> list[str]:
    """A table's heading line, underlined."""
    return [head, "-" * len(head)]


def on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM handler: unwind every ``with`` (daemons stopped, namespaces deleted)."""
    del frame
    raise SystemExit(128 + signum)


def byte_compile() -> None:
    """Byte-compile efa_guard as an installed package is (the .deb's postinst runs py3compile).

    Where PYTHONDONTWRITEBYTECODE is set (as on these machines) no run writes its bytecode:
    every process timed would compile the modules from source first (~60 ms for `check`).
    """
    compileall.compile_dir(REPO / "efa_guard", quiet=1)


def guarded(tool: str, work: Callable[[Path], T]) -> tuple[T, float] | int:
    """Run ``work`` with a scratch directory, SIGTERM unwinding every ``with``.

    Its result and the seconds it took; or, after saying why on stderr, the exit status:
    :data:`FAILED` on a failure, :data:`INTERRUPTED` on Ctrl-C (daemons and namespaces are
    gone either way, by the ``with`` blocks of ``work``).
    """
    signal.signal(signal.SIGTERM, on_sigterm)
    byte_compile()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"efa-{tool}-") as tmp:
            result = work(Path(tmp))
    except (HarnessError, OSError) as e:
        print(f"{tool}: FAILED: {e}", file=sys.stderr)  # noqa: T201 - the benchmarks' report
        return FAILED
    except KeyboardInterrupt:
        print(f"{tool}: interrupted (daemons stopped, namespaces deleted)", file=sys.stderr)  # noqa: T201
        return INTERRUPTED
    return result, time.perf_counter() - started
