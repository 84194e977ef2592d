"""Reading chains through the iptables runner: nft (generation-checked) and legacy (by table)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from efa_guard import nftdump
from efa_guard.errors import PrivilegeError, ReadCommandError, ReadError, UnstableReadError
from efa_guard.iptables_proc import Tools, raise_for_privilege, which
from efa_guard.legacyshot import Copies
from efa_guard.nftchain import NftChain, NftParseError, parse_chain
from efa_guard.nftgen import generation
from efa_guard.observe import ParseError, save_listings

Key = tuple[str, str, str]  # (family, table, chain)
Memo = dict[Key, str | None]
READ_ATTEMPTS = 5  # nft: reads in a row that may see the generation move before giving up
_READ_PAUSE = 0.01  # seconds before the second attempt, doubling: 150 ms in all
_INCOMPATIBLE = "incompatible, use 'nft' tool"  # nft: a missing chain, or unprintable rules
_NO_CHAIN = ("No chain/target/match by that name", "does not exist")
_BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
_NO_ENTRY = "No such file or directory"


@dataclass(frozen=True)
class Unprintable:
    """A chain iptables-nft refused to print, as nft lists it, and what iptables said."""

    chain: NftChain
    iptables_stderr: str

    def describe(self) -> str:
        """Names the chain, each foreign rule with its position, and iptables' own words."""
        c = self.chain
        jump = next((r.position for r in c.rules if r.plain), None)
        where = f"ahead of the jump at position {jump}" if jump else "and no jump of ours"
        ahead = tuple(r for r in c.foreign() if jump is None or r.position < jump)
        shown = c.describe(ahead) if ahead else c.describe()
        if jump is not None and not ahead:
            where = f"behind the jump at position {jump}"
        if not shown:
            shown = f"none told apart from iptables' own: see nft list chain {c.family} {c.table}"
        return (
            f"{c.family} {c.table} {c.name} holds nft-native rules iptables cannot print "
            f"({shown}), {where} (iptables: {self.iptables_stderr})"
        )


@dataclass
class MemoReads:
    """What the reads into a memo know of it.

    nft: the generation it was read at (None: not yet). legacy: the memo these sets describe,
    its tables read whole, and those read by one -S.
    """

    generation: int | None = None
    last: int | None = None  # nft: the generation of the latest read, memo or not
    of: Memo | None = None
    whole: set[tuple[str, str]] = field(default_factory=set)
    part: set[tuple[str, str]] = field(default_factory=set)
    # legacy, one-shot: the save of each table read whole; its chains are taken when asked for
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    copies: Copies | None = None  # legacy, one-shot: each table's kernel copy (legacyshot)

    def pending(self, memo: Memo, requests: Sequence[Key]) -> dict[tuple[str, str], list[Key]]:
        """legacy: the requests still to read, by table (a table kept whole answers at once)."""
        if self.of is not memo:
            self.of, self.whole, self.part, self.texts = memo, set(), set(), {}
            self.copies = None
        groups: dict[tuple[str, str], list[Key]] = {}
        for r in dict.fromkeys(requests):
            if r[:2] in self.whole and r not in memo:  # a chain not declared does not exist
                memo[r] = save_listings(self.texts[r[:2]], r[1], [r[2]]).get(r[2])
            elif r not in memo:
                groups.setdefault(r[:2], []).append(r)
        return groups

    def rules_over(self, key: Key, limit: int) -> bool:
        """legacy: the chain holds more than `limit` rules; False when not known.

        Searched in its table's save, or counted in the table's copy, whichever was taken.
        """
        text = self.texts.get(key[:2])
        if text is None:  # counted in the table's copy when there is one
            return bool(self.copies and self.copies.over(key, limit))
        needle, at = f"\n-A {key[2]} ", -1
        for _ in range(limit + 1):
            at = text.find(needle, at + 1)
            if at < 0:
                return False
        return True


def read_nft(
    memo: Memo,
    todo: list[Key],
    list_nft: Callable[[list[Key]], Memo],
    *,
    kept: bool,
    read_at: int | None,
) -> int:
    """Fill `memo` with `todo` read between two equal generations; return that generation.

    `kept`: the memo is one snapshot that lives on, read at generation `read_at` (None: not
    yet); when the generation moved since, the memo is read again whole.
    """
    keys, before = todo, -1
    for attempt in range(READ_ATTEMPTS):
        if attempt:
            time.sleep(_READ_PAUSE * 2 ** (attempt - 1))  # let a writer's burst finish
        before = _generation()
        if kept and read_at not in (None, before):
            keys = list(dict.fromkeys([*memo, *todo]))  # the memo is older: refresh it
        fresh = list_nft(keys)
        if _generation() == before:
            if keys is not todo:
                memo.clear()
            memo.update(fresh)
            return before
    msg = (
        f"the nf_tables ruleset changed during each of {READ_ATTEMPTS} reads (generation "
        f"now {before}): another writer is busy, no consistent state to report"
    )
    raise UnstableReadError(msg)


def _generation() -> int:
    try:
        return generation()
    except PermissionError as e:
        msg = f"not permitted to use iptables (run as root or with CAP_NET_ADMIN): {e}"
        raise PrivilegeError(msg) from e
    except OSError as e:
        msg = f"cannot read the nf_tables ruleset generation: {e}"
        raise ReadError(msg) from e


