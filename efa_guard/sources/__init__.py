"""Event sources: each turns one kind of change in the world into Event values."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from efa_guard.catalog import EventKind
from efa_guard.events import Event

if TYPE_CHECKING:
    from efa_guard.config import Config
    from efa_guard.iptables import Kind
    from efa_guard.log import Logger

Emit = Callable[[Event], None]

__all__ = ["Emit", "Source", "start_sources"]


class Source(Protocol):
    """One started event source."""

    name: str

    def stop(self) -> None:
        """Stop; never raises."""

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config."""


@dataclass
class _Adapted:
    name: str
    stopper: Callable[[], None]
    follow: Callable[[Config], None]

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # shutting down: nothing left to report to
            self.stopper()

    def reconfigure(self, config: Config) -> None:
        self.follow(config)


def _families(cfg: Config) -> set[int]:
    kinds = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
    return {kinds[f] for f in cfg.policy.families}


def _interfaces(cfg: Config) -> set[str]:
    return {r.interface for c in cfg.policy.chains for r in c.rules}


def start_sources(
    cfg: Config,
    *,
    backend: Kind,
    own_pid: Callable[[int], bool],
    emit: Emit,
    log: Logger,
) -> list[Source]:
    """Start every source that applies; one that cannot start is logged, not fatal."""
    from efa_guard.sources.files import (  # noqa: PLC0415
        XTABLES_LOCK,
        FileWatcher,
        closed_no_write_supported,
    )
    from efa_guard.sources.links import LinkWatcher  # noqa: PLC0415
    from efa_guard.sources.nft import NFPROTO_INET, NftWatcher  # noqa: PLC0415

    out: list[Source] = []
    if backend == "nft":
        try:
            nft = NftWatcher(
                emit, tables=cfg.policy.tables, own_pid=own_pid, families=_families(cfg)
            )
            nft.start()

            def follow_nft(new: Config, nft: NftWatcher = nft) -> None:
                nft.decoder.tables = frozenset(new.policy.tables)
                nft.decoder.families = frozenset(_families(new)) | {NFPROTO_INET}

            out.append(_Adapted("nftables-events", nft.stop, follow_nft))
        except OSError as e:
            msg = f"nf_tables events unavailable: {e}"
            log.error(EventKind.SOURCE_FAILED, message=msg, error=str(e))
    try:
        links = LinkWatcher(emit, interfaces=_interfaces(cfg))
        links.start()

        def follow_links(new: Config, links: LinkWatcher = links) -> None:
            links.tracker.patterns = tuple(_interfaces(new))

        out.append(_Adapted("link-events", lambda: None, follow_links))
    except Exception as e:  # noqa: BLE001 - pyroute2 raises many types; the timer still runs
        log.error(EventKind.SOURCE_FAILED, message=f"link events unavailable: {e}", error=str(e))
    lock = XTABLES_LOCK if backend == "legacy" and closed_no_write_supported() else None
    try:
        files = FileWatcher(emit, config=cfg.path, lock=lock)
        files.start()
        name = "config-file" + (" xtables-lock" if lock else "")
        out.append(_Adapted(name, files.stop, lambda _new: None))
    except Exception as e:  # noqa: BLE001 - inotify limits and the like; SIGHUP still works
        log.error(EventKind.SOURCE_FAILED, message=f"file watch unavailable: {e}", error=str(e))
    return out
