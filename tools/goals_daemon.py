"""The daemon's goals of issue 12, measured for ``tools/bench_goals.py`` (see its docstring).

Every scenario runs in its own sandbox (namespaces created here and always deleted) with the
daemon started by ``tools/runner.py`` (stopped by its PID); the pieces come from
``tools/bench_daemon.py``: ``running``/``stop``, the tamper series, the resync loop, the burst,
the private /run of a legacy daemon.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from tools import nftprobe
from tools.bench_daemon import (
    BURST_QUIET,
    NFT_TIMEOUT,
    SETTLE,
    BurstRun,
    Latency,
    Resync,
    Sample,
    bench_burst,
    load_rules,
    running,
    stop,
    tamper_series,
)
from tools.bench_exposure import big_chain
from tools.benchkit import BenchError, ns_ok, progress, run_ok
from tools.harness import efa_argv
from tools.kuberules import KubeRules, foreign_rules
from tools.runner import Cpu, Daemon
from tools.sandbox import sandbox

TOOL = "bench-goals"
WRITER_CHAIN = "KUBE-BENCH-WRITER"
"""The kube-like chain the legacy foreign writer appends to and deletes from."""
RESYNC_TOOL = ("xtables-nft-multi", "iptables-nft-restore")
"""The resync loop's restore, run through the multi-call binary: its commits carry another
process name (``xtables-nft-mul``) than the daemon's ``iptables-nft-restore``."""
FOREIGN_COMMS = frozenset({"xtables-nft-mul"})
QUIET_AFTER = 2.0
"""Seconds without any foreign write after a legacy correction, counting the daemon's checks."""
OWN_TAMPERS = 3
"""Legacy tampers whose corrections are each followed by :data:`QUIET_AFTER` of quiet."""
SURVEY_TIMEOUT = 180.0
"""Seconds (after the timer) for the daemon's exposure survey to report a new listener."""


@dataclasses.dataclass(frozen=True)
class Memory:
    """VmRSS and VmHWM in MB, at 0 foreign rules and at the full size, of one daemon."""

    rss0: float
    hwm0: float
    rss: float
    hwm: float

    def as_dict(self) -> dict[str, float]:
        """JSON form."""
        return {k: round(v, 1) for k, v in dataclasses.asdict(self).items()}


# -- legacy: foreign writer, own restore, memory ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class LegacyRun:
    """The legacy daemon at ``size`` foreign rules: idle, with a writer, after its own restore."""

    size: int
    kube_rules: int
    idle_s: float
    idle: Cpu
    writer_s: float
    writer: Cpu
    writes: int
    write_ms: float
    save_cpu_ms: float
    save_wall_ms: float
    checks_after: tuple[int, ...]
    last_check_ms: tuple[float, ...]  # per correction: its state's last check, after its line
    corrections: int
    memory: Memory
    surveyed: bool

    @property
    def idle_pct(self) -> float:
        """Own + iptables children, percent of one core, without the writer."""
        return self.idle.total / (self.idle_s * 10.0)

    @property
    def writer_pct(self) -> float:
        """The same with the writer."""
        return self.writer.total / (self.writer_s * 10.0)

    @property
    def per_write_ms(self) -> float:
        """Daemon CPU per foreign write, its idle rate taken out."""
        extra = self.writer.total - self.idle.total / self.idle_s * self.writer_s
        return extra / self.writes if self.writes else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "foreign_rules": self.size,
            "kube_rules": self.kube_rules,
            "idle": {"seconds": round(self.idle_s, 2), "cpu_ms": _cpu(self.idle)},
            "writer": {
                "seconds": round(self.writer_s, 2),
                "cpu_ms": _cpu(self.writer),
                "writes": self.writes,
                "write_median_ms": round(self.write_ms, 1),
            },
            "idle_pct": round(self.idle_pct, 4),
            "writer_pct": round(self.writer_pct, 4),
            "per_write_ms": round(self.per_write_ms, 2),
            "save_filter": {"cpu_ms": round(self.save_cpu_ms, 2), "wall_ms": self.save_wall_ms},
            "checks_after_own_restore": list(self.checks_after),
            "last_check_after_correction_ms": [round(x, 1) for x in self.last_check_ms],
            "corrections": self.corrections,
            "memory": self.memory.as_dict(),
            "surveyed_at_size": self.surveyed,
        }


