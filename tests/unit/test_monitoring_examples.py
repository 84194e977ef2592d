"""The NRPE, Icinga 2 and sudoers examples agree with each other and with the parser."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

from support import need

from efa_guard.cli.parser import build_parser
from tools.harness import REPO

MONITORING = REPO / "config" / "monitoring"
EFA_GUARD = "/usr/bin/efa-guard"


def sudoers_commands() -> set[str]:
    """The command lines the sudoers example allows, joined by single spaces."""
    text = (MONITORING / "sudoers-efa-guard").read_text().replace("\\\n", " ")
    [alias] = re.findall(r"^Cmnd_Alias EFA_GUARD_CHECK = (.*)$", text, re.MULTILINE)
    return {" ".join(c.split()) for c in alias.split(",")}


def nrpe_commands() -> set[str]:
    """What each NRPE command runs after `sudo -n`."""
    text = (MONITORING / "nrpe-efa-guard.cfg").read_text()
    lines = re.findall(r"^command\[\w+\]=/usr/bin/sudo -n (.*)$", text, re.MULTILINE)
    assert len(lines) >= 1
    return set(lines)


def icinga_commands() -> set[str]:
    """The command lines the Icinga 2 CheckCommand builds (with and without --no-exposure)."""
    text = (MONITORING / "icinga2-efa-guard.conf").read_text()
    [command] = re.findall(r"command = \[ (.*) \]", text)
    argv = [a.strip().strip('"') for a in command.split(",")]
    assert argv[:2] == ["/usr/bin/sudo", "-n"]
    [timeout] = re.findall(r"vars\.efa_guard_timeout = (\d+)", text)
    assert '"--timeout" = {\n      value = "$efa_guard_timeout$"' in text
    assert 'set_if = "$efa_guard_no_exposure$"' in text
    base = " ".join([*argv[2:], "--timeout", timeout])
    return {base, f"{base} --no-exposure"}


def test_sudoers_allows_exactly_the_agents_command_lines() -> None:
    """NRPE's and Icinga's command lines are each allowed, and sudoers allows no other."""
    allowed = sudoers_commands()
    assert nrpe_commands() | icinga_commands() == allowed


def test_allowed_command_lines_are_read_only_checks() -> None:
    """Each allowed line is a valid `check` without --fix, --config or a wildcard."""
    for line in sudoers_commands():
        argv = shlex.split(line)
        assert argv[0] == EFA_GUARD
        assert not {"*", "--fix", "--config"} & {*argv, *(a.split("=")[0] for a in argv)}
        args = build_parser().parse_args(argv[1:])
        assert args.command == "check"
        assert not args.fix


def test_sudoers_parses_with_visudo() -> None:
    """`visudo -c` accepts the file (a broken file in sudoers.d breaks sudo for everyone)."""
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    need(shutil.which(visudo) is not None, "sudo (visudo) is not installed")
    proc = subprocess.run(
        [visudo, "-c", "-f", str(MONITORING / "sudoers-efa-guard")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parsed OK" in proc.stdout
