"""Network-namespace sandbox for exercising efa-guard against real iptables.

Everything happens inside three network namespaces created here and always
deleted again; the host's own firewall, interfaces and routes are never
touched.  Only addresses from the IPv4 benchmarking range 198.18.0.0/15 and
the IPv6 unique-local prefix fd00:efa::/48 are used::

    outside ns                   guard ns                       pod ns
    ext0 198.18.0.1/24     <-->  eth0 198.18.0.2/24
         fd00:efa::1/64               fd00:efa::2/64
                                 pod0 198.18.1.1/24     <-->  eth0 198.18.1.2/24
                                      fd00:efa:1::1/64             fd00:efa:1::2/64
                                                              (default via 198.18.1.1
                                                               and via fd00:efa:1::1)

IPv6 addresses are added with ``nodad`` (usable at once), and the guard
namespace forwards IPv6 (``net.ipv6.conf.all.forwarding=1``, set inside it
only).  IPv4 forwarding is only enabled by :meth:`Sandbox.add_nodeport`.

The guard namespace plays the node protected by efa-guard, the outside
namespace the scanner (real ``nmap`` runs there), the pod namespace a
Kubernetes pod reached through a kube-proxy-like NodePort DNAT.

Typical use::

    with sandbox() as sb:
        sb.start_listeners(tcp=[3306, 111], udp=[111])
        sb.run(["iptables-nft", "-I", "INPUT", "-p", "tcp", "--dport", "3306", "-j", "DROP"])
        assert sb.nmap(tcp=[3306, 111])[("tcp", 3306)] == "filtered"

and over IPv6 (``ip6tables`` is a separate ruleset)::

    with sandbox() as sb:
        sb.start_listeners(tcp=[3306], udp=[], host="::")  # dual-stack
        sb.run(["ip6tables-nft", "-I", "INPUT", "-p", "tcp", "--dport", "3306", "-j", "DROP"])
        assert sb.nmap6(tcp=[3306])[("tcp", 3306)] == "filtered"
        assert sb.nmap(tcp=[3306])[("tcp", 3306)] == "open"

This is a plain module (no pytest import) shared by the test suite, the demo
and the benchmarks.  It needs root, ``ip`` (iproute2), ``nmap`` and the
iptables binaries; :func:`missing_tools` says what is absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from tools.harness import HarnessError, stop_process

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

LISTEN_PY = Path(__file__).resolve().with_name("listen.py")
"""The listener helper started by :meth:`Sandbox.start_listeners`."""

GUARD_ADDR = "198.18.0.2"
"""Address of the guard namespace on its outside-facing ``eth0``."""
OUTSIDE_ADDR = "198.18.0.1"
"""Address of the outside (scanner) namespace on ``ext0``."""
GUARD_POD_ADDR = "198.18.1.1"
"""Address of the guard namespace on its pod-facing ``pod0``."""
POD_ADDR = "198.18.1.2"
"""Address of the pod namespace on its ``eth0``."""

GUARD_ADDR6 = "fd00:efa::2"
"""IPv6 address of the guard namespace on its outside-facing ``eth0`` (/64)."""
OUTSIDE_ADDR6 = "fd00:efa::1"
"""IPv6 address of the outside (scanner) namespace on ``ext0`` (/64)."""
GUARD_POD_ADDR6 = "fd00:efa:1::1"
"""IPv6 address of the guard namespace on its pod-facing ``pod0`` (/64)."""
POD_ADDR6 = "fd00:efa:1::2"
"""IPv6 address of the pod namespace on its ``eth0`` (/64)."""

REQUIRED_TOOLS = ("ip", "nmap", "iptables-nft", "iptables-legacy")
"""Executables the sandbox needs on PATH."""

READY_TIMEOUT = 10.0
"""Seconds to wait for the listener helper to print ``ready``."""

NMAP_TIMING = (
    "-T4",
    "--max-retries", "1",
    # veth round trips are microseconds: do not wait seconds for an answer
    # that will never come from a filtered port.
    "--initial-rtt-timeout", "100ms",
    "--max-rtt-timeout", "250ms",
)  # fmt: skip
"""Timing options added to every scan.

