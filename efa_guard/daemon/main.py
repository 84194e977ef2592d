"""`efa-guard run`: wires the backend, the sources, the reconcile step and the loop."""

from __future__ import annotations

import gc
import os
import queue
import socket
import time
from pathlib import Path

from efa_guard import config as configmod
from efa_guard import lastgood
from efa_guard.backends import choose
from efa_guard.catalog import EventKind
from efa_guard.daemon.loop import Loop
from efa_guard.daemon.memory import return_big_buffers
from efa_guard.daemon.publish import Publisher
from efa_guard.daemon.reload import ThreadLoader
from efa_guard.daemon.report import Reporter
from efa_guard.daemon.step import Hooks, Reconciler, Status
from efa_guard.daemon.survey import ExposureWatch
from efa_guard.daemon.telemetry import Telemetry
from efa_guard.errors import ConfigError
from efa_guard.events import Event, Trigger
from efa_guard.log import Logger
from efa_guard.notify import Notifier
from efa_guard.rundir import clear_backend, write_backend
from efa_guard.sources import Source, start_sources, stop_sources

EXIT_NOT_CONFIGURED = 6  # LSB: no usable config at all; a restart cannot help


def load_or_fallback(path: Path) -> tuple[configmod.Config, Status, ConfigError | None]:
    """The config to enforce: the file, else last-known-good, else the shipped default.

    Raises the file's ConfigError when there is no fallback either.
    """
    try:
        return configmod.load(path), Status(), None
    except ConfigError as e:
        found = lastgood.fallback(path)
        if found is None:
            raise
        digest = lastgood.file_sha256(path)
        rejected = {"path": e.path, "key": e.key, "reason": e.reason, "sha256": digest}
        return found.config, Status(source=found.source, rejected=rejected), e


def _freeze_startup_objects() -> None:
    """Keep the collector off what startup built (modules, classes, the config): for good.

    A full collection walked all of it, ~70 ms at a random moment, often in the middle of a
    correction (measured: the slowest tamper->restored samples). Frozen, a collection walks
    only what was made since.
    """
    gc.collect()
    gc.freeze()


def run(path: Path, log: Logger) -> int:
    """Run until SIGTERM/SIGINT; the policy stays in place on exit."""
    return_big_buffers()
    try:
        cfg, status, broken = load_or_fallback(path)
    except ConfigError as e:
        log.critical(
            EventKind.CANNOT_START,
            message=f"cannot start: no usable config and no fallback policy: {e}",
            path=e.path,
            key=e.key,
            reason=e.reason,
        )
        return EXIT_NOT_CONFIGURED
    ipt, warnings = choose(cfg.backend, cfg.policy, cache=True)
    for w in warnings:
        log.warning(EventKind.BACKEND_WARNING, message=w)
    write_backend(ipt.kind)
    notifier = Notifier()
    exposure = ExposureWatch(ipt=ipt, log=log, clock=time.monotonic, background=True)
    sources: list[Source] = []

    def config_changed(new: configmod.Config) -> None:
        for s in sources:
            s.reconfigure(new)

    telemetry = Telemetry.start(cfg.metrics, log, ipt.kind)
    report = Reporter(log=log, notifier=notifier, backend=ipt.kind, telemetry=telemetry)
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    rec = Reconciler(
        config=cfg,
        ipt=ipt,
        report=report,
        status=status,
        hooks=Hooks(
            config_changed=config_changed,
            retrying=notifier.watchdog,
            rules_changed=exposure.rules_changed,
            verified=lambda c: lastgood.save(c.text, c.path),
        ),
        loader=ThreadLoader(wake=lambda: events.put(Event(Trigger.CONFIG_LOADED))),
    )
    publisher = Publisher(rec, exposure=exposure, telemetry=telemetry)
    loop = Loop(rec=rec, notifier=notifier, exposure=exposure, publisher=publisher, events=events)
    loop.install_signals()
    sources += start_sources(
        cfg,
        backend=ipt.kind,
        own_pid=ipt.activity.is_own,
        own_lock_close=ipt.activity.own_lock_close,
        lock_expected=ipt.activity.expecting,
        emit=loop.events.put,
        log=log,
    )
    names = [s.name for s in sources]
    log.info(
        EventKind.STARTED,
        message=f"efa-guard started on {ipt.kind} (pid {os.getpid()}), watching "
        f"{', '.join(names) or 'nothing'}, timer every {cfg.daemon.interval:g} s",
        backend=ipt.kind,
        config=str(cfg.path),
        sources=names,
        interval_s=cfg.daemon.interval,
        host=socket.gethostname(),
    )
    if broken is not None:
        report.fallback(broken, status.source)
    rec.pause_from_file()
    rec.startup()
    exposure.maybe_survey(rec.config, force=True)
    publisher.publish()
    _freeze_startup_objects()
    loop.trimmer.after_work(time.monotonic())  # what startup freed
    reason = loop.run()
    log.info(
        EventKind.STOPPING,
        message=f"efa-guard stopping ({reason}); the policy stays in place",
        reason=reason,
        **rec.counters(),
    )
    notifier.stopping()
    publisher.publish(running=False)
    stop_sources(sources)
    if telemetry is not None:
        telemetry.close()
    clear_backend()
    return 0
