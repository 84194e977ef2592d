"""The shipped documentation follows the code: parser, config keys, events, files, environment.

A new command, option, config key, event kind or environment variable without its
documentation fails here.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from manpage import DEBIAN, MAN5, MAN8, mentions, roff, sections
from support import need

from efa_guard import config as configmod
from efa_guard.catalog import EventKind
from efa_guard.cli.parser import build_parser
from efa_guard.config_metrics import MetricsConfig
from efa_guard.errors import ConfigError
from tools.harness import REPO

README = REPO / "README.md"
COMMON = {"-h", "--help", "--config"}  # documented once, under OPTIONS


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every command of the parser, by name."""
    parser = build_parser()
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001 - argparse has no public walk
    return dict(found[0].choices)


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of one parser."""
    return {o for a in parser._actions for o in a.option_strings}  # noqa: SLF001 - as above


def test_every_command_and_option_has_help() -> None:
    """`efa-guard CMD --help` has a description, and every option says what it does."""
    for name, sub in subcommands().items():
        assert sub.description, f"{name} has no description"
        for action in sub._actions:  # noqa: SLF001 - as above
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_man8_documents_every_command_and_its_options() -> None:
    """efa-guard(8) has a subsection per command naming each of its options and exit codes."""
    text = roff(MAN8)
    cmds = sections(sections(text, "SH")["COMMANDS"], "SS")
    for name, sub in subcommands().items():
        assert name in cmds, f"efa-guard(8) has no section for {name}"
        for option in options(sub) - COMMON:
            assert mentions(cmds[name], option), f"{name} {option}"
        assert "Exit status" in cmds[name], f"{name}: no exit status"
    general = sections(text, "SH")["OPTIONS"]
    for option in options(build_parser()) | COMMON:
        assert option in general, option


def test_man8_documents_every_choice() -> None:
    """The choices of --log-format and --kind are all in efa-guard(8)."""
    text = roff(MAN8)
    cmds = sections(sections(text, "SH")["COMMANDS"], "SS")
    for name, sub in subcommands().items():
        for action in sub._actions:  # noqa: SLF001 - as above
            for choice in action.choices or ():
                assert str(choice) in cmds[name] or str(choice) in text, f"{name}: {choice}"


def test_every_event_kind_is_documented_with_its_message_id() -> None:
    """Each event kind is in efa-guard(8), the journal catalog and README's event table."""
    man = sections(roff(MAN8), "SH")["JOURNAL"]
    catalog = (REPO / "config" / "efa-guard.catalog").read_text()
    readme = README.read_text()
    for kind in EventKind:
        assert re.search(rf"^\.B {kind.value} {kind.message_id}$", man, re.MULTILINE), kind
        assert f"-- {kind.message_id}\nSubject: " in catalog, kind
        assert re.search(
            rf"^\| `{kind.value}`[^|]*\| `{kind.message_id}` \|", readme, re.MULTILINE
        ), kind


def test_history_defaults_are_documented() -> None:
    """The event kinds `history` shows without --kind are the ones efa-guard(8) and README list."""
    from efa_guard.history import EVENTS  # noqa: PLC0415

    section = " ".join(sections(sections(roff(MAN8), "SH")["COMMANDS"], "SS")["history"].split())
    readme = " ".join(README.read_text().split())
    listed = ", ".join(EVENTS[:-1]) + f" and {EVENTS[-1]}"
    assert f"By default it shows {listed}." in section
    assert "By default `history` shows " + ", ".join(f"`{e}`" for e in EVENTS[:-1]) in readme


def test_man8_names_every_environment_variable() -> None:
    """Every EFA_GUARD_* variable the code reads is under ENVIRONMENT in efa-guard(8)."""
    used = set()
    for source in (REPO / "efa_guard").rglob("*.py"):
        used |= set(re.findall(r"\bEFA_GUARD_[A-Z_]+\b", source.read_text()))
    assert "EFA_GUARD_JOURNAL_SOCKET" in used
    environment = sections(roff(MAN8), "SH")["ENVIRONMENT"]
    for name in used:
        assert re.search(rf"^\.BR? {name}\b", environment, re.MULTILINE), name


