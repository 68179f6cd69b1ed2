"""The hand-assembled peek program, byte for byte (eBPF instruction set, Linux 6.18
Documentation/bpf/standardization/instruction-set.rst): no kernel needed."""

from __future__ import annotations

import pytest

from pyvmalloc.trace import bpfpeek

# Each line: opcode, regs (src << 4 | dst), offset (s16 LE), immediate (s32 LE),
# worked out by hand from the instruction-set document.
EXPECTED = [
    "79 16 0000 00000000",  # r6 = *(u64 *)(r1 + 0)     LDX|DW|MEM = 0x61|0x18 = 0x79
    "79 17 0800 00000000",  # r7 = *(u64 *)(r1 + 8)
    "b7 00 0000 f9ffffff",  # r0 = -7                   ALU64|MOV|K = 0x07|0xb0
    "15 07 0900 00000000",  # if r7 == 0 goto +9 (exit) JMP|JEQ|K = 0x05|0x10
    "25 07 0800 00100000",  # if r7 > 4096 goto +8      JMP|JGT|K = 0x05|0x20
    "62 0a fcff 00000000",  # *(u32 *)(r10 - 4) = 0     ST|W|MEM = 0x02|0x00|0x60
    "bf a2 0000 00000000",  # r2 = r10                  ALU64|MOV|X = 0xb7|0x08
    "07 02 0000 fcffffff",  # r2 += -4                  ALU64|ADD|K
    "18 11 0000 05000000",  # r1 = map fd 5             LD|DW|IMM, src = PSEUDO_MAP_FD
    "00 00 0000 00000000",  #   (second half of the 64-bit immediate)
    "85 00 0000 01000000",  # call bpf_map_lookup_elem
    "55 00 0200 00000000",  # if r0 != 0 goto +2        JMP|JNE|K = 0x05|0x50
    "b7 00 0000 feffffff",  # r0 = -2
    "95 00 0000 00000000",  # exit
    "bf 01 0000 00000000",  # r1 = r0
    "bf 72 0000 00000000",  # r2 = r7
    "bf 63 0000 00000000",  # r3 = r6
    "85 00 0000 71000000",  # call bpf_probe_read_kernel (113)
    "95 00 0000 00000000",  # exit
]


def test_peek_program_bytes() -> None:
    code = bpfpeek.assemble(bpfpeek.peek_program(map_fd=5, max_len=4096))
    assert code.hex() == "".join(EXPECTED).replace(" ", "")


def test_jumps_land_where_intended() -> None:
    insns = bpfpeek.peek_program(map_fd=3)
    exits = {i for i, ins in enumerate(insns) if ins[0] == bpfpeek.JMP | bpfpeek.EXIT}
    for i, (op, _dst, _src, off, _imm) in enumerate(insns):
        if op & 0x07 == bpfpeek.JMP and op & 0xF0 in (bpfpeek.JEQ, bpfpeek.JGT):
            assert i + 1 + off in exits  # length checks go straight to exit with -E2BIG
    read = next(i for i, ins in enumerate(insns) if ins[:3] == (0xBF, 1, 0))
    jne = next(i for i, ins in enumerate(insns) if ins[0] == bpfpeek.JMP | bpfpeek.JNE)
    assert jne + 1 + insns[jne][3] == read


def test_assemble_rejects_bad_registers() -> None:
    with pytest.raises(ValueError, match="register out of range"):
        bpfpeek.assemble([(0xB7, 11, 0, 0, 0)])


CHASE = [
    "bf 16 0000 00000000",  # 0: r6 = r1 (ctx)
    "62 0a fcff 00000000",  # 1: *(u32 *)(r10 - 4) = 0
    "bf a2 0000 00000000",  # 2: r2 = r10
    "07 02 0000 fcffffff",  # 3: r2 += -4
    "18 11 0000 05000000",  # 4: r1 = map fd 5
    "00 00 0000 00000000",  # 5
    "85 00 0000 01000000",  # 6: call bpf_map_lookup_elem
    "55 00 0200 00000000",  # 7: if r0 != 0 goto 10
    "b7 00 0000 feffffff",  # 8: r0 = -2
    "95 00 0000 00000000",  # 9: exit
    "bf 09 0000 00000000",  # 10: r9 = r0
    "79 67 0000 00000000",  # 11: r7 = ctx[0]
    "b7 08 0000 00000000",  # 12: r8 = 0
    "25 08 1200 b80f0000",  # 13: if r8 > 4024 goto 32 (4096 - 72 = 0xfb8)
    "79 61 1000 00000000",  # 14: r1 = ctx[2]
    "3d 18 1000 00000000",  # 15: if r8 >= r1 goto 32   JMP|JGE|X = 0x05|0x30|0x08
    "bf 91 0000 00000000",  # 16: r1 = r9
    "0f 81 0000 00000000",  # 17: r1 += r8              ALU64|ADD|X = 0x07|0x00|0x08
    "b7 02 0000 48000000",  # 18: r2 = 72
    "bf 73 0000 00000000",  # 19: r3 = r7
    "85 00 0000 71000000",  # 20: call bpf_probe_read_kernel
    "55 00 0800 00000000",  # 21: if r0 != 0 goto 30
    "07 08 0000 48000000",  # 22: r8 += 72
    "bf 91 0000 00000000",  # 23: r1 = r9
    "0f 81 0000 00000000",  # 24: r1 += r8
    "79 17 e0ff 00000000",  # 25: r7 = *(u64 *)(r1 - 32)  (link 40 - size 72)
    "07 07 0000 d8ffffff",  # 26: r7 += -40
    "79 61 0800 00000000",  # 27: r1 = ctx[1]
    "1d 17 0300 00000000",  # 28: if r7 == r1 goto 32   JMP|JEQ|X = 0x05|0x10|0x08
    "05 00 efff 00000000",  # 29: goto 13 (-17)
    "55 08 0100 00000000",  # 30: if r8 != 0 goto 32
    "95 00 0000 00000000",  # 31: exit (the error)
    "bf 80 0000 00000000",  # 32: r0 = r8
    "95 00 0000 00000000",  # 33: exit
]


def test_chase_program_bytes() -> None:
    code = bpfpeek.assemble(bpfpeek.chase_program(map_fd=5, size=72, link=40, adj=-40))
    assert code.hex() == "".join(CHASE).replace(" ", "")


def test_chase_program_rejects_shapes_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        bpfpeek.chase_program(map_fd=5, size=72, link=70, adj=-40)
    with pytest.raises(ValueError, match="do not fit"):
        bpfpeek.chase_program(map_fd=5, size=8192, link=0, adj=0)