def list_nft(tools: Tools, keys: list[Key], unprintable: dict[Key, Unprintable]) -> Memo:
    """`-S` listings of the chains, run concurrently; unprintable ones read through nft."""
    argvs = [tools.argv(t, "-S", c, family=f) for f, t, c in keys]
    procs = [(argv, tools.spawn(argv, slot=i)) for i, argv in enumerate(argvs)]
    finished = [(argv, *proc.communicate(), proc.returncode) for argv, proc in procs]
    out: Memo = {}
    for key, (argv, stdout, err, rc) in zip(keys, finished, strict=True):
        unprintable.pop(key, None)
        if rc == 0 and stdout.strip():
            out[key] = stdout
            continue
        raise_for_privilege(argv, rc, stdout, err)
        if rc == 1 and _INCOMPATIBLE in err:
            # A missing chain, or one holding rules iptables cannot print: nft knows.
            out[key] = _nft_chain(tools, key, err, unprintable)
        elif rc == 1 and any(s in err for s in _NO_CHAIN):
            out[key] = None
        else:
            raise ReadCommandError(argv, rc, stdout, err or "(printed nothing)")
    return out


def _nft_chain(
    tools: Tools, key: Key, iptables_err: str, unprintable: dict[Key, Unprintable]
) -> str | None:
    family, table, chain = key
    if nftdump.exists(key) is False:  # asked in-process: no nft process for a missing chain
        return None
    nft = which("nft")
    nft_family = "ip6" if family == "ipv6" else "ip"
    if nft is None:
        if chain not in _BUILTIN:
            # iptables-nft says "incompatible" for a user chain that does not exist;
            # without nft it cannot be told from one holding nft-native rules.
            return None
        msg = f"nft not found (install nftables) to read {nft_family} {table} {chain}"
        raise ReadCommandError([], 1, "", f"{iptables_err.strip()}; {msg}")
    argv = [nft, "-j", "list", "chain", nft_family, table, chain]
    stdout, err, rc = tools.run(argv)
    if rc != 0:
        raise_for_privilege(argv, rc, stdout, err)
        if _NO_ENTRY in err:
            return None
        raise ReadCommandError(argv, rc, stdout, err)
    try:
        parsed = parse_chain(stdout, nft_family, table, chain)
    except NftParseError as e:
        raise ReadCommandError(argv, 0, stdout, str(e)) from e
    unprintable[key] = Unprintable(parsed, iptables_err.strip())
    return parsed.listing()


def _copies(tools: Tools, seen: MemoReads) -> Copies:
    if seen.copies is None:
        seen.copies = Copies(lambda family: tools.binary("iptables-save", family))
    return seen.copies


def read_legacy(
    tools: Tools, memo: Memo, requests: Sequence[Key], seen: MemoReads, *, lean: bool = False
) -> None:
    """Each process reads one table in one consistent copy; never a table twice per batch.

    Two or more chains of a table, or a table this memo already read a chain of: one
    `iptables-legacy-save -t TABLE`, every chain taken from it (later requests are free).
    A single chain: `-S CHAIN`, which copies the table too but prints only that chain
    (measured at 50k rules: the save of kube-proxy's nat table and parsing it cost more
    than the -S of KUBE-NODEPORTS the check needs). From a save only the requested chains
    are taken, by string search (a 50k-rule table is not parsed line by line); without
    `lean` (one-shot commands) the save is kept and later requests are taken from it, and
    first each table is copied in-process: its chains come from the listings store when it
    holds them all (no process; see legacyshot), and what a save shows is learned.
    """
    groups, part = seen.pending(memo, requests), seen.part
    copies = None if lean else _copies(tools, seen)
    if copies is not None:
        groups = {t: keys for t, keys in groups.items() if not copies.answer(memo, t, keys)}
    saves = [t for t, k in groups.items() if len(k) > 1 or t in part or (copies and copies.has(t))]
    singles = [keys[0] for t, keys in groups.items() if t not in saves]
    argvs = [[tools.binary("iptables-save", f), "-t", t] for f, t in saves]
    argvs += [tools.argv(t, "-S", c, family=f) for f, t, c in singles]
    procs = [(argv, tools.spawn(argv, slot=i)) for i, argv in enumerate(argvs)]
    for key, (argv, proc) in zip([*saves, *singles], procs, strict=True):
        stdout, err = proc.communicate()
        rc = proc.returncode
        raise_for_privilege(argv, rc, stdout, err)
        if len(key) == 3 and rc == 1 and any(s in err for s in _NO_CHAIN):
            memo[key] = None
        elif rc != 0 or not stdout.strip():
            raise ReadCommandError(argv, rc, stdout, err or "(printed nothing)")
        elif len(key) == 3:
            memo[key] = stdout
            part.add(key[:2])
        else:
            family, table = key[0], key[1]
            wanted = {c for f, t, c in requests if (f, t) == (family, table)}
            if copies is not None:  # chains answered before, from this save too: one state
                wanted.update(c for f, t, c in memo if (f, t) == (family, table))
                copies.saved((family, table))
            try:
                chains = save_listings(stdout, table, wanted)
            except ParseError as e:
                raise ReadCommandError(argv, rc, stdout[-2000:], f"{err} {e}".strip()) from e
            memo.update({(family, table, c): chains.get(c) for c in wanted})
            if not lean:
                seen.whole.add((family, table))
                seen.texts[(family, table)] = stdout
    if copies is not None:
        copies.learn(memo, requests)
