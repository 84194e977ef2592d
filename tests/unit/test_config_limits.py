"""Config limits: every exceeded bound is a one-line ConfigError naming the file and the key."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from efa_guard.config import load, parse
from efa_guard.errors import ConfigError
from efa_guard.limits import Limits

P = Path("/etc/efa-guard/efa-guard.toml")
HEAD = 'interface = "eth0"\n[[chain]]\nname = "EFA_INPUT"\ntable = "filter"\nhook = "INPUT"\n'
RULE = '[[chain.rule]]\nprotocol = "tcp"\nports = [3306]\n'
SMALL = Limits(
    max_bytes=4096,
    max_depth=3,
    max_key_parts=3,
    max_string=20,
    max_chains=2,
    max_rules_per_chain=3,
    max_rules=4,
    max_ports=5,
)


def chain(name: str, table: str, hook: str, rules: int) -> str:
    """A [[chain]] with `rules` copies of a one-port rule."""
    return f'[[chain]]\nname = "{name}"\ntable = "{table}"\nhook = "{hook}"\n' + RULE * rules


OVER = [
    ("x = " + "[" * 4 + "]" * 4 + "\n" + HEAD + RULE, "x", "nested deeper than 3 levels (line 1)"),
    (HEAD + RULE + "z = {a = {b = {c = {}}}}\n", "chain.rule.z", "nested deeper than 3"),
    ("a.b.c.d = 1\n" + HEAD + RULE, "a.b.c.d", "dotted key of more than 3 parts"),
    (HEAD + RULE + "[a.b.c.d]\n", "a.b.c.d", "dotted key of more than 3 parts"),
    (HEAD + RULE.replace("[3306]", "[1, 2, 3, 4, 5, 6]"), "chain[0].rule[0].ports", "6 entries"),
    (HEAD + RULE + "except = [1, 2, 3, 4, 5, 6]\n", "chain[0].rule[0].except", "limit of 5"),
    (HEAD + RULE * 4, "chain[0].rule", "4 rules, more than the limit of 3"),
    (
        'interface = "eth0"\n'
        + chain("EFA_A", "filter", "INPUT", 3)
        + chain("EFA_B", "raw", "PREROUTING", 2),
        "chain[1].rule",
        "5 rules so far, more than the limit of 4",
    ),
    (HEAD + RULE + chain("B_B", "raw", "PREROUTING", 1) * 2, "chain", "3 chains"),
    (HEAD.replace("EFA_INPUT", "E" * 21) + RULE, "chain[0].name", "limit of 20 characters"),
    (HEAD + RULE + "[exposure]\ntcp = [1, 2, 3, 4, 5, 6]\n", "exposure.tcp", "6 entries"),
    (HEAD + RULE + "# " + "x" * 4096 + "\n", "(file)", "larger than the limit of 4096 bytes"),
]


@pytest.mark.parametrize(("text", "key", "reason"), OVER, ids=[o[2] for o in OVER])
def test_each_limit_is_a_config_error(text: str, key: str, reason: str) -> None:
    """Exceeding any limit raises ConfigError with the key, the reason, on one line."""
    with pytest.raises(ConfigError) as info:
        parse(text, path=P, limits=SMALL)
    assert (info.value.key, reason in info.value.reason) == (key, True)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{P}: {key}: ")


def test_small_limits_accept_what_fits() -> None:
    """A config exactly at the chain, rule and list limits is accepted: the bounds are inclusive."""
    text = (
        'interface = "eth0"\n'
        + chain("EFA_A", "filter", "INPUT", 3).replace("[3306]", "[1, 2, 3, 4, 5]")
        + chain("EFA_B", "raw", "PREROUTING", 1)
    )
    cfg = parse(text, path=P, limits=SMALL)
    assert [len(c.rules) for c in cfg.policy.chains] == [3, 1]


@pytest.mark.parametrize("extra", ["x = [[[1]]]\n", "a.b.c = 1\n", "z = {a = {b = 1}}\n"])
def test_nesting_at_the_limit_passes_the_scan(extra: str) -> None:
    """Nesting and key parts exactly at the limit reach the validator (unknown key, not a limit)."""
    with pytest.raises(ConfigError, match="unknown key"):
        parse(extra + HEAD + RULE, path=P, limits=SMALL)


@pytest.mark.parametrize("depth", [50, 500, 5000, 100_000])
def test_deep_arrays_are_a_config_error(depth: int) -> None:
    """Arrays nested to any depth (tomllib recurses out at ~400) end as ConfigError."""
    with pytest.raises(ConfigError, match="nested deeper than 16 levels") as info:
        parse("x = " + "[" * depth + "]" * depth + "\n", path=P)
    assert info.value.key == "x"


def test_deep_inline_tables_are_a_config_error() -> None:
    """Inline tables nested 1000 deep end as ConfigError naming the inner key."""
    with pytest.raises(ConfigError, match="nested deeper than 16 levels"):
        parse("x = " + "{a = " * 1000 + "1" + "}" * 1000 + "\n", path=P)


def test_long_dotted_key_is_refused_quickly() -> None:
    """A 200k-part dotted key (quadratic in tomllib) is refused in well under a second."""
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="dotted key of more than 16 parts"):
        parse("a" + ".a" * 200_000 + " = 1\n", path=P)
    assert time.perf_counter() - start < 1.0


def test_brackets_in_strings_and_comments_do_not_count() -> None:
    """Brackets and dots inside strings and comments are not nesting or key parts."""
    noise = "[" * 40 + "{" * 40 + "." * 40
    text = (
        f"# {noise}\nnote = \"{noise}\"\nlit = '{noise}'\n"
        f'ml = """\n{noise}\n"""\nmll = \'\'\'\n{noise}\n\'\'\'\n"{noise}" = 1\n'
    )
    ml_basic = '"""' + '\\"""' + noise + "\\\n" + noise + '"""""'  # escapes, quotes at the end
    ml_literal = "'''" + noise + "'''''"
    escaped = f'esc = ["\\"{noise}", {ml_basic}, {ml_literal}, "\\\\"]\n'
    assert tomllib.loads(escaped)["esc"][1] == f'"""{noise}{noise}""'
    with pytest.raises(ConfigError) as info:
        parse(text + escaped + HEAD + RULE, path=P)
    assert info.value.reason.startswith("unknown key")
    assert info.value.key == "note"


