"""`make demo`: efa-guard at work in a throw-away network-namespace sandbox.

An operator-readable walk-through, printed to stdout, that doubles as a smoke
test (exit status 0 only if everything behaved as expected):

1. Build the sandbox (see ``tests/sandbox.py``): a "guard" namespace playing the
   EFA node, with listeners on the ports that matter and a kube-proxy-like
   NodePort 31672 -> pod:5672 plus a few foreign kube-proxy/kubelet rules, and
   an "outside" namespace playing the scanner.
2. Before: what ``nmap`` from outside sees.
3. ``efa-guard render``, ``check`` (CRITICAL), ``apply``, ``check`` (OK), and the
   resulting chains.
4. After: the same scan, side by side with the first, and the verdict.
5. Tampering, each time detected by ``check`` and repaired by ``check --fix``.
6. Proof that the foreign KUBE-* rules were never touched.
7. Cleanup, always (also on failure and on Ctrl-C / SIGTERM).

Usage (as root)::

    python3 tests/demo.py [--backend nft|legacy]

Exit status: 0 every expectation met; 1 some expectation failed (each one is
listed at the end, with what was seen instead); 2 the demo could not run (not
root, a tool missing, a sandbox command failed); 130 interrupted.

Nothing outside the sandbox's namespaces is touched: every iptables and
efa-guard command runs through ``ip netns exec``, the configuration is a
temporary copy of ``config/efa-guard.toml`` outside the repository, and nmap
scans only the sandbox's own address.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox import GUARD_ADDR, OUTSIDE_ADDR, Sandbox, SandboxError, missing_tools, sandbox

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
"""The repository: its ``efa_guard`` package is the one under test."""
DEFAULT_CONFIG = ROOT / "config" / "efa-guard.toml"
"""The shipped default policy; the demo uses a copy with an explicit backend."""

TCP_LISTEN = (22, 111, 3306, 5672, 6514, 8078, 15672, 25672)
"""TCP ports served in the guard namespace."""
UDP_LISTEN = (111,)
"""UDP ports served (and answered) in the guard namespace."""
NODE_PORT, POD_PORT = 31672, 5672
"""The kube-proxy-like NodePort and the pod port it DNATs to."""
SCAN_TCP = (*TCP_LISTEN, NODE_PORT)
"""TCP ports scanned from outside."""
SCAN_UDP = UDP_LISTEN
"""UDP ports scanned from outside."""
OWNED_CHAINS = ("EFA_INPUT", "EFA_NODEPORTS")
"""The chains of the default policy: efa-guard owns them and their jumps."""

Key = tuple[str, int]
"""(protocol, port), as :meth:`Sandbox.nmap` reports them."""

SERVICES: dict[Key, str] = {
    ("tcp", 22): "ssh (below 1024)",
    ("tcp", 111): "rpcbind",
    ("tcp", 3306): "MySQL",
    ("tcp", 5672): "RabbitMQ AMQP",
    ("tcp", 6514): "syslog-TLS (exception)",
    ("tcp", 8078): "exception of the seed",
    ("tcp", 15672): "RabbitMQ management",
    ("tcp", 25672): "RabbitMQ clustering",
    ("tcp", NODE_PORT): f"NodePort -> pod :{POD_PORT}",
    ("udp", 111): "rpcbind",
}
"""What each scanned port stands for on an EFA node."""

OPEN = frozenset({"open"})
FILTERED = frozenset({"filtered"})
NOT_OPEN = frozenset({"open|filtered", "filtered"})
EXPECTED_AFTER: dict[Key, frozenset[str]] = {
    ("tcp", 22): OPEN,
    ("tcp", 111): FILTERED,
    ("tcp", 3306): FILTERED,
    ("tcp", 5672): FILTERED,
    ("tcp", 6514): OPEN,
    ("tcp", 8078): OPEN,
    ("tcp", 15672): FILTERED,
    ("tcp", 25672): FILTERED,
    ("tcp", NODE_PORT): FILTERED,
    ("udp", 111): NOT_OPEN,
}
"""Acceptable nmap states once the policy is in place."""

_COUNTERS = re.compile(r"\s*\[\d+:\d+\]$")
_OWNED = re.compile(r"\b(?:" + "|".join(OWNED_CHAINS) + r")\b")


class DemoAbortedError(Exception):
    """The demo cannot go on (bad environment or configuration)."""


class SignalledError(BaseException):
    """SIGTERM or SIGHUP arrived; raised like KeyboardInterrupt so that cleanup runs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGHUP into an exception, so that cleanup still runs."""
    raise SignalledError(signum)


def _state_text(states: frozenset[str]) -> str:
    """How an expectation reads in the tables."""
    if states == NOT_OPEN:
        return "not open"
    return " or ".join(sorted(states))


def _label(key: Key) -> str:
    """``3306/tcp``."""
    return f"{key[1]}/{key[0]}"


def _indent(text: str, prefix: str = "    ") -> str:
    """Indent every line of ``text``; an empty text reads as ``(no output)``."""
    lines = text.rstrip("\n").splitlines() or ["(no output)"]
    return "\n".join(prefix + line for line in lines)


def write_config(backend: str, directory: Path) -> Path:
    """Write a copy of the default policy with ``backend`` set explicitly."""
    text = DEFAULT_CONFIG.read_text()
    new, count = re.subn(r'(?m)^backend\s*=\s*"[^"]*"', f'backend = "{backend}"', text)
    if count != 1:
        raise DemoAbortedError(
            f"{DEFAULT_CONFIG}: expected one `backend = ...` line, found {count}"
        )
    path = directory / "efa-guard.toml"
    path.write_text(new)
    return path


def foreign_view(save: str) -> dict[str, list[str]]:
    """``iptables-save`` output per table, minus efa-guard's lines, comments and counters."""
    tables: dict[str, list[str]] = {}
    current = "?"
    for raw in save.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = line[1:]
            tables.setdefault(current, [])
            continue
        if _OWNED.search(line):
            continue
        tables.setdefault(current, []).append(_COUNTERS.sub("", line))
    return tables


