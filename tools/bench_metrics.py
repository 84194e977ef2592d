"""What metrics cost the daemon: CPU idle and under tampers, and memory, with metrics on vs off.

Each run starts `efa-guard run` (nft, shipped default config) in a fresh sandbox (network
namespaces made here and always deleted; see tests/sandbox.py), its state in a temporary
directory, its log as JSON lines on stderr:

- off: `[metrics] textfile_directory = ""`, no listen;
- on:  textfile into a temporary directory and `listen = "127.0.0.1:9731"` (the default
  interval, 15 s), scraped every 15 s from inside the namespace as Prometheus would.

Measured on the daemon's PID (utime+stime of /proc/PID/stat, VmRSS and VmHWM of status):
CPU over `--idle-seconds` with the policy in place (default timer, 10 s), then CPU over
`--tampers` tampers (`iptables -D EFA_INPUT 1`, each waited for until corrected, 100 ms
apart; contest_threshold = 1000 keeps every one an ordinary correction, not a fight),
plus 1.5 s for the textfile write a correction schedules. Memory at the end.

Usage: `python -m tools.bench_metrics [--idle-seconds S] [--tampers N] [--rounds N] [--json]`
(root). Each round runs off then on; the table shows means and the extra's range.
Exit 0 when everything ran, 1 on a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.harness import DEFAULT_CONFIG, REPO, isolate_state
from tools.sandbox import missing_tools, sandbox

CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT = 9731
SCRAPER = """
import sys, time, urllib.request
while True:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        r.read()
    time.sleep(15)
"""


class BenchError(Exception):
    """A run did not go as it must (daemon died, correction missing)."""


@dataclass(frozen=True)
class Run:
    """One daemon's figures."""

    metrics: bool
    idle_s: float
    idle_cpu_ms: float
    tampers: int
    tamper_cpu_ms: float
    rss_mb: float
    hwm_mb: float


class Daemon:
    """`efa-guard run` in a namespace; its JSON stderr counted in a thread."""

    def __init__(self, ns: str, config: Path, env: dict[str, str]) -> None:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "efa_guard", "run"]
        argv += ["--config", str(config), "--log-format", "json"]
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.events: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        stream = self.proc.stderr
        if stream is None:
            return
        for raw in iter(stream.readline, b""):
            event = ""
            with contextlib.suppress(ValueError, AttributeError):
                event = str(json.loads(raw).get("event", ""))
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def count(self, event: str) -> int:
        """How many lines of `event` so far."""
        with self.cond:
            return self.events.count(event)

    def wait(self, event: str, count: int, timeout: float = 15.0) -> None:
        """Until `count` lines of `event` arrived."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.events.count(event) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    msg = f"no {count}th {event} from daemon {self.proc.pid} ({self.events[-5:]})"
                    raise BenchError(msg)
                self.cond.wait(left)

    def cpu_ms(self) -> float:
        """utime+stime so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK

    def memory_mb(self) -> tuple[float, float]:
        """VmRSS and VmHWM."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        got = dict(re.findall(r"(?m)^(VmRSS|VmHWM):\s+(\d+) kB", status))
        return int(got["VmRSS"]) / 1024, int(got["VmHWM"]) / 1024

    def stop(self) -> None:
        """SIGTERM by PID; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.thread.join(timeout=5)


@contextlib.contextmanager
def _stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def configure(home: Path, *, metrics: bool) -> Path:
    """The shipped config on nft, contests out of reach, metrics on or off."""
    text = DEFAULT_CONFIG.read_text()
    for pattern, value in (
        (r'(?m)^backend = "auto"$', 'backend = "nft"'),
        (r"(?m)^contest_threshold = [0-9]+", "contest_threshold = 1000"),
    ):
        text, n = re.subn(pattern, value, text)
        if n != 1:
            msg = f"the shipped config has no line matching {pattern}"
            raise BenchError(msg)
    if metrics:
        (home / "prom").mkdir()
        text += f'\n[metrics]\ntextfile_directory = "{home / "prom"}"\n'
        text += f'listen = "127.0.0.1:{PORT}"\n'
    else:
        text += '\n[metrics]\ntextfile_directory = ""\n'
    path = home / "efa-guard.toml"
    path.write_text(text)
    return path


