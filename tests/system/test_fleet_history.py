"""Fleet history under systemd: two nodes upload their journal to a collector, history reads it.

Three Debian 12 containers (node1, node2, collector), each booted in a network namespace of
its own with the installed .deb. The collector's namespace has a veth to each node's
(198.19.N.1 there, 198.19.N.2 as the node's eth0, the management interface its policy guards).
The collector runs systemd-journal-remote with the shipped lab drop-in (plain HTTP on 19532,
socket-activated); each node runs systemd-journal-upload pointing at it: the distribution's
units, started by systemctl.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pkgbox import deb, wait_for
from support import need

from tools.harness import REPO
from tools.nspawn import Container, container

pytestmark = pytest.mark.system

HTTP_DROPIN = REPO / "config" / "journal" / "journal-remote-http.conf"
REMOTE_DIR = "/var/log/journal/remote"
NAMES = ("node1", "node2", "collector")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def fleet_network() -> Iterator[dict[str, str]]:
    """Three namespaces, the collector wired to each node by a veth; always deleted."""
    stamp = int(time.time() * 1000) % 1_000_000
    names = {name: f"efa-sf{name[0]}{name[-1]}-{stamp}" for name in NAMES}
    made: list[str] = []
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        hub = names["collector"]
        for n in (1, 2):
            node = names[f"node{n}"]
            _ip("-n", hub, "link", "add", f"node{n}", "type", "veth", "peer", "name", "eth0",
                "netns", node)  # fmt: skip
            _ip("-n", hub, "addr", "add", f"198.19.{n}.1/24", "dev", f"node{n}")
            _ip("-n", node, "addr", "add", f"198.19.{n}.2/24", "dev", "eth0")
            _ip("-n", hub, "link", "set", f"node{n}", "up")
            _ip("-n", node, "link", "set", "eth0", "up")
        yield names
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


def _install(c: Container, name: str, package: Path) -> None:
    """Boot the container as `name` and install the package."""
    (c.root / "etc" / "hostname").write_text(f"{name}\n")
    c.boot(timeout=120)
    shutil.copy(package, c.root / "root" / package.name)
    c.run(["apt-get", "install", "-y", f"/root/{package.name}"], timeout=300)
    wait_for(f"efa-guard active on {name}", lambda: _active(c, "efa-guard"))


def _active(c: Container, unit: str) -> bool:
    return c.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "active"


def _collect(c: Container) -> None:
    """journal-remote over plain HTTP, as the shipped lab example sets it up."""
    dropin = c.root / "etc/systemd/system/systemd-journal-remote.service.d"
    dropin.mkdir(parents=True)
    shutil.copy(HTTP_DROPIN, dropin / "http.conf")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "enable", "--now", "systemd-journal-remote.socket"])


def _upload(c: Container, n: int) -> None:
    """journal-upload to the collector's address on this node's link."""
    conf = c.root / "etc/systemd/journal-upload.conf.d"
    conf.mkdir(parents=True)
    (conf / "50-efa-guard.conf").write_text(f"[Upload]\nURL=http://198.19.{n}.1:19532\n")
    c.run(["systemctl", "enable", "--now", "systemd-journal-upload"])
    wait_for("journal-upload active", lambda: _active(c, "systemd-journal-upload"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Container]]:
    """node1, node2 and the collector, booted and installed in parallel, wired and uploading."""
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "ip"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    package = deb()
    with fleet_network() as names, contextlib.ExitStack() as stack:
        boxes = {
            name: stack.enter_context(container(ns, tmp_path_factory.mktemp(name)))
            for name, ns in names.items()
        }
        with ThreadPoolExecutor(max_workers=3) as pool:
            for done in [pool.submit(_install, c, name, package) for name, c in boxes.items()]:
                done.result()
        _collect(boxes["collector"])
        for n in (1, 2):
            _upload(boxes[f"node{n}"], n)
        yield boxes


def _history(c: Container, *args: str) -> list[dict[str, object]]:
    out = c.run(["efa-guard", "history", "--json", *args]).stdout
    entries: list[dict[str, object]] = json.loads(out)["events"]
    return entries


def _corrections(c: Container) -> list[dict[str, object]]:
    return _history(c, "--kind", "drift_corrected")


def test_a_tamper_on_each_node_reaches_the_collector(fleet: dict[str, Container]) -> None:
    """Each node's correction shows on the collector with its host, trigger, culprit, latency."""
    local: dict[str, dict[str, object]] = {}
    for name in ("node1", "node2"):
        node = fleet[name]
        node.run(["iptables", "-D", "EFA_INPUT", "1"])
        wait_for(f"{name}'s correction", functools.partial(_corrections, node))
        [local[name]] = _corrections(node)
        assert local[name]["host"] == name
    collector = fleet["collector"]

    def remote() -> list[dict[str, object]]:
        if collector.run(["test", "-d", REMOTE_DIR], check=False).returncode != 0:
            return []
        return _history(collector, "--directory", REMOTE_DIR, "--kind", "drift_corrected")

    wait_for("both corrections on the collector", lambda: len(remote()) >= 2, timeout=60)
    got = {str(e["host"]): e for e in remote()}
    assert set(got) == {"node1", "node2"}, got
    for name, mine in local.items():
        theirs = got[name]
        assert theirs["trigger"] == mine["trigger"] == "rule-change"
        assert str(theirs["culprit"]).startswith("iptables[")
        assert theirs["culprit"] == mine["culprit"]
        assert theirs["latency_ms"] == mine["latency_ms"]
        assert isinstance(theirs["latency_ms"], float)
        assert theirs["latency_ms"] > 0
    only = _history(collector, "--directory", REMOTE_DIR, "--host", "node2")
    assert {e["host"] for e in only} == {"node2"}
    table = collector.run(["efa-guard", "history", "--directory", REMOTE_DIR]).stdout
    assert "HOST" in table.splitlines()[0]
    assert any(" node1 " in line and "drift_corrected" in line for line in table.splitlines())
