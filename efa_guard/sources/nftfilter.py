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

Classic BPF reads 16- and 32-bit words in network byte order, netlink's are in host order
(little-endian here): constants are byte-swapped to match, lengths are assembled from bytes.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
BPF_MAXINSNS = 4096

# Opcodes (linux/filter.h, linux/bpf_common.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IND, MEM, LEN = 0x40, 0x60, 0x80
ADD, SUB, AND, LSH = 0x00, 0x10, 0x50, 0x60
JA, JEQ, JGE = 0x00, 0x10, 0x30
K, X = 0x00, 0x08
TAX = 0x00

NFNL_SUBSYS_NFTABLES = 10
# The message types the decoder reads (table, chain, rule: new and delete) and NEWGEN.
TABLE_TYPES = (0, 2, 3, 5, 6, 8)
NEWGEN = 15
NLMSG_HDR, NFGENMSG, NLA_HDR = 16, 4, 4
ATTR_AT = NLMSG_HDR + NFGENMSG  # the first attribute of a message
NFTA_TABLE = 1
ACCEPT, DROP = 0xFFFFFFFF, 0
MAX_MESSAGES = 96  # a datagram holding more is kept (decided in userspace)

# Scratch memory slots.
M_LEN, M_HIGH, M_OFF, M_MSGLEN = 0, 1, 2, 3


class Filterable(Protocol):
    """The part of a socket the filter needs."""

    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None:
        """Set a socket option."""
        ...


@dataclass(frozen=True)
class Insn:
    """One instruction; jump targets are labels until assembled."""

    code: int
    k: int = 0
    jt: str | None = None
    jf: str | None = None
    label: str | None = None  # a label this instruction carries (the jump target)


def _swap16(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")


def _table_test(name: str, block: int, index: int, accept: str) -> list[Insn]:
    """Accept when the first attribute is exactly `name` (length and bytes); else go on."""
    raw = name.encode() + b"\0"
    attr_len = NLA_HDR + len(raw)
    miss = f"b{block}t{index + 1}"
    out = [
        Insn(LD | MEM, M_MSGLEN, label=f"b{block}t{index}"),
        Insn(JMP | JGE | K, ATTR_AT + attr_len, None, miss),
        Insn(LD | H | IND, ATTR_AT),
        Insn(JMP | JEQ | K, _swap16(attr_len), None, miss),
    ]
    at = ATTR_AT + NLA_HDR
    while raw:
        size = 4 if len(raw) >= 4 else 2 if len(raw) >= 2 else 1
        chunk, raw = raw[:size], raw[size:]
        out += [
            Insn(LD | {4: W, 2: H, 1: B}[size] | IND, at),
            Insn(JMP | JEQ | K, int.from_bytes(chunk, "big"), None, miss),
        ]
        at += size
    out.append(Insn(JMP | JA, jt=accept))
    return out


def _block(block: int, tables: Sequence[str]) -> list[Insn]:
    """The checks of the message at offset X; the last block's 'next' keeps the datagram."""
    accept, drop, nxt, check = f"b{block}acc", f"b{block}drop", f"b{block}next", f"b{block}chk"
    types = [(NFNL_SUBSYS_NFTABLES << 8) | t for t in TABLE_TYPES]
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
        Insn(JMP | JEQ | K, _swap16((NFNL_SUBSYS_NFTABLES << 8) | NEWGEN), accept, None),
    ]
    out += [Insn(JMP | JEQ | K, _swap16(t), check, None) for t in types]
    out += [
        Insn(JMP | JA, jt=nxt),
        # The first attribute must be the table name, as the kernel writes it.
        Insn(LD | MEM, M_MSGLEN, label=check),
        Insn(JMP | JGE | K, ATTR_AT + NLA_HDR, None, accept),
        Insn(LD | H | IND, ATTR_AT + 2),
        Insn(JMP | JEQ | K, _swap16(NFTA_TABLE), None, accept),
    ]
    for index, name in enumerate(tables):
        out += _table_test(name, block, index, accept)
    out += [
        Insn(JMP | JA, jt=nxt, label=f"b{block}t{len(tables)}"),
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


def program(tables: Collection[str]) -> list[tuple[int, int, int, int]]:
    """The assembled filter: (code, jt, jf, k) per instruction."""
    names = sorted(set(tables))
    one = len(_block(0, names))
    blocks = min(MAX_MESSAGES, (BPF_MAXINSNS - 4) // one)
    insns = [Insn(LD | W | LEN), Insn(ST, M_LEN), Insn(LDX | 0x00, 0)]
    for block in range(blocks):
        insns += _block(block, names)
    insns.append(Insn(RET | K, ACCEPT, label=f"b{blocks}"))  # too many messages: keep it
    return _assemble(insns)


def _assemble(insns: Sequence[Insn]) -> list[tuple[int, int, int, int]]:
    where = {i.label: n for n, i in enumerate(insns) if i.label is not None}

    def offset(n: int, label: str | None, *, short: bool = True) -> int:
        if label is None:
            return 0
        delta = where[label] - n - 1
        if delta < 0 or (short and delta > 255):
            raise ValueError(f"jump to {label} out of range ({delta})")
        return delta

    out: list[tuple[int, int, int, int]] = []
    for n, insn in enumerate(insns):
        if insn.code == JMP | JA:
            out.append((insn.code, 0, 0, offset(n, insn.jt, short=False)))
        else:
            out.append((insn.code, offset(n, insn.jt), offset(n, insn.jf), insn.k))
    return out


def attach(sock: Filterable, tables: Collection[str]) -> int:
    """Install the filter for `tables`, replacing any; returns its length in instructions.

    The old program goes first: two of these do not fit in the socket's option memory
    (net.core.optmem_max, 128 KiB) at once. In between everything passes, the safe side.
    """
    code = program(tables)
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
