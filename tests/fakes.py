"""A stateful fake of the iptables runner, for unit speed (the real one is tested on the kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from efa_guard.config import Config, Daemon, parse
from efa_guard.daemon.report import Reporter
from efa_guard.daemon.step import Reconciler
from efa_guard.errors import CommandError, ConcurrentChangeError
from efa_guard.iptables import Activity, Kind, Mark
from efa_guard.notify import Notifier
from efa_guard.plan import Transaction
from efa_guard.policy import Policy
from efa_guard.render import desired_states
from efa_guard.state import ChainState

DEFAULT_TOML = Path(__file__).parents[1] / "config" / "efa-guard.toml"
# The smallest valid config: one chain, one rule.
MINIMAL_TOML = """
interface = "eth0"
[[chain]]
name = "EFA_INPUT"
table = "filter"
hook = "INPUT"
[[chain.rule]]
protocol = "tcp"
ports = [3306]
"""


def default_config(path: Path | None = None) -> Config:
    """The shipped default config (as if read from `path`)."""
    return parse(DEFAULT_TOML.read_text(), path=path or Path("c"))


CFG = default_config()


@dataclass
class FakeIptables:
    """Holds chain states; a restore makes the written chains desired, after `races` failures."""

    states: dict[str, ChainState]
    races: int = 0
    fail: CommandError | None = None
    broken: bool = False  # accepts writes but changes nothing
    restores: list[str] = field(default_factory=list)
    policy: Policy = CFG.policy
    kind: Kind = "nft"
    activity: Activity = field(default_factory=Activity)
    generation: int | None = None  # None: no generation (every correction is read back)
    commits: int = 0
    reads: int = 0

    def read(self, policy: Policy) -> tuple[ChainState, ...]:
        """The current states, in policy order (a chain never written reads as missing)."""
        self.policy = policy
        self.reads += 1
        missing = [replace(s, exists=False, rules=(), jumps=()) for s in desired_states(policy)]
        return tuple(self.states.get(s.key, s) for s in missing)

    def restore(self, txn: Transaction) -> None:
        """Apply, or fail as told."""
        self.restores.append(txn.table)
        if self.fail is not None:
            raise self.fail
        if self.races:
            self.races -= 1
            raise ConcurrentChangeError(["iptables-restore"], 4, "", "xtables lock", txn.text)
        self.commits += 1
        if self.generation is not None:
            self.generation += 1
        if self.broken:
            return
        for want in desired_states(self.policy):
            if want.key in txn.chains:
                self.states[want.key] = want

    def mark(self) -> Mark | None:
        """Like nft's: the generation (when modelled) and our commits."""
        return None if self.generation is None else (self.generation, self.commits)

    def untouched_since(self, mark: Mark) -> bool:
        """The generation moved by exactly our commits since `mark`."""
        ours = self.commits - mark[1]
        return self.generation is not None and ours >= 1 and self.generation == mark[0] + ours


def fake(*, races: int = 0, fail: CommandError | None = None, broken: bool = False) -> FakeIptables:
    """A fake where every owned chain is missing."""
    missing = {
        s.key: replace(s, exists=False, rules=(), jumps=()) for s in desired_states(CFG.policy)
    }
    return FakeIptables(states=missing, races=races, fail=fail, broken=broken)


def in_sync() -> FakeIptables:
    """A fake holding exactly the default policy."""
    ipt = fake()
    ipt.states = {s.key: s for s in desired_states(CFG.policy)}
    return ipt


def tamper(ipt: FakeIptables) -> None:
    """Flush EFA_INPUT in the fake."""
    key = "ipv4 filter/EFA_INPUT"
    ipt.states[key] = replace(ipt.states[key], rules=())


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        """The current time."""
        return self.now


def reconciler(ipt: FakeIptables, clock: Clock, tuning: Daemon | None = None) -> Reconciler:
    """A reconciler on the default policy, with a structlog logger the tests capture."""
    cfg = default_config()
    if tuning is not None:
        cfg = replace(cfg, daemon=tuning)
    report = Reporter(log=structlog.get_logger(), notifier=Notifier({}), backend=ipt.kind)
    return Reconciler(config=cfg, ipt=ipt, report=report, clock=clock)
