"""A correction verified once is trusted again only while nobody else commits (nft generation)."""

from __future__ import annotations

import json

from support import Guard

CODE = """
import json, subprocess
from pathlib import Path
from efa_guard.config import load
from efa_guard.enforce import Proven, enforce, inspect
from efa_guard.iptables import Iptables

class Counting(Iptables):
    reads = 0
    def read(self, policy):
        self.reads += 1
        return super().read(policy)

backend, path = BACKEND, Path(CONFIG)
policy = load(path).policy
ipt, proven, reads, in_sync = Counting(backend), Proven(), [], []

def ipt_cmd(*args):
    subprocess.run([f"iptables-{backend}", *args], check=True)

def correct(seen=None):
    before = ipt.reads
    out = enforce(ipt, policy, proven=proven, seen=seen)
    reads.append(ipt.reads - before)
    in_sync.append(out.after.in_sync and inspect(Iptables(backend), policy).in_sync)

for _ in range(3):
    ipt_cmd("-F", "EFA_INPUT")
    correct()
ipt_cmd("-F", "EFA_INPUT")
seen = inspect(ipt, policy)
ipt_cmd("-A", "INPUT", "-s", "198.18.9.9", "-j", "ACCEPT")  # a foreign commit after our read
correct(seen)
print(json.dumps({"reads": reads, "in_sync": in_sync}))
"""


def _run(guard: Guard) -> dict[str, list[object]]:
    guard.efa("apply")
    code = CODE.replace("BACKEND", repr(guard.backend)).replace("CONFIG", repr(str(guard.config)))
    out = guard.python(code)
    result: dict[str, list[object]] = json.loads(out)
    return result


def test_proven_corrections_skip_the_read_back_only_when_alone(guard: Guard) -> None:
    """nft: the same correction again needs no read-back, unless another writer committed."""
    result = _run(guard)
    assert result["in_sync"] == [True] * 4  # the kernel holds the policy after every one
    if guard.backend == "nft":
        assert result["reads"] == [2, 1, 1, 1]  # read + read-back first; then none, then seen
    else:
        assert result["reads"] == [2, 2, 2, 1]  # no generation on legacy: always read back
