"""Check and assert the policy: read, compare, one transaction per table, read back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from efa_guard.errors import (
    CommandError,
    ConcurrentChangeError,
    UnstableReadError,
    VerifyError,
)
from efa_guard.iptables import Runner
from efa_guard.plan import Drift, Transaction, diff, plan
from efa_guard.policy import Policy
from efa_guard.render import desired_states
from efa_guard.state import ChainState, digest


@dataclass(frozen=True)
class Inspection:
    """The kernel compared with the policy at one moment."""

    backend: str
    desired: tuple[ChainState, ...]
    observed: tuple[ChainState, ...]
    drifts: tuple[Drift, ...]

    @property
    def in_sync(self) -> bool:
        """No difference at all."""
        return self.desired == self.observed

    @property
    def desired_hash(self) -> str:
        """SHA-256 of the policy's canonical form."""
        return digest(self.desired)

    @property
    def observed_hash(self) -> str:
        """SHA-256 of what the kernel holds, in the same form."""
        return digest(self.observed)

    def transactions(self) -> tuple[Transaction, ...]:
        """What it would take to remove the drift."""
        return plan(zip(self.desired, self.observed, strict=True))


def inspect(ipt: Runner, policy: Policy) -> Inspection:
    """Read the owned chains and compare them with the policy."""
    desired = desired_states(policy)
    observed = ipt.read(policy)
    pairs = zip(desired, observed, strict=True)
    drifts = tuple(d for want, have in pairs for d in diff(want, have))
    return Inspection(backend=ipt.kind, desired=desired, observed=observed, drifts=drifts)


@dataclass(frozen=True)
class Outcome:
    """What `enforce` found, what it wrote, and what the kernel holds afterwards."""

    before: Inspection
    written: tuple[Transaction, ...]
    after: Inspection
    attempts: int

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self.written)


RetryHook = Callable[[int, float, BaseException], None]


def log_retry(log: Any, attempt: int, wait: float, exc: BaseException) -> None:  # noqa: ANN401 - structlog's logger type varies by version
    """The structured `retry_scheduled` event, with the failed command's evidence."""
    fields: dict[str, object] = {"attempt": attempt, "wait": round(wait, 3), "error": str(exc)}
    if isinstance(exc, CommandError):
        fields |= {"argv": list(exc.argv), "returncode": exc.returncode}
    log.warning(
        "retry_scheduled",
        message=f"iptables transaction lost a race, retry {attempt} in {wait:.3f} s: {exc}",
        **fields,
    )


def enforce(  # noqa: PLR0913 - keyword-only tuning knobs
    ipt: Runner,
    policy: Policy,
    *,
    attempts: int = 5,
    max_wait: float = 1.0,
    on_retry: RetryHook | None = None,
    seen: Inspection | None = None,
) -> Outcome:
    """Assert the policy. Lost races are retried with jittered backoff; anything else raises.

    `seen` is a fresh inspection the caller already made: the first attempt starts from it.
    """
    from tenacity import (  # noqa: PLC0415 - lazy: `check` without --fix never needs it
        RetryCallState,
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_random_exponential,
    )

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, wait, exc)

    first: Inspection | None = None
    written: list[Transaction] = []
    retrying = Retrying(
        # A lost race at commit, or a foreign write between our commit and the read-back.
        # Or a ruleset that kept changing while we read it.
        retry=retry_if_exception_type((ConcurrentChangeError, VerifyError, UnstableReadError)),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.02, max=max_wait),
        before_sleep=before_sleep,
        reraise=True,
    )
    count = 0
    for attempt in retrying:
        with attempt:
            count += 1
            now = seen if count == 1 and seen is not None else inspect(ipt, policy)
            first = first or now
            txns = now.transactions()
            for txn in txns:
                ipt.restore(txn)
                written.append(txn)
            after = inspect(ipt, policy) if txns else now
            if not after.in_sync:
                left = "; ".join(d.describe() for d in after.drifts)
                msg = f"iptables accepted the transaction but the policy still differs: {left}"
                raise VerifyError(msg)
    assert first is not None  # noqa: S101 - Retrying ran at least once or raised
    return Outcome(before=first, written=tuple(written), after=after, attempts=count)