def in_place(ns: str, config: Path) -> None:
    """At the end of a measurement the policy must be in place (the listeners are exposed)."""
    ns_ok(ns, efa_argv("check", "--no-exposure", config=config))


def _cpu(c: Cpu) -> dict[str, float]:
    return {"own": round(c.own, 1), "children": round(c.children, 1)}


def _state(d: Daemon) -> dict[str, object]:
    """The daemon's published state.json (schema 1), from the run directory it was given."""
    path = Path(os.environ["EFA_GUARD_RUN_DIR"]) / "state.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read the daemon's {path}: {e}\n{d.tail()}") from None
    if not isinstance(data, dict) or data.get("pid") != d.pid:
        raise BenchError(f"{path} is not daemon {d.pid}'s: {str(data)[:300]}")
    return data


def _checks(d: Daemon) -> tuple[int, float]:
    """The daemon's check counter and the unix time of its last check."""
    data = _state(d)
    counters = data.get("counters")
    checks = counters.get("checks") if isinstance(counters, dict) else None
    last = data.get("last_check")
    if not isinstance(checks, int) or not isinstance(last, int | float):
        raise BenchError(f"state.json has no checks counter / last_check: {str(data)[:300]}")
    return checks, float(last)


def _legacy_load(size: int, kube: int) -> str:
    """The foreign rules: BIG jumped from INPUT, kube-like rules, the writer's empty chain."""
    writer = f"*filter\n:{WRITER_CHAIN} - [0:0]\nCOMMIT\n"
    return big_chain(size) + (foreign_rules(kube) if kube else "") + writer


def _writer(d: Daemon, seconds: float, period: float) -> tuple[int, float, Cpu]:
    """A foreign legacy write every ``period`` s for ``seconds``: writes, median ms, CPU."""
    n = max(1, round(seconds / period))
    before, start = d.cpu(), time.monotonic()
    took: list[float] = []
    for k in range(n):
        pause = start + k * period - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        op = "-A" if k % 2 == 0 else "-D"
        argv = [*d.enter(), "iptables-legacy", "--wait=5", op, WRITER_CHAIN, "-j", "RETURN"]
        took.append(run_ok(argv)[0])
    pause = start + n * period - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    spent = d.cpu() - before
    if n % 2:  # leave the chain as it was
        run_ok([*d.enter(), "iptables-legacy", "--wait=5", "-D", WRITER_CHAIN, "-j", "RETURN"])
    return n, statistics.median(took), spent


def _idle(d: Daemon, seconds: float) -> Cpu:
    before = d.cpu()
    time.sleep(seconds)
    return d.cpu() - before


def _quiet(d: Daemon, window: float = 0.5, timeout: float = 20.0) -> None:
    """Wait until the daemon used no CPU for ``window`` s: no check is under way.

    state.json is published after a check; read during one, its counter would miss it.
    """
    deadline = time.monotonic() + timeout
    before = d.cpu().total
    while time.monotonic() < deadline:
        time.sleep(window)
        now = d.cpu().total
        if now == before:
            return
        before = now
    raise BenchError(f"the daemon was never quiet for {window:g} s in {timeout:g} s")


@dataclasses.dataclass(frozen=True)
class OwnRestores:
    """Per correction: checks after it in quiet, and when the last check was (ms after it)."""

    extra: tuple[int, ...]
    last_check_ms: tuple[float, ...]
    corrections: int


def _own_restores(d: Daemon, interval: float, count: int) -> OwnRestores:
    """Tamper ``count`` times; per correction, the checks that follow it in quiet.

    Read from state.json: the counter before the tamper and :data:`QUIET_AFTER` s after the
    correction, minus the one check that corrected; and its last check's time against the
    arrival of the ``drift_corrected`` line (negative: no check came after it).  A tamper
    starts only when the daemon is quiet (no check under way) and its timer (reset by every
    check) is at least 4 s away.
    """
    extra: list[int] = []
    last_ms: list[float] = []
    corrections = 0
    for _ in range(count):
        _quiet(d)
        checks, last = _checks(d)
        if time.time() - last > interval - 4.0:
            deadline = time.monotonic() + interval + 10.0
            while _checks(d)[1] == last and time.monotonic() < deadline:
                time.sleep(0.05)
            _quiet(d)
            checks, last = _checks(d)
        mark = d.mark()
        run_ok([*d.enter(), "iptables-legacy", "--wait=5", "-F", "EFA_INPUT"])
        line = d.wait_for("drift_corrected", after=mark, timeout=interval + 10.0)
        if line is None:
            raise BenchError(f"legacy daemon did not correct a flush of EFA_INPUT:\n{d.tail()}")
        time.sleep(QUIET_AFTER)
        after, last = _checks(d)
        corrected_at = time.time() - (time.monotonic() - line.at)
        corrections += len(d.since(mark, "drift_corrected"))
        extra.append(max(0, after - checks - 1))
        last_ms.append((last - corrected_at) * 1000.0)
    return OwnRestores(tuple(extra), tuple(last_ms), corrections)


