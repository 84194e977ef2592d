"""Config reload: read and validate the file; a broken edit never replaces the running policy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from efa_guard import config as configmod
from efa_guard.errors import ConfigError
from efa_guard.lastgood import file_sha256, sha256


@dataclass(frozen=True)
class Reloaded:
    """A new config is accepted."""

    config: configmod.Config
    changes: tuple[str, ...]  # what differs: "policy", "allowlist", "interface", "daemon"
    dropped: tuple[str, ...]  # chains no longer managed (left in the kernel)


def _changes(old: configmod.Config, new: configmod.Config) -> tuple[str, ...]:
    out = []
    if new.policy != old.policy:
        out.append("policy")
    if new.exposure != old.exposure:
        out.append("allowlist")
    if new.interface != old.interface:
        out.append("interface")
    if new.daemon != old.daemon:
        out.append("daemon")
    return tuple(out)


def reload(old: configmod.Config) -> Reloaded:
    """Load the running config's file again; raise ConfigError naming what is wrong."""
    path = old.path
    try:
        new = configmod.load(path)
    except ConfigError as e:
        e.sha256 = file_sha256(path)
        raise
    if new.backend != old.backend:
        msg = f"changing backend from {old.backend} to {new.backend} needs a restart"
        raise ConfigError(str(path), "backend", msg, sha256=sha256(new.text))
    dropped = sorted(
        {f"{c.table}/{c.name}" for c in old.policy.chains}
        - {f"{c.table}/{c.name}" for c in new.policy.chains}
    )
    return Reloaded(config=new, changes=_changes(old, new), dropped=tuple(dropped))


@dataclass(frozen=True)
class Outcome:
    """One finished reload: the new config or why not, and what asked for it."""

    result: Reloaded | ConfigError
    why: str
    asked_at: float  # time.monotonic() of the request


class InlineLoader:
    """Validates at once, in the caller's thread (unit tests; tiny configs)."""

    def __init__(self) -> None:
        self._done: list[Outcome] = []

    def request(self, running: configmod.Config, why: str, at: float) -> None:
        """Validate the running config's file now."""
        self._done.append(Outcome(_attempt(running), why, at))

    def take(self) -> list[Outcome]:
        """Finished reloads, oldest first."""
        done, self._done = self._done, []
        return done


class ThreadLoader:
    """Validates in a worker thread: the loop keeps enforcing the running policy meanwhile.

    When a result is ready, `wake` puts an event in the loop's queue; a request arriving
    during a validation runs once more afterwards, so the newest file always wins.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._done: list[Outcome] = []
        self._busy = False
        self._again: tuple[configmod.Config, str, float] | None = None

    def request(self, running: configmod.Config, why: str, at: float) -> None:
        """Start validating (or queue one more run after the current one)."""
        with self._lock:
            if self._busy:
                self._again = (running, why, at)
                return
            self._busy = True
        threading.Thread(target=self._work, args=(running, why, at), daemon=True).start()

    def _work(self, running: configmod.Config, why: str, at: float) -> None:
        while True:
            outcome = Outcome(_attempt(running), why, at)
            with self._lock:
                self._done.append(outcome)
                if self._again is None:
                    self._busy = False
                    break
                running, why, at = self._again
                self._again = None
        self._wake()

    def take(self) -> list[Outcome]:
        """Finished reloads, oldest first."""
        with self._lock:
            done, self._done = self._done, []
        return done


def _attempt(running: configmod.Config) -> Reloaded | ConfigError:
    try:
        return reload(running)
    except ConfigError as e:
        return e
    except RecursionError as e:  # a pathological file must never end as an internal error
        return ConfigError(str(running.path), "(file)", f"nested too deeply: {e}")
