"""How the metrics leave: a view of the registry, and the optional /metrics HTTP endpoint.

Imported only once a `Metrics` exists (it imports prometheus_client).
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from efa_guard.metrics.output import ListenError, parse_listen


class _WithoutCreated(Collector):
    """The source registry minus the `_created` series of counters and histograms.

    In the text format they are gauges of their own that nobody alerts on; dropping them halves
    the counters' series. (0.16 can only turn them off process-wide, by environment variable.)
    """

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """The source's metrics, each without its `_created` samples."""
        for metric in self.source.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


def public_view(source: CollectorRegistry) -> CollectorRegistry:
    """A registry that renders `source` as scrapers and the textfile should see it."""
    view = CollectorRegistry(auto_describe=False)
    view.register(_WithoutCreated(source))
    return view


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
    """A running endpoint (one thread; unlike 0.16's helper, stoppable)."""

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