def _save_cost(d: Daemon, runs: int = 5) -> tuple[float, float]:
    """Median CPU and wall ms of one ``iptables-legacy-save -t filter`` where the daemon runs."""
    cpu: list[float] = []
    wall: list[float] = []
    argv = [*d.enter(), "iptables-legacy-save", "-t", "filter"]
    run_ok(argv)
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        ms, _ = run_ok(argv)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        cpu.append(used * 1000.0)
        wall.append(ms)
    return statistics.median(cpu), statistics.median(wall)


def bench_legacy(  # noqa: PLR0913 - one scenario's independent settings
    config: Path,
    *,
    size: int,
    kube: int,
    idle_s: float,
    writer_s: float,
    period: float,
    interval: float,
) -> LegacyRun:
    """The legacy daemon (own /run, so its own xtables lock) at ``size`` + ``kube`` rules."""
    progress(TOOL, f"legacy daemon: {size} + {kube} foreign rules, idle {idle_s:g} s, writer")
    with sandbox(prefix="efag") as sb:
        sb.start_listeners(tcp=(80,), udp=())
        with running(sb.guard, config, private_run=True) as d:
            if d.wait_for("exposure", timeout=interval + SURVEY_TIMEOUT) is None:
                raise BenchError(f"the daemon never reported tcp/80 exposed:\n{d.tail()}")
            rss0, hwm0 = d.memory_mb()
            mark = d.mark()
            run_ok(
                [*d.enter(), "iptables-legacy-restore", "--noflush"],
                stdin=_legacy_load(size, kube),
            )
            sb.start_listeners(tcp=(81,), udp=())  # a survey at the full size, reported
            surveyed = d.wait_for("exposure", after=mark, timeout=interval + SURVEY_TIMEOUT)
            time.sleep(SETTLE)
            progress(TOOL, f"legacy daemon: idle {idle_s:g} s, then a write every {period:g} s")
            idle = _idle(d, idle_s)
            writes, write_ms, writer = _writer(d, writer_s, period)
            progress(TOOL, f"legacy daemon: {OWN_TAMPERS} tampers, {QUIET_AFTER:g} s quiet each")
            time.sleep(SETTLE)
            own = _own_restores(d, interval, OWN_TAMPERS)
            rss, hwm = d.memory_mb()
            save_cpu, save_wall = _save_cost(d)
            d.check_alive()
            stop(d)
        in_place(sb.guard, config)
    return LegacyRun(
        size=size,
        kube_rules=kube,
        idle_s=idle_s,
        idle=idle,
        writer_s=writes * period,
        writer=writer,
        writes=writes,
        write_ms=write_ms,
        save_cpu_ms=save_cpu,
        save_wall_ms=save_wall,
        checks_after=own.extra,
        last_check_ms=own.last_check_ms,
        corrections=own.corrections,
        memory=Memory(rss0, hwm0, rss, hwm),
        surveyed=surveyed is not None,
    )


# -- nft: memory at the full size ------------------------------------------------------------


