"""Bash completion: generated from the parser, committed in sync, and working in a real bash."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from support import need

from efa_guard.catalog import EventKind
from efa_guard.cli.completion import DIRECTORIES, FILES, commands, script
from efa_guard.log import LOG_FORMATS
from tools.harness import REPO

SCRIPT = REPO / "config" / "bash-completion" / "efa-guard"


def test_committed_script_is_the_generated_one() -> None:
    """config/bash-completion/efa-guard is what the parser generates now (regenerate it)."""
    assert SCRIPT.read_text() == script(), (
        "regenerate: python3 -m efa_guard.cli.completion > config/bash-completion/efa-guard"
    )


def test_generator_sees_every_command_and_option() -> None:
    """Each command of the parser, with its options and their kinds of value, is found."""
    found = {c.name: c for c in commands()}
    assert set(found) >= {"", "check", "validate", "run", "history", "pause", "remove"}
    assert {"--json", "--fix", "--no-exposure", "-t", "--timeout"} <= set(found["check"].options)
    assert found["run"].values["--log-format"].split() == list(LOG_FORMATS)
    assert found["history"].values["--kind"].split() == [k.value for k in EventKind]
    assert found["history"].values["--directory"] == DIRECTORIES
    assert found["check"].values["--config"] == FILES
    assert found["validate"].positional == FILES
    assert found["apply"].positional is None
    text = script()
    for cmd in commands():
        assert f'"{cmd.name}")' in text
        for option in cmd.options:
            assert re.search(rf"(?<![\w-]){option}(?![\w-])", text), (cmd.name, option)


def complete(words: list[str], cwd: Path) -> list[str]:
    """What bash offers for the last word of `words`, with the script sourced (sorted)."""
    line = " ".join(shlex.quote(w) for w in words)
    program = (
        f"source {shlex.quote(str(SCRIPT))}\n"
        f"COMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
        '_efa_guard; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
    )
    return sorted(w for w in proc.stdout.split("\n") if w)


@pytest.fixture
def bash() -> None:
    """Bash itself is needed."""
    need(shutil.which("bash") is not None, "bash is not installed")


@pytest.mark.usefixtures("bash")
def test_script_registers_the_completion() -> None:
    """`source <script>; complete -p efa-guard` names the function."""
    proc = subprocess.run(
        ["bash", "--norc", "-c", f"source {shlex.quote(str(SCRIPT))}; complete -p efa-guard"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "complete -F _efa_guard efa-guard"


@pytest.mark.usefixtures("bash")
def test_completes_commands_options_and_choices(tmp_path: Path) -> None:
    """Commands, a command's options, --log-format and --kind choices are offered."""
    assert complete(["efa-guard", "re"], tmp_path) == ["reload", "remove", "render", "resume"]
    assert complete(["efa-guard", "check", "--no"], tmp_path) == ["--no-exposure"]
    assert complete(["efa-guard", "--config", "a.toml", "pause", "--"], tmp_path) == [
        "--config",
        "--for",
        "--help",
        "--reason",
    ]
    assert complete(["efa-guard", "run", "--log-format", "j"], tmp_path) == ["journal", "json"]
    assert complete(["efa-guard", "history", "--kind", "config_"], tmp_path) == [
        "config_fallback",
        "config_rejected",
        "config_reloaded",
    ]
    assert complete(["efa-guard", "check", "--timeout", ""], tmp_path) == []


@pytest.mark.usefixtures("bash")
def test_completes_paths(tmp_path: Path) -> None:
    """--config, validate's PATH and --file offer files; --directory offers directories."""
    (tmp_path / "my policy.toml").write_text("")
    (tmp_path / "journals").mkdir()
    assert complete(["efa-guard", "--config", "my"], tmp_path) == ["my policy.toml"]
    assert complete(["efa-guard", "validate", "my"], tmp_path) == ["my policy.toml"]
    assert complete(["efa-guard", "history", "--file", "my"], tmp_path) == ["my policy.toml"]
    assert complete(["efa-guard", "history", "--directory", ""], tmp_path) == ["journals"]
