"""Benchmark of the `efa-guard run` daemon: correction latency, idle cost, resync bursts.

Every measurement runs in its own fresh sandbox (see ``tools/sandbox.py``: network namespaces
created here and always deleted), with the daemon started as ``python -m efa_guard run
--log-format json`` inside the guard namespace and its JSON lines read from its stderr in a
thread, each stamped with the time it arrived:

1. **nft latency**: daemon with a 30 s timer (so only nf_tables events can trigger a
   check); ``--tampers`` tampers about 100 ms apart, rotating ``-F EFA_INPUT``,
   ``-D INPUT -j EFA_INPUT``, ``-I INPUT 1 -j ACCEPT`` and ``-D EFA_INPUT 1``.  For each:
   the daemon's own ``latency_ms`` (first event seen -> policy verified restored) and the
   external latency (the tamper command's exit -> its ``drift_corrected`` line arriving
   on the daemon's stderr pipe).
2. **nft latency under a kube-proxy-like resync loop**: the same with half as many
   tampers while a background loop re-applies about ``--rules`` kube-proxy-like rules
   (the KUBE-* chains of nat and filter, never the built-in chains) with
   ``iptables-nft-restore --noflush``.
3. **legacy latency**: daemon on iptables-legacy with a 1 s timer; tampers spaced at
   random so that they do not lock to the timer's phase; which trigger corrected each.
   The daemon reacts to every release of /run/xtables.lock, which is host-wide: so that
   other legacy iptables on the host (parallel test runs) do not wake it, the legacy
   daemon gets a private /run in its own mount namespace (a tmpfs, gone with it) and the
   tampers enter that namespace with nsenter; ``--shared-lock`` keeps the host's /run.
4. **idle cost**: daemon on nft (and then legacy, shorter) with the default 10 s timer and
   the policy in place: CPU (utime+stime of /proc/PID/stat; the reaped iptables children
   shown apart) over ``--idle-seconds``, and VmRSS at the end.
5. **resync burst**: daemon on nft (30 s timer), policy in place over the foreign rules;
   ONE iptables-nft-restore rewriting every KUBE-* chain of nat and filter, 2 s of quiet,
   SIGTERM: checks the burst cost (the ``stopping`` line's counter minus the startup
   check) and the daemon's CPU across it.  Variant: the resync also moves kube-proxy's
   jumps back to the top of INPUT, pushing efa-guard's jump down (needs a correction).

The daemon's "contested" detection (5 corrections within 10 s by default: then it
re-asserts with a capped backoff) would turn a series of tampers 100 ms apart into a
measurement of the backoff, so the latency configs set ``contest_threshold = 1000`` and
``contest_window = 0.1``; every other setting is the shipped default.

Exit status: 0 when everything ran (targets met or not), 1 on a failure (the daemon did not
start or exited badly, a command failed, the policy was not in place at the end of a
measurement), 2 on bad usage; with ``--strict`` a missed target exits 1 too.

Usage: ``python -m tools.bench_daemon [--tampers N] [--idle-seconds S] [--rules N]
[--quick] [--shared-lock] [--json] [--strict]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tools.benchkit import (
    COMMAND_TIMEOUT,
    FAILED,
    OK,
    BenchError,
    Verdict,
    environment,
    guarded,
    header,
    ns_ok,
    positive,
    progress,
    run_ok,
    seconds,
)
from tools.harness import efa_argv, isolate_state, write_config
from tools.kuberules import KubeRules
from tools.runner import PRIVATE_RUN, Cpu, Daemon, Line
from tools.sandbox import Sandbox, missing_tools, sandbox

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

Kind = Literal["nft", "legacy"]

MEDIAN_TARGET_MS = 30.0
"""Target on nft: median latency, tamper -> policy restored."""
P99_TARGET_MS = 100.0
"""Target on nft: 99th percentile of the same."""
LEGACY_SLACK_MS = 50.0
"""Target on legacy: latency at most the timer interval plus this."""
IDLE_CPU_TARGET_PCT = 0.2
"""Target: idle CPU, percent of one core."""
RSS_TARGET_MB = 60.0
"""Target: resident memory when idle."""
BURST_CHECKS_TARGET = 3
"""Target: checks caused by one kube-proxy resync."""
BURST_CPU_TARGET_MS = 300.0
"""Target: daemon CPU spent on one kube-proxy resync."""

NFT_INTERVAL = 30.0
"""Timer of the nft latency and burst runs: long enough never to fire during them."""
LEGACY_INTERVAL = 1.0
"""Timer of the legacy latency run."""
IDLE_INTERVAL = 10.0
"""Timer of the idle runs: the shipped default."""
SPACING = 0.1
"""Seconds from one nft tamper's start to the next one's."""
MIN_GAP = 0.02
"""At least this long between a correction's line and the next tamper."""
LEGACY_GAP = (0.05, 0.45)
"""Range of the random pause after a legacy correction, in seconds."""
NFT_TIMEOUT = 5.0
"""Seconds to wait for an nft correction before counting the tamper as missed."""
START_TIMEOUT = 30.0
"""Seconds for the daemon to log its startup assertion."""
STOP_TIMEOUT = 10.0
"""Seconds for the daemon to exit after SIGTERM."""
SETTLE = 1.0
"""Seconds after the daemon's startup before anything is measured."""
BURST_QUIET = 2.0
"""Seconds after the burst's restore before the daemon is stopped."""

TAMPERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("flush", ("-F", "EFA_INPUT")),
    ("jump-deleted", ("-D", "INPUT", "-j", "EFA_INPUT")),
    ("accept-first", ("-I", "INPUT", "1", "-j", "ACCEPT")),
    ("rule-deleted", ("-D", "EFA_INPUT", "1")),
)
"""The rotating tampers: a label and the iptables arguments."""

PRIVATE_RUN_TOOLS = ("unshare", "nsenter", "mount")

# -- statistics ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Latency:
    """Summary of latencies in milliseconds; a missed correction counts as infinite."""

    median: float
    p90: float
    p99: float
    max: float
    n: int
    missed: int

    @classmethod
    def of(cls, samples: Sequence[float | None]) -> Latency | None:
        """Median and nearest-rank percentiles; ``None`` samples are misses."""
        if not samples:
            return None
        ordered = sorted(math.inf if s is None else s for s in samples)

        def rank(p: float) -> float:
            return ordered[max(1, math.ceil(p * len(ordered))) - 1]

        return cls(
            median=statistics.median(ordered),
            p90=rank(0.9),
            p99=rank(0.99),
            max=ordered[-1],
            n=len(ordered),
            missed=sum(1 for s in samples if s is None),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON form (an infinite value, from a miss, is null)."""

        def ms(v: float) -> float | None:
            return None if math.isinf(v) else round(v, 3)

        return {
            "median_ms": ms(self.median),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "n": self.n,
            "missed": self.missed,
        }


def _ms(v: float) -> str:
    return "miss" if math.isinf(v) else f"{v:.1f}"


# -- the daemon ----------------------------------------------------------------------------


@contextlib.contextmanager
def running(ns: str, config: Path, *, private_run: bool = False) -> Iterator[Daemon]:
    """Start the daemon, wait for its startup assertion, and always stop it."""
    d = Daemon(ns, config, prefix=PRIVATE_RUN if private_run else ())
    try:
        if d.wait_for("policy_asserted", timeout=START_TIMEOUT) is None:
            raise BenchError(f"daemon did not assert the policy in {START_TIMEOUT} s:\n{d.tail()}")
        d.check_alive()
        yield d
    finally:
        d.kill()


def stop(d: Daemon) -> Line:
    """SIGTERM it; it must exit 0 and log its `stopping` line, which is returned."""
    returncode = d.stop(timeout=STOP_TIMEOUT)
    if returncode != 0:
        msg = f"daemon exited with {returncode}:\n{d.tail()}"
        raise BenchError(msg)
    stopping = d.wait_for("stopping", timeout=0)
    if stopping is None:
        msg = f"daemon logged no `stopping` line:\n{d.tail()}"
        raise BenchError(msg)
    return stopping


def counter(line: Line, name: str) -> int:
    """An integer field of a line (the `stopping` counters)."""
    value = line.data.get(name)
    if not isinstance(value, int):
        raise BenchError(f"`{line.event}` line has no integer {name!r}: {line.raw}")
    return value


# -- helpers -------------------------------------------------------------------------------


def policy_in_place(ns: str, config: Path) -> None:
    """`efa-guard check` must say OK (exit 0) at the end of every measurement."""
    ns_ok(ns, efa_argv("check", config=config))


def daemon_config(
    directory: Path, name: str, *, backend: Kind, interval: float, no_contest: bool
) -> Path:
    """A copy of the default config with backend, timer and (optionally) contest settings."""
    settings = {"interval": interval}
    if no_contest:
        settings |= {"contest_threshold": 1000, "contest_window": 0.1}
    return write_config(directory / f"{name}.toml", backend=backend, settings=settings)


def load_rules(sb: Sandbox, text: str) -> None:
    """Load the foreign rules into the guard namespace's nft backend."""
    ns_ok(sb.guard, ["iptables-nft-restore", "--noflush"], stdin=text)


# -- 1-3: latency --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    """One tamper and its correction."""

    tamper: str
    command_ms: float
    daemon_ms: float | None
    external_ms: float | None
    trigger: str
    attributed: bool
    pid: int = 0  # the tamper's
    started: float = 0.0  # time.monotonic() when the tamper was started

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Resync:
    """A kube-proxy-like resync loop in the guard namespace, run by a thread of ours."""

    ns: str
    text: str
    tool: tuple[str, ...] = ("iptables-nft-restore",)  # e.g. through xtables-nft-multi
    durations: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    stopping: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Start looping."""
        self.thread = threading.Thread(target=self._loop, name="resync", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        argv = ["ip", "netns", "exec", self.ns, *self.tool, "--noflush"]
        while not self.stopping.is_set():
            start = time.perf_counter()
            try:
                proc = subprocess.run(
                    argv,
                    check=False,
                    input=self.text,
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                self.errors.append(f"timed out after {COMMAND_TIMEOUT} s")
                continue
            if proc.returncode != 0:
                self.errors.append(f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
                if len(self.errors) > 20:
                    return
                continue
            self.durations.append((time.perf_counter() - start) * 1000.0)

    def stop(self) -> None:
        """Stop after the restore in progress (it is never killed half-way)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=COMMAND_TIMEOUT)


