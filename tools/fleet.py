"""A small fleet: three guarded nodes serving /metrics, and a Prometheus scraping them.

Each node runs `efa-guard run`; a monitoring namespace runs a real Prometheus with the shipped
alert rules. Each node is a sandbox whose guard namespace gets a veth to the monitoring namespace:
198.19.N.1 there, 198.19.N.2 on node N (the benchmarking range). Used by the fleet
integration test and by `make demo`'s fleet section; nothing outside these namespaces.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tools.fightkit import WRITER
from tools.harness import write_config
from tools.sandbox import Sandbox

PORT = 9731


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def monitoring(boxes: list[Sandbox]) -> Iterator[str]:
    """A namespace with a veth to each box's guard: 198.19.N.1 here, 198.19.N.2 on node N."""
    ns = f"efaf-m-{secrets.token_hex(3)}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        for n, box in enumerate(boxes, start=1):
            _ip("-n", ns, "link", "add", f"node{n}", "type", "veth", "peer", "name", "fleet0",
                "netns", box.guard)  # fmt: skip
            _ip("-n", ns, "addr", "add", f"198.19.{n}.1/24", "dev", f"node{n}")
            _ip("-n", box.guard, "addr", "add", f"198.19.{n}.2/24", "dev", "fleet0")
            _ip("-n", ns, "link", "set", f"node{n}", "up")
            _ip("-n", box.guard, "link", "set", "fleet0", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


def address(n: int) -> str:
    """Node n's /metrics address, as Prometheus' `instance` label shows it."""
    return f"198.19.{n}.2:{PORT}"


def node_config(n: int, home: Path, backend: str = "nft") -> Path:
    """Node n's config: metrics on its fleet address, a one-second timer."""
    config = write_config(home / "g.toml", backend=backend)
    metrics = f'\n[metrics]\ntextfile_directory = ""\nlisten = "{address(n)}"\n'
    config.write_text(config.read_text() + metrics + "interval = 1.0\n")
    return config


def node_env(home: Path) -> dict[str, str]:
    """Run, state and systemd directories of node n's own."""
    env = {}
    for name in ("RUN", "STATE", "SYSTEMD"):
        (home / name.lower()).mkdir(mode=0o700, exist_ok=True)
        env[f"EFA_GUARD_{name}_DIR"] = str(home / name.lower())
    return env


def writer(box: Sandbox, every: float, seconds: float) -> subprocess.Popen[bytes]:
    """Someone deleting EFA_INPUT's rule 1 every `every` seconds in node `box`."""
    argv = ["ip", "netns", "exec", box.guard, sys.executable, "-c", WRITER]
    return subprocess.Popen([*argv, "iptables-nft", str(every), str(seconds)])


def demo(workdir: Path, say: Callable[[str], None]) -> list[str]:
    """`make demo`'s fleet section: what Prometheus sees of a tamper and of a fight.

    Returns the expectations that were not met (empty: all good).
    """
    from tools.prom import prometheus  # noqa: PLC0415
    from tools.runner import Daemon  # noqa: PLC0415
    from tools.sandbox import sandbox  # noqa: PLC0415

    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        boxes = [stack.enter_context(sandbox(prefix="efafleet")) for _ in range(3)]
        mon = stack.enter_context(monitoring(boxes))
        nodes = []
        for n, box in enumerate(boxes, start=1):
            home = workdir / f"node{n}"
            home.mkdir()
            nodes.append(Daemon(box.guard, node_config(n, home), env=node_env(home)))
            stack.callback(nodes[-1].stop)
        failures += [
            f"node daemon {d.pid} never asserted the policy"
            for d in nodes
            if d.wait_for("policy_asserted", timeout=30) is None
        ]
        targets = [address(n) for n in (1, 2, 3)]
        prom = stack.enter_context(prometheus(workdir, targets, netns=mon))
        say(f"Prometheus (in namespace {mon}) scrapes {', '.join(targets)} every second,")
        say("with the shipped alert rules (/usr/share/efa-guard/prometheus/).")
        prom.wait("three daemons up", lambda: len(prom.query('up{job="efa-guard"} == 1')) == 3)

        def corrections() -> dict[str, float]:
            result = prom.query("sum by (instance) (efa_guard_corrections_total)")
            return {r["metric"]["instance"]: float(r["value"][1]) for r in result}

        say("\n$ iptables-nft -D EFA_INPUT 1        # on node 2")
        boxes[1].run(["iptables-nft", "-D", "EFA_INPUT", "1"])
        prom.wait("node 2's correction", lambda: corrections().get(targets[1], 0.0) > 0)
        say("$ promql: sum by (instance) (efa_guard_corrections_total)")
        for instance, value in sorted(corrections().items()):
            say(f"    {instance}  {value:g}")
        say("\n$ a writer deleting rule 1 every 300 ms  # on node 3")
        fight = writer(boxes[2], 0.3, 40)
        stack.callback(fight.wait, timeout=15)
        stack.callback(fight.terminate)
        prom.wait("EfaGuardContested firing", lambda: bool(prom.firing()), timeout=45)
        firing = [(a["alertname"], a.get("instance", "")) for a in prom.firing()]
        say("$ curl .../api/v1/alerts   # firing")
        for name, instance in firing:
            say(f"    {name}  instance={instance}")
        counted = corrections()
        if counted.get(targets[0], 0.0) != 0:
            failures.append(f"node 1 shows corrections: {counted}")
        if counted.get(targets[1], 0.0) <= 0:
            failures.append("node 2's correction is not in Prometheus")
        if firing != [("EfaGuardContested", targets[2])]:
            failures.append(f"expected only node 3's EfaGuardContested firing, saw {firing}")
    return failures
