"""The optional /metrics HTTP endpoint: one thread, one registry, and (unlike 0.16's) stoppable."""

from __future__ import annotations

import errno
import socket
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from efa_guard.metrics import ListenError, parse_listen


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: scrapes every 15 s would flood the journal."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401 - base signature
        """Drop the line."""


class _Server4(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server4):
    address_family = socket.AF_INET6


@dataclass(frozen=True)
class Server:
    """A running endpoint; `stop()` closes its socket and joins its thread."""

    address: str
    bound: tuple[str, int]
    httpd: WSGIServer
    thread: threading.Thread

    @classmethod
    def start(cls, listen: str, registry: CollectorRegistry) -> Server:
        """Bind `listen` and serve in a daemon thread; ListenError names the address."""
        try:
            host, port = parse_listen(listen)
        except ValueError as e:
            msg = f"[metrics] listen: {e}"
            raise ListenError(msg) from e
        server_class = _Server6 if ":" in host else _Server4
        try:
            httpd = make_server(
                host, port, make_wsgi_app(registry), server_class, handler_class=_Quiet
            )
        except OSError as e:
            reason = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror or e
            msg = f"cannot listen on {listen} for metrics: {reason}"
            raise ListenError(msg) from e
        thread = threading.Thread(target=httpd.serve_forever, name=f"metrics {listen}", daemon=True)
        thread.start()
        bound = httpd.server_address
        return cls(address=listen, bound=(str(bound[0]), int(bound[1])), httpd=httpd, thread=thread)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