@dataclasses.dataclass(frozen=True)
class LatencyRun:
    """One latency scenario."""

    name: str
    backend: Kind
    interval: float
    samples: tuple[Sample, ...]
    sources: tuple[str, ...]
    events: dict[str, int]
    cpu: Cpu
    seconds: float
    private_run: bool
    resync_runs: int = 0
    resync_ms: float | None = None
    resync_errors: tuple[str, ...] = ()
    resync_rules: int = 0

    @property
    def daemon(self) -> Latency | None:
        """The daemon's own latency_ms."""
        return Latency.of([s.daemon_ms for s in self.samples])

    @property
    def external(self) -> Latency | None:
        """Tamper exit -> line arrival."""
        return Latency.of([s.external_ms for s in self.samples])

    @property
    def command(self) -> Latency | None:
        """How long the tamper commands took (start -> exit)."""
        return Latency.of([s.command_ms for s in self.samples])

    @property
    def cpu_pct(self) -> float:
        """The daemon's CPU (own) during the series, percent of one core."""
        return self.cpu.own / (self.seconds * 1000.0) * 100.0 if self.seconds > 0 else 0.0

    @property
    def triggers(self) -> dict[str, int]:
        """How many corrections each trigger labelled."""
        out: dict[str, int] = {}
        for s in self.samples:
            if s.external_ms is not None:
                out[s.trigger] = out.get(s.trigger, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "name": self.name,
            "backend": self.backend,
            "interval_s": self.interval,
            "daemon_latency": self.daemon.as_dict() if self.daemon else None,
            "external_latency": self.external.as_dict() if self.external else None,
            "tamper_command": self.command.as_dict() if self.command else None,
            "daemon_cpu_own_ms": round(self.cpu.own, 1),
            "daemon_cpu_children_ms": round(self.cpu.children, 1),
            "series_s": round(self.seconds, 2),
            "private_run": self.private_run,
            "triggers": self.triggers,
            "attributed": sum(s.attributed for s in self.samples),
            "sources": list(self.sources),
            "other_events": self.events,
            "resync": {
                "rules": self.resync_rules,
                "runs": self.resync_runs,
                "median_ms": round(self.resync_ms, 1) if self.resync_ms else None,
                "errors": list(self.resync_errors),
            }
            if self.resync_rules
            else None,
            "samples": [s.as_dict() for s in self.samples],
        }


