"""A real Prometheus (for tests and the demo) with our alert rules; always stopped by PID."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.harness import REPO

RULES = REPO / "config" / "prometheus" / "efa-guard-alerts.yml"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.create_server((host, 0)) as s:
        return int(s.getsockname()[1])


def prometheus_binary() -> str | None:
    """Debian's prometheus server, if installed."""
    return shutil.which("prometheus")


@dataclass(frozen=True)
class Prometheus:
    """A running server and its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    netns: str | None = None  # the network namespace it runs in (None: this one)

    def get(self, url: str) -> bytes:
        """GET `url` from where the server runs (inside its namespace, if it has one)."""
        if self.netns is None:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a local http URL
                return bytes(resp.read())
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-c", _FETCH, url]
        proc = subprocess.run(argv, capture_output=True, check=False, timeout=15)
        if proc.returncode != 0:
            raise OSError(proc.stderr.decode(errors="replace").strip().splitlines()[-1:])
        return proc.stdout

    def api(self, path: str, **params: str) -> Any:  # noqa: ANN401 - JSON
        """GET /api/v1/<path>; the `data` of a successful answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = json.loads(self.get(f"{self.url}/api/v1/{path}{query}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def firing(self) -> list[dict[str, str]]:
        """The labels of every firing alert."""
        return [a["labels"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"]

    def wait(self, what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll until `ok()`; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                msg = f"timed out waiting for {what}"
                raise AssertionError(msg)
            time.sleep(0.25)


def config(targets: Sequence[str], *, job: str = "efa-guard", interval: str = "1s") -> str:
    """prometheus.yml: one job scraping `targets`, our alert rules evaluated every `interval`.

    JSON is YAML, so no YAML library is needed.
    """
    return json.dumps(
        {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        },
        indent=2,
    )


_FETCH = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
    sys.stdout.buffer.write(resp.read())
"""


@contextmanager
def prometheus(
    workdir: Path, targets: Sequence[str], *, job: str = "efa-guard", netns: str | None = None
) -> Iterator[Prometheus]:
    """Start Prometheus on a free loopback port scraping `targets`; stop it (by PID) afterwards.

    With `netns`, it runs inside that network namespace (`ip netns exec` execs it, so the PID
    is the server's) on that namespace's loopback, which must be up.
    """
    exe = prometheus_binary()
    assert exe is not None, "prometheus missing"
    (workdir / "prometheus.yml").write_text(config(targets, job=job))
    port = 9090 if netns else free_port()  # a namespace of our own has every port free
    argv = [
        *(["ip", "netns", "exec", netns] if netns else []),
        exe,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(url=f"http://127.0.0.1:{port}", process=proc, netns=netns)
    try:
        server.wait("prometheus ready", lambda: _ready(server), timeout=30)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready(server: Prometheus) -> bool:
    if server.process.poll() is not None:
        msg = f"prometheus exited {server.process.returncode}"
        raise AssertionError(msg)
    try:
        return server.get(f"{server.url}/-/ready").strip().endswith(b"Ready.")
    except (OSError, subprocess.TimeoutExpired):
        return False
