"""Link events for the managed interfaces: down, up, carrier, rename, delete, re-create."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from efa_guard.events import Event, Trigger
from efa_guard.policy import any_interface_matches as matches
from efa_guard.sources import Emit
from efa_guard.sources.retry import Stopped, resubscribe

if TYPE_CHECKING:
    from efa_guard.config import Config

RTMGRP_LINK = 1
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


@dataclass(frozen=True)
class LinkState:
    """What we last knew of one interface."""

    name: str
    up: bool
    carrier: bool


class LinkTracker:
    """Turns link messages into descriptions of changes to the managed interfaces. Pure."""

    def __init__(self, patterns: Collection[str]) -> None:
        self.patterns = tuple(patterns)
        self.known: dict[int, LinkState] = {}

    def update(self, event: str, index: int, name: str, flags: int) -> str | None:
        """Record one RTM_NEWLINK/RTM_DELLINK; say what changed, if it concerns us."""
        old = self.known.get(index)
        if event == "RTM_DELLINK":
            self.known.pop(index, None)
            return f"{name} deleted" if matches(name, self.patterns) else None
        new = LinkState(name, bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP))
        self.known[index] = new
        ours = matches(name, self.patterns) or (
            old is not None and matches(old.name, self.patterns)
        )
        if not ours or old == new:
            return None
        if old is None:
            return f"{name} appeared ({_updown(new)})"
        if old.name != name:
            return f"{old.name} renamed to {name}"
        if old.up != new.up:
            return f"{name} {'up' if new.up else 'down'}"
        return f"{name} carrier {'on' if new.carrier else 'lost'}"


def _updown(s: LinkState) -> str:
    return ("up" if s.up else "down") + (", carrier" if s.carrier else "")


def config_interfaces(config: Config) -> frozenset[str]:
    """The interface names (or iptables wildcards) the config's rules match."""
    return frozenset(r.interface for c in config.policy.chains for r in c.rules)


class LinkWatcher:
    """A thread on an rtnetlink socket (pyroute2), bound to RTMGRP_LINK."""

    name = "link-events"

    def __init__(self, config: Config, *, emit: Emit) -> None:
        self.emit = emit
        self.tracker = LinkTracker(config_interfaces(config))
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.ipr: Any = None  # the subscribed socket, for stop() to close
        self.thread = threading.Thread(target=self._run, name="link-events", daemon=True)

    def start(self) -> None:
        """Start the thread; raise what it hit while subscribing."""
        self.thread.start()
        self.ready.wait(timeout=10)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop: a back-off ends at once; closing the socket ends a blocked read.

        pyroute2 0.7's read does not wake up on close: that (daemon) thread is left behind.
        """
        self.stopped.set()
        ipr = self.ipr
        if ipr is not None:
            with contextlib.suppress(Exception):
                ipr.close()
        if self.thread.is_alive():
            self.thread.join(timeout=0.5)

    def reconfigure(self, config: Config) -> None:
        """Follow a reloaded config's interfaces."""
        self.tracker.patterns = tuple(config_interfaces(config))

    def _subscribe(self) -> Any:  # noqa: ANN401 - pyroute2's IPRoute is untyped
        # pyroute2 >= 0.9 binds its event loop to the thread that creates the socket.
        from efa_guard.sources.pyroute import iproute_class  # noqa: PLC0415 - daemon only

        ipr = iproute_class()()
        try:
            ipr.bind(groups=RTMGRP_LINK)
            # After a failure this dump reports what changed while we were not looking.
            for link in ipr.get_links():
                self._handle(link)
        except Exception:
            with contextlib.suppress(Exception):
                ipr.close()
            raise
        return ipr

    def _run(self) -> None:
        try:
            ipr = self.ipr = self._subscribe()
        except Exception as e:  # noqa: BLE001 - start() raises it: the daemon logs source_failed
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        while not self.stopped.is_set():
            try:
                while not self.stopped.is_set():
                    for msg in ipr.get():
                        self._handle(msg)
            except Exception as e:  # noqa: BLE001 - reported; re-subscribe with back-off
                why = f"link events failed ({e}); re-subscribed, full check"
            else:
                break
            finally:
                with contextlib.suppress(Exception):
                    ipr.close()
            try:
                ipr = self.ipr = resubscribe(self._subscribe, stopped=self.stopped)
            except Stopped:
                return
            self.emit(Event(Trigger.OVERFLOW, detail=why))

    def _handle(self, msg: Any) -> None:  # noqa: ANN401 - pyroute2's message classes are untyped
        name = msg.get_attr("IFLA_IFNAME")
        if not name:
            return
        event = str(msg.get("event"))
        what = self.tracker.update(event, int(msg["index"]), str(name), int(msg["flags"]))
        if what is not None and self.ready.is_set():
            self.emit(Event(Trigger.INTERFACE, detail=what))