def test_huge_integer_is_a_config_error() -> None:
    """An integer beyond Python's 4300-digit conversion limit is a syntax error, not ValueError."""
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        parse(HEAD + RULE.replace("3306", "1" * 5000), path=P)
    assert info.value.key == "(syntax)"


def test_size_is_checked_before_reading(tmp_path: Path) -> None:
    """A 4 GiB sparse file is refused from its size at once, without reading it."""
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(4 << 30)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="larger than the limit of 1048576 bytes") as info:
        load(big)
    assert time.perf_counter() - start < 0.5
    assert info.value.key == "(file)"


def test_unknown_key_with_newline_stays_one_line() -> None:
    """A quoted key holding newlines and 10k characters is shown escaped and cut short."""
    with pytest.raises(ConfigError) as info:
        parse(f'"evil\\nkey{"x" * 10_000}" = 1\n' + HEAD + RULE, path=P)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200
    assert info.value.key.startswith("'evil\\nkey")


def test_default_limits_accept_a_64k_except_list() -> None:
    """The defaults take a rule excepting 64,000 ports (the benchmark's largest case)."""
    cuts = ", ".join(str(p) for p in range(2, 64_002))
    cfg = parse(HEAD + RULE.replace("[3306]", '["1-65535"]') + f"except = [{cuts}]\n", path=P)
    assert [str(r) for r in cfg.policy.chains[0].rules[0].ports] == ["1", "64002:65535"]


def test_path_with_nul_is_a_config_error() -> None:
    """A path holding a NUL byte is a ConfigError, not a ValueError from open()."""
    with pytest.raises(ConfigError, match="cannot read: embedded null byte"):
        load(Path("/etc/efa-guard/a\0b.toml"))