def dropped_packets(listing: str) -> int:
    """Sum the packet counters of the rules in an ``iptables -v -x -n -L CHAIN`` listing."""
    total = 0
    for line in listing.splitlines()[2:]:
        first = line.split(maxsplit=1)[:1]
        if first and first[0].isdigit():
            total += int(first[0])
    return total


@dataclass
class Demo:
    """One walk-through on one backend, in one sandbox."""

    sb: Sandbox
    backend: str
    config: Path
    failures: list[str] = field(default_factory=list)

    @property
    def ipt(self) -> str:
        """The iptables binary of the backend under test."""
        return f"iptables-{self.backend}"

    # -- output and expectations ------------------------------------------

    @staticmethod
    def heading(title: str) -> None:
        """Print a section title."""
        print(f"\n=== {title} " + "=" * max(3, 76 - len(title)))

    def expect(self, ok: bool, what: str, seen: str = "") -> bool:
        """Record an expectation; print and remember it when it fails."""
        if not ok:
            message = what + (f" (seen: {seen})" if seen else "")
            self.failures.append(message)
            print(f"  !! UNEXPECTED: {message}")
        return ok

    # -- commands in the namespaces ---------------------------------------

    def guard(self, argv: Sequence[str], *, show: bool = True) -> str:
        """Run a command in the guard namespace (it must succeed); return its stdout."""
        if show:
            print(f"guard# {' '.join(argv)}")
        out = self.sb.run(argv).stdout
        if show:
            print(_indent(out))
        return out

    def efa(
        self, *args: str, rc: int, contains: Sequence[str] = (), show: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``efa-guard ARGS --config $CONFIG`` in the guard namespace and check it."""
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        argv = [
            "env",
            f"PYTHONPATH={pythonpath}",
            sys.executable,
            "-m",
            "efa_guard",
            *args,
            "--config",
            str(self.config),
        ]
        proc = self.sb.run(argv, check=False)
        shown = f"efa-guard {' '.join(args)} --config $CONFIG"
        if show:
            print(f"guard# {shown}")
            print(_indent(proc.stdout))
            if proc.stderr.strip():
                print(_indent(proc.stderr, "    stderr: "))
            print(f"    (exit {proc.returncode})")
        if (
            not self.expect(
                proc.returncode == rc, f"`{shown}` exits {rc}", f"exit {proc.returncode}"
            )
            and not show
        ):
            print(_indent(proc.stdout + proc.stderr))
        for text in contains:
            self.expect(
                text in proc.stdout,
                f"`{shown}` output mentions {text!r}",
                proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "no output",
            )
        return proc

    def scan(self, tcp: Iterable[int] = SCAN_TCP, udp: Iterable[int] = SCAN_UDP) -> dict[Key, str]:
        """Scan the guard from outside with nmap, saying so."""
        tcp, udp = list(tcp), list(udp)
        spec = ",".join([f"T:{p}" for p in tcp] + [f"U:{p}" for p in udp])
        kinds = " ".join(flag for flag, ports in (("-sS", tcp), ("-sU", udp)) if ports)
        print(f"outside# nmap -Pn {kinds} -p {spec} {GUARD_ADDR}")
        return self.sb.nmap(tcp=tcp, udp=udp)

    def check_state(self, result: dict[Key, str], key: Key, want: frozenset[str]) -> bool:
        """Expect port ``key`` in one of the states ``want``; print the finding."""
        state = result[key]
        ok = self.expect(
            state in want, f"nmap sees {_label(key)} {_state_text(want)}", f"{state!r}"
        )
        if ok:
            print(f"    {_label(key)}: {state}")
        return ok

    # -- the walk-through -------------------------------------------------

    def setup(self) -> str:
        """Step 1: listeners, the NodePort and the foreign rules; return iptables-save."""
        self.heading("1. The sandbox")
        sb = self.sb
        print(f"guard namespace   {sb.guard}: eth0 {GUARD_ADDR}, the EFA node")
        print(f"outside namespace {sb.outside}: {OUTSIDE_ADDR}, the scanner")
        print(f"pod namespace     {sb.pod}: a Kubernetes pod behind a NodePort")
        sb.start_listeners(tcp=TCP_LISTEN, udp=UDP_LISTEN)
        print(f"listening in the guard: TCP {', '.join(map(str, TCP_LISTEN))}; UDP 111")
        sb.add_nodeport(iptables=self.ipt, node_port=NODE_PORT, pod_port=POD_PORT)
        print(f"kube-proxy-like NodePort: {GUARD_ADDR}:{NODE_PORT} -> DNAT -> pod :{POD_PORT}")
        sb.add_foreign_rules(iptables=self.ipt)
        print("kube-proxy/kubelet-like foreign rules added (KUBE-* chains in filter, raw, mangle)")
        print(f"backend: {self.backend} ({self.ipt}); CONFIG={self.config}")
        print(f'  (a copy of config/efa-guard.toml with backend = "{self.backend}")')
        return sb.save(iptables=self.ipt)

    def before(self) -> dict[Key, str]:
        """Step 2: the scan before efa-guard; every port is open."""
        self.heading("2. Before: what an outside host sees")
        result = self.scan()
        print(f"    {'port/proto':<11} {'service':<26} state")
        for key, state in result.items():
            print(f"    {_label(key):<11} {SERVICES[key]:<26} {state}")
        bad = {_label(k): s for k, s in result.items() if s != "open"}
        self.expect(not bad, "before efa-guard every scanned port is open", str(bad))
        return result

    def enforce(self) -> None:
        """Step 3: render, check (CRITICAL), apply, check (OK), the chains."""
        self.heading("3. efa-guard: render, check, apply, check")
        print("The policy as iptables-restore input (nothing is written by `render`):")
        self.efa("render", rc=0, contains=("*filter", "EFA_INPUT", "*raw", "EFA_NODEPORTS"))
        print("\nThe node is not compliant yet:")
        self.efa("check", rc=2, contains=("EFA-GUARD CRITICAL", "chain missing"))
        print("\nPut the policy in place:")
        self.efa("apply", rc=0, contains=("policy asserted",))
        print("\nApplying again changes nothing (idempotent):")
        self.efa("apply", rc=0, contains=("no change",))
        print("\nCompliant now:")
        self.efa("check", rc=0, contains=("EFA-GUARD OK",))
        print("\nThe owned chains:")
        self.guard([self.ipt, "-v", "-n", "-L", "EFA_INPUT"])
        self.guard([self.ipt, "-t", "raw", "-v", "-n", "-L", "EFA_NODEPORTS"])
        print("\nTheir jumps come first; the foreign rules follow, untouched:")
        inputs = self.guard([self.ipt, "-S", "INPUT"]).splitlines()
        raw = self.guard([self.ipt, "-t", "raw", "-S", "PREROUTING"]).splitlines()
        self.expect(
            inputs[1:2] == ["-A INPUT -j EFA_INPUT"], "INPUT starts with the jump", str(inputs)
        )
        self.expect(
            raw[1:2] == ["-A PREROUTING -j EFA_NODEPORTS"],
            "raw PREROUTING starts with the jump",
            str(raw),
        )

    def after(self, before: dict[Key, str]) -> None:
        """Step 4: the same scan, side by side, and the verdict."""
        self.heading("4. After: the same scan")
        result = self.scan()
        print(
            f"    {'port/proto':<11} {'service':<26} {'before':<9} {'after':<14} "
            f"{'expected':<9} verdict"
        )
        wrong: list[str] = []
        for key, state in result.items():
            want = EXPECTED_AFTER[key]
            verdict = "ok" if state in want else "UNEXPECTED"
            if state not in want:
                wrong.append(f"{_label(key)} is {state!r}, expected {_state_text(want)}")
            print(
                f"    {_label(key):<11} {SERVICES[key]:<26} {before[key]:<9} {state:<14} "
                f"{_state_text(want):<9} {verdict}"
            )
        if self.expect(not wrong, "after apply every port is as the policy says", "; ".join(wrong)):
            print(
                "\nVerdict: MySQL 3306, rpcbind 111/tcp, RabbitMQ 5672, 15672 and 25672 and\n"
                f"the NodePort {NODE_PORT} are filtered (dropped, no answer); 6514 and 8078\n"
                "(the seed's exceptions) and 22 (below 1024) stay open; 111/udp is no longer\n"
                "open (nmap says open|filtered: no answer at all)."
            )
        filt = dropped_packets(
            self.guard([self.ipt, "-v", "-x", "-n", "-L", "EFA_INPUT"], show=False)
        )
        raw = dropped_packets(
            self.guard([self.ipt, "-t", "raw", "-v", "-x", "-n", "-L", "EFA_NODEPORTS"], show=False)
        )
        print(
            f"Counters: EFA_INPUT dropped {filt} packet(s), EFA_NODEPORTS {raw}, during the scan."
        )
        self.expect(filt > 0, "EFA_INPUT counted dropped packets", str(filt))
        self.expect(raw > 0, "EFA_NODEPORTS counted dropped packets", str(raw))

    def detect_and_fix(self, drift: Sequence[str]) -> None:
        """``check`` names the drift (CRITICAL), ``check --fix`` corrects it, ``check`` is OK."""
        self.efa("check", rc=2, contains=("EFA-GUARD CRITICAL", *drift))
        self.efa("check", "--fix", rc=1, contains=("EFA-GUARD WARNING - corrected",))
        proc = self.efa("check", rc=0, contains=("EFA-GUARD OK",), show=False)
        print(f"  and then: {proc.stdout.splitlines()[0] if proc.stdout else '(no output)'}")

    def tamper(self) -> None:
        """Step 5: three tampers, each detected and repaired."""
        self.heading("5. Tampering: detected by `check`, repaired by `check --fix`")
        print("a) Someone flushes the owned chain:")
        self.guard([self.ipt, "-F", "EFA_INPUT"])
        self.detect_and_fix(("filter/EFA_INPUT", "missing"))

        print("\nb) Someone inserts an ACCEPT above the jump, opening MySQL again:")
        stray = ["-p", "tcp", "--dport", "3306", "-j", "ACCEPT"]
        self.guard([self.ipt, "-I", "INPUT", "1", *stray])
        self.check_state(self.scan(tcp=[3306], udp=[]), ("tcp", 3306), OPEN)
        self.detect_and_fix(("filter/EFA_INPUT", "first"))
        self.check_state(self.scan(tcp=[3306], udp=[]), ("tcp", 3306), FILTERED)
        print("efa-guard moved its jump back on top; the stray rule is not its own, so it stays:")
        inputs = self.guard([self.ipt, "-S", "INPUT"]).splitlines()
        self.expect(
            inputs[1:3]
            == ["-A INPUT -j EFA_INPUT", "-A INPUT -p tcp -m tcp --dport 3306 -j ACCEPT"],
            "INPUT holds the jump first, then the stray ACCEPT",
            str(inputs),
        )
        print("The operator removes the stray rule:")
        self.guard([self.ipt, "-D", "INPUT", *stray])

        print("\nc) Someone deletes the raw jump, exposing the NodePort:")
        self.guard([self.ipt, "-t", "raw", "-D", "PREROUTING", "-j", "EFA_NODEPORTS"])
        self.check_state(self.scan(tcp=[NODE_PORT], udp=[]), ("tcp", NODE_PORT), OPEN)
        self.detect_and_fix(("raw/EFA_NODEPORTS", "jump"))
        self.check_state(self.scan(tcp=[NODE_PORT], udp=[]), ("tcp", NODE_PORT), FILTERED)

        print("\nThe full scan once more, after all the repairs:")
        result = self.scan()
        wrong = [f"{_label(k)} is {s!r}" for k, s in result.items() if s not in EXPECTED_AFTER[k]]
        if self.expect(
            not wrong, "after the repairs every port is as in 'After'", "; ".join(wrong)
        ):
            print(f"    all {len(result)} ports as in 'After'")

    def foreign_untouched(self, save_before: str) -> None:
        """Step 6: iptables-save before and after, minus EFA lines and counters, are equal."""
        self.heading("6. The foreign rules were never touched")
        print(f"`{self.ipt}-save` from step 1, before efa-guard ran, compared with one taken now,")
        print("EFA_* lines and packet counters left out. The foreign KUBE-* chains and rules now:")
        before = foreign_view(save_before)
        after = foreign_view(self.sb.save(iptables=self.ipt))
        differences: list[str] = []
        for table in sorted(before.keys() | after.keys()):
            old, new = before.get(table, []), after.get(table, [])
            if old != new:
                gone = [f"-{line}" for line in old if line not in new]
                added = [f"+{line}" for line in new if line not in old]
                moved = "" if gone or added else " (same lines, different order)"
                differences.append(f"*{table}{moved}: " + " ".join(gone + added))
        kube = [f"*{t}: {line}" for t in sorted(after) for line in after[t] if "KUBE" in line]
        print(_indent("\n".join(kube)))
        lines = sum(len(v) for v in after.values())
        if self.expect(not differences, "foreign rules identical", "\n".join(differences)):
            print(
                f"Identical: {lines} lines in {len(after)} tables, every KUBE-* chain and rule in\n"
                "the same place as before. efa-guard wrote only its own chains and jumps."
            )


def run_demo(backend: str) -> int:
    """Run the walk-through in a fresh sandbox; return the exit status."""
    failures: list[str] = []
    names: tuple[str, ...] = ()
    started = time.monotonic()
    print(f"efa-guard demo on the {backend} backend (iptables-{backend}). Everything happens in")
    print("throw-away network namespaces; the host's firewall and interfaces are not touched.")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="efa-guard-demo-") as tmp,
            sandbox(prefix="efademo") as sb,
        ):
            names = (sb.guard, sb.outside, sb.pod)
            demo = Demo(sb=sb, backend=backend, config=write_config(backend, Path(tmp)))
            save_before = demo.setup()
            before = demo.before()
            demo.enforce()
            demo.after(before)
            demo.tamper()
            demo.foreign_untouched(save_before)
            failures = demo.failures
            Demo.heading("7. Cleanup")
    finally:
        if names:
            left = subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, check=False
            ).stdout.split()
            still = [n for n in names if n in left]
            if still:
                print(f"!! namespaces NOT removed: {', '.join(still)}", file=sys.stderr)
            else:
                print("sandbox removed")
    elapsed = time.monotonic() - started
    if failures:
        print(f"\nFAILED ({elapsed:.1f} s): {len(failures)} expectation(s) not met:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print(f"\nAll expectations met on {backend} ({elapsed:.1f} s).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the demo; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--backend", choices=("nft", "legacy"), default="nft", help="iptables backend (default nft)"
    )
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"demo: cannot run, missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored
    # (a background job); SIGTERM and SIGHUP raise SignalledError.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        return run_demo(args.backend)
    except (SandboxError, DemoAbortedError) as exc:
        print(f"\ndemo aborted: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndemo interrupted (SIGINT)", file=sys.stderr)
        return 130
    except SignalledError as exc:
        print(f"\ndemo interrupted ({exc})", file=sys.stderr)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