No ``--host-timeout`` on purpose: a host that hits it is dropped from the
XML with all its ports, which would hide filtered ports; the subprocess
timeout of :meth:`Sandbox.nmap` guards against hangs instead.
"""


NODEPORT_RULES = """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m tcp --dport {node_port} -j DNAT --to-destination {pod_addr}:{pod_port}
COMMIT
"""
"""``iptables-restore`` input of :meth:`Sandbox.add_nodeport` (a ``str.format`` template)."""

NODEPORT6_RULES = """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m tcp --dport {node_port} -j DNAT --to-destination [{pod_addr}]:{pod_port}
COMMIT
"""
"""``ip6tables-restore`` input of :meth:`Sandbox.add_nodeport6` (a ``str.format`` template)."""

FOREIGN_RULES = """\
*raw
:KUBE-RAW-TEST - [0:0]
-A PREROUTING -j KUBE-RAW-TEST
-A KUBE-RAW-TEST -m comment --comment "efa-guard sandbox foreign raw rule" -j RETURN
COMMIT
*mangle
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-I INPUT 1 -j KUBE-FIREWALL
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" \
-j KUBE-SERVICES
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 \
-m comment --comment "block incoming localnet connections" \
-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-SERVICES -d 198.18.2.10/32 -p tcp -m comment --comment "default/nosvc has no endpoints" \
-m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""
"""``iptables-restore`` input of :meth:`Sandbox.add_foreign_rules`."""


class SandboxError(HarnessError):
    """A sandbox command failed; carries the evidence.

    Attributes:
        argv: the full command line that was run.
        rc: its exit status, or ``None`` if it timed out / did not finish.
        stdout: what it printed on stdout (may be empty).
        stderr: what it printed on stderr (may be empty).

    """

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        rc: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        """Store the evidence and build a readable message from it."""
        self.argv: list[str] = list(argv)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        parts = [message]
        if self.argv:
            parts.append(f"argv: {self.argv!r}")
        parts.append(f"rc: {rc}")
        if stderr.strip():
            parts.append("stderr:\n" + _tail(stderr))
        super().__init__("\n".join(parts))


def _failed(message: str, proc: subprocess.CompletedProcess[str]) -> SandboxError:
    """A :class:`SandboxError` carrying the evidence of a finished command."""
    return SandboxError(
        message, argv=proc.args, rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr
    )


def _tail(text: str, lines: int = 20) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])


