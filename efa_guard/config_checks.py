"""The validator's basic checks: keys, strings, lists, interface names, ports."""

from __future__ import annotations

import re
from typing import cast

from efa_guard.errors import ConfigError
from efa_guard.limits import Limits, show
from efa_guard.policy import MAX_PORT, MIN_PORT, PortRange, normalize

# IFNAMSIZ is 16 with the NUL; iptables accepts a trailing '+' as a wildcard.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
_PORT_SPEC = re.compile(r"(\d{1,5})(?:\s*[-:]\s*(\d{1,5}))?")


class Checks:
    """Checks of one file's values, each raising a ConfigError that names file and key."""

    def __init__(self, where: str, limits: Limits) -> None:
        self.where = where
        self.limits = limits

    def fail(self, key: str, reason: str) -> ConfigError:
        """The error for `key`, naming this file."""
        return ConfigError(self.where, key, reason)

    def keys(self, table: dict[str, object], allowed: frozenset[str], prefix: str) -> None:
        """Refuse a key of `table` not in `allowed`."""
        for key in table:
            if key not in allowed:
                shown = key if _BARE_KEY.fullmatch(key) else show(key)
                name = f"{prefix}.{shown}" if prefix else shown
                known = ", ".join(sorted(allowed))
                raise self.fail(name, f"unknown key (known keys: {known})")

    def required(self, table: dict[str, object], key: str, prefix: str) -> object:
        """The value of `key`, or an error that it is missing."""
        if key not in table:
            raise self.fail(f"{prefix}.{key}" if prefix else key, "missing required key")
        return table[key]

    def string(self, value: object, key: str) -> str:
        """A string within the length limit."""
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {kind_of(value)}")
        if len(value) > self.limits.max_string:
            raise self.fail(key, f"longer than the limit of {self.limits.max_string} characters")
        return value

    def array(self, value: object, key: str, limit: int, what: str) -> list[object] | None:
        """The list under `key` (None when it is not a list), refused when above `limit`."""
        if not isinstance(value, list):
            return None
        if len(value) > limit:
            raise self.fail(key, f"{len(value)} {what}, more than the limit of {limit}")
        return cast("list[object]", value)

    def interface(self, value: object, key: str) -> str:
        """An interface name iptables accepts, `+` wildcard included."""
        name = self.string(value, key)
        base = name.removesuffix("+")
        if not _IFNAME.fullmatch(base) or base in {".", ".."} or len(name) > 15:
            reason = (
                f"invalid interface name {show(name)}: 1-15 characters of letters, digits, "
                "'_', '.', '-', optionally ending in '+'"
            )
            raise self.fail(key, reason)
        return name

    def ports(self, raw: object, key: str) -> tuple[PortRange, ...]:
        """The port list under `key`, merged into sorted ranges."""
        return normalize(self.port_list(raw, key))

    def port_list(self, raw: object, key: str) -> list[PortRange]:
        """Each port or range of the list under `key`, as given."""
        items = self.array(raw, key, self.limits.max_ports, "entries")
        if items is None:
            raise self.fail(key, f"expected a list of ports, got {kind_of(raw)}")
        return [self.port(item, f"{key}[{i}]") for i, item in enumerate(items)]

    def port(self, item: object, key: str) -> PortRange:
        """One port number or "first-last" range."""
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise self.fail(key, f'expected a port number or "first-last", got {kind_of(item)}')
        if isinstance(item, int):
            first = last = item
        else:
            m = _PORT_SPEC.fullmatch(item.strip()) if len(item) <= 32 else None
            if not m:
                raise self.fail(key, f'invalid port {show(item)}: expected N or "N-M"')
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) else first
        for p in (first, last):
            if not MIN_PORT <= p <= MAX_PORT:
                raise self.fail(key, f"port {p} is out of range {MIN_PORT}-{MAX_PORT}")
        if first > last:
            raise self.fail(key, f"range {first}-{last} is reversed")
        return PortRange(first, last)


def show_value(value: object) -> str:
    """A value as an error message shows it, shortened."""
    if isinstance(value, str):
        return show(value)
    if isinstance(value, list | dict):
        return kind_of(value)
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def kind_of(value: object) -> str:
    """What a TOML value is, in words ("an integer")."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)
