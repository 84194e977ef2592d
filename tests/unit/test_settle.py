"""The loop's burst coalescing: a lone event is acted on at once, a burst is gathered."""

from __future__ import annotations

import queue
import threading
import time

from efa_guard.daemon.loop import MAX_SETTLE, QUIET, SETTLE, settle
from efa_guard.events import Event, Trigger


def _event(n: int) -> Event:
    return Event(Trigger.RULE_CHANGE, detail=f"transaction {n}")


def test_a_lone_event_after_quiet_does_not_wait() -> None:
    """After QUIET seconds without events, the queued events are taken without any wait."""
    q: queue.SimpleQueue[Event] = queue.SimpleQueue()
    q.put(_event(2))
    batch = [_event(1)]
    start = time.monotonic()
    settle(q, batch, last=start - 10 * QUIET)
    assert time.monotonic() - start < SETTLE  # took what was there, waited for nothing
    assert [e.detail for e in batch] == ["transaction 1", "transaction 2"]


def test_an_event_inside_a_burst_waits_for_the_rest() -> None:
    """Within QUIET of the previous burst, events arriving SETTLE apart join one batch."""
    q: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def later() -> None:
        time.sleep(SETTLE / 3)
        q.put(_event(2))

    t = threading.Thread(target=later)
    t.start()
    batch = [_event(1)]
    ended = settle(q, batch, last=time.monotonic())
    t.join()
    assert len(batch) == 2
    assert ended >= batch[0].at


def test_a_burst_is_cut_at_max_settle() -> None:
    """A writer that never pauses cannot hold the check back longer than MAX_SETTLE."""
    q: queue.SimpleQueue[Event] = queue.SimpleQueue()
    stop = threading.Event()

    def flood() -> None:
        n = 0
        while not stop.is_set():
            q.put(_event(n))
            n += 1
            time.sleep(SETTLE / 5)

    t = threading.Thread(target=flood)
    t.start()
    start = time.monotonic()
    try:
        settle(q, [_event(-1)], last=start)
    finally:
        stop.set()
        t.join()
    assert time.monotonic() - start < MAX_SETTLE + 0.5
