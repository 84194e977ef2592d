"""`iptables -S` lines -> compiled rules, once per chain. Pure.

`iptables -S` quotes an argument only when it holds spaces or quotes (comments, string
matches), with double quotes and backslash escapes: a line without `"` splits on
whitespace; one with quotes but no backslash splits quoted spans whole; anything else goes
through shlex. The matches a packet from outside is judged on first (interface, protocol,
destination port) are pulled out, so most rules are dismissed without looking further.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import NamedTuple

# Pulled out of every rule at once; the rest is parsed only for rules that get that far.
_PULLED = frozenset({"-i", "-p", "-d", "-m", "--match", "--dport", "--dports"})
# Options that take no value (everything else that starts with "-" takes one).
FLAGS = frozenset(
    {
        "--syn",
        "--rcheck",
        "--update",
        "--set",
        "--remove",
        "--reap",
        "--rsource",
        "--rdest",
        "--rttl",
        "--limit-iface-in",
        "--limit-iface-out",
        "--fragment",
        "-f",
        "--notrack",
    }
)


@dataclass(frozen=True, slots=True)
class Option:
    """One match option as printed: `! --dport 80` is Option("--dport", "80", negated=True)."""

    name: str
    value: str
    negated: bool


class Pulled(NamedTuple):
    """A match pulled out of a rule at once: `! -p udp` is Pulled("udp", negated=True)."""

    value: str
    negated: bool


# ` [! ]KEY VALUE` for the pulled matches and the target, on a line without quoted spans.
_KEYS = re.compile(r"(?:^| )(?:(!) )?(-[idpjg]|--dports?) (\S+)")


class Rule:
    """One `-A` line of a chain: the common matches found by string search, the rest on demand.

    Most rules are dismissed on their interface, protocol, port or destination: those are
    found with `str.find` on the line minus its quoted spans (a comment cannot fake them);
    the line is tokenized only for a rule that gets further.
    """

    __slots__ = (
        "_options",
        "_target_args",
        "destination",
        "dports",
        "goto",
        "interface",
        "line",
        "position",
        "protocol",
        "target",
    )

    def __init__(self, position: int, line: str) -> None:
        """Find the target and the matches most rules are judged on."""
        self.position = position  # 1-based, as `iptables -L --line-numbers` counts
        self.line = line
        plain = " ".join(line.split('"')[0::2]) if '"' in line else line
        self.interface: Pulled | None = None
        self.protocol: Pulled | None = None
        self.dports: Pulled | None = None
        self.destination: Pulled | None = None
        self.target: str | None = None
        self.goto = False
        for negated, key, value in _KEYS.findall(plain):
            if key in ("-j", "-g"):
                self.target, self.goto = value, key == "-g"
                break
            found = Pulled(value, negated=bool(negated))
            if key == "-p":
                self.protocol = found
            elif key == "-d":
                self.destination = found
            elif key == "-i":
                self.interface = found
            else:
                self.dports = found
        self._options: tuple[Option, ...] | None = None
        self._target_args: tuple[str, ...] | None = None

    def _tokens(self) -> tuple[list[str], int]:
        tokens = split(self.line)
        return tokens, _jump_index(tokens)

    @property
    def options(self) -> tuple[Option, ...]:
        """Every other match option, in order (parsed on first use)."""
        if self._options is None:
            tokens, jump = self._tokens()
            matches = tokens[2:jump] if jump >= 0 else tokens[2:]
            self._options = tuple(o for o in _options(matches) if o.name not in _PULLED)
        return self._options

    @property
    def target_args(self) -> tuple[str, ...]:
        """What follows the target (parsed on first use)."""
        if self._target_args is None:
            tokens, jump = self._tokens()
            self._target_args = tuple(tokens[jump + 2 :]) if jump >= 0 else ()
        return self._target_args

    def target_arg(self, name: str) -> str | None:
        """The value of a target option (`--to-destination`), or None."""
        args = self.target_args
        for i in range(len(args) - 1):
            if args[i] == name:
                return args[i + 1]
        return None


def _jump_index(tokens: list[str]) -> int:
    for name in ("-j", "-g", "--jump", "--goto"):
        if name in tokens:
            return tokens.index(name)
    return -1


def _options(tokens: list[str]) -> list[Option]:
    out: list[Option] = []
    negate = False
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok == "!":
            negate = True
            i += 1
            continue
        if tok == "--tcp-flags":  # the one option with two values
            opt, i = Option(tok, " ".join(tokens[i + 1 : i + 3]), negate), i + 3
        elif tok in FLAGS or not tok.startswith("-"):
            opt, i = Option(tok, "", negate), i + 1
        else:
            opt, i = Option(tok, tokens[i + 1] if i + 1 < n else "", negate), i + 2
        negate = False
        out.append(opt)
    return out


class Chain:
    """A chain's policy (None for a user chain) and its rules, each compiled on first use.

    A walk that stops at rule 5 of 50k compiles 5: the cost of a chain follows how far walks
    get into it, and a time budget checked per rule also bounds the compiling.
    """

    __slots__ = ("_rules", "lines", "policy")

    def __init__(self, policy: str | None, lines: list[str]) -> None:
        """`lines`: the chain's `-A` lines, in order."""
        self.policy = policy
        self.lines = lines
        self._rules: list[Rule | None] = [None] * len(lines)

    def __len__(self) -> int:
        """How many rules."""
        return len(self.lines)

    def rule(self, index: int) -> Rule:
        """Rule `index` (0-based), compiled once."""
        found = self._rules[index]
        if found is None:
            found = self._rules[index] = Rule(index + 1, self.lines[index])
        return found


def split(line: str) -> list[str]:
    """Tokenize one `iptables -S` line (fast path for the common unquoted case)."""
    if '"' not in line:
        return line.split()
    if "\\" in line or line.count('"') % 2:
        return shlex.split(line)
    out: list[str] = []
    for i, part in enumerate(line.split('"')):
        if i % 2:
            out.append(part)
        else:
            out += part.split()
    return out


def compile_rule(position: int, line: str) -> Rule:
    """Compile one `-A CHAIN ...` line."""
    return Rule(position, line)


def compile_chain(name: str, listing: list[str]) -> Chain:
    """A chain's `-S` listing, split into its policy and rule lines (compiled on demand)."""
    prefix = f"-A {name} "
    head = f"-P {name} "
    policy = None
    for line in listing:  # `-P` (or `-N`) comes before the rules
        if line.startswith(head):
            policy = line[len(head) :].split()[0]
        if line.startswith(prefix):
            break
    return Chain(policy, [line for line in listing if line.startswith(prefix)])
