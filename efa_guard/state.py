"""What one owned chain looks like, desired or observed, in iptables' own canonical text."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Jump:
    """A rule of the hook chain that jumps (or goes) to an owned chain."""

    position: int  # 1-based among the hook chain's rules
    rule: str  # as `iptables -S` prints it: "-A INPUT -j EFA_INPUT"


@dataclass(frozen=True)
class ChainState:
    """One owned chain: whether it exists, its rules, and the jumps to it from its hook."""

    table: str
    name: str
    hook: str
    exists: bool
    rules: tuple[str, ...]
    jumps: tuple[Jump, ...]
    family: str = "ipv4"

    @property
    def key(self) -> str:
        """`family table/name`, how reports name a chain."""
        return f"{self.family} {self.table}/{self.name}"

    def canonical(self) -> str:
        """The text that is hashed: identical for desired and observed exactly when in sync."""
        lines = [f"*{self.family} {self.table} {self.hook}"]
        lines.append(f"-N {self.name}" if self.exists else f"# absent {self.name}")
        lines.extend(self.rules)
        lines.extend(f"@{j.position} {j.rule}" for j in self.jumps)
        return "\n".join(lines) + "\n"


def digest(states: Iterable[ChainState]) -> str:
    """SHA-256 over the canonical text of the chains, in order."""
    h = hashlib.sha256()
    for s in states:
        h.update(s.canonical().encode())
    return h.hexdigest()
