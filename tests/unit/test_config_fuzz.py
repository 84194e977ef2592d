"""Fuzzing the config loader: whatever the input, the answer is a Config or a ConfigError."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efa_guard.config import load, parse
from efa_guard.errors import ConfigError
from efa_guard.limits import Limits

P = Path("/etc/efa-guard/efa-guard.toml")
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


def toml_value(value: Toml) -> str:
    """Render a value as inline TOML."""
    if isinstance(value, bool | int):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Toml]) -> str:
    """Render a document: one `key = value` line per top-level key."""
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items())


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
