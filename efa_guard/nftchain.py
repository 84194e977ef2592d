"""`nft -j list chain` JSON -> an `-S`-style listing, for chains iptables-nft cannot print.

Pure: text in, values out. A rule that is only `[counter] jump|goto X` (what iptables-nft
writes for `-j X`) is printed as iptables prints it; any other rule becomes
`-A CHAIN -m nft-native --nft-handle H [-j VERDICT]`: a match nobody decides, so the
exposure evaluator treats it as undecidable and the policy diff sees it as foreign.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_INSERT_WORDS = 5  # -I HOOK 1 -j CHAIN
_VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "return": "RETURN"}


class NftParseError(ValueError):
    """nft printed JSON we do not understand."""


@dataclass(frozen=True)
class NftRule:
    """One rule of the chain as nft lists it."""

    position: int  # 1-based, as iptables counts
    handle: int
    text: str  # a compact rendering of nft's expressions
    target: str | None  # X for a plain `[counter] jump|goto X`
    goto: bool = False
    xt: bool = False  # uses an iptables extension (xt match or target): iptables wrote it

    @property
    def plain(self) -> bool:
        """Whether iptables-nft itself could have written it (`-j X` / `-g X`)."""
        return self.target is not None


@dataclass(frozen=True)
class NftChain:
    """A chain read through nft: its policy (built-in chains) and rules."""

    family: str  # ip | ip6
    table: str
    name: str
    policy: str | None
    rules: tuple[NftRule, ...]

    def listing(self) -> str:
        """The chain as `iptables -S CHAIN` would print it, foreign rules marked."""
        head = f"-P {self.name} {self.policy}" if self.policy else f"-N {self.name}"
        return "\n".join([head, *(self.line(r) for r in self.rules)]) + "\n"

    def line(self, rule: NftRule) -> str:
        """One rule as `iptables -S` prints it (foreign rules marked)."""
        if rule.target is not None:
            return f"-A {self.name} {'-g' if rule.goto else '-j'} {rule.target}"
        line = f"-A {self.name} -m nft-native --nft-handle {rule.handle}"
        verdict = next((v for k, v in _VERDICTS.items() if rule.text.endswith(k)), None)
        return f"{line} -j {verdict}" if verdict else line

    def foreign(self) -> tuple[NftRule, ...]:
        """The rules iptables-nft surely did not write: neither a plain jump nor an xt rule."""
        return tuple(r for r in self.rules if not r.plain and not r.xt)

    def describe(self, rules: tuple[NftRule, ...] | None = None) -> str:
        """`position 1: ct state == established accept (handle 6)`, joined."""
        shown = self.foreign() if rules is None else rules
        return "; ".join(f"position {r.position}: {r.text} (handle {r.handle})" for r in shown)


def parse_chain(text: str, family: str, table: str, name: str) -> NftChain:
    """Parse `nft -j list chain FAMILY TABLE NAME`."""
    try:
        items = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as e:
        msg = f"cannot parse nft -j output for {family} {table} {name}: {e}"
        raise NftParseError(msg) from e
    policy: str | None = None
    rules: list[NftRule] = []
    for item in items:
        if "chain" in item and item["chain"].get("name") == name:
            chain = item["chain"]
            policy = str(chain["policy"]).upper() if "hook" in chain else None
        elif "rule" in item and item["rule"].get("chain") == name:
            rule = item["rule"]
            exprs = rule.get("expr", [])
            target, goto = _plain_jump(exprs)
            text_ = " ".join(_render(e) for e in exprs)
            xt = any("xt" in e for e in exprs)
            rules.append(NftRule(len(rules) + 1, int(rule["handle"]), text_, target, goto, xt))
    return NftChain(family, table, name, policy, tuple(rules))


def _plain_jump(exprs: list[dict[str, object]]) -> tuple[str | None, bool]:
    rest = [e for e in exprs if "counter" not in e]
    if len(rest) != 1:
        return None, False
    for key in ("jump", "goto"):
        spec = rest[0].get(key)
        if isinstance(spec, dict) and isinstance(spec.get("target"), str):
            return spec["target"], key == "goto"
    return None, False


def _render(expr: dict[str, object]) -> str:
    """Render nft's expression compactly: `ct state == established`, `accept`, `jump X`."""
    if "counter" in expr:
        return "counter"
    if "match" in expr and isinstance(expr["match"], dict):
        m = expr["match"]
        return f"{_value(m.get('left'))} {m.get('op', '==')} {_value(m.get('right'))}"
    if len(expr) == 1:
        key, value = next(iter(expr.items()))
        return key if value is None else f"{key} {_value(value)}"
    return _value(expr)


def _value(value: object) -> str:
    if isinstance(value, dict):
        if len(value) == 1:
            key, inner = next(iter(value.items()))
            if isinstance(inner, dict) and "key" in inner:
                return f"{key} {inner['key']}"
            if isinstance(inner, dict) and "protocol" in inner and "field" in inner:
                return f"{inner['protocol']} {inner['field']}"
        return " ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "{ " + ", ".join(_value(v) for v in value) + " }"
    return str(value).replace('"', "").replace("'", "")


def move_jumps(text: str, hooks: dict[str, NftChain]) -> tuple[str, str] | None:
    """Split a restore transaction for hook chains iptables cannot change, or None.

    iptables-nft-restore cannot delete a rule in a chain holding rules it cannot parse
    ("Parsing nftables rule failed"), but nft can, by handle. The `-D HOOK` / `-I HOOK 1 -j X`
    lines of `hooks` become one nft script: insert the jump at the head, delete the old
    jumps by the handles read in the same snapshot (a vanished handle fails the whole
    script: nothing half-done). Returns (the rest for iptables-restore, the nft script);
    None when a deleted jump cannot be matched to a handle.
    """
    rest: list[str] = []
    inserts: list[str] = []
    deletes: list[str] = []
    taken: set[int] = set()
    for line in text.splitlines():
        words = line.split()
        hook = hooks.get(words[1]) if len(words) > 1 and words[0] in ("-D", "-I") else None
        if hook is None:
            rest.append(line)
            continue
        where = f"{hook.family} {hook.table} {hook.name}"
        if words[0] == "-I" and words[2:4] == ["1", "-j"] and len(words) == _INSERT_WORDS:
            inserts.append(f"insert rule {where} counter jump {words[4]}")
            continue
        wanted = "-A" + line.removeprefix("-D")
        found = next(
            (r for r in hook.rules if r.handle not in taken and hook.line(r) == wanted), None
        )
        if found is None or words[0] != "-D":
            return None
        taken.add(found.handle)
        deletes.append(f"delete rule {where} handle {found.handle}")
    return "\n".join(rest) + "\n", "\n".join([*inserts, *deletes]) + "\n"
