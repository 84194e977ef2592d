"""The loop: signals in, coalesced bursts out, timer, watchdog pings and READY."""

from __future__ import annotations

import queue
import signal
import time
from dataclasses import dataclass, field

from efa_guard.catalog import EventKind
from efa_guard.daemon.memory import Trimmer
from efa_guard.daemon.publish import Publisher
from efa_guard.daemon.step import Reconciler
from efa_guard.daemon.survey import ExposureWatch
from efa_guard.events import Event, Trigger
from efa_guard.notify import Notifier

SETTLE = 0.005  # a burst is over after this long without a new event ...
MAX_SETTLE = 0.05  # ... or after this long in total
QUIET = 0.05  # an event after this long without one is acted on at once (no settle wait)
_NOT_READY_RETRY = 1.0  # seconds between checks until the policy is first in place


@dataclass
class Loop:
    """Runs the reconcile step for every burst of events until a stop signal arrives."""

    rec: Reconciler
    notifier: Notifier
    exposure: ExposureWatch
    publisher: Publisher
    events: queue.SimpleQueue[Event] = field(default_factory=queue.SimpleQueue)
    last_event: float = float("-inf")  # time.monotonic() the last burst ended
    trimmer: Trimmer = field(default_factory=Trimmer)  # free heap pages back after work

    def install_signals(self) -> None:
        """SIGHUP reloads, SIGUSR1 logs the status, SIGUSR2 re-reads the pause, SIGTERM stops."""
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.events.put(Event(Trigger.CONFIG_RELOAD, detail="SIGHUP"))
        elif signum == signal.SIGUSR1:
            self.events.put(Event(Trigger.STATUS, detail="SIGUSR1"))
        elif signum == signal.SIGUSR2:
            self.events.put(Event(Trigger.PAUSE, detail="SIGUSR2"))
        else:
            self.events.put(Event(Trigger.STOP, detail=signal.Signals(signum).name))

    def _timer_after(self, now: float) -> float:
        rec = self.rec
        return now + (rec.config.daemon.interval if rec.status.ready else _NOT_READY_RETRY)

    def run(self) -> str:
        """Loop until a stop event; return why it stopped."""
        clock, rec, notifier = time.monotonic, self.rec, self.notifier
        if not rec.status.ready:
            notifier.status("cannot assert the policy yet; retrying (see the journal)")
        announced = False
        next_timer = self._timer_after(clock())
        ping = notifier.watchdog_interval
        next_ping = clock() + ping if ping else None
        while True:
            # READY=1 only once the policy is known to be in place: network-pre.target waits.
            # A pause carried over a restart is the operator's choice: READY all the same.
            if (rec.status.ready or rec.schedule.pause) and not announced:
                notifier.ready(self.status_text())
                announced = True
            deadlines = [
                next_timer,
                rec.schedule.next_deadline(),
                next_ping,
                self.publisher.next_deadline(),
            ]
            wait = max(0.0, min(d for d in deadlines if d is not None) - clock())
            batch: list[Event] = []
            try:
                batch.append(self.events.get(timeout=wait))
                self.last_event = settle(self.events, batch, self.last_event)
            except queue.Empty:
                pass
            now = clock()
            if next_ping is not None and ping is not None and now >= next_ping:
                notifier.watchdog()
                next_ping = now + ping
            stop = next((e for e in batch if e.trigger is Trigger.STOP), None)
            if stop is not None:
                return stop.detail
            if any(e.trigger is Trigger.STATUS for e in batch):
                self.report_status()
                batch = [e for e in batch if e.trigger is not Trigger.STATUS]
            timer = now >= next_timer
            if timer:
                batch.append(Event(Trigger.TIMER, detail="periodic check", at=now))
            batch += rec.schedule.due(now)
            self._step(batch, timer=timer)
            self.publisher.publish()
            if batch:
                next_timer = self._timer_after(now)
                self.trimmer.after_work(clock())

    def status_text(self) -> str:
        """Systemd's StatusText: what is enforced, and anything an operator must know."""
        st = self.rec.status
        text = f"policy in place on {self.rec.ipt.kind}, sha256 {st.last_hash[:12]}"
        held = self.rec.schedule.pause
        if held is not None:
            until = time.strftime("%H:%M:%S", time.localtime(held.until))
            return f"PAUSED by {held.by} until {until}: {held.reason}"
        if st.source != "file" and st.rejected:
            text = (
                f"{st.source.upper()} policy enforced on {self.rec.ipt.kind}: config file "
                f"broken ({st.rejected['key']}: {st.rejected['reason']})"
            )
        return text

    def report_status(self) -> None:
        """Log the counters (SIGUSR1); a status request is no reason to check."""
        c = self.rec.counters()
        contested = "contested" if c["contested"] else "not contested"
        self.rec.report.log.info(
            EventKind.STATUS,
            message=f"status: {c['checks']} checks, {c['corrections']} corrections, "
            f"{c['failures']} failures, {contested}",
            **c,
        )

    def _step(self, batch: list[Event], *, timer: bool) -> None:
        """One turn of the loop; no single failure may end the daemon (the timer retries)."""
        rec = self.rec
        try:
            if batch:
                rec.handle(batch)
            reloaded = (Trigger.CONFIG_RELOAD, Trigger.CONFIG_LOADED)
            if timer or any(e.trigger in reloaded for e in batch):
                self.exposure.maybe_survey(rec.config, force=not timer)
            rec.release(time.monotonic())
        except Exception as e:  # noqa: BLE001 - logged; the next event or the timer tries again
            rec.report.log.error(
                EventKind.INTERNAL_ERROR, message=f"internal error: {e!r}", error=repr(e)
            )


def settle(events: queue.SimpleQueue[Event], batch: list[Event], last: float) -> float:
    """Coalesce a burst into `batch`: take events until SETTLE passes quietly or MAX_SETTLE ends.

    The first event after QUIET seconds without one (a tamper, one writer's transaction:
    each nf_tables event is a whole committed transaction already) waits for nothing: what is
    queued is taken and checked at once. Bursts coalesce from their second event on. `last`:
    when the previous burst ended; returns when this one did.
    """
    now = time.monotonic()
    quiet = now - last >= QUIET
    end = now + MAX_SETTLE
    while (left := end - time.monotonic()) > 0:
        try:
            if quiet:
                batch.append(events.get_nowait())
            else:
                batch.append(events.get(timeout=min(SETTLE, left)))
        except queue.Empty:
            break
    return time.monotonic()