def tamper_series(
    d: Daemon,
    kind: Kind,
    *,
    count: int,
    timeout: float,
    rng: random.Random | None,
) -> list[Sample]:
    """Tamper ``count`` times, each after the previous one was corrected.

    nft: the next tamper starts :data:`SPACING` after the previous one started (and at
    least :data:`MIN_GAP` after its correction); with ``rng`` (legacy) it starts a random
    :data:`LEGACY_GAP` after the correction, so that it does not lock to the timer.
    """
    samples: list[Sample] = []
    if rng is not None:
        time.sleep(rng.uniform(*LEGACY_GAP))  # off the timer's phase from the first tamper on
    for i in range(count):
        label, args = TAMPERS[i % len(TAMPERS)]
        argv = [*d.enter(), f"iptables-{kind}", "--wait=5", *args]
        mark = d.mark()
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _, err = proc.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(f"tamper timed out: {argv}") from None
        exited = time.monotonic()
        if proc.returncode != 0:
            raise BenchError(
                f"tamper {i + 1} ({label}) exited {proc.returncode}: "
                f"{err.decode(errors='replace').strip()}\n{d.tail()}"
            )
        line = d.wait_for("drift_corrected", after=mark, timeout=timeout)
        if line is None:
            d.check_alive()
            samples.append(
                Sample(
                    label,
                    (exited - start) * 1000.0,
                    None,
                    None,
                    "",
                    attributed=False,
                    pid=proc.pid,
                    started=start,
                )
            )
            # Put the policy back ourselves, so that the next tamper starts from it.
            policy_in_place_fix(d)
            continue
        latency = line.data.get("latency_ms")
        samples.append(
            Sample(
                label,
                (exited - start) * 1000.0,
                float(latency) if isinstance(latency, int | float) else None,
                (line.at - exited) * 1000.0,
                str(line.data.get("trigger", "")),
                attributed=line.data.get("culprit_pid") == proc.pid,
                pid=proc.pid,
                started=start,
            )
        )
        if rng is not None:
            pause = line.at + rng.uniform(*LEGACY_GAP) - time.monotonic()
        else:
            pause = max(start + SPACING, line.at + MIN_GAP) - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return samples


def policy_in_place_fix(d: Daemon) -> None:
    """After a missed correction: `efa-guard apply` where the daemon runs."""
    run_ok([*d.enter(), *efa_argv("apply", config=d.config)])


def other_events(d: Daemon, after: int) -> dict[str, int]:
    """Counts of the lines that are neither corrections nor routine."""
    routine = {"drift_corrected", "started", "policy_asserted", "stopping"}
    out: dict[str, int] = {}
    for ln in d.since(after):
        if ln.event not in routine:
            key = ln.event or "non-json"
            out[key] = out.get(key, 0) + 1
    return out


def sources_of(d: Daemon) -> tuple[str, ...]:
    """The event sources the daemon said it started."""
    line = d.wait_for("started", timeout=0)
    value = line.data.get("sources") if line else None
    return tuple(str(s) for s in value) if isinstance(value, list) else ()


def bench_latency(  # noqa: PLR0913 - one scenario's independent settings
    name: str,
    *,
    kind: Kind,
    config: Path,
    interval: float,
    tampers: int,
    kube: KubeRules | None = None,
    private_run: bool = False,
) -> LatencyRun:
    """One latency scenario in a fresh sandbox."""
    progress(
        "bench-daemon",
        f"{name}: {tampers} tampers" + (f" under a {kube.rules}-rule resync loop" if kube else ""),
    )
    rng = random.Random(1) if kind == "legacy" else None  # noqa: S311 - pacing, not crypto
    timeout = NFT_TIMEOUT if kind == "nft" else interval + NFT_TIMEOUT
    resync: Resync | None = None
    with sandbox(prefix="efad") as sb:
        if kube is not None:
            load_rules(sb, kube.initial)
        with running(sb.guard, config, private_run=private_run) as d:
            time.sleep(SETTLE)
            mark = d.mark()
            try:
                if kube is not None:
                    resync = Resync(sb.guard, kube.resync)
                    resync.start()
                    time.sleep(1.0)  # let the loop get going
                before, start = d.cpu(), time.monotonic()
                samples = tamper_series(d, kind, count=tampers, timeout=timeout, rng=rng)
                spent, seconds = d.cpu() - before, time.monotonic() - start
            finally:
                if resync is not None:
                    resync.stop()
            d.check_alive()
            events = other_events(d, mark)
            sources = sources_of(d)
            stop(d)
        policy_in_place(sb.guard, config)
    run = LatencyRun(
        name, kind, interval, tuple(samples), sources, events, spent, seconds, private_run
    )
    if kube is None or resync is None:
        return run
    if not resync.durations:
        raise BenchError(f"the resync loop never succeeded: {resync.errors[:3]}")
    return dataclasses.replace(
        run,
        resync_runs=len(resync.durations),
        resync_ms=statistics.median(resync.durations),
        resync_errors=tuple(resync.errors),
        resync_rules=kube.rules,
    )


