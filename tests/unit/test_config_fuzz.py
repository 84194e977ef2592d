"""Fuzzing the config loader: whatever the input, the answer is a Config or a ConfigError."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efa_guard.config import load, parse
from efa_guard.errors import ConfigError
from efa_guard.limits import Limits

P = Path("/etc/efa-guard/efa-guard.toml")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = Limits(max_bytes=4096, max_depth=4, max_key_parts=3, max_string=12, max_ports=6)

Toml = bool | int | float | str | list["Toml"] | dict[str, "Toml"]

KEYS = ["interface", "backend", "families", "chain", "rule", "name", "table", "hook"]
KEYS += ["protocol", "ports", "except", "new_only", "exposure", "tcp", "udp", "daemon"]
KEYS += ["interval", "contest_threshold"]
WORDS = ["eth0", "EFA_INPUT", "filter", "raw", "INPUT", "PREROUTING", "tcp", "udp", "ipv4"]
WORDS += ["1-65535", "1024:6513", "65535", "x+", "auto", "nft"]

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(WORDS),
    st.integers(0, 70_000),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values: st.SearchStrategy[Toml] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=8)


def quoted(text: str) -> str:
    """A TOML basic string: JSON's escapes, non-ASCII kept as is, DEL escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Toml) -> str:
    """Render a value as inline TOML."""
    if isinstance(value, bool | int):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{quoted(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Toml]) -> str:
    """Render a document: one `key = value` line per top-level key."""
    return "".join(f"{quoted(k)} = {toml_value(v)}\n" for k, v in doc.items())


def answer(text: str, limits: Limits | None = None) -> str:
    """Parse: "ok" for a Config, else the ConfigError's message; anything else propagates."""
    try:
        if limits is None:
            parse(text, path=P)
        else:
            parse(text, path=P, limits=limits)
    except ConfigError as e:
        return str(e)
    return "ok"


def assert_answers(text: str, limits: Limits | None = None) -> None:
    """The text gets a Config, or a ConfigError on one line that names the file first."""
    got = answer(text, limits)
    assert got == "ok" or (got.startswith(f"{P}: ") and "\n" not in got)


@FAST
@given(documents)
def test_toml_shaped_documents_get_an_answer(doc: dict[str, Toml]) -> None:
    """Any TOML document of any shape yields a Config or a one-line ConfigError."""
    assert_answers(toml_document(doc))
    assert_answers(toml_document(doc), SMALL)


@FAST
@given(documents, st.text(alphabet="[]{}=.,\"'#\n abc1", max_size=60))
def test_mangled_documents_get_an_answer(doc: dict[str, Toml], noise: str) -> None:
    """A document with bracket, quote and dot noise spliced in still gets a clean answer."""
    text = toml_document(doc)
    cut = len(text) // 2
    assert_answers(text[:cut] + noise + text[cut:])


VALID = """interface = "eth0"
[[chain]]
name = "EFA_INPUT"
table = "filter"
hook = "INPUT"
[[chain.rule]]
protocol = "tcp"
ports = ["1024-65535"]
except = [6514, 8078]
"""


@FAST
@given(st.integers(0, len(VALID)), st.text(max_size=30))
def test_edits_of_a_valid_config_get_an_answer(at: int, insert: str) -> None:
    """Random text inserted anywhere in a valid config yields a Config or a ConfigError."""
    assert_answers(VALID[:at] + insert + VALID[at:])


@FAST
@given(st.text(max_size=300))
def test_random_text_gets_an_answer(text: str) -> None:
    """Arbitrary text, lone surrogates included, yields a Config or a ConfigError."""
    assert_answers(text)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_from_a_file_get_an_answer(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """Arbitrary bytes in a file yield a Config or a ConfigError from load()."""
    path = tmp_path_factory.mktemp("fuzz") / "cfg.toml"
    path.write_bytes(data)
    try:
        got = str(load(path).path)
    except ConfigError as e:
        got = e.path
    assert got == str(path)


def depth(value: Toml) -> int:
    """How deep arrays and inline tables nest in a value."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def string_in(style: int, text: str) -> str:
    """Text as a TOML string of one of the four kinds, falling back to basic where it cannot be."""
    plain = "\n" not in text and "\r" not in text and text.isprintable()
    if style == 1 and plain and "'" not in text:
        return f"'{text}'"
    if style == 2 and plain and "'''" not in text and not text.endswith("'"):
        return f"'''\n{text}'''"
    escaped = quoted(text)
    return f'"""{escaped[1:-1]}"""' if style == 3 else escaped


tricky = st.text(alphabet="[[[{{{]}.,=#\"'\\ab\n", max_size=20)


@FAST
@given(documents, st.lists(st.tuples(st.integers(0, 3), tricky), max_size=6))
def test_scan_never_refuses_what_is_within_the_limits(
    doc: dict[str, Toml], strings: list[tuple[int, str]]
) -> None:
    """The scan passes what tomllib reads within the limits, brackets and dots in strings too."""
    extra = "".join(f"s{i} = [{string_in(s, t)}]\n" for i, (s, t) in enumerate(strings))
    extra += "".join(f"{string_in(s, t)} = 1\n" for s, t in strings if s in {0, 1})
    text = toml_document(doc) + extra
    if max(map(depth, doc.values()), default=0) > SMALL.max_depth:
        return
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # duplicate keys and the like: not the scan's business
    got = answer(text, SMALL)
    assert "nested deeper" not in got
    assert "dotted key" not in got
