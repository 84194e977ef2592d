"""Event values: what the sources saw, handed to the one reconcile loop."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Trigger(enum.StrEnum):
    """Why a check ran; the most telling one labels a correction."""

    CONFIG_RELOAD = "config-reload"
    CONFIG_LOADED = "config-loaded"  # a reload's validation finished (in a worker thread)
    INTERFACE = "interface"
    KUBE_PROXY = "kube-proxy"
    RULE_CHANGE = "rule-change"
    OVERFLOW = "event-overflow"
    LOCK = "xtables-lock"
    TIMER = "timer"
    STARTUP = "startup"
    FOLLOW_UP = "follow-up"
    STOP = "stop"
    STATUS = "status"
    PAUSE = "pause"  # `efa-guard pause`/`resume` changed the pause file (SIGUSR2)
    RESUME = "resume"  # a pause ended: re-assert the policy


# Lower index wins when a burst mixes triggers.
PRECEDENCE = (
    Trigger.CONFIG_RELOAD,
    Trigger.RESUME,
    Trigger.INTERFACE,
    Trigger.KUBE_PROXY,
    Trigger.RULE_CHANGE,
    Trigger.OVERFLOW,
    Trigger.LOCK,
    Trigger.FOLLOW_UP,
    Trigger.TIMER,
    Trigger.STARTUP,
    Trigger.STOP,
    Trigger.STATUS,
    Trigger.PAUSE,
    Trigger.CONFIG_LOADED,
)


@dataclass(frozen=True)
class Event:
    """One thing that happened; `at` is time.monotonic() when it was seen."""

    trigger: Trigger
    detail: str = ""
    pid: int | None = None
    process: str | None = None
    at: float = field(default_factory=time.monotonic)
    families: frozenset[str] | None = None  # the address families it concerns; None: all
    tables: frozenset[str] | None = None  # the tables it concerns (filter, raw); None: all


def label(events: list[Event]) -> Trigger:
    """The trigger that explains a burst best."""
    return min((e.trigger for e in events), key=PRECEDENCE.index)


def families(events: list[Event]) -> frozenset[str] | None:
    """The families a burst concerns, or None when any event may concern all of them."""
    return _union([e.families for e in events])


def tables(events: list[Event]) -> frozenset[str] | None:
    """The tables a burst concerns, or None when any event may concern all of them."""
    return _union([e.tables for e in events])


def _union(sets: list[frozenset[str] | None]) -> frozenset[str] | None:
    if any(s is None for s in sets):
        return None
    return frozenset().union(*(s for s in sets if s is not None))


def culprit(events: list[Event]) -> Event | None:
    """The last event of the burst's label that names a process (else any that does).

    A burst mixing a kube-proxy resync and someone's `iptables -D` is labelled by its most
    telling trigger, and the culprit comes from the same kind of event, not from the other.
    """
    named = [e for e in events if e.pid is not None or e.process]
    if not named:
        return None
    main = label(events)
    same = [e for e in named if e.trigger is main]
    return (same or named)[-1]