# -- 4: idle -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IdleRun:
    """Idle cost of one backend."""

    backend: Kind
    seconds: float
    cpu: Cpu
    checks: int
    rss_mb: float
    hwm_mb: float
    events: dict[str, int]
    private_run: bool

    @property
    def own_pct(self) -> float:
        """Own CPU, percent of one core."""
        return self.cpu.own / (self.seconds * 1000.0) * 100.0

    @property
    def total_pct(self) -> float:
        """Own plus reaped iptables children, percent of one core."""
        return self.cpu.total / (self.seconds * 1000.0) * 100.0

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "backend": self.backend,
            "seconds": round(self.seconds, 2),
            "cpu_own_ms": round(self.cpu.own, 1),
            "cpu_children_ms": round(self.cpu.children, 1),
            "cpu_own_pct": round(self.own_pct, 4),
            "cpu_total_pct": round(self.total_pct, 4),
            "checks": self.checks,
            "rss_mb": round(self.rss_mb, 1),
            "hwm_mb": round(self.hwm_mb, 1),
            "private_run": self.private_run,
            "other_events": self.events,
        }


def bench_idle(kind: Kind, config: Path, seconds: float, *, private_run: bool) -> IdleRun:
    """The daemon with nothing to do, in a fresh sandbox."""
    progress("bench-daemon", f"idle on {kind}: {seconds:g} s")
    with (
        sandbox(prefix="efad") as sb,
        running(sb.guard, config, private_run=private_run) as d,
    ):
        time.sleep(SETTLE)
        mark = d.mark()
        before, start = d.cpu(), time.monotonic()
        time.sleep(seconds)
        after, end = d.cpu(), time.monotonic()
        rss, hwm = d.memory_mb()
        d.check_alive()
        events = other_events(d, mark)
        stopping = stop(d)
        policy_in_place(sb.guard, config)
    checks = counter(stopping, "checks") - 1
    return IdleRun(kind, end - start, after - before, checks, rss, hwm, events, private_run)


# -- 5: resync burst -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BurstRun:
    """Kube-proxy resyncs (one unless ``repeats``) against the running daemon: totals."""

    variant: str
    rules: int
    restore_ms: float  # the median of the resync restores
    checks: int
    corrections: int
    cpu: Cpu
    triggers: tuple[str, ...]
    events: dict[str, int]
    repeats: int = 1
    wall_s: float = 0.0  # the resyncs' window, quiet periods included
    idle_ms_per_s: float | None = None  # own CPU per second without resyncs, if measured

    @property
    def net_ms(self) -> float:
        """CPU of the window minus what the daemon spends anyway in as long (when measured)."""
        idle = 0.0 if self.idle_ms_per_s is None else self.idle_ms_per_s * self.wall_s
        return self.cpu.total - idle

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "variant": self.variant,
            "rules": self.rules,
            "repeats": self.repeats,
            "wall_s": round(self.wall_s, 2),
            "idle_ms_per_s": None if self.idle_ms_per_s is None else round(self.idle_ms_per_s, 3),
            "net_ms": round(self.net_ms, 1),
            "restore_ms": round(self.restore_ms, 1),
            "checks": self.checks,
            "corrections": self.corrections,
            "cpu_own_ms": round(self.cpu.own, 1),
            "cpu_children_ms": round(self.cpu.children, 1),
            "triggers": list(self.triggers),
            "other_events": self.events,
        }


def bench_burst(  # noqa: PLR0913 - each is one independent knob of the measurement
    variant: str,
    config: Path,
    kube: KubeRules,
    text: str,
    *,
    repeat: int = 1,
    idle_s: float = 0.0,
) -> BurstRun:
    """Policy in place over the foreign rules; ``repeat`` x (resync, quiet); stop; count.

    Repeats make the CPU per resync finer than /proc's 10 ms ticks (the totals are returned).
    With ``idle_s``, the daemon's CPU over that long without resyncs is measured first: the
    rate the resyncs' window would cost anyway (``BurstRun.net_ms``).
    """
    times = "one restore" if repeat == 1 else f"{repeat} restores"
    progress("bench-daemon", f"resync burst ({variant}): {times} of {kube.rules} rules")
    with sandbox(prefix="efad") as sb:
        load_rules(sb, kube.initial)
        with running(sb.guard, config) as d:
            time.sleep(SETTLE)
            idle_rate = None
            if idle_s > 0:
                quiet = d.cpu()
                time.sleep(idle_s)
                idle_rate = (d.cpu() - quiet).total / idle_s
            mark = d.mark()
            before, began = d.cpu(), time.monotonic()
            took: list[float] = []
            for _ in range(repeat):
                took.append(ns_ok(sb.guard, ["iptables-nft-restore", "--noflush"], stdin=text)[0])
                time.sleep(BURST_QUIET)
            spent, wall = d.cpu() - before, time.monotonic() - began
            d.check_alive()
            corrected = d.since(mark, "drift_corrected")
            events = other_events(d, mark)
            stopping = stop(d)
        policy_in_place(sb.guard, config)
    checks = counter(stopping, "checks") - 1
    triggers = tuple(str(ln.data.get("trigger", "")) for ln in corrected)
    return BurstRun(
        variant,
        kube.rules,
        statistics.median(took),
        checks,
        len(corrected),
        spent,
        triggers,
        events,
        repeats=repeat,
        wall_s=wall,
        idle_ms_per_s=idle_rate,
    )


