"""A socket filter (classic BPF) that drops nf_tables event datagrams of foreign tables in-kernel.

A kube-proxy resync of 10k rules reaches every subscriber as ~3,900 datagrams (~13 MB), nearly
all of them rules in `nat`. Receiving them in Python costs more than the check they might
cause: ~3 us per `recv` before any decoding. The kernel runs this program on each datagram
before queueing it and we receive only those that can matter.

It applies the decoder's own rule (nftdecode: a rule, chain or table message whose first
attribute names a table not ours is foreign), walking the datagram's messages: a datagram is
dropped only when every message in it is provably foreign or of a type the decoder ignores.
Anything unexpected (a message past the end, a length over 64 KiB, a first attribute other
than the table name, more messages than the program unrolls) keeps the datagram: the decoder
then decides, as it did before. A NEWGEN always passes (it ends a transaction).

With watched chains (the decoder's, by table), a rule message of our table whose chain name
(its second attribute, where the kernel writes it) is not watched in that table is foreign
too, as the decoder has it: kube-proxy's resyncs of its own chains in `filter` are dropped
here as well. Table and chain messages of ours are always kept (a renamed chain is announced
under its new name). A program whose chain tests would not fit filters on tables only.

Netlink lengths are little-endian words; they are assembled from bytes (see cbpf).
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from efa_guard.sources.cbpf import (
    ADD,
    ALU,
    AND,
    BPF_MAXINSNS,
    IND,
    JA,
    JEQ,
    JGE,
    JMP,
    LD,
    LDX,
    LEN,
    LSH,
    M_MSGLEN,
    MEM,
    MISC,
    NLA_HDR,
    RET,
    ST,
    STX,
    SUB,
    TAX,
    B,
    H,
    Insn,
    K,
    W,
    X,
    assemble,
    name_test,
    swap16,
)

__all__ = ["ACCEPT", "BPF_MAXINSNS", "DROP", "JA", "JMP", "RET", "attach", "detach", "program"]

SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
NFNL_SUBSYS_NFTABLES = 10
# The message types the decoder reads (table, chain, rule: new and delete) and NEWGEN.
TABLE_TYPES = (0, 2, 3, 5, 6, 8)
RULE_TYPES = (6, 8)  # NEWRULE, DELRULE: their chain name is attribute 2
NEWGEN = 15
NLMSG_HDR, NFGENMSG = 16, 4
ATTR_AT = NLMSG_HDR + NFGENMSG  # the first attribute of a message
NFTA_TABLE, NFTA_RULE_CHAIN = 1, 2
ACCEPT, DROP = 0xFFFFFFFF, 0
MAX_MESSAGES = 96  # a datagram holding more is kept (decided in userspace)
CHAIN_BLOCK_MAX = 250  # instructions per message with chain tests; more: tables only

# Scratch memory slots (M_MSGLEN, 3, is cbpf's).
M_LEN, M_HIGH, M_OFF = 0, 1, 2


class Filterable(Protocol):
    """The part of a socket the filter needs."""

    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None:
        """Set a socket option."""
        ...


def _types(kinds: Sequence[int]) -> list[int]:
    return [swap16((NFNL_SUBSYS_NFTABLES << 8) | t) for t in kinds]


def _watch(block: int, index: int, table: str, chains: Sequence[str]) -> list[Insn]:
    """Our `table` matched: keep its rule message only if it names a watched chain."""
    w, accept, nxt = f"b{block}w{index}", f"b{block}acc", f"b{block}next"
    second = ATTR_AT + ((NLA_HDR + len(table.encode()) + 1 + 3) & ~3)
    rules = _types(RULE_TYPES)
    out = [
        Insn(LD | H | IND, 4, label=w),
        Insn(JMP | JEQ | K, rules[0], f"{w}r", None),
        Insn(JMP | JEQ | K, rules[1], f"{w}r", accept),  # a table or chain message: keep
        Insn(LD | MEM, M_MSGLEN, label=f"{w}r"),
        Insn(JMP | JGE | K, second + NLA_HDR, None, accept),
        Insn(LD | H | IND, second + 2),
        Insn(JMP | JEQ | K, swap16(NFTA_RULE_CHAIN), f"{w}n0", accept),  # not the chain: keep
    ]
    for j, chain in enumerate(chains):
        out += name_test(chain, second, f"{w}n{j}", f"{w}n{j + 1}", accept)
    out.append(Insn(JMP | JA, jt=nxt, label=f"{w}n{len(chains)}"))  # not watched: foreign
    return out


def _block(block: int, tables: Sequence[str], watched: Mapping[str, Sequence[str]]) -> list[Insn]:
    """The checks of the message at offset X; the last block's 'next' keeps the datagram."""
    accept, drop, nxt, check = f"b{block}acc", f"b{block}drop", f"b{block}next", f"b{block}chk"
    out = [
        # Nothing left: every message was foreign.
        Insn(LD | MEM, M_LEN, label=f"b{block}"),
        Insn(ALU | SUB | X),
        Insn(JMP | JEQ | K, 0, drop, None),
        Insn(JMP | JGE | K, NLMSG_HDR, None, accept),
        # nlmsg_len, little-endian: over 64 KiB is kept; assembled from its two low bytes.
        Insn(LD | H | IND, 2),
        Insn(JMP | JEQ | K, 0, None, accept),
        Insn(STX, M_OFF),
        Insn(LD | B | IND, 1),
        Insn(ALU | LSH | K, 8),
        Insn(ST, M_HIGH),
        Insn(LD | B | IND, 0),
        Insn(LDX | MEM, M_HIGH),
        Insn(ALU | ADD | X),
        Insn(ST, M_MSGLEN),
        Insn(JMP | JGE | K, NLMSG_HDR, None, accept),
        # The message must end inside the datagram: len - msglen >= offset.
        Insn(TAX | MISC),
        Insn(LD | MEM, M_LEN),
        Insn(JMP | JGE | X, 0, None, accept),
        Insn(ALU | SUB | X),
        Insn(LDX | MEM, M_OFF),
        Insn(JMP | JGE | X, 0, None, accept),
        # Its type: NEWGEN passes, table/chain/rule messages are checked, others are skipped.
        Insn(LD | H | IND, 4),
        Insn(JMP | JEQ | K, swap16((NFNL_SUBSYS_NFTABLES << 8) | NEWGEN), accept, None),
    ]
    out += [Insn(JMP | JEQ | K, t, check, None) for t in _types(TABLE_TYPES)]
    out += [
        Insn(JMP | JA, jt=nxt),
        # The first attribute must be the table name, as the kernel writes it.
        Insn(LD | MEM, M_MSGLEN, label=check),
        Insn(JMP | JGE | K, ATTR_AT + NLA_HDR, None, accept),
        Insn(LD | H | IND, ATTR_AT + 2),
        Insn(JMP | JEQ | K, swap16(NFTA_TABLE), None, accept),
    ]
    for index, name in enumerate(tables):
        hit = f"b{block}w{index}" if name in watched else accept
        out += name_test(name, ATTR_AT, f"b{block}t{index}", f"b{block}t{index + 1}", hit)
    out.append(Insn(JMP | JA, jt=nxt, label=f"b{block}t{len(tables)}"))
    for index, name in enumerate(tables):
        if name in watched:
            out += _watch(block, index, name, watched[name])
    out += [
        # Foreign: on to the next message (X += NLMSG_ALIGN(msglen)).
        Insn(LD | MEM, M_MSGLEN, label=nxt),
        Insn(ALU | ADD | K, 3),
        Insn(ALU | AND | K, 0xFFFFFFFC),
        Insn(ALU | ADD | X),
        Insn(TAX | MISC),
        Insn(JMP | JA, jt=f"b{block + 1}"),
        Insn(RET | K, ACCEPT, label=accept),
        Insn(RET | K, DROP, label=drop),
    ]
    return out


