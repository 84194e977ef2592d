"""`efa-guard run`: wires the event sources to the reconcile loop; signals; systemd protocol."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from efa_guard import config as configmod
from efa_guard.backends import choose
from efa_guard.catalog import EventKind
from efa_guard.events import Event, Trigger
from efa_guard.iptables import Iptables
from efa_guard.notify import Notifier
from efa_guard.reconcile import Reconciler
from efa_guard.rundir import clear_backend, write_backend

SETTLE = 0.005  # a burst is over after this long without a new event ...
MAX_SETTLE = 0.05  # ... or after this long in total


@dataclass
class Sources:
    """The started event sources, for stopping them."""

    stoppers: list[Callable[[], None]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every source; none may prevent the others from stopping."""
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):  # shutting down: nothing left to report to
                stop()


def _families(cfg: configmod.Config) -> set[int]:
    kinds = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
    return {kinds[f] for f in cfg.policy.families}


def _interfaces(cfg: configmod.Config) -> set[str]:
    return {r.interface for c in cfg.policy.chains for r in c.rules}


def start_sources(
    cfg: configmod.Config,
    ipt: Iptables,
    emit: Callable[[Event], None],
    log: Any,  # noqa: ANN401
) -> tuple[Sources, Callable[[configmod.Config], None]]:
    """Start every source that applies; one that cannot start is logged, not fatal."""
    from efa_guard.sources.files import (  # noqa: PLC0415
        XTABLES_LOCK,
        FileWatcher,
        closed_no_write_supported,
    )
    from efa_guard.sources.links import LinkWatcher  # noqa: PLC0415
    from efa_guard.sources.nft import NFPROTO_INET, NftWatcher  # noqa: PLC0415

    sources = Sources()
    nft: NftWatcher | None = None
    links: LinkWatcher | None = None
    if ipt.kind == "nft":
        try:
            nft = NftWatcher(
                emit,
                tables=cfg.policy.tables,
                own_pid=ipt.activity.is_own,
                families=_families(cfg),
            )
            nft.start()
            sources.stoppers.append(nft.stop)
            sources.names.append("nftables-events")
        except OSError as e:
            log.error("source_failed", message=f"nf_tables events unavailable: {e}", error=str(e))
            nft = None
    try:
        links = LinkWatcher(emit, interfaces=_interfaces(cfg))
        links.start()
        sources.names.append("link-events")
    except Exception as e:  # noqa: BLE001 - pyroute2 raises many types; the timer still runs
        log.error("source_failed", message=f"link events unavailable: {e}", error=str(e))
        links = None
    lock = XTABLES_LOCK if ipt.kind == "legacy" and closed_no_write_supported() else None
    try:
        files = FileWatcher(emit, config=cfg.path, lock=lock)
        files.start()
        sources.stoppers.append(files.stop)
        sources.names.append("config-file" + (" xtables-lock" if lock else ""))
    except Exception as e:  # noqa: BLE001 - inotify limits and the like; SIGHUP still works
        log.error("source_failed", message=f"file watch unavailable: {e}", error=str(e))

    def on_config(new: configmod.Config) -> None:
        if nft is not None:
            nft.decoder.tables = frozenset(new.policy.tables)
            nft.decoder.families = frozenset(_families(new)) | {NFPROTO_INET}
        if links is not None:
            links.tracker.patterns = tuple(_interfaces(new))

    return sources, on_config