def bench_nft_memory(config: Path, *, size: int, interval: float) -> tuple[Memory, bool]:
    """The nft daemon's VmRSS after a survey at 0 rules, and after one at ``size`` rules."""
    progress(TOOL, f"nft daemon memory: 0 then {size} foreign rules, a survey at each")
    with sandbox(prefix="efag") as sb:
        sb.start_listeners(tcp=(80,), udp=())
        with running(sb.guard, config) as d:
            if d.wait_for("exposure", timeout=interval + SURVEY_TIMEOUT) is None:
                raise BenchError(f"the daemon never reported tcp/80 exposed:\n{d.tail()}")
            rss0, hwm0 = d.memory_mb()
            mark = d.mark()
            ns_ok(sb.guard, ["iptables-nft-restore", "--noflush"], stdin=big_chain(size))
            sb.start_listeners(tcp=(81,), udp=())
            surveyed = d.wait_for("exposure", after=mark, timeout=interval + SURVEY_TIMEOUT)
            time.sleep(SETTLE)
            rss, hwm = d.memory_mb()
            d.check_alive()
            stop(d)
        in_place(sb.guard, config)
    return Memory(rss0, hwm0, rss, hwm), surveyed is not None


# -- nft: tamper -> restored against the floor -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Floor:
    """The floor's parts, in ms, from the child's runs (before and after the series)."""

    delivery: tuple[float, ...]
    restore: tuple[float, ...]  # started the moment a tamper's commit event arrived
    retries: int
    quiet: tuple[float, ...] = ()  # the same restore on a ruleset no commit is finishing

    @property
    def ms(self) -> float:
        """Median event delivery plus median restore."""
        return statistics.median(self.delivery) + statistics.median(self.restore)

    @property
    def p99_ms(self) -> float:
        """Median event delivery plus the restore's p99 (nearest rank): the floor's own tail."""
        ordered = sorted(self.restore)
        rank = max(1, math.ceil(0.99 * len(ordered))) - 1
        return statistics.median(self.delivery) + ordered[rank]

    def __add__(self, other: Floor) -> Floor:
        return Floor(
            self.delivery + other.delivery,
            self.restore + other.restore,
            self.retries + other.retries,
            self.quiet + other.quiet,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "floor_ms": round(self.ms, 3),
            "delivery_median_ms": round(statistics.median(self.delivery), 3),
            "restore_median_ms": round(statistics.median(self.restore), 3),
            "floor_p99_ms": round(self.p99_ms, 3),
            "runs": len(self.restore),
            "restore_retries": self.retries,
        }