def _as_text(data: str | bytes | None) -> str:
    """Decode captured output that may be bytes, text or missing."""
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def _host(argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a namespace-management command (``ip netns ...``, ``ip -n ...``).

    Only ever used with commands that create, configure or delete the
    sandbox's own namespaces; raises :class:`SandboxError` on failure.
    """
    try:
        proc = subprocess.run(
            list(argv),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(
            f"timed out after {timeout} s", argv=argv, stderr=_as_text(exc.stderr)
        ) from None
    if proc.returncode != 0:
        raise _failed("command failed", proc)
    return proc


def _portlist(ports: Iterable[int]) -> list[int]:
    """Validate and de-duplicate ports, keeping their order."""
    out: list[int] = []
    for port in ports:
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"not a port number: {port!r}")
        if port not in out:
            out.append(port)
    return out


def missing_tools() -> list[str]:
    """Return what the sandbox needs but lacks.

    The names of :data:`REQUIRED_TOOLS` not found on PATH, plus ``"root"``
    when not running with effective uid 0.  An empty list means the sandbox
    can run.
    """
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@dataclasses.dataclass
class Sandbox:
    """Three network namespaces wired as outside <-> guard <-> pod.

    Build it with :func:`sandbox`, which also tears it down.  The fields are
    the namespace names; ``ns`` arguments default to :attr:`guard`.
    """

    guard: str
    outside: str
    pod: str
    _created: list[str] = dataclasses.field(default_factory=list, init=False, repr=False)
    _procs: list[subprocess.Popen[bytes]] = dataclasses.field(
        default_factory=list, init=False, repr=False
    )
    _closed: bool = dataclasses.field(default=False, init=False, repr=False)
    _pod_tcp: set[tuple[int, int]] = dataclasses.field(default_factory=set, init=False, repr=False)
    """``(4 or 6, port)`` of the pod TCP listeners started by ``add_nodeport*``."""

    # -- running things ---------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        ns: str | None = None,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside namespace ``ns`` (default: the guard) and wait.

        Runs ``ip netns exec <ns> *argv`` without a shell, in text mode, with
        stdout and stderr captured and ``input`` (if any) on stdin.  Raises
        :class:`SandboxError` when ``check`` and the exit status is not 0,
        and always when the command exceeds ``timeout`` seconds.
        """
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not a string")
        full = ["ip", "netns", "exec", ns or self.guard, *argv]
        try:
            proc = subprocess.run(
                full,
                check=False,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(
                f"timed out after {timeout} s",
                argv=full,
                stdout=_as_text(exc.stdout),
                stderr=_as_text(exc.stderr),
            ) from None
        if check and proc.returncode != 0:
            raise _failed("command failed", proc)
        return proc

    def start_listeners(
        self,
        *,
        tcp: Iterable[int],
        udp: Iterable[int],
        ns: str | None = None,
        host: str = "0.0.0.0",
        v6only: bool | None = None,
    ) -> None:
        """Start one background ``listen.py`` serving the given ports.

        TCP ports accept and close connections, UDP ports answer every
        datagram (so ``nmap -sU`` reports them ``open``).

        A ``host`` containing ``:`` (e.g. ``"::"``) binds IPv6 sockets.
        ``v6only`` applies to those only: ``None`` (default) leaves
        ``IPV6_V6ONLY`` to the namespace's ``net.ipv6.bindv6only`` (0, so
        a listener on ``::`` is dual-stack and also answers IPv4, and the
        same port cannot also be bound on ``0.0.0.0``); ``True`` makes it
        IPv6-only (so another listener can serve the port on ``0.0.0.0``);
        ``False`` forces dual-stack.  ``v6only`` with an IPv4 ``host``
        raises :class:`ValueError`.

        Returns once the helper has bound every port and printed
        ``ready``; raises :class:`SandboxError` (with the helper's stderr)
        if it fails or is not ready within :data:`READY_TIMEOUT` seconds.
        The process is stopped by :meth:`close`.
        """
        tcp_ports, udp_ports = _portlist(tcp), _portlist(udp)
        if not tcp_ports and not udp_ports:
            raise ValueError("start_listeners needs at least one TCP or UDP port")
        if v6only is not None and ":" not in host:
            raise ValueError(f"v6only needs an IPv6 host, not {host!r}")
        argv = [
            "ip",
            "netns",
            "exec",
            ns or self.guard,
            sys.executable,
            str(LISTEN_PY),
            "--host",
            host,
        ]
        if tcp_ports:
            argv += ["--tcp", ",".join(map(str, tcp_ports))]
        if udp_ports:
            argv += ["--udp", ",".join(map(str, udp_ports))]
        if v6only is not None:
            argv.append("--v6only" if v6only else "--no-v6only")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._procs.append(proc)
        try:
            line = _read_line(proc, READY_TIMEOUT)
        except BaseException:
            _stop(proc)
            raise
        if line.strip() != b"ready":
            exited = proc.poll() is not None
            err = _stop(proc)
            raise SandboxError(
                "listener exited before ready"
                if exited
                else f"listener not ready within {READY_TIMEOUT} s",
                argv=argv,
                rc=proc.returncode if exited else None,
                stdout=line.decode(errors="replace"),
                stderr=err.decode(errors="replace"),
            )

    # -- firewall fixtures ------------------------------------------------

    def add_nodeport(self, *, iptables: str, node_port: int = 31672, pod_port: int = 5672) -> None:
        """Add a kube-proxy-like NodePort in the guard ns, DNAT-ing to the pod.

        Creates nat chains KUBE-SERVICES and KUBE-NODEPORTS the way
        kube-proxy does (PREROUTING -> KUBE-SERVICES -> addrtype LOCAL ->
        KUBE-NODEPORTS -> DNAT to ``198.18.1.2:pod_port``) with
        ``<iptables>-restore --noflush``, enables IPv4 forwarding inside the
        guard namespace only, and starts a TCP listener on ``pod_port`` on
        ``0.0.0.0`` in the pod namespace (unless an earlier ``add_nodeport``
        call already did).  ``iptables`` is e.g. ``"iptables-nft"`` or
        ``"iptables-legacy"``.
        """
        node_port, pod_port = _portlist([node_port])[0], _portlist([pod_port])[0]
        rules = NODEPORT_RULES.format(node_port=node_port, pod_addr=POD_ADDR, pod_port=pod_port)
        self.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        if (4, pod_port) not in self._pod_tcp:
            self.start_listeners(tcp=[pod_port], udp=[], ns=self.pod)
            self._pod_tcp.add((4, pod_port))
        self.run([f"{iptables}-restore", "--noflush"], input=rules)

    def add_nodeport6(
        self, *, ip6tables: str, node_port: int = 31672, pod_port: int = 5672
    ) -> None:
        """Add the IPv6 twin of :meth:`add_nodeport` in the guard ns.

        The same kube-proxy-like nat chains, in the ``ip6tables`` ruleset,
        DNAT-ing to ``[fd00:efa:1::2]:pod_port``, applied with
        ``<ip6tables>-restore --noflush`` in the guard namespace (whose IPv6
        forwarding the sandbox enables at setup).  Starts an IPv6-only
        (``IPV6_V6ONLY``) TCP listener on ``[::]:pod_port`` in the pod
        namespace unless an earlier ``add_nodeport6`` call already did; it
        coexists with the ``0.0.0.0`` one of :meth:`add_nodeport`, in
        either order.  ``ip6tables`` is e.g. ``"ip6tables-nft"`` or
        ``"ip6tables-legacy"``.
        """
        node_port, pod_port = _portlist([node_port])[0], _portlist([pod_port])[0]
        rules = NODEPORT6_RULES.format(node_port=node_port, pod_addr=POD_ADDR6, pod_port=pod_port)
        if (6, pod_port) not in self._pod_tcp:
            self.start_listeners(tcp=[pod_port], udp=[], ns=self.pod, host="::", v6only=True)
            self._pod_tcp.add((6, pod_port))
        self.run([f"{ip6tables}-restore", "--noflush"], input=rules)

    def add_foreign_rules(self, *, iptables: str) -> None:
        """Add a small kube-proxy/kubelet-like set of rules efa-guard must keep.

        filter: chains KUBE-FIREWALL and KUBE-SERVICES, each with a rule,
        and jumps to both inserted at the top of INPUT (``-I INPUT 1``);
        raw: chain KUBE-RAW-TEST with a jump from PREROUTING; mangle: empty
        chains KUBE-IPTABLES-HINT and KUBE-KUBELET-CANARY.  None of these
        rules matches the sandbox's own traffic.  Applied with
        ``<iptables>-restore --noflush`` in the guard namespace.
        """
        rules = FOREIGN_RULES
        self.run([f"{iptables}-restore", "--noflush"], input=rules)

    def save(self, *, iptables: str) -> str:
        """Return ``<iptables>-save`` output of the guard namespace."""
        return self.run([f"{iptables}-save"]).stdout

    def save6(self, *, ip6tables: str) -> str:
        """Return ``<ip6tables>-save`` output of the guard namespace."""
        return self.run([f"{ip6tables}-save"]).stdout

    # -- scanning ---------------------------------------------------------

    def nmap(
        self,
        *,
        tcp: Iterable[int] = (),
        udp: Iterable[int] = (),
        target: str = GUARD_ADDR,
        timeout: float = 120,
    ) -> dict[tuple[str, int], str]:
        """Scan ``target`` with real nmap from the outside namespace.

        SYN scan for ``tcp``, UDP scan for ``udp``; a ``target`` containing
        ``:`` is scanned over IPv6 (``nmap -6``).  Returns the state of
        every requested port, e.g. ``{("tcp", 3306): "filtered", ("udp",
        111): "open"}``; nmap's states are ``open``, ``closed``,
        ``filtered``, ``open|filtered``, ``unfiltered``, ``closed|filtered``.
        Raises :class:`SandboxError` if nmap fails or leaves out a port.
        """
        tcp_ports, udp_ports = _portlist(tcp), _portlist(udp)
        if not tcp_ports and not udp_ports:
            raise ValueError("nmap needs at least one TCP or UDP port")
        spec = [f"T:{p}" for p in tcp_ports] + [f"U:{p}" for p in udp_ports]
        argv = ["nmap", "-Pn", "-n", "-oX", "-", *NMAP_TIMING]
        if ":" in target:
            argv.append("-6")
        if tcp_ports:
            argv.append("-sS")
        if udp_ports:
            argv.append("-sU")
        argv += ["-p", ",".join(spec), target]
        proc = self.run(argv, ns=self.outside, timeout=timeout)
        try:
            result = parse_nmap_xml(proc.stdout)
        except ET.ParseError as exc:
            raise _failed(f"cannot parse nmap XML: {exc}", proc) from None
        wanted = [("tcp", p) for p in tcp_ports] + [("udp", p) for p in udp_ports]
        missing = [key for key in wanted if key not in result]
        if missing:
            raise _failed(f"nmap reported no state for {missing}", proc)
        return {key: result[key] for key in wanted}

    def nmap6(
        self, *, tcp: Iterable[int] = (), udp: Iterable[int] = (), timeout: float = 120
    ) -> dict[tuple[str, int], str]:
        """Like :meth:`nmap`, over IPv6 against the guard's :data:`GUARD_ADDR6`."""
        return self.nmap(tcp=tcp, udp=udp, target=GUARD_ADDR6, timeout=timeout)

    # -- teardown ---------------------------------------------------------

    def close(self) -> None:
        """Stop started processes by PID and delete the namespaces.

        Idempotent.  Raises :class:`SandboxError` only if a namespace could
        not be deleted (after trying all of them); processes still running
        inside a namespace that this object did not start are reported with
        a warning, never killed.
        """
        if self._closed:
            return
        self._closed = True
        while self._procs:
            _stop(self._procs.pop())
        errors: list[SandboxError] = []
        for ns in reversed(self._created):
            with contextlib.suppress(SandboxError):
                pids = _host(["ip", "netns", "pids", ns]).stdout.split()
                if pids:
                    warnings.warn(
                        f"processes still in netns {ns} at teardown: {' '.join(pids)}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            try:
                _host(["ip", "netns", "delete", ns])
            except SandboxError as exc:
                errors.append(exc)
        self._created.clear()
        if errors:
            raise SandboxError("could not delete namespaces:\n" + "\n".join(str(e) for e in errors))

    # -- setup (used by sandbox()) ----------------------------------------

    def _setup(self) -> None:
        """Create the namespaces, veth pairs, addresses (IPv4 and IPv6) and routes."""
        for ns in (self.guard, self.outside, self.pod):
            _host(["ip", "netns", "add", ns])
            self._created.append(ns)
            _host(["ip", "-n", ns, "link", "set", "lo", "up"])
            # No IPv6 duplicate address detection on the interfaces created
            # below (they inherit `default`).  `nodad` covers the addresses
            # added by hand, but not the automatic link-local ones: while the
            # guard's fe80:: on pod0 is still tentative (~1-2 s) the kernel
            # sends no neighbour solicitation for *forwarded* packets, so the
            # IPv6 NodePort would look filtered at first.  Per namespace.
            self.run(
                [
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
                ns=ns,
            )
        g, o, p = self.guard, self.outside, self.pod
        # Created with `ip -n <guard>` so both ends are born inside the
        # sandbox namespaces: the names never meet the host's interfaces.
        _host(
            [
                "ip",
                "-n",
                g,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "ext0",
                "netns",
                o,
            ]
        )
        _host(
            [
                "ip",
                "-n",
                g,
                "link",
                "add",
                "pod0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                p,
            ]
        )
        for ns, dev, addr in (
            (g, "eth0", f"{GUARD_ADDR}/24"),
            (o, "ext0", f"{OUTSIDE_ADDR}/24"),
            (g, "pod0", f"{GUARD_POD_ADDR}/24"),
            (p, "eth0", f"{POD_ADDR}/24"),
        ):
            _host(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            _host(["ip", "-n", ns, "link", "set", dev, "up"])
        _host(["ip", "-n", p, "route", "add", "default", "via", GUARD_POD_ADDR])
        # Answer every closed UDP port: the default ICMP rate limit (1/s per
        # peer after a small burst) would turn closed UDP ports into
        # open|filtered in scans of many ports.  Per-namespace sysctl.
        self.run(["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"], ns=g)
        # IPv6: `nodad` makes the addresses usable at once instead of after
        # 1-2 s of duplicate address detection.
        for ns, dev, addr in (
            (g, "eth0", f"{GUARD_ADDR6}/64"),
            (o, "ext0", f"{OUTSIDE_ADDR6}/64"),
            (g, "pod0", f"{GUARD_POD_ADDR6}/64"),
            (p, "eth0", f"{POD_ADDR6}/64"),
        ):
            _host(["ip", "-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad"])
        _host(["ip", "-n", p, "-6", "route", "add", "default", "via", GUARD_POD_ADDR6])
        # The guard routes IPv6 (NodePort DNAT to the pod); the ICMPv6 rate
        # limit, like the IPv4 one above, would make closed UDP ports look
        # open|filtered.  Both sysctls are per namespace.
        self.run(
            [
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.icmp.ratelimit=0",
            ],
            ns=g,
        )


def parse_nmap_xml(text: str) -> dict[tuple[str, int], str]:
    """Parse ``nmap -oX`` output into ``{(protocol, port): state}``.

    Reads ``<port>`` elements and, for ports nmap folded into
    ``<extraports>`` (more than 25 sharing a state), the ``ports``
    attribute of ``<extrareasons>``.
    """
    root = ET.fromstring(text)  # noqa: S314 - our own nmap's output, not untrusted
    result: dict[tuple[str, int], str] = {}
    for host in root.iter("host"):
        for port in host.iter("port"):
            state = port.find("state")
            if state is not None:
                result[(port.get("protocol", ""), int(port.get("portid", "0")))] = state.get(
                    "state", ""
                )
        for extra in host.iter("extraports"):
            for reasons in extra.iter("extrareasons"):
                proto, ranges = reasons.get("proto"), reasons.get("ports")
                if not proto or not ranges:
                    continue
                for item in ranges.split(","):
                    lo, _, hi = item.partition("-")
                    for num in range(int(lo), int(hi or lo) + 1):
                        result.setdefault((proto, num), extra.get("state", ""))
    return result


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Read one line of ``proc``'s stdout, giving up after ``timeout`` s.

    Returns what was read (without waiting further) on EOF or timeout.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> bytes:
    """Stop a process we started: SIGTERM by PID, then SIGKILL, then reap.

    Closes its pipes and returns what it had written to stderr.
    """
    err = b""
    try:
        stop_process(proc, grace=grace)
        if proc.stderr is not None and not proc.stderr.closed:
            with contextlib.suppress(OSError, ValueError):
                err = _read_available(proc.stderr.fileno())
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return err


def _read_available(fd: int, limit: int = 1 << 20) -> bytes:
    """Read from ``fd`` until EOF or until nothing more is immediately ready."""
    out = b""
    while len(out) < limit:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


@contextlib.contextmanager
def sandbox(*, prefix: str = "efa") -> Iterator[Sandbox]:
    """Create a wired :class:`Sandbox` and always tear it down.

    Namespace names are ``<prefix>-<role>-<hex>`` with role ``g`` (guard),
    ``o`` (outside) and ``p`` (pod) and one random hex token per sandbox,
    e.g. ``efa-g-3fa9c1``.  Cleanup runs in ``finally``: after the body,
    on any exception (KeyboardInterrupt included) and if setup fails
    halfway, deleting only the namespaces this call created.
    """
    token = secrets.token_hex(3)
    sb = Sandbox(
        guard=f"{prefix}-g-{token}", outside=f"{prefix}-o-{token}", pod=f"{prefix}-p-{token}"
    )
    try:
        sb._setup()  # noqa: SLF001 - this factory is the only caller
        yield sb
    finally:
        sb.close()
