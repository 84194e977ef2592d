"""The parser's parts: usage errors as monitoring reads them, a lazy --version, value types."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

UNKNOWN = 3


class Parser(argparse.ArgumentParser):
    """Usage errors exit 3 (UNKNOWN) with a monitoring-plugin status line, not 2 (CRITICAL)."""

    def error(self, message: str) -> NoReturn:
        """Report a usage error the way monitoring systems read it."""
        print(f"EFA-GUARD UNKNOWN - usage error: {message}")
        self.print_usage(sys.stderr)
        self.exit(UNKNOWN)


class VersionAction(argparse.Action):
    """--version, resolved only when asked (importlib.metadata is slow to import)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,  # noqa: ARG002 - argparse's signature
        values: object,  # noqa: ARG002
        option_string: str | None = None,  # noqa: ARG002
    ) -> None:
        """Print the version and exit."""
        from efa_guard import __version__  # noqa: PLC0415

        print(f"efa-guard {__version__}")
        parser.exit()


def positive(text: str) -> float:
    """Seconds, more than 0 and at most an hour (--timeout)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        msg = f"{text!r} is not a number of seconds between 0 and 3600"
        raise argparse.ArgumentTypeError(msg)
    return value


def duration(text: str) -> float:
    """A pause's length: 90s, 15m, 2h (--for)."""
    from efa_guard.pause import parse_duration  # noqa: PLC0415

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
