"""Re-subscribing a kernel event source: tenacity, jittered exponential back-off, no giving up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_WAIT = 0.1  # seconds: the scale of the back-off ...
MAX_WAIT = 5.0  # ... and its cap: the daemon's timer covers the gap meanwhile


class Stopped(Exception):  # noqa: N818 - a state, not an error
    """The source was stopped while it was re-subscribing."""


def resubscribe(
    subscribe: Callable[[], T],
    *,
    stopped: threading.Event,
    failed: Callable[[int, BaseException], None] = lambda _n, _e: None,
    first_wait: float = FIRST_WAIT,
    max_wait: float = MAX_WAIT,
) -> T:
    """Call `subscribe` until it returns; raise Stopped as soon as `stopped` is set.

    Any Exception counts as a failed attempt (reported to `failed` with its number); the
    waits between attempts grow exponentially with full jitter up to `max_wait`, and are
    spent in `stopped.wait` so that stop() ends them at once.
    """
    from tenacity import (  # noqa: PLC0415 - lazy, like every tenacity user here
        RetryCallState,
        Retrying,
        retry_if_exception_type,
        wait_random_exponential,
    )

    def sleep(seconds: float) -> None:
        stopped.wait(seconds)

    def stop(_state: RetryCallState) -> bool:
        return stopped.is_set()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            failed(state.attempt_number, exc)

    def once() -> T:
        if stopped.is_set():
            raise Stopped
        return subscribe()

    retrying = Retrying(
        retry=retry_if_exception_type(Exception),
        stop=stop,
        wait=wait_random_exponential(multiplier=first_wait, max=max_wait),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(once)
    except Stopped:
        raise
    except Exception as e:  # tenacity gives up only once `stopped` is set
        raise Stopped from e