def program(
    tables: Collection[str], chains: Mapping[str, Collection[str]] | None = None
) -> list[tuple[int, int, int, int]]:
    """The assembled filter: (code, jt, jf, k) per instruction.

    `chains`: the watched chains by table (the decoder's); None, or tests too long to fit in
    a message's block: on tables only.
    """
    names = sorted(set(tables))
    watched = {t: sorted(set(chains[t])) for t in names if chains and t in chains}
    if watched and len(_block(0, names, watched)) > CHAIN_BLOCK_MAX:
        watched = {}
    one = len(_block(0, names, watched))
    blocks = min(MAX_MESSAGES, (BPF_MAXINSNS - 4) // one)
    insns = [Insn(LD | W | LEN), Insn(ST, M_LEN), Insn(LDX | 0x00, 0)]
    for block in range(blocks):
        insns += _block(block, names, watched)
    insns.append(Insn(RET | K, ACCEPT, label=f"b{blocks}"))  # too many messages: keep it
    return assemble(insns)


def attach(
    sock: Filterable, tables: Collection[str], chains: Mapping[str, Collection[str]] | None = None
) -> int:
    """Install the filter for `tables` (and watched `chains`), replacing any; its length.

    The old program goes first: two of these do not fit in the socket's option memory
    (net.core.optmem_max, 128 KiB) at once. In between everything passes, the safe side.
    """
    code = program(tables, chains)
    raw = b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in code)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HP", len(code), ctypes.addressof(buf))
    detach(sock)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return len(code)


def detach(sock: Filterable) -> None:
    """Remove the filter (none attached is fine): every datagram is delivered again."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, bytes(4))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