def measure(*, metrics: bool, idle_s: float, tampers: int) -> Run:
    """One daemon in one sandbox: idle, then tampers, then memory."""
    with (
        tempfile.TemporaryDirectory(prefix="efa-bench-metrics-") as tmp,
        sandbox(prefix="efam") as box,
    ):
        home = Path(tmp)
        env = dict(os.environ, EFA_GUARD_DEFAULT=str(DEFAULT_CONFIG))
        for name in ("RUN", "STATE", "SYSTEMD"):
            (home / name.lower()).mkdir(mode=0o700)
            env[f"EFA_GUARD_{name}_DIR"] = str(home / name.lower())
        d = Daemon(box.guard, configure(home, metrics=metrics), env)
        try:
            d.wait("policy_asserted", 1)
            if d.count("config_fallback"):
                msg = "the daemon rejected the bench's config (see config_fallback)"
                raise BenchError(msg)
            with contextlib.ExitStack() as stack:
                if metrics:
                    url = f"http://127.0.0.1:{PORT}/metrics"
                    argv = ["ip", "netns", "exec", box.guard, sys.executable, "-c", SCRAPER, url]
                    stack.enter_context(_stopped(subprocess.Popen(argv)))
                time.sleep(2.0)  # settle: the first textfile, the first scrape
                start = d.cpu_ms()
                time.sleep(idle_s)
                idle = d.cpu_ms() - start
                done = d.count("drift_corrected")
                start = d.cpu_ms()
                for i in range(1, tampers + 1):
                    box.run(["iptables-nft", "-D", "EFA_INPUT", "1"])
                    d.wait("drift_corrected", done + i)
                    time.sleep(0.1)
                time.sleep(1.5)
                busy = d.cpu_ms() - start
                rss, hwm = d.memory_mb()
            if metrics and not (home / "prom" / "efa_guard.prom").exists():
                msg = "metrics on, but no textfile was written"
                raise BenchError(msg)
        finally:
            d.stop()
        return Run(metrics, idle_s, idle, tampers, busy, rss, hwm)


def table(pairs: list[tuple[Run, Run]]) -> str:
    """Means over the rounds side by side; the extra's range across rounds."""
    first = pairs[0][0]
    rows = [
        (f"CPU idle {first.idle_s:.0f} s (ms)", "idle_cpu_ms"),
        (f"CPU {first.tampers} tampers (ms)", "tamper_cpu_ms"),
        ("VmRSS at the end (MiB)", "rss_mb"),
        ("VmHWM, peak RSS (MiB)", "hwm_mb"),
    ]

    def of(run: Run, key: str) -> float:
        return float(getattr(run, key))

    head = f"{'':28} {'metrics off':>12} {'metrics on':>12} {'extra':>8}  extra's range"
    out = [head, f"({len(pairs)} round(s), means)"]
    extras: dict[str, float] = {}
    for name, key in rows:
        a = statistics.fmean(of(off, key) for off, _ in pairs)
        b = statistics.fmean(of(on, key) for _, on in pairs)
        diffs = [of(on, key) - of(off, key) for off, on in pairs]
        extras[name] = b - a
        out.append(
            f"{name:28} {a:12.1f} {b:12.1f} {b - a:+8.1f}  {min(diffs):+.1f} .. {max(diffs):+.1f}"
        )
    idle, busy = (extras[name] for name, _ in rows[:2])
    pct = idle / (first.idle_s * 10)
    per = busy / max(first.tampers, 1)
    out.append(f"extra idle CPU: {pct:+.3f} % of one core; per correction: {per:+.2f} ms")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run off, then on, `--rounds` times; print the table (or JSON)."""
    isolate_state()
    parser = argparse.ArgumentParser(prog="python -m tools.bench_metrics", description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--tampers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        sys.stderr.write(f"cannot run: missing {', '.join(missing)}\n")
        return 1
    pairs: list[tuple[Run, Run]] = []
    try:
        for _ in range(max(args.rounds, 1)):
            off, on = (
                measure(metrics=m, idle_s=args.idle_seconds, tampers=args.tampers)
                for m in (False, True)
            )
            pairs.append((off, on))
    except BenchError as e:
        sys.stderr.write(f"bench_metrics: {e}\n")
        return 1
    runs = [asdict(r) for pair in pairs for r in pair]
    sys.stdout.write((json.dumps(runs, indent=2) if args.json else table(pairs)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