# -- targets and output --------------------------------------------------------------------


@dataclasses.dataclass
class Results:
    """Everything measured."""

    latency: list[LatencyRun] = dataclasses.field(default_factory=list)
    idle: list[IdleRun] = dataclasses.field(default_factory=list)
    bursts: list[BurstRun] = dataclasses.field(default_factory=list)


def latency_verdicts(run: LatencyRun) -> list[Verdict]:
    """Targets of one latency scenario, on the external latency."""
    ext, own = run.external, run.daemon
    if ext is None or own is None:
        return [Verdict(f"{run.name}: latency", "no samples", None)]
    out = [
        Verdict(
            f"{run.name}: every tamper corrected",
            f"{ext.n - ext.missed}/{ext.n}",
            ext.missed == 0,
        )
    ]
    if run.backend == "nft":
        for what, lat in (("external", ext), ("daemon-reported", own)):
            out += [
                Verdict(
                    f"{run.name}: median <= {MEDIAN_TARGET_MS:.0f} ms ({what})",
                    f"{_ms(lat.median)} ms",
                    lat.median <= MEDIAN_TARGET_MS,
                ),
                Verdict(
                    f"{run.name}: p99 <= {P99_TARGET_MS:.0f} ms ({what})",
                    f"{_ms(lat.p99)} ms",
                    lat.p99 <= P99_TARGET_MS,
                ),
            ]
    else:
        limit = run.interval * 1000.0 + LEGACY_SLACK_MS
        out += [
            Verdict(
                f"{run.name}: median and p99 <= interval + {LEGACY_SLACK_MS:.0f} ms "
                f"({limit:.0f} ms)",
                f"external median {_ms(ext.median)} ms, p99 {_ms(ext.p99)} ms; "
                f"corrections by trigger: "
                + ", ".join(f"{k} {v}" for k, v in run.triggers.items()),
                ext.p99 <= limit and ext.median <= limit,
            )
        ]
    return out


def verdicts(res: Results) -> list[Verdict]:
    """Evaluate every target on what was measured."""
    out: list[Verdict] = []
    for run in res.latency:
        out += latency_verdicts(run)
    for idle in res.idle:
        out += [
            Verdict(
                f"idle {idle.backend}: CPU <= {IDLE_CPU_TARGET_PCT} % of one core",
                f"{idle.own_pct:.3f} % own, {idle.total_pct:.3f} % with its iptables children",
                idle.total_pct <= IDLE_CPU_TARGET_PCT,
            ),
            Verdict(
                f"idle {idle.backend}: RSS <= {RSS_TARGET_MB:.0f} MB",
                f"{idle.rss_mb:.1f} MB (peak {idle.hwm_mb:.1f} MB)",
                idle.rss_mb <= RSS_TARGET_MB,
            ),
        ]
    for b in res.bursts:
        out += [
            Verdict(
                f"burst {b.variant}: <= {BURST_CHECKS_TARGET} checks",
                f"{b.checks}",
                b.checks <= BURST_CHECKS_TARGET,
            ),
            Verdict(
                f"burst {b.variant}: <= {BURST_CPU_TARGET_MS:.0f} ms CPU",
                f"{b.cpu.total:.0f} ms ({b.cpu.own:.0f} own + {b.cpu.children:.0f} iptables)",
                b.cpu.total <= BURST_CPU_TARGET_MS,
            ),
        ]
        if b.variant != "kube-only":
            out.append(
                Verdict(
                    f"burst {b.variant}: >= 1 correction",
                    f"{b.corrections}",
                    b.corrections >= 1,
                )
            )
    return out