def test_man8_names_every_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files efa-guard reads and writes, at their default paths, are under FILES."""
    from efa_guard import lastgood, paths, pause  # noqa: PLC0415
    from efa_guard.cli.daemonview import STATE_FILE  # noqa: PLC0415

    for name in [n for n in os.environ if n.startswith("EFA_GUARD_")]:
        monkeypatch.delenv(name)
    files = sections(roff(MAN8), "SH")["FILES"]
    state = paths.state_dir()
    wanted = [
        configmod.DEFAULT_PATH,
        paths.shipped_default(),
        state / lastgood._FILE,  # noqa: SLF001 - the name is private to its module
        state / pause.FILE,
        paths.run_dir() / STATE_FILE,
        Path("/usr/share/bash-completion/completions/efa-guard"),
    ]
    for path in wanted:
        assert f".I {path}\n" in files, path


def _known_keys(text: str) -> list[str]:
    """The keys the validator lists when it meets an unknown key in `text`."""
    with pytest.raises(ConfigError) as err:
        configmod.parse(text, path=Path("x.toml"))
    found = re.search(r"known(?: keys)?: ([\w, ]+)", str(err.value))
    assert found, str(err.value)
    return found.group(1).split(", ")


BASE = 'interface = "eth0"\n'
CHAIN = '[[chain]]\nname = "EFA_X"\ntable = "filter"\nhook = "INPUT"\n'
RULE = '[[chain.rule]]\nprotocol = "tcp"\nports = [1]\n'
TABLES = {  # the section of efa-guard.toml(5) -> a config with an unknown key in that table
    "Top": "bogus = 1\n" + BASE,
    "[[chain]]": BASE + CHAIN + "bogus = 1\n" + RULE,
    "[[chain.rule]]": BASE + CHAIN + RULE + "bogus = 1\n",
    "[daemon]": BASE + "[daemon]\nbogus = 1\n" + CHAIN + RULE,
    "[exposure]": BASE + "[exposure]\nbogus = 1\n" + CHAIN + RULE,
    "[metrics]": BASE + "[metrics]\nbogus = 1\n" + CHAIN + RULE,
}


@pytest.mark.parametrize("table", TABLES)
def test_man5_documents_every_key(table: str) -> None:
    """Every key the validator accepts in a table has an entry in its section of the page."""
    keys = _known_keys(TABLES[table])
    assert len(keys) >= 2
    section = sections(roff(MAN5), "SS")[table]
    for key in keys:
        assert re.search(rf"^\.TP\n\.BR? {key}$", section, re.MULTILINE), f"{table} {key}"


def test_man5_gives_each_daemon_key_its_range_and_default() -> None:
    """[daemon]'s type, range and default, as the validator and Daemon hold them."""
    from efa_guard.config_validate import DAEMON_KEYS as _DAEMON_KEYS  # noqa: PLC0415

    section = sections(roff(MAN5), "SS")["[daemon]"]
    entries = dict(re.findall(r"^\.B (\w+)\n(.*?)(?=^\.TP|\Z)", section, re.MULTILINE | re.DOTALL))
    defaults = configmod.Daemon()
    for key, (kind, low, high) in _DAEMON_KEYS.items():
        entry = " ".join(entries[key].split())
        assert entry.startswith("Integer" if kind is int else "Float"), key
        assert f"{low:g} to {high:g}" in entry, key
        assert f"default {getattr(defaults, key):g}" in entry, key


def test_man5_metrics_defaults() -> None:
    """[metrics]'s defaults on the page are MetricsConfig's."""
    section = " ".join(sections(roff(MAN5), "SS")["[metrics]"].split())
    assert f"default {MetricsConfig().interval:g}" in section
    assert MetricsConfig().textfile_directory == "auto"
    assert '"auto" (the default)' in section


def test_man5_example_is_the_shipped_policy() -> None:
    """The page's example is a valid config that enforces the shipped default, all defaults."""
    example = roff(MAN5).split(".EX\n")[1].split(".EE\n")[0]
    shown = configmod.parse(example, path=Path("example.toml"))
    shipped = configmod.load(REPO / "config" / "efa-guard.toml")
    assert shown.policy == shipped.policy
    assert shown.exposure == shipped.exposure
    assert shown.daemon == configmod.Daemon()
    assert shown.metrics == MetricsConfig()


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    """`man --warnings` (groff -ww) formats the page with nothing on stderr."""
    need(shutil.which("man") is not None, "man-db is not installed")
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80", "MAN_KEEP_STDERR": "1"}
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "SEE ALSO" in proc.stdout


def test_package_ships_the_docs() -> None:
    """Both pages, the README, every example and the completion are in the package lists."""
    manpages = (DEBIAN / "efa-guard.manpages").read_text().split()
    assert sorted(manpages) == ["debian/efa-guard.8", "debian/efa-guard.toml.5"]
    assert (DEBIAN / "efa-guard.docs").read_text().split() == ["README.md"]
    examples = (DEBIAN / "efa-guard.examples").read_text().split()
    for folder in ("monitoring", "journal"):
        for path in sorted((REPO / "config" / folder).iterdir()):
            assert str(path.relative_to(REPO)) in examples, path
    install = (DEBIAN / "efa-guard.install").read_text()
    assert "config/bash-completion/efa-guard usr/share/bash-completion/completions/\n" in install
