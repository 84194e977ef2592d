"""Writing through the iptables runner: iptables-restore; jumps that nft rules block moved."""

from __future__ import annotations

from efa_guard.errors import CommandError, ConcurrentChangeError, ForeignRuleError
from efa_guard.iptables_proc import Tools, is_race, raise_for_privilege, which
from efa_guard.iptables_read import Key, Unprintable
from efa_guard.nftchain import move_jumps
from efa_guard.plan import Transaction


def restore(tools: Tools, txn: Transaction, unprintable: dict[Key, Unprintable]) -> None:
    """Apply one table's transaction atomically with iptables-restore --noflush.

    On nft, jumps in a hook chain iptables cannot change (foreign nft-native rules) are
    moved by one nft script instead, after the rest: see nftchain.move_jumps.
    """
    mine = [(c, u) for (f, t, c), u in unprintable.items() if (f, t) == (txn.family, txn.table)]
    hooks = {chain: u.chain for chain, u in mine if u.chain.policy is not None}
    split = move_jumps(txn.text, hooks) if hooks and which("nft") else None
    if split is None:
        _restore(tools, txn, txn.text, [u for _, u in mine])
        return
    rest, script = split
    if rest.strip() != f"*{txn.table}\nCOMMIT":
        _restore(tools, txn, rest, [u for _, u in mine])
    _nft_script(tools, script)


def _restore(tools: Tools, txn: Transaction, text: str, foreign: list[Unprintable]) -> None:
    tool = tools.binary("iptables-restore", txn.family)
    argv = [tool, "--noflush", f"--wait={tools.wait_seconds}"]
    out, err, rc = tools.run(argv, text)
    if rc == 0:
        tools.commits += 1
        return
    raise_for_privilege(argv, rc, out, err)
    if is_race(rc, err, text):
        raise ConcurrentChangeError(argv, rc, out, err, text)
    if foreign:
        cause = "; ".join(u.describe() for u in foreign)
        msg = f"{cause}; so iptables cannot make the change: {err.strip()}"
        raise ForeignRuleError(argv, rc, out, msg, text)
    raise CommandError(argv, rc, out, err, text)


def _nft_script(tools: Tools, script: str) -> None:
    argv = [which("nft") or "nft", "-f", "-"]
    out, err, rc = tools.run(argv, script)
    if rc == 0:
        tools.commits += 1
        return
    raise_for_privilege(argv, rc, out, err)
    if "No such file or directory" in err:  # a jump we delete by handle is gone
        raise ConcurrentChangeError(argv, rc, out, err, script)
    raise CommandError(argv, rc, out, err, script)
