"""structlog set-up: journald under systemd, JSON lines or console text on stderr otherwise.

Imported lazily: a plain `check` never pays for structlog.

EFA_GUARD_JOURNAL_SOCKET, read only here, names journald's native socket (default
/run/systemd/journal/socket; a journald namespace NS listens on /run/systemd/journal.NS/socket).
The journal writer never blocks (see efa_guard.journal_writer); at exit it flushes for at most
`FLUSH_TIMEOUT` seconds (also `shutdown()`).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from efa_guard.journal_writer import JournalWriter

LogFormat = Literal["auto", "journal", "json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "journal", "json", "console")

SOCKET_ENV = "EFA_GUARD_JOURNAL_SOCKET"
FLUSH_TIMEOUT = 1.0

_configured = False
_writer: JournalWriter | None = None  # the journal writer in use, if any


def journal_socket() -> str:
    """The native socket of journald: $EFA_GUARD_JOURNAL_SOCKET or the default."""
    from efa_guard.journal import SOCKET_PATH  # noqa: PLC0415

    return os.environ.get(SOCKET_ENV) or SOCKET_PATH


class Logger(Protocol):
    """A structured logger: an event name and fields (structlog's bound loggers are one)."""

    def debug(self, event: str, /, **kw: Any) -> Any:  # noqa: ANN401 - structlog returns Any
        """Log at debug level."""

    def info(self, event: str, /, **kw: Any) -> Any:  # noqa: ANN401
        """Log at info level."""

    def warning(self, event: str, /, **kw: Any) -> Any:  # noqa: ANN401
        """Log at warning level."""

    def error(self, event: str, /, **kw: Any) -> Any:  # noqa: ANN401
        """Log at error level."""

    def critical(self, event: str, /, **kw: Any) -> Any:  # noqa: ANN401
        """Log at critical level."""


def resolve(fmt: LogFormat) -> LogFormat:
    """What `auto` means here: journal under systemd, console on a terminal, else JSON."""
    from efa_guard.journal import journal_available  # noqa: PLC0415

    if fmt != "auto":
        return fmt
    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    if under_systemd and journal_available(journal_socket()):
        return "journal"
    return "console" if sys.stderr.isatty() else "json"


def _add_message_id(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:  # noqa: ANN401
    from efa_guard.catalog import MESSAGE_IDS  # noqa: PLC0415

    mid = MESSAGE_IDS.get(str(event_dict.get("event", "")))
    if mid:
        event_dict["message_id"] = mid
    return event_dict


def _as_kwargs(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:  # noqa: ANN401
    return dict(event_dict)


def configure(fmt: LogFormat = "auto") -> LogFormat:
    """Route structured events to the chosen sink; returns the format in use."""
    import structlog  # noqa: PLC0415 - lazy: keeps one-shot commands fast

    from efa_guard.journal import JournalLogger  # noqa: PLC0415
    from efa_guard.journal_writer import JournalWriter  # noqa: PLC0415

    global _configured, _writer  # noqa: PLW0603 - structlog's configuration is process-wide too
    fmt = resolve(fmt)
    shutdown()
    processors: list[Any] = [structlog.processors.add_log_level]
    factory: Any
    if fmt == "journal":
        writer = _writer = JournalWriter(journal_socket())
        processors.append(_as_kwargs)
        factory = lambda *_args: JournalLogger(writer)  # noqa: E731 - structlog wants a callable
    else:
        processors += [_add_message_id, structlog.processors.TimeStamper(fmt="iso", utc=True)]
        processors.append(
            structlog.processors.JSONRenderer(sort_keys=True)
            if fmt == "json"
            else structlog.dev.ConsoleRenderer(colors=False)
        )
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    _configured = True
    return fmt


def shutdown(timeout: float = FLUSH_TIMEOUT) -> None:
    """Flush queued journal entries for at most `timeout` s (idempotent; also run at exit)."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.close(timeout)


atexit.register(shutdown)


def get_logger(**initial: object) -> Logger:
    """A structlog logger; configures the default sink on first use."""
    import structlog  # noqa: PLC0415

    if not _configured:
        configure()
    logger: Logger = structlog.get_logger("efa-guard", **initial)
    return logger
