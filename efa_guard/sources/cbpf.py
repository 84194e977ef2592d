"""A small classic BPF assembler: opcodes, labelled instructions, exact-name tests.

Classic BPF reads 16- and 32-bit words in network byte order, netlink's are in host order
(little-endian here): constants compared with such words are byte-swapped (`swap16`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

BPF_MAXINSNS = 4096

# Opcodes (linux/filter.h, linux/bpf_common.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IND, MEM, LEN = 0x40, 0x60, 0x80
ADD, SUB, AND, LSH = 0x00, 0x10, 0x50, 0x60
JA, JEQ, JGE = 0x00, 0x10, 0x30
K, X = 0x00, 0x08
TAX = 0x00
NLA_HDR = 4
M_MSGLEN = 3  # the scratch slot holding the current message's length


@dataclass(frozen=True)
class Insn:
    """One instruction; jump targets are labels until assembled."""

    code: int
    k: int = 0
    jt: str | None = None
    jf: str | None = None
    label: str | None = None  # a label this instruction carries (the jump target)


def swap16(value: int) -> int:
    """A host-order 16-bit value as cBPF loads it."""
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")


def name_test(name: str, at: int, label: str, miss: str, hit: str) -> list[Insn]:
    """Go to `hit` when the attribute at offset `at` of the message at X is exactly `name`.

    Its length (header and NUL-terminated name) and every byte are compared; anything else,
    a message too short to hold it included, goes to `miss`.
    """
    raw = name.encode() + b"\0"
    attr_len = NLA_HDR + len(raw)
    out = [
        Insn(LD | MEM, M_MSGLEN, label=label),
        Insn(JMP | JGE | K, at + attr_len, None, miss),
        Insn(LD | H | IND, at),
        Insn(JMP | JEQ | K, swap16(attr_len), None, miss),
    ]
    pos = at + NLA_HDR
    while raw:
        size = 4 if len(raw) >= 4 else 2 if len(raw) >= 2 else 1
        chunk, raw = raw[:size], raw[size:]
        out += [
            Insn(LD | {4: W, 2: H, 1: B}[size] | IND, pos),
            Insn(JMP | JEQ | K, int.from_bytes(chunk, "big"), None, miss),
        ]
        pos += size
    out.append(Insn(JMP | JA, jt=hit))
    return out


def assemble(insns: Sequence[Insn]) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) per instruction; ValueError for a jump backwards or out of reach."""
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
