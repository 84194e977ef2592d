"""structlog set-up. Imported lazily: a plain `check` never pays for structlog."""

from __future__ import annotations

import sys
from typing import Any, Literal

LogFormat = Literal["auto", "json", "console"]

_configured = False


def configure(fmt: LogFormat = "auto") -> None:
    """Send structured events to stderr, as JSON lines or for a human."""
    import structlog  # noqa: PLC0415 - lazy: keeps one-shot commands fast

    global _configured  # noqa: PLW0603 - structlog's configuration is process-wide too
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**initial: object) -> Any:  # noqa: ANN401 - structlog's bound logger type varies by version
    """A structlog logger; configures the default sink on first use."""
    import structlog  # noqa: PLC0415

    if not _configured:
        configure()
    return structlog.get_logger("efa-guard", **initial)
