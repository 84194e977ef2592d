"""Exposure watching: an `exposure` event when what is reachable outside the allowlist changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from efa_guard.catalog import EventKind
from efa_guard.config import Config
from efa_guard.iptables import Iptables
from efa_guard.log import Logger

SURVEY_EVERY = 30  # timer intervals between exposure surveys when nothing changed
# Seconds a background survey may spend on foreign chains beyond the prefetch: what it cannot
# evaluate in time is reported as such (and counted reachable), as `check` does with less.
# `efa-guard exposure` walks everything.
DAEMON_BUDGET = 0.25
SLOT_BASE = 100  # the survey's legacy reads lock private files of their own (no waiting)


@dataclass
class ExposureWatch:
    """Surveys when sockets changed, when the rules changed, or every SURVEY_EVERY intervals.

    Listing sockets costs well under a millisecond; a survey runs iptables. With
    `background`, a survey runs in a thread of its own with its own runner and a budget
    (DAEMON_BUDGET): a kube-proxy-sized foreign chain never delays a correction.
    """

    ipt: Iptables
    log: Logger
    clock: Callable[[], float]
    exposed: dict[str, str] | None = None  # name -> reason, of the last survey
    background: bool = False
    _surveyed: tuple[float, frozenset[object]] | None = field(default=None, repr=False)
    _busy: bool = field(default=False, repr=False)  # a background survey runs
    _queued: Config | None = field(default=None, repr=False)  # to survey once it is over
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def rules_changed(self) -> None:
        """The rules changed: survey at the next chance."""
        self._surveyed = None

    def maybe_survey(self, config: Config, *, force: bool = False) -> None:
        """Survey if anything may have changed (or when forced)."""
        from efa_guard.sockets import listeners  # noqa: PLC0415 - daemon only

        try:
            socks = frozenset[object](listeners())
        except OSError:
            socks = frozenset()
        now = self.clock()
        last = self._surveyed
        stale = last is None or now - last[0] >= SURVEY_EVERY * config.daemon.interval
        if force or stale or last is None or last[1] != socks:
            self._surveyed = (now, socks)
            if self.background:
                self._start(config)
            else:
                self.survey(config)

    def _start(self, config: Config) -> None:
        """Survey in the worker thread; a request while it runs is queued (the newest wins)."""
        with self._lock:
            if self._busy:
                self._queued = config
                return
            self._busy = True
        threading.Thread(target=self._work, args=(config,), name="survey", daemon=True).start()

    def _work(self, config: Config) -> None:
        ipt = Iptables(self.ipt.kind, slot_base=SLOT_BASE)
        while True:
            try:
                self.survey(config, ipt=ipt, budget=DAEMON_BUDGET)
            except BaseException:  # survey() logs its failures; this is the last resort
                with self._lock:
                    self._busy, self._queued = False, None
                raise
            with self._lock:
                if self._queued is None:
                    self._busy = False
                    return
                config, self._queued = self._queued, None

    def survey(
        self, config: Config, *, ipt: Iptables | None = None, budget: float | None = None
    ) -> None:
        """Survey now; log only what changed since the last survey."""
        from efa_guard.exposure import survey, visible  # noqa: PLC0415 - daemon only

        try:
            found = visible(
                survey(
                    ipt or self.ipt,
                    config.interface,
                    config.exposure,
                    skip_allowed=True,
                    budget=budget,
                )
            )
        except Exception as e:  # noqa: BLE001 - a survey failure must not stop the guard
            self.log.error(
                EventKind.SURVEY_FAILED, message=f"cannot survey exposure: {e}", error=str(e)
            )
            return
        now = {f.name: f.reason for f in found}
        if now == self.exposed or (self.exposed is None and not now):
            self.exposed = now  # nothing exposed at startup is not news
            return
        before = self.exposed or {}
        self.exposed = now
        what = ", ".join(sorted(now)) if now else "nothing"
        method = self.log.warning if now else self.log.info
        method(
            EventKind.EXPOSURE,
            message=f"reachable on {config.interface} outside the allowlist: {what}",
            exposed=[f"{k}: {v}" for k, v in sorted(now.items())],
            added=sorted(set(now) - set(before)),
            removed=sorted(set(before) - set(now)),
        )
