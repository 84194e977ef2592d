"""TOML config -> a validated, frozen Config. Errors name the file, the key and the reason."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

from efa_guard.config_metrics import MetricsConfig, parse_metrics
from efa_guard.errors import ConfigError
from efa_guard.limits import DEFAULT_LIMITS, Limits, scan, show
from efa_guard.policy import (
    FAMILIES,
    HOOKS,
    MAX_PORT,
    MIN_PORT,
    TABLES_WITH_CONNTRACK,
    Allowlist,
    Chain,
    Family,
    Policy,
    PortRange,
    Protocol,
    Rule,
    Table,
    contains,
    normalize,
    subtract,
)

DEFAULT_PATH = Path("/etc/efa-guard/efa-guard.toml")

Backend = Literal["auto", "nft", "legacy"]
BACKENDS: tuple[Backend, ...] = ("auto", "nft", "legacy")

# IFNAMSIZ is 16 with the NUL; iptables accepts a trailing '+' as a wildcard.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# XT_EXTENSION_MAXNAMELEN is 29 with the NUL.
_CHAIN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,27}")
_RESERVED_CHAINS = frozenset(
    {"ACCEPT", "DROP", "QUEUE", "RETURN", "REJECT", "LOG", "MARK", "DNAT", "SNAT"}
    | {"MASQUERADE", "REDIRECT", "NFQUEUE", "CT", "NOTRACK", "TRACE", "AUDIT"}
    | {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
_PORT_SPEC = re.compile(r"(\d{1,5})(?:\s*[-:]\s*(\d{1,5}))?")

_TOP_KEYS = frozenset(
    {"backend", "interface", "families", "chain", "daemon", "exposure", "metrics"}
)
# What may be visible on the management interface unless the config says otherwise:
# the seed's exceptions and SSH.
DEFAULT_ALLOW_TCP = (PortRange(22, 22), PortRange(6514, 6514), PortRange(8078, 8078))
DEFAULT_ALLOWLIST = Allowlist(tcp=DEFAULT_ALLOW_TCP)
DEFAULT_METRICS = MetricsConfig()
_CHAIN_KEYS = frozenset({"name", "table", "hook", "rule"})
_RULE_KEYS = frozenset({"protocol", "ports", "except", "new_only", "interface"})


@dataclass(frozen=True)
class Daemon:
    """Tuning of `efa-guard run`; the defaults suit a production node."""

    interval: float = 10.0  # seconds between safety-net checks (the only signal on legacy)
    follow_up: float = 2.0  # re-check this long after an interface event (ifup hooks run late)
    contest_threshold: int = 5  # this many corrections ...
    contest_window: float = 10.0  # ... within this many seconds is a fight
    backoff_max: float = 5.0  # cap of the delay between corrections once the budget is spent
    cpu_budget: float = 0.10  # share of one core corrections may use over contest_window
    pause_max: float = 4 * 3600.0  # the longest `efa-guard pause --for` accepted


# key -> (type, minimum, maximum)
_DAEMON_KEYS: dict[str, tuple[type, float, float]] = {
    "interval": (float, 0.01, 86400.0),
    "follow_up": (float, 0.0, 3600.0),
    "contest_threshold": (int, 2, 1000),
    "contest_window": (float, 0.1, 3600.0),
    "backoff_max": (float, 0.01, 3600.0),
    "cpu_budget": (float, 0.001, 1.0),
    "pause_max": (float, 60.0, 7 * 86400.0),
}


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    path: Path
    backend: Backend
    interface: str
    policy: Policy
    daemon: Daemon = Daemon()
    exposure: Allowlist = DEFAULT_ALLOWLIST
    metrics: MetricsConfig = DEFAULT_METRICS
    text: str = field(default="", compare=False, repr=False)  # the source, for last-known-good


def load(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> Config:
    """Read and validate a config file; raise ConfigError naming what is wrong.

    Time and memory are bounded by `limits` whatever the file holds: its size is checked
    before it is read, and validation is linear in it. Safe to call off the enforcement thread.
    """
    where = str(path)
    too_big = f"larger than the limit of {limits.max_bytes} bytes"
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > limits.max_bytes:
                raise ConfigError(where, "(file)", too_big)
            raw = f.read(limits.max_bytes + 1)  # a pipe or /proc file has no size
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(where, "(file)", f"cannot read: {reason}") from e
    if len(raw) > limits.max_bytes:
        raise ConfigError(where, "(file)", too_big)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(where, "(file)", f"not UTF-8: {e}") from e
    return parse(text, path=path, limits=limits)


def parse(text: str, *, path: Path, limits: Limits = DEFAULT_LIMITS) -> Config:
    """Validate TOML text as a config, within `limits`."""
    where = str(path)
    if len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes:
        raise ConfigError(where, "(file)", f"larger than the limit of {limits.max_bytes} bytes")
    scan(text, where, limits)
    try:
        data = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(where, "(syntax)", f"invalid TOML: {e}") from e
    except RecursionError as e:  # the scan bounds nesting far below this; kept as a backstop
        raise ConfigError(where, "(syntax)", "invalid TOML: nested too deep") from e
    return replace(_Validator(where, limits).config(data, path), text=text)


class _Validator:
    def __init__(self, where: str, limits: Limits) -> None:
        self.where = where
        self.limits = limits
        self.rules = 0  # [[chain.rule]] tables seen so far, in all chains

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.where, key, reason)

    def keys(self, table: dict[str, object], allowed: frozenset[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                shown = key if _BARE_KEY.fullmatch(key) else show(key)
                name = f"{prefix}.{shown}" if prefix else shown
                known = ", ".join(sorted(allowed))
                raise self.fail(name, f"unknown key (known keys: {known})")

    def required(self, table: dict[str, object], key: str, prefix: str) -> object:
        if key not in table:
            raise self.fail(f"{prefix}.{key}" if prefix else key, "missing required key")
        return table[key]

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)}")
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
        name = self.string(value, key)
        base = name.removesuffix("+")
        if not _IFNAME.fullmatch(base) or base in {".", ".."} or len(name) > 15:
            reason = (
                f"invalid interface name {show(name)}: 1-15 characters of letters, digits, "
                "'_', '.', '-', optionally ending in '+'"
            )
            raise self.fail(key, reason)
        return name

    def config(self, data: dict[str, object], path: Path) -> Config:
        self.keys(data, _TOP_KEYS, "")
        backend = self.string(data.get("backend", "auto"), "backend")
        if backend not in BACKENDS:
            raise self.fail("backend", f"must be one of {', '.join(BACKENDS)}, got {show(backend)}")
        interface = self.interface(self.required(data, "interface", ""), "interface")
        chains_raw = self.array(
            self.required(data, "chain", ""), "chain", self.limits.max_chains, "chains"
        )
        if not chains_raw:
            raise self.fail("chain", "expected one or more [[chain]] tables")
        chains = tuple(self.chain(c, f"chain[{i}]", interface) for i, c in enumerate(chains_raw))
        self.unique(chains)
        return Config(
            path=path,
            backend=backend,
            interface=interface,
            policy=Policy(chains, self.families(data.get("families", list(FAMILIES)))),
            daemon=self.daemon(data.get("daemon", {})),
            exposure=self.allowlist(data.get("exposure", {})),
            metrics=parse_metrics(data.get("metrics", {}), self.fail),
        )

    def allowlist(self, raw: object) -> Allowlist:
        if not isinstance(raw, dict):
            raise self.fail("exposure", f"expected a table, got {_kind(raw)}")
        self.keys(raw, frozenset({"tcp", "udp"}), "exposure")
        tcp = self.ports(raw["tcp"], "exposure.tcp") if "tcp" in raw else DEFAULT_ALLOW_TCP
        udp = self.ports(raw.get("udp", []), "exposure.udp")
        return Allowlist(tcp=tcp, udp=udp)

    def families(self, raw: object) -> tuple[Family, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail("families", 'expected a non-empty list such as ["ipv4", "ipv6"]')
        out: list[Family] = []
        for i, item in enumerate(raw):
            if item not in FAMILIES:
                raise self.fail(f"families[{i}]", f"must be ipv4 or ipv6, got {_show(item)}")
            if item in out:
                raise self.fail(f"families[{i}]", f"{item} is listed twice")
            out.append(cast("Family", item))
        return tuple(out)

    def daemon(self, raw: object) -> Daemon:
        if not isinstance(raw, dict):
            raise self.fail("daemon", f"expected a table, got {_kind(raw)}")
        self.keys(raw, frozenset(_DAEMON_KEYS), "daemon")
        values: dict[str, float | int] = {}
        for key, value in raw.items():
            kind, low, high = _DAEMON_KEYS[key]
            name = f"daemon.{key}"
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(name, f"expected a number, got {_kind(value)}")
            if kind is int and not isinstance(value, int):
                raise self.fail(name, f"expected a whole number, got {_show(value)}")
            if not low <= value <= high:
                raise self.fail(name, f"{_show(value)} is out of range {low:g}-{high:g}")
            values[key] = kind(value)
        return Daemon(**values)  # type: ignore[arg-type]

    def unique(self, chains: tuple[Chain, ...]) -> None:
        names: dict[tuple[str, str], int] = {}
        hooks: dict[tuple[str, str], int] = {}
        for i, c in enumerate(chains):
            if (c.table, c.name) in names:
                first = names[(c.table, c.name)]
                raise self.fail(
                    f"chain[{i}].name", f"{c.table}/{c.name} is already defined by chain[{first}]"
                )
            if (c.table, c.hook) in hooks:
                first = hooks[(c.table, c.hook)]
                reason = (
                    f"chain[{first}] already hooks {c.table}/{c.hook}; only one jump can be first"
                )
                raise self.fail(f"chain[{i}].hook", reason)
            names[(c.table, c.name)] = i
            hooks[(c.table, c.hook)] = i

    def chain(self, raw: object, prefix: str, interface: str) -> Chain:
        if not isinstance(raw, dict):
            raise self.fail(prefix, f"expected a table, got {_kind(raw)}")
        self.keys(raw, _CHAIN_KEYS, prefix)
        name = self.string(self.required(raw, "name", prefix), f"{prefix}.name")
        if not _CHAIN.fullmatch(name) or name.upper() in _RESERVED_CHAINS:
            raise self.fail(
                f"{prefix}.name",
                f"invalid chain name {show(name)}: 1-28 characters of letters, digits, '_', '-', "
                "starting with a letter, not a built-in chain or target",
            )
        if name.startswith("KUBE-"):
            raise self.fail(f"{prefix}.name", f"{show(name)}: KUBE-* chains belong to kube-proxy")
        if name.isupper() and name.isalnum():
            # NFLOG, TEE, TPROXY, ...: iptables-nft refuses such a chain, and on legacy
            # `-j NAME` would mean the target, not the chain.
            raise self.fail(
                f"{prefix}.name",
                f"{show(name)} could be taken for an iptables target; use a name with '_' or '-' "
                "(like EFA_INPUT)",
            )
        table = self.string(self.required(raw, "table", prefix), f"{prefix}.table")
        if table not in HOOKS:
            raise self.fail(
                f"{prefix}.table", f"must be one of {', '.join(HOOKS)}, got {show(table)}"
            )
        hook = self.string(self.required(raw, "hook", prefix), f"{prefix}.hook")
        if hook not in HOOKS[table]:
            allowed = ", ".join(HOOKS[table])
            raise self.fail(
                f"{prefix}.hook",
                f"{show(hook)} cannot hook a chain in table {table} (allowed: {allowed})",
            )
        key, limit = f"{prefix}.rule", self.limits.max_rules_per_chain
        rules_raw = self.array(self.required(raw, "rule", prefix), key, limit, "rules")
        if not rules_raw:
            raise self.fail(key, "expected one or more [[chain.rule]] tables")
        self.rules += len(rules_raw)
        if self.rules > self.limits.max_rules:
            reason = f"{self.rules} rules so far, more than the limit of {self.limits.max_rules}"
            raise self.fail(key, reason)
        rules = tuple(
            self.rule(r, f"{prefix}.rule[{i}]", cast("Table", table), interface)
            for i, r in enumerate(rules_raw)
        )
        return Chain(table=cast("Table", table), name=name, hook=hook, rules=rules)

    def rule(self, raw: object, prefix: str, table: Table, interface: str) -> Rule:
        if not isinstance(raw, dict):
            raise self.fail(prefix, f"expected a table, got {_kind(raw)}")
        self.keys(raw, _RULE_KEYS, prefix)
        protocol = self.string(self.required(raw, "protocol", prefix), f"{prefix}.protocol")
        if protocol not in ("tcp", "udp"):
            raise self.fail(f"{prefix}.protocol", f"must be tcp or udp, got {show(protocol)}")
        ports = self.ports(self.required(raw, "ports", prefix), f"{prefix}.ports")
        if not ports:
            raise self.fail(f"{prefix}.ports", "expected at least one port")
        cuts = self.port_list(raw.get("except", []), f"{prefix}.except")
        for i, cut in enumerate(cuts):
            if not contains(ports, cut):
                raise self.fail(f"{prefix}.except[{i}]", f"{cut} is not inside ports")
        excepted = normalize(cuts)
        blocked = subtract(ports, excepted)
        if not blocked:
            raise self.fail(f"{prefix}.except", "excepts every port: the rule would match nothing")
        new_only = raw.get("new_only", False)
        if not isinstance(new_only, bool):
            raise self.fail(f"{prefix}.new_only", f"expected true or false, got {_kind(new_only)}")
        if new_only and table not in TABLES_WITH_CONNTRACK:
            raise self.fail(
                f"{prefix}.new_only",
                f"conntrack state is not known yet in table {table}; remove new_only",
            )
        iface = interface
        if "interface" in raw:
            iface = self.interface(raw["interface"], f"{prefix}.interface")
        return Rule(
            protocol=cast("Protocol", protocol), ports=blocked, interface=iface, new_only=new_only
        )

    def ports(self, raw: object, key: str) -> tuple[PortRange, ...]:
        return normalize(self.port_list(raw, key))

    def port_list(self, raw: object, key: str) -> list[PortRange]:
        items = self.array(raw, key, self.limits.max_ports, "entries")
        if items is None:
            raise self.fail(key, f"expected a list of ports, got {_kind(raw)}")
        return [self.port(item, f"{key}[{i}]") for i, item in enumerate(items)]

    def port(self, item: object, key: str) -> PortRange:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise self.fail(key, f'expected a port number or "first-last", got {_kind(item)}')
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


def _show(value: object) -> str:
    if isinstance(value, str):
        return show(value)
    if isinstance(value, list | dict):
        return _kind(value)
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)
