"""Check and assert the policy: read, compare, one transaction per table, read back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from efa_guard.errors import (
    CommandError,
    ConcurrentChangeError,
    UnstableReadError,
    VerifyError,
)
from efa_guard.iptables import Mark, Runner
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
    mark: Mark | None = None  # nft: the ruleset generation read, and our commits then

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
    mark = ipt.mark()
    return Inspection(ipt.kind, desired, observed, drifts, mark)


class Proven:
    """Corrections a full read-back has verified: (state read, transactions written).

    The same transactions written on the same state give the same result; so when nobody
    else committed in between (nft: the generation moved by exactly our commits), a proven
    correction needs no read-back. A fight repeats one tamper: only its first correction pays
    for the read-back. The newest `size` are kept.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._keys: OrderedDict[tuple[str, tuple[str, ...]], None] = OrderedDict()

    @staticmethod
    def key(before: Inspection, txns: tuple[Transaction, ...]) -> tuple[str, tuple[str, ...]]:
        """What identifies one correction."""
        return (before.observed_hash, tuple(t.text for t in txns))

    def knows(self, key: tuple[str, tuple[str, ...]]) -> bool:
        """Whether this correction was verified before."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def learn(self, key: tuple[str, tuple[str, ...]]) -> None:
        """Remember a verified correction."""
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)


def _alone(before: Inspection, after: Inspection) -> bool:
    """Whether `after` was read with nothing but our own commits since `before`."""
    if before.mark is None or after.mark is None:
        return False
    ours = after.mark[1] - before.mark[1]
    return ours >= 1 and after.mark[0] == before.mark[0] + ours


@dataclass(frozen=True)
class Outcome:
    """What `enforce` found, what it wrote, and what the kernel holds afterwards."""

    before: Inspection
    written: tuple[Transaction, ...]
    after: Inspection
    attempts: int
    proven: bool = False  # `after` known without a read: the correction was verified before

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
    proven: Proven | None = None,
) -> Outcome:
    """Assert the policy. Lost races are retried with jittered backoff; anything else raises.

    `seen` is a fresh inspection the caller already made: the first attempt starts from it.
    `proven` (the daemon's): corrections verified before skip the read-back when nobody else
    wrote since the read (see Proven); every other correction is read back.
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
            after, unread = _verified(ipt, policy, now, txns, proven)
            if not after.in_sync:
                left = "; ".join(d.describe() for d in after.drifts)
                msg = f"iptables accepted the transaction but the policy still differs: {left}"
                raise VerifyError(msg)
    assert first is not None  # noqa: S101 - Retrying ran at least once or raised
    return Outcome(before=first, written=tuple(written), after=after, attempts=count, proven=unread)


def _verified(
    ipt: Runner,
    policy: Policy,
    now: Inspection,
    txns: tuple[Transaction, ...],
    proven: Proven | None,
) -> tuple[Inspection, bool]:
    """The state after writing `txns` on `now`, and whether it is known without a read."""
    if not txns:
        return now, False
    key = Proven.key(now, txns)
    known = proven is not None and now.mark is not None and proven.knows(key)
    if known and now.mark is not None and ipt.untouched_since(now.mark):
        return replace(now, observed=now.desired, drifts=(), mark=None), True
    after = inspect(ipt, policy)
    if proven is not None and after.in_sync and _alone(now, after):
        proven.learn(key)
    return after, False