def latency_table(runs: Sequence[LatencyRun]) -> list[str]:
    """Latency rows: daemon-reported and external, median/p90/p99/max."""
    head = (
        f"{'scenario':<22} {'n':>4} {'miss':>4} | {'daemon ms: med':>14} {'p90':>6} "
        f"{'p99':>6} {'max':>6} | {'external: med':>13} {'p90':>6} {'p99':>6} {'max':>6}"
    )
    lines = header(head)
    for r in runs:
        own, ext = r.daemon, r.external
        if own is None or ext is None:
            lines.append(f"{r.name:<22} no samples")
            continue
        lines.append(
            f"{r.name:<22} {ext.n:>4} {ext.missed:>4} | {_ms(own.median):>14} {_ms(own.p90):>6} "
            f"{_ms(own.p99):>6} {_ms(own.max):>6} | {_ms(ext.median):>13} {_ms(ext.p90):>6} "
            f"{_ms(ext.p99):>6} {_ms(ext.max):>6}"
        )
    lines.append("")
    for r in runs:
        triggers = ", ".join(f"{k} {v}" for k, v in r.triggers.items()) or "none"
        attributed = sum(s.attributed for s in r.samples)
        cmd = r.command
        lines.append(
            f"{r.name}: corrections by trigger: {triggers}; culprit PID = tamper's in "
            f"{attributed}/{len(r.samples)}; sources: {', '.join(r.sources)}"
            + ("; own /run (private xtables lock)" if r.private_run else "")
        )
        lines.append(
            f"  tamper commands took median {_ms(cmd.median) if cmd else '-'} ms, p99 "
            f"{_ms(cmd.p99) if cmd else '-'} ms; daemon CPU over the {r.seconds:.1f} s series: "
            f"{r.cpu.own:.0f} ms own ({r.cpu_pct:.1f} % of a core) + "
            f"{r.cpu.children:.0f} ms iptables"
        )
        if r.events:
            lines.append(
                f"  other events: {', '.join(f'{k} {v}' for k, v in sorted(r.events.items()))}"
            )
        if r.resync_rules:
            lines.append(
                f"  resync loop: {r.resync_runs} restores of {r.resync_rules} rules, median "
                f"{r.resync_ms or 0:.0f} ms each, {len(r.resync_errors)} failed"
                + (f" (first: {r.resync_errors[0]})" if r.resync_errors else "")
            )
    return lines


def idle_table(runs: Sequence[IdleRun]) -> list[str]:
    """Idle rows."""
    head = (
        f"{'idle':<7} {'seconds':>7} {'own ms':>7} {'own %':>7} {'+iptables ms':>12} "
        f"{'total %':>7} {'checks':>6} {'RSS MB':>6} {'peak MB':>7}"
    )
    lines = header(head)
    lines += [
        f"{r.backend + ('*' if r.private_run else ''):<7} {r.seconds:7.1f} {r.cpu.own:7.0f} "
        f"{r.own_pct:7.3f} "
        f"{r.cpu.children:12.0f} {r.total_pct:7.3f} {r.checks:>6} {r.rss_mb:6.1f} "
        f"{r.hwm_mb:7.1f}"
        + (f"  ({', '.join(f'{k} {v}' for k, v in r.events.items())})" if r.events else "")
        for r in runs
    ]
    return lines


def burst_table(runs: Sequence[BurstRun]) -> list[str]:
    """Burst rows."""
    head = (
        f"{'burst':<18} {'rules':>6} {'restore ms':>10} {'checks':>6} {'corr':>4} "
        f"{'own ms':>6} {'+iptables ms':>12} {'total ms':>8}  triggers"
    )
    lines = header(head)
    for r in runs:
        extra = ", ".join(f"{k} {v}" for k, v in r.events.items())
        lines.append(
            f"{r.variant:<18} {r.rules:>6} {r.restore_ms:10.0f} {r.checks:>6} "
            f"{r.corrections:>4} {r.cpu.own:6.0f} {r.cpu.children:12.0f} {r.cpu.total:8.0f}  "
            + (", ".join(r.triggers) or "-")
            + (f"; {extra}" if extra else "")
        )
    return lines