def measure_floor(ns: str, config: Path, runs: int) -> Floor:
    """Run ``--child-floor`` in the namespace; its timings."""
    argv = [sys.executable, "-m", "tools.bench_goals"]
    _, out = ns_ok(ns, [*argv, "--child-floor", str(config), "--runs", str(runs)])
    try:
        data = json.loads(out)
        return Floor(
            tuple(float(x) for x in data["delivery_ms"]),
            tuple(float(x) for x in data["restore_ms"]),
            int(data["restore_retries"]),
            tuple(float(x) for x in data["restore_quiet_ms"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"--child-floor printed {out[:500]!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class NftRun:
    """One nft latency scenario: commit-to-commit per tamper, and the floor around it."""

    name: str
    samples: tuple[Sample, ...]
    c2c: tuple[float | None, ...]  # per sample; None: not corrected (a miss)
    unmatched: int  # corrected, timed by the bound tamper start -> logged correction
    lag_ms: tuple[float, ...]  # how late the watch read each tamper's commit, at least
    floor: Floor
    overflows: int
    complete: bool  # the watch had read every commit when the series was matched
    resync_runs: int = 0
    resync_rules: int = 0

    @property
    def latency(self) -> Latency | None:
        """Commit to commit, misses as infinite."""
        return Latency.of(list(self.c2c))

    def by_tamper(self) -> dict[str, object]:
        """Commit to commit per kind of tamper (where the tail comes from)."""
        groups: dict[str, list[float | None]] = {}
        for sample, c2c in zip(self.samples, self.c2c, strict=True):
            groups.setdefault(sample.tamper, []).append(c2c)
        out: dict[str, object] = {}
        for tamper, values in groups.items():
            lat = Latency.of(values)
            out[tamper] = lat.as_dict() if lat else None
        return out

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        ext = Latency.of([s.external_ms for s in self.samples])
        own = Latency.of([s.daemon_ms for s in self.samples])
        lat = self.latency
        return {
            "name": self.name,
            "commit_to_commit": lat.as_dict() if lat else None,
            "unmatched": self.unmatched,
            "watch_lag_ms": {
                "median": round(statistics.median(self.lag_ms), 3) if self.lag_ms else None,
                "max": round(max(self.lag_ms), 3) if self.lag_ms else None,
            },
            "by_tamper": self.by_tamper(),
            "external": ext.as_dict() if ext else None,
            "daemon_reported": own.as_dict() if own else None,
            "floor": self.floor.as_dict(),
            "watch_overflows": self.overflows,
            "watch_complete": self.complete,
            "resync": {"rules": self.resync_rules, "runs": self.resync_runs}
            if self.resync_rules
            else None,
        }


@dataclasses.dataclass(frozen=True)
class Matched:
    """Commit-to-commit per sample (None: never corrected), and how late the watch read."""

    c2c: tuple[float | None, ...]
    unmatched: int  # corrected, but the two commits were not both seen: the bound is used
    lag_ms: tuple[float, ...]  # per tamper: its commit read after its exit, at least


def _matched(samples: list[Sample], commits: list[nftprobe.Commit], daemon_pid: int) -> Matched:
    """Each tamper's commit to the daemon's next commit, before the next tamper started.

    When the watch did not see both in that window, the tamper's start to the arrival of its
    ``drift_corrected`` line stands in: it holds both commits, so it bounds the figure.
    """
    out: list[float | None] = []
    lags: list[float] = []
    unmatched = 0
    ends = [s.started for s in samples[1:]] + [math.inf]
    for s, end in zip(samples, ends, strict=True):
        lag = nftprobe.watch_lag(
            commits, pid=s.pid, start=s.started, exited=s.started + s.command_ms / 1000.0
        )
        if lag is not None:
            lags.append(lag)
        if s.external_ms is None:
            out.append(None)
            continue
        c2c = nftprobe.commit_to_commit(
            commits,
            tamper_pid=s.pid,
            window=(s.started, end),
            daemon_pid=daemon_pid,
            foreign=FOREIGN_COMMS,
        )
        if c2c is None:  # not both commits seen in time: the bound that holds for sure
            unmatched += 1
            c2c = s.command_ms + s.external_ms
        out.append(c2c)
    return Matched(tuple(out), unmatched, tuple(lags))


def bench_nft(
    name: str,
    config: Path,
    *,
    tampers: int,
    floor_runs: int,
    kube: KubeRules | None = None,
) -> NftRun:
    """Floor, tamper series with every commit watched, floor again; one sandbox."""
    what = f" under a {kube.rules}-rule resync loop" if kube else ""
    progress(TOOL, f"nft latency ({name}): floor x{floor_runs}, {tampers} tampers{what}")
    resync: Resync | None = None
    with sandbox(prefix="efag") as sb:
        if kube is not None:
            load_rules(sb, kube.initial)
        ns_ok(sb.guard, efa_argv("apply", config=config))
        try:
            if kube is not None:
                resync = Resync(sb.guard, kube.resync, tool=RESYNC_TOOL)
                resync.start()
                time.sleep(1.0)
            floor = measure_floor(sb.guard, config, floor_runs)
            with nftprobe.watching(sb.guard) as watch:
                with running(sb.guard, config) as d:
                    time.sleep(SETTLE)
                    samples = tamper_series(d, "nft", count=tampers, timeout=NFT_TIMEOUT, rng=None)
                    d.check_alive()
                    stop(d)
                complete = watch.caught_up(sb.guard)
                commits, overflows = watch.snapshot(), watch.overflows
            floor = floor + measure_floor(sb.guard, config, floor_runs)
        finally:
            if resync is not None:
                resync.stop()
        in_place(sb.guard, config)
    if resync is not None and not resync.durations:
        raise BenchError(f"the resync loop never succeeded: {resync.errors[:3]}")
    matched = _matched(samples, commits, d.pid)
    return NftRun(
        name,
        tuple(samples),
        matched.c2c,
        matched.unmatched,
        matched.lag_ms,
        floor,
        overflows,
        complete,
        resync_runs=len(resync.durations) if resync else 0,
        resync_rules=kube.rules if kube else 0,
    )


def bench_kube_burst(config: Path, kube: KubeRules, repeat: int) -> BurstRun:
    """bench_daemon's "kube-only" burst: ``repeat`` resyncs, after as long a quiet reference."""
    return bench_burst(
        "kube-only", config, kube, kube.resync, repeat=repeat, idle_s=repeat * BURST_QUIET
    )
