"""Config validation: every mistake is an error naming the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import MINIMAL_TOML as MINIMAL

from efa_guard.config import load, parse
from efa_guard.errors import ConfigError

P = Path("/etc/efa-guard/efa-guard.toml")


def test_default_config_is_valid(default_config_text: str) -> None:
    """The shipped default parses, with the seed's interface and both chains."""
    cfg = parse(default_config_text, path=P)
    assert cfg.backend == "auto"
    assert cfg.interface == "eth0"
    assert [(c.table, c.name, c.hook) for c in cfg.policy.chains] == [
        ("filter", "EFA_INPUT", "INPUT"),
        ("raw", "EFA_NODEPORTS", "PREROUTING"),
    ]


def test_minimal_config_defaults() -> None:
    """Optional keys take their documented defaults."""
    cfg = parse(MINIMAL, path=P)
    (rule,) = cfg.policy.chains[0].rules
    assert cfg.policy.families == ("ipv4", "ipv6")
    assert cfg.backend == "auto"
    assert rule.interface == "eth0"
    assert rule.new_only is False


BAD = [
    ("backend = 'iptables'\n" + MINIMAL, "backend", "must be one of auto, nft, legacy"),
    ("colour = 'red'\n" + MINIMAL, "colour", "unknown key"),
    (MINIMAL.replace('interface = "eth0"', ""), "interface", "missing required key"),
    (MINIMAL.replace('"eth0"', '"eth0; rm -rf /"'), "interface", "invalid interface name"),
    (MINIMAL.replace('"eth0"', '"averyveryverylongname"'), "interface", "invalid interface"),
    (MINIMAL.replace('"eth0"', "7"), "interface", "expected a string, got an integer"),
    (MINIMAL.replace('"EFA_INPUT"', '"DROP"'), "chain[0].name", "invalid chain name"),
    (MINIMAL.replace('"EFA_INPUT"', '"KUBE-MINE"'), "chain[0].name", "belong to kube-proxy"),
    (MINIMAL.replace('"EFA_INPUT"', '"NFLOG"'), "chain[0].name", "taken for an iptables target"),
    (MINIMAL.replace('"EFA_INPUT"', '"TPROXY"'), "chain[0].name", "taken for an iptables target"),
    (MINIMAL.replace('"EFA_INPUT"', '"-j ACCEPT"'), "chain[0].name", "invalid chain name"),
    (MINIMAL.replace('"EFA_INPUT"', '"A' + "x" * 28 + '"'), "chain[0].name", "1-28 characters"),
    (MINIMAL.replace('"filter"', '"nat"'), "chain[0].table", "must be one of filter, raw"),
    (MINIMAL.replace('"INPUT"', '"OUTPUT"'), "chain[0].hook", "cannot hook a chain"),
    (MINIMAL.replace('"tcp"', '"icmp"'), "chain[0].rule[0].protocol", "must be tcp or udp"),
    (MINIMAL.replace("[3306]", "[70000]"), "chain[0].rule[0].ports[0]", "out of range"),
    (MINIMAL.replace("[3306]", "[0]"), "chain[0].rule[0].ports[0]", "out of range"),
    (MINIMAL.replace("[3306]", '["9-3"]'), "chain[0].rule[0].ports[0]", "reversed"),
    (MINIMAL.replace("[3306]", '["80,443"]'), "chain[0].rule[0].ports[0]", "invalid port"),
    (MINIMAL.replace("[3306]", "[true]"), "chain[0].rule[0].ports[0]", "got a boolean"),
    (MINIMAL.replace("[3306]", "3306"), "chain[0].rule[0].ports", "expected a list"),
    (MINIMAL.replace("[3306]", "[]"), "chain[0].rule[0].ports", "at least one port"),
    (MINIMAL + "except = [22]\n", "chain[0].rule[0].except[0]", "not inside ports"),
    (MINIMAL + "except = [3306]\n", "chain[0].rule[0].except", "excepts every port"),
    (MINIMAL + "new_only = 'yes'\n", "chain[0].rule[0].new_only", "expected true or false"),
    (MINIMAL + "action = 'ACCEPT'\n", "chain[0].rule[0].action", "unknown key"),
    (MINIMAL + "interface = 'a/b'\n", "chain[0].rule[0].interface", "invalid interface"),
    (
        MINIMAL.replace('"filter"', '"raw"').replace('"INPUT"', '"PREROUTING"')
        + "new_only = true\n",
        "chain[0].rule[0].new_only",
        "conntrack state is not known",
    ),
    (MINIMAL + MINIMAL.split("\n", 2)[2], "chain[1].name", "already defined by chain[0]"),
    (
        MINIMAL + MINIMAL.split("\n", 2)[2].replace("EFA_INPUT", "EFA_OTHER"),
        "chain[1].hook",
        "only one jump can be first",
    ),
    ('interface = "eth0"\n', "chain", "missing required key"),
    ("families = []\n" + MINIMAL, "families", "non-empty list"),
    ("families = ['ipv5']\n" + MINIMAL, "families[0]", "must be ipv4 or ipv6"),
    ("families = ['ipv6', 'ipv6']\n" + MINIMAL, "families[1]", "listed twice"),
    ('interface = "eth0"\nchain = []\n', "chain", "expected one or more"),
    (MINIMAL.split("[[chain.rule]]", maxsplit=1)[0], "chain[0].rule", "missing required key"),
    ("interface = ", "(syntax)", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_names_key_and_reason(text: str, key: str, reason: str) -> None:
    """Each mistake raises ConfigError whose message names the file, the key and the reason."""
    with pytest.raises(ConfigError) as info:
        parse(text, path=P)
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{P}: {key}: ")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is reported with the path and the OS reason."""
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        load(tmp_path / "nope.toml")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """Binary garbage is refused with a reason, not a traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe interface")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(bad)


def test_port_forms_are_equivalent() -> None:
    """80, "80", "80-80" and "80:80" are the same port; "1-3" equals [1, 2, 3] merged."""
    a = parse(MINIMAL.replace("[3306]", '[80, "1-3"]'), path=P)
    b = parse(MINIMAL.replace("[3306]", '["80:80", 1, 2, "3"]'), path=P)
    assert a.policy == b.policy
