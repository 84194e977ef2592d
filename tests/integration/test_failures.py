"""Bad input and failed writes lose nothing: exit 3, a named cause, the kernel unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import Guard

from tools.harness import DEFAULT_CONFIG

BAD = [
    (
        "port out of range",
        ("[111]", "[70000]"),
        "chain[0].rule[2].ports[0]: port 70000 is out of range",
    ),
    (
        "unknown key",
        ('hook = "INPUT"', 'hook = "INPUT"\npriority = 1'),
        "chain[0].priority: unknown key",
    ),
    ("bad interface", ('interface = "eth0"', 'interface = "eth0 -j ACCEPT"'), "interface: invalid"),
    ("syntax error", ("[[chain]]", "[[chain"), "(syntax): invalid TOML"),
    ("bad backend", ('backend = "auto"', 'backend = "iptables"'), "backend: must be one of"),
]


@pytest.mark.parametrize(("name", "edit", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_unknown_and_changes_nothing(
    guard: Guard, tmp_path: Path, name: str, edit: tuple[str, str], message: str
) -> None:
    """check, apply and render refuse a bad config with exit 3; the running policy stays."""
    assert guard.efa("apply").returncode == 0
    before = guard.save()
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace(*edit, 1))
    check = guard.efa("check", config=bad)
    assert check.returncode == 3, name
    assert check.stdout.startswith(f"EFA-GUARD UNKNOWN - {bad}: ")
    assert message in check.stdout
    for cmd in ("apply", "render"):
        out = guard.efa(cmd, config=bad)
        assert out.returncode == 3
        assert message in out.stderr
    assert guard.save() == before
    assert guard.efa("check").returncode == 0


def test_missing_config_is_unknown(guard: Guard, tmp_path: Path) -> None:
    """A missing config file is UNKNOWN naming the path; --json says so too."""
    out = guard.efa("check", "--json", config=tmp_path / "absent.toml")
    assert out.returncode == 3
    data = json.loads(out.stdout)
    assert data["status"] == "UNKNOWN"
    assert "absent.toml: (file): cannot read: No such file or directory" in data["summary"]


def test_failed_transaction_leaves_the_old_policy(guard: Guard) -> None:
    """A restore that fails on its last line applies nothing: the old chain is intact."""
    assert guard.efa("apply").returncode == 0
    before = guard.save()
    code = f"""
from efa_guard.iptables import Iptables
from efa_guard.plan import Transaction
from efa_guard.errors import CommandError, ConcurrentChangeError
text = (
    "*filter\\n:EFA_INPUT - [0:0]\\n-A EFA_INPUT -j ACCEPT\\n"
    "-A EFA_INPUT -p tcp --dport 99999 -j DROP\\nCOMMIT\\n"
)
try:
    Iptables({guard.backend!r}).restore(Transaction("filter", text, ("filter/EFA_INPUT",)))
except ConcurrentChangeError:
    print("race")
except CommandError as e:
    print("error", e.returncode, bool(e.stderr), e.stdin == text)
"""
    assert guard.python(code).split() == ["error", "2", "True", "True"]
    assert guard.save() == before


def test_lost_delete_race_is_retryable(guard: Guard) -> None:
    """A delete of a jump that moved away fails in the real restore and is classed as a race."""
    assert guard.efa("apply").returncode == 0
    before = guard.save()
    code = f"""
from efa_guard.iptables import Iptables
from efa_guard.plan import Transaction
from efa_guard.errors import ConcurrentChangeError
text = "*filter\\n-D INPUT -i lo -j EFA_INPUT\\n-I INPUT 1 -j EFA_INPUT\\nCOMMIT\\n"
try:
    Iptables({guard.backend!r}).restore(Transaction("filter", text, ("filter/EFA_INPUT",)))
except ConcurrentChangeError as e:
    print("race", e.returncode)
"""
    assert guard.python(code).split()[0] == "race"
    assert guard.save() == before


UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


@pytest.mark.parametrize("command", ["check", "exposure", "apply", "auto-check"])
def test_without_privilege_every_command_is_unknown(guard: Guard, command: str) -> None:
    """As an unprivileged user check, exposure and apply exit 3 naming the cause, no answer."""
    import shutil  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    assert guard.efa("apply").returncode == 0  # the tables are loaded: a read would find them
    before = guard.save()
    public = Path(tempfile.mkdtemp(prefix="efa-guard-test-"))
    try:
        public.chmod(0o755)
        config = public / "g.toml"
        source = DEFAULT_CONFIG if command == "auto-check" else guard.config
        shutil.copyfile(source, config)
        config.chmod(0o644)
        argv = [*UNPRIVILEGED, sys.executable, "-m", "efa_guard", command.removeprefix("auto-")]
        out = guard.box.run([*argv, "--config", str(config)], check=False)
    finally:
        shutil.rmtree(public)
    assert out.returncode == 3, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert "not permitted to use iptables" in said
    assert "Permission denied" in said or "Operation not permitted" in said  # the kernel's words
    if command.endswith("check"):
        assert out.stdout.startswith("EFA-GUARD UNKNOWN - not permitted to use iptables")
    assert "reachable" not in out.stdout
    assert guard.save() == before
