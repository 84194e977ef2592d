"""The command line: subcommands, their output and exit codes; nothing else.

report    exit codes and the monitoring-plugin report
common    opening the backend, shared pieces of reports
parser    every command and option; commands are imported only when run
check     check and exposure
daemonview  what check says about the running daemon
control   validate and reload
commands  apply, render, run, history
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from efa_guard.cli.parser import DEFAULT_CONFIG, build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `efa-guard` console script."""
    args = build_parser().parse_args(argv)
    if not hasattr(args, "config"):
        args.config = DEFAULT_CONFIG
    module, name = str(args.func).split(":")
    func: Callable[..., int] = getattr(importlib.import_module(module), name)
    return func(args)
