"""Prometheus metrics: what the daemon reports, for node_exporter's textfile collector or HTTP.

Importing this package does not import prometheus_client; making a `Metrics` does.
"""

from __future__ import annotations

from efa_guard.metrics.facts import LATENCY_BUCKETS, Metrics
from efa_guard.metrics.output import (
    DEFAULT_PORT,
    DEFAULT_TEXTFILE_DIRECTORY,
    TEXTFILE_NAME,
    ListenError,
    MetricsError,
    TextfileError,
    default_textfile_directory,
    parse_listen,
    write_atomic,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TEXTFILE_DIRECTORY",
    "LATENCY_BUCKETS",
    "TEXTFILE_NAME",
    "ListenError",
    "Metrics",
    "MetricsError",
    "TextfileError",
    "default_textfile_directory",
    "parse_listen",
    "write_atomic",
]
