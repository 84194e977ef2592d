"""kube-proxy's own ruleset (tests/fixtures/kube_proxy_overall.rules) for the tests.

`listings` turns it into what `iptables -S CHAIN` prints per chain, for the evaluator on the
text alone; `for_sandbox` adapts it to the namespace sandbox, to load it into a real kernel.
"""

from __future__ import annotations

import re
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "kube_proxy_overall.rules"
SESSION_AFFINITY = 3002  # ns5/svc5:p80: recent --rcheck ... then recent --set + DNAT
PLAIN = 3003  # ns3/svc3:p80: one endpoint, no affinity
LOCAL_POLICY = 3001  # ns2/svc2:p80: externalTrafficPolicy Local, no local endpoint
NODEPORTS = (LOCAL_POLICY, SESSION_AFFINITY, PLAIN)
ENDPOINT = "10.180.0.3"  # the endpoint of svc3 and svc5


def text() -> str:
    """The fixture, comments and blank lines left out."""
    lines = FIXTURE.read_text().splitlines()
    return "\n".join(x for x in lines if x and not x.startswith("#")) + "\n"


def listings(rules: str | None = None) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> the lines `iptables -S chain` would print."""
    out: dict[tuple[str, str], list[str]] = {}
    table = ""
    for line in (rules or text()).splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            out[table, name] = [f"-N {name}" if policy == "-" else f"-P {name} {policy}"]
        elif line.startswith("-A "):
            out[table, line.split()[1]].append(line)
    return out


def for_sandbox(pod_addr: str, pod_port: int) -> str:
    """The fixture for a real kernel: endpoints at the sandbox's pod, no nfacct matches.

    `-m nfacct` needs nfacct objects that only kube-proxy creates; the matches only count.
    Built-in chains are not redeclared (a restore would reset their policy).
    """
    out = []
    for line in text().splitlines():
        if re.match(r":(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) ", line):
            continue
        line = re.sub(r" -m nfacct --nfacct-name \S+", "", line)  # noqa: PLW2901
        line = line.replace(f"{ENDPOINT}:80", f"{pod_addr}:{pod_port}")  # noqa: PLW2901
        out.append(line)
    return "\n".join(out) + "\n"
