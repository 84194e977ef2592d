"""A Debian 12 container under systemd-nspawn, booted inside a test network namespace.

Used by the package's system test: the rootfs is built once with debootstrap and cached
(rebuilt when absent), every test run boots a fresh copy of it, and everything it starts
is stopped and removed, also on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("EFA_GUARD_ROOTFS_CACHE", "/var/cache/efa-guard-test"))
SUITE = "bookworm"
# What the installed package needs from Debian, present before `apt install ./efa-guard.deb`
# (the container has no network to download anything): its Depends, and the tools the test
# uses inside.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "iptables", "iproute2", "procps", "man-db",
    "python3", "python3-pyroute2", "python3-structlog", "python3-tenacity", "python3-watchdog",
    "python3-prometheus-client",  # the package's Depends since metrics
    "systemd-journal-remote",  # fleet test: journal-upload on nodes, journal-remote on a collector
)  # fmt: skip
# The cache is keyed by the package list: a branch with another list builds its own rootfs.
ROOTFS_VERSION = "2-" + hashlib.sha256(" ".join(sorted(PACKAGES)).encode()).hexdigest()[:8]


class ContainerError(Exception):
    """A container command failed; carries the evidence."""


def mirror() -> str:
    """The Debian mirror this machine's apt uses (never a hard-coded host)."""
    candidates: list[str] = []
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        text = path.read_text()
        for block in text.split("\n\n"):
            if re.search(rf"(?m)^Suites:.*\b{SUITE}\b", block) and "security" not in block:
                m = re.search(r"(?m)^URIs:\s*(\S+)", block)
                if m:
                    candidates.append(m.group(1))
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                candidates.append(parts[1])
    if not candidates:
        msg = f"no {SUITE} mirror in /etc/apt sources"
        raise ContainerError(msg)
    return candidates[0]


def rootfs() -> Path:
    """The cached Debian 12 rootfs, built with debootstrap when absent."""
    target = CACHE / f"{SUITE}-{ROOTFS_VERSION}"
    if (target / ".complete").exists():
        return target
    partial = CACHE / f"{SUITE}-{ROOTFS_VERSION}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(partial),
        mirror(),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        msg = f"debootstrap failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        raise ContainerError(msg)
    # No network in the container: apt must never try; and a machine id for the journal.
    (partial / "etc/apt/sources.list").write_text("")
    (partial / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    (partial / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


@dataclass
class Container:
    """One booted container; `run` executes inside it through nsenter."""

    name: str
    root: Path
    netns: str
    proc: subprocess.Popen[str] | None = None
    log: Path | None = None
    leader: int = 0
    _boots: list[subprocess.Popen[str]] = field(default_factory=list)

    def boot(self, timeout: float = 60) -> None:
        """Start systemd in the container and wait until it is up."""
        assert self.log is not None
        # Not `ip netns exec`: it remounts /sys, hiding the cgroup hierarchy nspawn needs.
        argv = [
            "systemd-nspawn",
            "--boot",
            "--quiet",
            f"--network-namespace-path=/run/netns/{self.netns}",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
            "--console=passive",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
        ]
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
        self._boots.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = (
                    f"systemd-nspawn exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                )
                raise ContainerError(msg)
            self.leader = _child_of(self.proc.pid)
            if self.leader:
                state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        msg = f"container did not finish booting in {timeout} s: {self.log.read_text()[-3000:]}"
        raise ContainerError(msg)

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,  # noqa: A002
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces)."""
        full = ["nsenter", f"--target={self.leader}", "--all", "--", *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "TERM": "dumb"}
        proc = subprocess.run(
            full, capture_output=True, text=True, check=False, input=input, timeout=timeout, env=env
        )
        if check and proc.returncode != 0:
            out = proc.stdout[-2000:] + proc.stderr[-2000:]
            msg = f"{' '.join(argv)} exited {proc.returncode}: {out}"
            raise ContainerError(msg)
        return proc

    def wait_stopped(self, timeout: float = 60) -> int:
        """Wait for systemd-nspawn to exit (after a poweroff or reboot in the container)."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Power the container off; kill it (by PID) if it does not stop."""
        for proc in self._boots:
            if proc.poll() is None:
                with contextlib.suppress(ContainerError, subprocess.TimeoutExpired):
                    self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)


def _child_of(pid: int) -> int:
    """The first child of a process (nspawn's is the container's init)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    return int(children[0]) if children else 0


@contextlib.contextmanager
def container(netns: str, workdir: Path) -> Iterator[Container]:
    """A fresh copy of the cached rootfs, booted in `netns`; always powered off and removed."""
    base = rootfs()
    root = workdir / "rootfs"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    (root / ".complete").unlink(missing_ok=True)
    c = Container(
        name=f"efa-{secrets.token_hex(3)}", root=root, netns=netns, log=workdir / "nspawn.log"
    )
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
