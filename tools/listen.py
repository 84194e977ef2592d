"""Tiny TCP/UDP listener used by the efa-guard network-namespace sandbox.

It binds every requested port, prints ``ready`` on stdout (flushed) once
all of them are bound, and then serves until SIGTERM or SIGINT:

* TCP ports listen, accept each connection and close it at once;
* UDP ports answer every datagram with a short payload, so that a UDP
  scanner such as ``nmap -sU`` reports the port as ``open``.

Usage::

    python3 tools/listen.py --tcp 3306,111 --udp 111 [--host 0.0.0.0]
    python3 tools/listen.py --tcp 3306 --host :: [--v6only | --no-v6only]

A host containing ``:`` is bound as IPv6 (``AF_INET6``).  Whether such a
socket also serves IPv4 (as IPv4-mapped ``::ffff:a.b.c.d``) is decided by
``IPV6_V6ONLY``:

* no option (the default, unchanged): the option is not touched, so the
  namespace's ``net.ipv6.bindv6only`` sysctl decides; it is 0 on Linux
  unless changed, so a socket on ``::`` is *dual-stack* and its port
  cannot also be bound on ``0.0.0.0`` (``EADDRINUSE``);
* ``--v6only``: ``IPV6_V6ONLY=1``, IPv6 only, so the same port can be
  served separately on ``0.0.0.0`` by another listener;
* ``--no-v6only``: ``IPV6_V6ONLY=0``, dual-stack whatever the sysctl says.

The options are refused for an IPv4 host.

Exit status: 0 after a clean SIGTERM/SIGINT, 2 on bad arguments or when a
port cannot be bound (the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

UDP_REPLY = b"efa-guard-sandbox\n"


class StopServingError(Exception):
    """Raised from the signal handler to leave the serve loop cleanly."""


def _say(stream: TextIO, line: str) -> None:
    """Write one line and flush it: the sandbox reads ``ready`` as soon as it is written."""
    stream.write(line + "\n")
    stream.flush()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGINT into a clean shutdown."""
    raise StopServingError(signum)


def _ports(text: str) -> list[int]:
    """Parse a comma-separated port list such as ``3306,111``."""
    ports: list[int] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            port = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {item!r}") from None
        if not 1 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"port out of range: {port}")
        ports.append(port)
    return ports


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Build and run the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tcp", type=_ports, default=[], help="comma-separated TCP ports")
    parser.add_argument("--udp", type=_ports, default=[], help="comma-separated UDP ports")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (IPv6 if it has ':')")
    parser.add_argument(
        "--v6only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="IPv6 host only: set IPV6_V6ONLY to 1 (--v6only) or 0 (--no-v6only); "
        "default: leave it to net.ipv6.bindv6only (normally 0, dual-stack)",
    )
    args = parser.parse_args(argv)
    if not args.tcp and not args.udp:
        parser.error("give at least one --tcp or --udp port")
    if args.v6only is not None and ":" not in args.host:
        parser.error("--v6only/--no-v6only need an IPv6 --host (one containing ':')")
    return args


def _bind(
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    host: str,
    port: int,
    v6only: bool | None = None,
) -> socket.socket:
    """Create, bind (and for TCP, listen on) one non-blocking socket.

    ``v6only`` (``AF_INET6`` only) sets ``IPV6_V6ONLY`` before binding;
    ``None`` leaves it at the kernel default.
    """
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None and family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.settimeout(0.0)  # non-blocking
    except BaseException:
        sock.close()
        raise
    return sock


def _serve(sel: selectors.BaseSelector) -> None:
    """Serve accepted connections and datagrams until a signal arrives."""
    while True:
        for key, _events in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if key.data == "tcp":
                    conn, _addr = sock.accept()
                    conn.close()
                else:
                    _data, addr = sock.recvfrom(65535)
                    sock.sendto(UDP_REPLY, addr)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # e.g. ECONNABORTED, ICMP errors on UDP
                _say(sys.stderr, f"listen.py: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    """Bind the requested ports, announce ``ready`` and serve until signalled."""
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    host: str = args.host
    v6only: bool | None = args.v6only
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for kind, ports, tag in (
            (socket.SOCK_STREAM, args.tcp, "tcp"),
            (socket.SOCK_DGRAM, args.udp, "udp"),
        ):
            for port in ports:
                try:
                    sock = _bind(family, kind, host, port, v6only)
                except OSError as exc:
                    _say(sys.stderr, f"listen.py: cannot bind {tag} {host} port {port}: {exc}")
                    return 2
                sockets.append(sock)
                sel.register(sock, selectors.EVENT_READ, tag)
        _say(sys.stdout, "ready")
        _serve(sel)
    except StopServingError:
        return 0
    finally:
        sel.close()
        for sock in sockets:
            sock.close()
    return 0  # pragma: no cover - _serve only returns by signal


if __name__ == "__main__":
    sys.exit(main())
