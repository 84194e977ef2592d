"""The operator's toolkit on the installed package under a real systemd: pause, remove, bash.

One container for the module; the tests run in order and share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pkgbox import check, installed, wait_for

from tools.nspawn import Container

pytestmark = pytest.mark.system
LOG_RULE = ["-I", "INPUT", "1", "-i", "eth0", "-j", "LOG", "--log-prefix", "dbg:"]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted container with the package installed and running."""
    with installed(tmp_path_factory.mktemp("nspawn")) as c:
        wait_for("policy in place", lambda: check(c).returncode == 0)
        yield c


def journal(c: Container, event: str) -> list[dict[str, str]]:
    """efa-guard's entries of one kind (the daemon's and the commands') in the journal."""
    argv = ["journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=efa-guard"]
    out = c.run([*argv, f"EFA_EVENT={event}"])
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def first_input_rule(c: Container) -> str:
    """The first rule of INPUT, as iptables prints it."""
    return c.run(["iptables", "-w", "-S", "INPUT"]).stdout.splitlines()[1]


def test_pause_keeps_a_log_rule_until_the_deadline(box: Container) -> None:
    """Paused: a LOG rule stays first and check warns; at the deadline the policy is back."""
    c = box
    done = c.run(["efa-guard", "pause", "--for", "8s", "--reason", "ticket 4711"], check=False)
    assert done.returncode == 0, done.stderr
    c.run(["iptables", "-w", *LOG_RULE])
    wait_for("drift_observed", lambda: journal(c, "drift_observed"))
    assert "LOG" in first_input_rule(c)
    warned = check(c)
    assert warned.returncode == 1, warned.stdout
    assert "PAUSED by root" in warned.stdout
    assert "ticket 4711" in warned.stdout
    status = c.run(["systemctl", "status", "efa-guard", "--no-pager"], check=False).stdout
    assert "PAUSED by root" in status
    wait_for("the deadline", lambda: journal(c, "resumed"), timeout=30)
    wait_for("our jump first", lambda: first_input_rule(c) == "-A INPUT -j EFA_INPUT")
    assert check(c).returncode == 0
    kinds = [
        e["EFA_EVENT"]
        for e in (*journal(c, "paused"), *journal(c, "drift_observed"), *journal(c, "resumed"))
    ]
    assert kinds[0] == "paused"
    assert "drift_observed" in kinds
    assert kinds[-1] == "resumed"
    history = c.run(["efa-guard", "history", "--json"]).stdout
    shown = [e["event"] for e in json.loads(history)["events"]]
    assert {"paused", "drift_observed", "resumed"} <= set(shown)


def test_pause_is_refused_without_a_daemon_and_twice(box: Container) -> None:
    """A second pause and a pause with the service stopped are refused; nothing changes."""
    c = box
    assert c.run(["efa-guard", "pause", "--for", "5m"], check=False).returncode == 0
    again = c.run(["efa-guard", "pause", "--for", "5m"], check=False)
    assert again.returncode == 1
    assert c.run(["efa-guard", "resume"], check=False).returncode == 0
    assert c.run(["efa-guard", "resume"], check=False).returncode == 1
    c.run(["systemctl", "stop", "efa-guard"])
    try:
        assert c.run(["efa-guard", "pause"], check=False).returncode == 3
    finally:
        c.run(["systemctl", "start", "efa-guard"])
    wait_for("policy in place", lambda: check(c).returncode == 0)


def test_remove_takes_every_chain_and_jump_out(box: Container) -> None:
    """`remove --dry-run` prints the transactions; `remove` leaves no EFA_ chain or jump."""
    c = box
    refused = c.run(["efa-guard", "remove"], check=False)
    assert refused.returncode == 1
    dry = c.run(["efa-guard", "remove", "--dry-run"])
    assert "-X EFA_INPUT" in dry.stdout
    assert "# ipv6: ip6tables-restore --noflush" in dry.stdout
    c.run(["systemctl", "disable", "--now", "efa-guard"])
    c.run(["efa-guard", "remove"])
    for tool in ("iptables-save", "ip6tables-save"):
        assert "EFA_" not in c.run([tool]).stdout, tool
    again = c.run(["efa-guard", "remove"], check=False)
    assert again.returncode == 1
    assert "nothing to remove" in again.stderr
    assert len(journal(c, "policy_removed")) == 1


def test_completion_loads_in_bash(box: Container) -> None:
    """The installed completion registers for efa-guard in a bash that sources it."""
    c = box
    script = "/usr/share/bash-completion/completions/efa-guard"
    out = c.run(["bash", "-c", f"source {script} && complete -p efa-guard"])
    assert "efa-guard" in out.stdout
    complete = f"source {script}; COMP_WORDS=(efa-guard pa); COMP_CWORD=1; _efa_guard; "
    words = c.run(["bash", "-c", complete + "echo ${COMPREPLY[@]}"]).stdout
    assert words.split() == ["pause"]
