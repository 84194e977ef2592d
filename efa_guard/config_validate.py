"""The config validator: chains, rules, families, daemon tuning, the exposure allowlist."""

from __future__ import annotations

import re
from typing import cast

from efa_guard.config_checks import Checks, kind_of, show_value
from efa_guard.limits import Limits, show
from efa_guard.policy import (
    FAMILIES,
    HOOKS,
    TABLES_WITH_CONNTRACK,
    Allowlist,
    Chain,
    Family,
    PortRange,
    Protocol,
    Rule,
    Table,
    contains,
    normalize,
    subtract,
)

# XT_EXTENSION_MAXNAMELEN is 29 with the NUL.
_CHAIN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,27}")
_RESERVED_CHAINS = frozenset(
    {"ACCEPT", "DROP", "QUEUE", "RETURN", "REJECT", "LOG", "MARK", "DNAT", "SNAT"}
    | {"MASQUERADE", "REDIRECT", "NFQUEUE", "CT", "NOTRACK", "TRACE", "AUDIT"}
    | {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
)
_CHAIN_KEYS = frozenset({"name", "table", "hook", "rule"})
_RULE_KEYS = frozenset({"protocol", "ports", "except", "new_only", "interface"})
# What may be visible on the management interface unless the config says otherwise:
# the seed's exceptions and SSH.
DEFAULT_ALLOW_TCP = (PortRange(22, 22), PortRange(6514, 6514), PortRange(8078, 8078))
# [daemon] key -> (type, minimum, maximum)
DAEMON_KEYS: dict[str, tuple[type, float, float]] = {
    "interval": (float, 0.01, 86400.0),
    "follow_up": (float, 0.0, 3600.0),
    "contest_threshold": (int, 2, 1000),
    "contest_window": (float, 0.1, 3600.0),
    "backoff_max": (float, 0.01, 3600.0),
    "cpu_budget": (float, 0.001, 1.0),
    "pause_max": (float, 60.0, 7 * 86400.0),
}


class Validator(Checks):
    """Validates the parts of one parsed TOML document; the first error raises."""

    def __init__(self, where: str, limits: Limits) -> None:
        super().__init__(where, limits)
        self.rules = 0  # [[chain.rule]] tables seen so far, in all chains

    def chains(self, raw: object, interface: str) -> tuple[Chain, ...]:
        """The [[chain]] tables, each validated, no two with one name or one hook."""
        chains_raw = self.array(raw, "chain", self.limits.max_chains, "chains")
        if not chains_raw:
            raise self.fail("chain", "expected one or more [[chain]] tables")
        chains = tuple(self.chain(c, f"chain[{i}]", interface) for i, c in enumerate(chains_raw))
        self.unique(chains)
        return chains

    def allowlist(self, raw: object, default_tcp: tuple[PortRange, ...]) -> Allowlist:
        """The [exposure] allowlist; tcp is `default_tcp` unless given."""
        if not isinstance(raw, dict):
            raise self.fail("exposure", f"expected a table, got {kind_of(raw)}")
        self.keys(raw, frozenset({"tcp", "udp"}), "exposure")
        tcp = self.ports(raw["tcp"], "exposure.tcp") if "tcp" in raw else default_tcp
        udp = self.ports(raw.get("udp", []), "exposure.udp")
        return Allowlist(tcp=tcp, udp=udp)

    def families(self, raw: object) -> tuple[Family, ...]:
        """The address families, each once."""
        if not isinstance(raw, list) or not raw:
            raise self.fail("families", 'expected a non-empty list such as ["ipv4", "ipv6"]')
        out: list[Family] = []
        for i, item in enumerate(raw):
            if item not in FAMILIES:
                raise self.fail(f"families[{i}]", f"must be ipv4 or ipv6, got {show_value(item)}")
            if item in out:
                raise self.fail(f"families[{i}]", f"{item} is listed twice")
            out.append(cast("Family", item))
        return tuple(out)

    def daemon(self, raw: object) -> dict[str, float | int]:
        """The [daemon] values given, each of its type and in its range."""
        if not isinstance(raw, dict):
            raise self.fail("daemon", f"expected a table, got {kind_of(raw)}")
        self.keys(raw, frozenset(DAEMON_KEYS), "daemon")
        values: dict[str, float | int] = {}
        for key, value in raw.items():
            kind, low, high = DAEMON_KEYS[key]
            name = f"daemon.{key}"
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(name, f"expected a number, got {kind_of(value)}")
            if kind is int and not isinstance(value, int):
                raise self.fail(name, f"expected a whole number, got {show_value(value)}")
            if not low <= value <= high:
                raise self.fail(name, f"{show_value(value)} is out of range {low:g}-{high:g}")
            values[key] = kind(value)
        return values

    def unique(self, chains: tuple[Chain, ...]) -> None:
        """No two chains with one table/name, nor two hooked into one table/hook."""
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
        """One [[chain]] table."""
        if not isinstance(raw, dict):
            raise self.fail(prefix, f"expected a table, got {kind_of(raw)}")
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
        """One [[chain.rule]] table; the interface defaults to the top-level one."""
        if not isinstance(raw, dict):
            raise self.fail(prefix, f"expected a table, got {kind_of(raw)}")
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
            raise self.fail(
                f"{prefix}.new_only", f"expected true or false, got {kind_of(new_only)}"
            )
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