def run(cfg: configmod.Config, log: Any) -> int:  # noqa: ANN401
    """Run until SIGTERM/SIGINT; the policy stays in place on exit."""
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    ipt, warnings = choose(cfg.backend, cfg.policy)
    for w in warnings:
        log.warning(EventKind.BACKEND_WARNING, message=w)
    write_backend(ipt.kind)
    notifier = Notifier()
    reconciler = Reconciler(config=cfg, ipt=ipt, log=log, notifier=notifier)

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            events.put(Event(Trigger.CONFIG_RELOAD, detail="SIGHUP"))
        elif signum == signal.SIGUSR1:
            events.put(Event(Trigger.STATUS, detail="SIGUSR1"))
        else:
            events.put(Event(Trigger.STOP, detail=signal.Signals(signum).name))

    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    sources, on_config = start_sources(cfg, ipt, events.put, log)
    reconciler.on_config = on_config
    log.info(
        "started",
        message=f"efa-guard started on {ipt.kind} (pid {os.getpid()}), watching "
        f"{', '.join(sources.names) or 'nothing'}, timer every {cfg.daemon.interval:g} s",
        backend=ipt.kind,
        config=str(cfg.path),
        sources=sources.names,
        interval_s=cfg.daemon.interval,
        host=socket.gethostname(),
    )

    def ping() -> None:  # a long retry must not starve the watchdog
        notifier.watchdog()

    reconciler.on_retry = ping
    reconciler.startup()
    reconciler.maybe_survey(force=True)
    reason = _loop(reconciler, events, notifier)
    log.info(
        "stopping",
        message=f"efa-guard stopping ({reason}); the policy stays in place",
        reason=reason,
        **reconciler.counters(),
    )
    notifier.stopping()
    sources.stop()
    clear_backend()
    return 0


def _loop(rec: Reconciler, events: queue.SimpleQueue[Event], notifier: Notifier) -> str:
    clock = time.monotonic

    def timer_after() -> float:
        # Until the policy is first in place, retry every second.
        return clock() + (rec.config.daemon.interval if rec.ready else 1.0)

    if not rec.ready:
        notifier.status("cannot assert the policy yet; retrying (see the journal)")
    announced = False
    next_timer = timer_after()
    ping = notifier.watchdog_interval
    next_ping = clock() + ping if ping else None
    while True:
        # READY=1 only once the policy is known to be in place: network-pre.target waits for it.
        if rec.ready and not announced:
            notifier.ready(f"policy in place on {rec.ipt.kind}, sha256 {rec.last_hash[:12]}")
            announced = True
        deadlines = [next_timer, rec.next_deadline(), next_ping]
        wait = max(0.0, min(d for d in deadlines if d is not None) - clock())
        batch: list[Event] = []
        try:
            batch.append(events.get(timeout=wait))
            _settle(events, batch)
        except queue.Empty:
            pass
        now = clock()
        if next_ping is not None and ping is not None and now >= next_ping:
            notifier.watchdog()
            next_ping = now + ping
        stop = next((e for e in batch if e.trigger is Trigger.STOP), None)
        if stop is not None:
            return stop.detail
        batch = _answer_status(rec, batch)
        timer = now >= next_timer
        if timer:
            batch.append(Event(Trigger.TIMER, detail="periodic check", at=now))
        batch += rec.due(now)
        _step(rec, batch, timer=timer)
        if batch:
            next_timer = timer_after()


def _answer_status(rec: Reconciler, batch: list[Event]) -> list[Event]:
    """Log the counters for a SIGUSR1; a status request is no reason to check."""
    if any(e.trigger is Trigger.STATUS for e in batch):
        rec.report()
    return [e for e in batch if e.trigger is not Trigger.STATUS]


def _step(rec: Reconciler, batch: list[Event], *, timer: bool) -> None:
    """One turn of the loop; no single failure may end the daemon (the timer retries)."""
    try:
        if batch:
            rec.handle(batch)
        if timer or any(e.trigger is Trigger.CONFIG_RELOAD for e in batch):
            rec.maybe_survey(force=not timer)
        rec.release(time.monotonic())
    except Exception as e:  # noqa: BLE001 - logged; the next event or the timer tries again
        rec.log.error(EventKind.INTERNAL_ERROR, message=f"internal error: {e!r}", error=repr(e))


def _settle(events: queue.SimpleQueue[Event], batch: list[Event]) -> None:
    """Coalesce a burst: keep taking events until SETTLE passes quietly or MAX_SETTLE ends."""
    end = time.monotonic() + MAX_SETTLE
    while (left := end - time.monotonic()) > 0:
        try:
            batch.append(events.get(timeout=min(SETTLE, left)))
        except queue.Empty:
            return
