"""`efa-guard run`: wires the event sources to the reconcile loop; signals; systemd protocol."""

from __future__ import annotations

import os
import queue
import signal
import socket
import time
from typing import Any

from efa_guard import config as configmod
from efa_guard.catalog import EventKind
from efa_guard.events import Event, Trigger
from efa_guard.iptables import choose
from efa_guard.notify import Notifier
from efa_guard.reconcile import Reconciler
from efa_guard.rundir import clear_backend, write_backend
from efa_guard.sources import start_sources, stop_sources

SETTLE = 0.005  # a burst is over after this long without a new event ...
MAX_SETTLE = 0.05  # ... or after this long in total


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

    sources = start_sources(
        cfg, backend=ipt.kind, own_pid=ipt.activity.is_own, emit=events.put, log=log
    )
    names = [s.name for s in sources]

    def on_config(new: configmod.Config) -> None:
        for s in sources:
            s.reconfigure(new)

    reconciler.on_config = on_config
    log.info(
        "started",
        message=f"efa-guard started on {ipt.kind} (pid {os.getpid()}), watching "
        f"{', '.join(names) or 'nothing'}, timer every {cfg.daemon.interval:g} s",
        backend=ipt.kind,
        config=str(cfg.path),
        sources=names,
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
    stop_sources(sources)
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
