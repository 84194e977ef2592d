"""The built .deb installed in a booted nspawn container, and what the system tests ask of it."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import support
from support import need

from tools.harness import REPO
from tools.nspawn import Container, container

# What policy-rc.d answers to forbid starting a service (invoke-rc.d(8)).
_POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def deb() -> Path:
    """The package `make deb` built."""
    found = sorted((REPO / "dist").glob("efa-guard_*_all.deb"))
    need(bool(found), "no dist/efa-guard_*_all.deb: run `make deb` first")
    return found[-1]


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """support.wait_for at a container's pace: 30 s, every 0.2 s."""
    support.wait_for(what, predicate, timeout, every=0.2)


@contextlib.contextmanager
def installed(workdir: Path, *, start: bool = True) -> Iterator[Container]:
    """A booted container in a fresh network namespace with the package installed by apt.

    With start=False the service is enabled but not started (a policy-rc.d forbids it
    during the install), as on a host prepared before its first boot.
    """
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "ip"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    package = deb()
    netns = f"efa-s-{int(time.time() * 1000) % 1_000_000}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # The management interface the policy names (rules on a missing one match nothing).
        # (a veth pair: this kernel may have no dummy driver)
        argv = ["ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]
        subprocess.run(argv, check=True)
        with container(netns, workdir) as c:
            c.boot()
            shutil.copy(package, c.root / "root" / package.name)
            policy = c.root / "usr" / "sbin" / "policy-rc.d"
            if not start:
                policy.write_text(_POLICY_RC_D)
                policy.chmod(0o755)
            c.run(["apt-get", "install", "-y", f"/root/{package.name}"], timeout=300)
            policy.unlink(missing_ok=True)
            yield c
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def active(c: Container) -> bool:
    """Whether the service is active."""
    return c.run(["systemctl", "is-active", "efa-guard"], check=False).stdout.strip() == "active"


def prop(c: Container, unit: str, name: str) -> str:
    """One property of a unit."""
    return c.run(["systemctl", "show", "-P", name, unit]).stdout.strip()


def check(c: Container) -> subprocess.CompletedProcess[str]:
    """`efa-guard check` inside the container."""
    return c.run(["efa-guard", "check"], check=False)


WATCH = r"""
import subprocess, sys, time
end = time.monotonic() + float(sys.argv[1])
gaps = 0
while time.monotonic() < end:
    head = subprocess.run(["iptables", "-w", "-S", "INPUT", "1"], capture_output=True, text=True)
    own = subprocess.run(["iptables", "-w", "-S", "EFA_INPUT"], capture_output=True, text=True)
    if head.stdout.strip() != "-A INPUT -j EFA_INPUT" or own.stdout.count("-j DROP") < 4:
        gaps += 1
print(gaps)
"""


def watcher(c: Container, seconds: float) -> subprocess.Popen[str]:
    """Samples the policy in the container for `seconds`, then prints how often it was missing."""
    argv = ["nsenter", f"--target={c.leader}", "--all", "--", "python3", "-c", WATCH, str(seconds)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def upgrade_package(c: Container, tmp: Path) -> str:
    """The same package with its version bumped: an upgrade."""
    work = tmp / "repack"
    subprocess.run(["dpkg-deb", "-R", str(deb()), str(work)], check=True)
    control = work / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"(?m)^Version: (\S+)$", text)
    assert version
    control.write_text(text.replace(version.group(0), f"Version: {version.group(1)}+1"))
    name = f"efa-guard_{version.group(1)}+1_all.deb"
    subprocess.run(
        ["dpkg-deb", "-b", str(work), str(c.root / "root" / name)], check=True, capture_output=True
    )
    return name
