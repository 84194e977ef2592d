"""Bounds on a config file, and a cheap scan that enforces the shape ones before tomllib runs.

tomllib recurses once per nested array or inline table (RecursionError a few hundred levels
down) and is quadratic in the parts of one dotted key (`a.a.a...`): both are refused here, in
one linear pass that only skips strings and comments, before tomllib sees the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from efa_guard.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """What a config may hold; each bound is far above any real EFA policy."""

    max_bytes: int = 1 << 20  # file size, checked before the file is read
    max_depth: int = 16  # arrays and inline tables nested in one value
    max_key_parts: int = 16  # parts of one dotted key or table header (a.b.c)
    max_string: int = 256  # characters in a string value the validator reads
    max_chains: int = 16  # [[chain]] tables (only six table/hook pairs can be valid)
    max_rules_per_chain: int = 10_000  # [[chain.rule]] tables in one chain
    max_rules: int = 20_000  # [[chain.rule]] tables in all chains
    max_ports: int = 65_535  # entries in one ports, except or exposure list


DEFAULT_LIMITS = Limits()

# Everything the scan reacts to; the rest (keys, numbers, booleans, dates) is passed over.
_TOKEN = re.compile(r"\"\"\"|'''|[\"'#\[\]{}=.,\n]")
_BASIC = re.compile(r'(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"[^'\n]*'")
_ML_BASIC = re.compile(r'(?:[^"\\]|\\.|""?(?!"))*"{3,5}', re.DOTALL)
_ML_LITERAL = re.compile(r"(?:[^']|''?(?!'))*'{3,5}", re.DOTALL)
_STRINGS = {'"': _BASIC, "'": _LITERAL, '"""': _ML_BASIC, "'''": _ML_LITERAL}


def show(text: str, limit: int = 40) -> str:
    """A value for an error message: repr'd (so one line) and cut to `limit` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def scan(text: str, where: str, limits: Limits) -> None:
    """Refuse nesting deeper than max_depth and dotted keys longer than max_key_parts."""
    _Scan(text, where, limits).run()


class _Scan:
    def __init__(self, text: str, where: str, limits: Limits) -> None:
        self.text = text
        self.where = where
        self.limits = limits
        self.stack: list[str] = []  # open '[' and '{' of values
        self.in_key = True  # a key is being read (line start, or after '{' or ',' in a table)
        self.key_start = 0  # where the current top-level line began
        self.header_start = -1  # where the last [table] or [[array]] header began
        self.dots = 0

    def run(self) -> None:
        text, pos = self.text, 0
        while (m := _TOKEN.search(text, pos)) is not None:
            mark, pos = m.group(), m.end()
            if mark in _STRINGS:
                end = _STRINGS[mark].match(text, pos)
                if end is None:
                    return  # unterminated: tomllib says where
                pos = end.end()
            elif mark == "#":
                newline = text.find("\n", pos)
                pos = len(text) if newline < 0 else newline
            elif mark in "[{":
                self.open(mark, m.start())
            elif mark in "]}":
                if self.stack:
                    self.stack.pop()
                    self.in_key = False
            else:
                self.other(mark, m.start())

    def open(self, mark: str, at: int) -> None:
        if mark == "[" and not self.stack and self.in_key:
            self.header_start = self.key_start
            return  # a [table] or [[array]] header: its key parts are counted
        self.stack.append(mark)
        if len(self.stack) > self.limits.max_depth:
            raise self.fail(f"nested deeper than {self.limits.max_depth} levels", at)
        if mark == "{":
            self.begin_key(at + 1)
        else:
            self.in_key = False

    def other(self, mark: str, at: int) -> None:
        if mark == "=":
            self.in_key = False
        elif mark == ".":
            if self.in_key:
                self.dots += 1
                if self.dots >= self.limits.max_key_parts:
                    reason = f"a dotted key of more than {self.limits.max_key_parts} parts"
                    raise self.fail(reason, at)
        elif mark == ",":
            if self.stack[-1:] == ["{"]:
                self.begin_key(at + 1)  # the next key of an inline table
        elif not self.stack:  # a new line outside any value: a key or a header follows
            self.begin_key(at + 1)

    def begin_key(self, at: int) -> None:
        self.in_key = True
        self.dots = 0
        if not self.stack:
            self.key_start = at  # errors name the top-level key (or header) of the line

    def fail(self, reason: str, at: int) -> ConfigError:
        line = self.text.count("\n", 0, at) + 1
        key = self.key_at(self.key_start)
        if 0 <= self.header_start < self.key_start:
            key = f"{self.key_at(self.header_start)}.{key}"  # chain.rule.ports
        if not key.isprintable():
            key = ""
        key = key if len(key) <= 60 else key[:57] + "..."
        return ConfigError(self.where, key or "(syntax)", f"{reason} (line {line})")

    def key_at(self, start: int) -> str:
        """The key of the line at `start`, as written: `a.b` of `a.b = 1` or of `[[a.b]] # c`."""
        line = self.text[start : start + 200].split("\n", 1)[0]
        key = line.split("=", 1)[0].split("#", 1)[0]
        return " ".join(key.strip(" \t[]").split())