def report(res: Results, results: Sequence[Verdict], elapsed: float) -> str:
    """The human-readable report."""
    env = environment(load=True)
    lines = [
        f"efa-guard daemon bench: {elapsed:.0f} s; "
        + ", ".join(f"{k} {v}" for k, v in env.items()),
        "",
        *latency_table(res.latency),
        "",
        "latency: daemon = its latency_ms (first event seen -> policy verified restored);",
        "external = the tamper command's exit -> the drift_corrected line read from its stderr.",
        "contest detection disabled in the latency runs (threshold 1000 in 0.1 s); see --help.",
        "",
        *idle_table(res.idle),
        "",
        "idle: CPU from /proc/PID/stat (own = utime+stime of the daemon; +iptables = its reaped",
        f"children, i.e. the iptables it runs); the timer fires every {IDLE_INTERVAL:g} s.",
        "* with its own /run, so a private xtables lock: other legacy iptables on this host",
        "  do not wake it (--shared-lock: the host's lock).",
        "",
        *burst_table(res.bursts),
        "",
        f"burst: checks = the `stopping` counter minus the startup check ({NFT_INTERVAL:g} s",
        f"timer: none fired); CPU from just before the restore to {BURST_QUIET:g} s after it.",
        "",
    ]
    lines += [v.line() for v in results]
    return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved options."""

    tampers: int
    idle_seconds: float
    rules: int
    shared_lock: bool

    @property
    def resync_tampers(self) -> int:
        """Tampers under the resync loop: half as many."""
        return max(2, self.tampers // 2)

    @property
    def legacy_tampers(self) -> int:
        """Tampers on legacy: a fifth, at most 30."""
        return max(2, min(30, self.tampers // 5))

    @property
    def legacy_idle_seconds(self) -> float:
        """The legacy idle run is shorter."""
        return max(min(self.idle_seconds, 5.0), self.idle_seconds / 3)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--tampers", type=positive, help="tampers on nft (default 200)")
    p.add_argument("--idle-seconds", type=seconds, help="idle run on nft (default 60)")
    p.add_argument("--rules", type=positive, help="kube-proxy-like rules (default 10000)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 20 tampers, 5 s idle, 2000 rules"
    )
    p.add_argument(
        "--shared-lock",
        action="store_true",
        help="run the legacy daemon with the host's /run/xtables.lock (default: a private /run)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    quick = args.quick
    settings = Settings(
        tampers=args.tampers or (20 if quick else 200),
        idle_seconds=args.idle_seconds or (5.0 if quick else 60.0),
        rules=args.rules or (2000 if quick else 10000),
        shared_lock=args.shared_lock,
    )
    return args, settings


def measure(s: Settings, tmp: Path) -> Results:
    """Run every scenario, each in its own sandbox."""
    nft_fast = daemon_config(
        tmp, "nft-latency", backend="nft", interval=NFT_INTERVAL, no_contest=True
    )
    legacy_fast = daemon_config(
        tmp, "legacy-latency", backend="legacy", interval=LEGACY_INTERVAL, no_contest=True
    )
    nft_idle = daemon_config(
        tmp, "nft-idle", backend="nft", interval=IDLE_INTERVAL, no_contest=False
    )
    legacy_idle = daemon_config(
        tmp, "legacy-idle", backend="legacy", interval=IDLE_INTERVAL, no_contest=False
    )
    nft_burst = daemon_config(
        tmp, "nft-burst", backend="nft", interval=NFT_INTERVAL, no_contest=False
    )
    kube = KubeRules.make(s.rules)
    res = Results()
    res.latency.append(
        bench_latency("nft", kind="nft", config=nft_fast, interval=NFT_INTERVAL, tampers=s.tampers)
    )
    res.latency.append(
        bench_latency(
            "nft + resync loop",
            kind="nft",
            config=nft_fast,
            interval=NFT_INTERVAL,
            tampers=s.resync_tampers,
            kube=kube,
        )
    )
    res.latency.append(
        bench_latency(
            f"legacy ({LEGACY_INTERVAL:g} s timer)",
            kind="legacy",
            config=legacy_fast,
            interval=LEGACY_INTERVAL,
            tampers=s.legacy_tampers,
            private_run=not s.shared_lock,
        )
    )
    res.idle.append(bench_idle("nft", nft_idle, s.idle_seconds, private_run=False))
    res.idle.append(
        bench_idle("legacy", legacy_idle, s.legacy_idle_seconds, private_run=not s.shared_lock)
    )
    res.bursts.append(bench_burst("kube-only", nft_burst, kube, kube.resync))
    res.bursts.append(bench_burst("+ INPUT jumps", nft_burst, kube, kube.resync_with_jumps))
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report; return the exit status."""
    isolate_state()
    args, settings = parse_args(argv)
    missing = missing_tools()
    if not settings.shared_lock:
        missing += [t for t in PRIVATE_RUN_TOOLS if shutil.which(t) is None]
    if missing:
        print(f"bench-daemon: cannot run, missing: {', '.join(missing)}", file=sys.stderr)
        return FAILED
    done = guarded("bench-daemon", lambda tmp: measure(settings, tmp))
    if isinstance(done, int):
        return done
    res, elapsed = done
    results = verdicts(res)
    if args.json:
        doc = {
            "settings": dataclasses.asdict(settings),
            "elapsed_s": round(elapsed, 1),
            "environment": environment(load=True),
            "latency": [r.as_dict() for r in res.latency],
            "idle": [r.as_dict() for r in res.idle],
            "bursts": [r.as_dict() for r in res.bursts],
            "targets": [v.as_dict() for v in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(report(res, results, elapsed))
    missed = any(v.met is False for v in results)
    return FAILED if args.strict and missed else OK


if __name__ == "__main__":
    sys.exit(main())
