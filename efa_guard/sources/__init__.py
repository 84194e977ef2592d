"""Event sources: each turns one kind of change in the world into Event values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from efa_guard.catalog import EventKind
from efa_guard.events import Event
from efa_guard.legacycache import XTABLES_LOCK

if TYPE_CHECKING:
    from efa_guard.config import Config
    from efa_guard.iptables import Kind
    from efa_guard.log import Logger

Emit = Callable[[Event], None]


class Source(Protocol):
    """One running event source; the daemon knows nothing else of it."""

    name: str  # "nftables-events", "link-events", "config-file", "config-file xtables-lock"

    def start(self) -> None:
        """Subscribe and start emitting; raises what prevented it."""

    def stop(self) -> None:
        """Stop emitting; returns promptly, also in the middle of a re-subscription."""

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config (tables, families, interfaces, path)."""


def lock_to_watch(backend: Kind) -> Path | None:
    """The xtables lock, whose closes tell of legacy writers (legacy only)."""
    return XTABLES_LOCK if backend == "legacy" else None


def start_sources(  # noqa: PLR0913 - keyword-only; what the sources need of the daemon
    config: Config,
    *,
    backend: Kind,
    own_pid: Callable[[int], bool],
    own_lock_close: Callable[[], bool],
    emit: Emit,
    lock_expected: Callable[[], bool] = lambda: False,
    log: Logger,
) -> list[Source]:
    """Start every source that applies; one that cannot start is logged and skipped.

    `own_pid`: whether an nf_tables commit is ours; `own_lock_close`: whether a close of the
    xtables lock was one of ours (spending its credit).
    """
    from efa_guard.sources.files import FileWatcher  # noqa: PLC0415
    from efa_guard.sources.links import LinkWatcher  # noqa: PLC0415
    from efa_guard.sources.lockwatch import LockWatcher  # noqa: PLC0415
    from efa_guard.sources.nft import NftWatcher  # noqa: PLC0415

    makers: list[tuple[str, Callable[[], Source]]] = []
    if backend == "nft":
        makers.append(("nf_tables events", lambda: NftWatcher(config, own_pid=own_pid, emit=emit)))
    makers.append(("link events", lambda: LinkWatcher(config, emit=emit)))
    lock = lock_to_watch(backend)
    if lock is not None:
        makers.append(
            (
                "the xtables lock watch",
                lambda: LockWatcher(
                    lock, own_close=own_lock_close, emit=emit, expecting=lock_expected
                ),
            )
        )
    makers.append(("the config watch", lambda: FileWatcher(config, emit=emit, log=log)))
    started: list[Source] = []
    for what, make in makers:
        try:
            source = make()
            source.start()
        # pyroute2 raises many types, inotify has its limits: the timer and SIGHUP still work
        except Exception as e:  # noqa: BLE001
            log.error(
                EventKind.SOURCE_FAILED,
                message=f"{what} unavailable: {e}",
                error=str(e),
                source=what,
            )
            continue
        started.append(source)
    return started


def stop_sources(sources: list[Source]) -> None:
    """Stop every source, last started first; none may prevent the others from stopping."""
    for source in reversed(sources):
        try:
            source.stop()
        except Exception:  # noqa: BLE001, S112 - shutting down: nothing left to report to
            continue


__all__ = ["Emit", "Source", "lock_to_watch", "start_sources", "stop_sources"]
