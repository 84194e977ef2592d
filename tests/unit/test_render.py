"""Rendering: the policy in the exact text iptables prints."""

from __future__ import annotations

from pathlib import Path

from efa_guard.config import parse
from efa_guard.policy import Chain, PortRange, Rule
from efa_guard.render import desired_states, restore_text, rule_lines

SEED = (
    (
        "-A EFA_INPUT -i eth0 -p tcp -m multiport --dports 1024:6513,6515:8077,8079:65535 "
        "-m conntrack --ctstate NEW -j DROP"
    ),
    (
        "-A EFA_INPUT -i eth0 -p udp -m multiport --dports 1024:65535 "
        "-m conntrack --ctstate NEW -j DROP"
    ),
)


def test_default_policy_starts_with_the_seed(default_config_text: str) -> None:
    """EFA_INPUT's first two rules are the seed's, then 111 TCP and UDP."""
    cfg = parse(default_config_text, path=Path("x.toml"))
    filt, raw, filt6, raw6 = desired_states(cfg.policy)
    assert (filt6.rules, raw6.rules) == (filt.rules, raw.rules)
    assert (filt6.family, raw6.family) == ("ipv6", "ipv6")
    assert filt.rules[:2] == SEED
    assert filt.rules[2:] == (
        "-A EFA_INPUT -i eth0 -p tcp -m multiport --dports 111 -m conntrack --ctstate NEW -j DROP",
        "-A EFA_INPUT -i eth0 -p udp -m multiport --dports 111 -m conntrack --ctstate NEW -j DROP",
    )
    assert [j.rule for j in filt.jumps] == ["-A INPUT -j EFA_INPUT"]
    assert raw.rules[0] == (
        "-A EFA_NODEPORTS -i eth0 -p tcp -m multiport --dports 30148,30672,31672,31730 -j DROP"
    )
    assert [j.rule for j in raw.jumps] == ["-A PREROUTING -j EFA_NODEPORTS"]


def test_restore_text_declares_hooks_first_and_never_sets_policies(
    default_config_text: str,
) -> None:
    """The from-scratch transaction creates chains, inserts jumps at 1 and never touches -P."""
    text = restore_text(parse(default_config_text, path=Path("x.toml")).policy)
    assert text.count("COMMIT") == 2
    assert "-I INPUT 1 -j EFA_INPUT" in text
    assert "-I PREROUTING 1 -j EFA_NODEPORTS" in text
    assert ":INPUT" not in text
    assert ":PREROUTING" not in text
    assert "-P " not in text


def test_many_ports_split_into_multiport_sized_rules() -> None:
    """Twenty single ports become two rules of 15 and 5 ports, in order."""
    ports = tuple(PortRange(p, p) for p in range(100, 140, 2))
    chain = Chain("filter", "EFA_X", "INPUT", (Rule("tcp", ports, "eth0"),))
    lines = rule_lines(chain, chain.rules[0])
    assert len(lines) == 2
    assert "--dports 100,102," in lines[0]
    assert lines[0].count(",") == 14
    assert lines[1].count(",") == 4
