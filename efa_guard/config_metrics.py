"""The [metrics] section of the config: where the daemon's Prometheus metrics go."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from efa_guard.errors import ConfigError

AUTO = "auto"
_KEYS = frozenset({"textfile_directory", "listen", "interval"})


@dataclass(frozen=True)
class MetricsConfig:
    """Where metrics go: a node_exporter textfile directory and/or an HTTP endpoint.

    "auto" is Debian's textfile directory when it exists ($EFA_GUARD_TEXTFILE_DIR overrides
    it); the file is written every `interval` seconds and after each correction.
    """

    textfile_directory: str = AUTO  # "auto", "" (off) or an absolute path
    listen: str = ""  # "" (off) or "127.0.0.1:9731" / "[::1]:9731"
    interval: float = 15.0

    @property
    def enabled(self) -> bool:
        """Whether any output is asked for."""
        return bool(self.textfile_directory or self.listen)


def parse_metrics(raw: object, fail: Callable[[str, str], ConfigError]) -> MetricsConfig:
    """Validate the [metrics] table; `fail(key, reason)` builds the error naming the key."""
    if not isinstance(raw, dict):
        raise fail("metrics", "expected a table")
    for key in raw:
        if key not in _KEYS:
            raise fail(f"metrics.{key}", f"unknown key (known: {', '.join(sorted(_KEYS))})")
    directory = raw.get("textfile_directory", AUTO)
    if not isinstance(directory, str) or (
        directory not in (AUTO, "") and not Path(directory).is_absolute()
    ):
        raise fail("metrics.textfile_directory", '"auto", "" or an absolute path')
    listen = raw.get("listen", "")
    if not isinstance(listen, str):
        raise fail("metrics.listen", 'expected a string such as "127.0.0.1:9731"')
    if listen:
        from efa_guard.metrics.output import parse_listen  # noqa: PLC0415 - pure, no client

        try:
            parse_listen(listen)
        except ValueError as e:
            raise fail("metrics.listen", str(e)) from e
    interval = raw.get("interval", 15.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise fail("metrics.interval", "expected a number of seconds")
    if not 1.0 <= interval <= 3600.0:
        raise fail("metrics.interval", f"{interval} is out of range 1-3600")
    return MetricsConfig(directory, listen, float(interval))
