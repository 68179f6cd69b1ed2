"""Read kernel memory from Python with one tiny hand-assembled BPF program.

There is no clang or libbpf on the machines pyvmalloc captures on, so the program is
emitted here as bytes, instruction by instruction, following the eBPF instruction set
(``Documentation/bpf/standardization/instruction-set.rst`` of Linux 6.18): each
instruction is 8 bytes — opcode, ``dst_reg`` (low nibble) and ``src_reg`` (high
nibble), a signed 16-bit offset and a signed 32-bit immediate, little-endian; a 64-bit
immediate load takes two slots.

The program is of type ``BPF_PROG_TYPE_RAW_TRACEPOINT`` and is never attached: it runs
only when this process asks, through ``BPF_PROG_TEST_RUN`` (supported for raw
tracepoint programs since Linux 5.10), with the arguments ``(addr, len)`` in its
context. It calls ``bpf_probe_read_kernel(value, len, addr)`` into the value of a
one-entry array map and returns the helper's result; userspace then reads the value
with ``BPF_MAP_LOOKUP_ELEM``. ``bpf_probe_read_kernel`` never faults: an unmapped
address gives ``-EFAULT`` and zeroed bytes. The map value is 4 KiB, so the array is
kmalloc'ed, not vmalloc'ed: the reader does not disturb what it reads.

Needs ``CAP_BPF`` + ``CAP_PERFMON`` (or root) and a kernel without lockdown in
"confidentiality" mode.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from collections.abc import Callable

__all__ = [
    "MAX_PEEK",
    "Insn",
    "PeekError",
    "Peeker",
    "assemble",
    "peek_program",
]

SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PSEUDO_MAP_FD = 1
ATTR_SIZE = 128

#: Largest read of one peek (the map value's size).
MAX_PEEK = 4096

# Opcode parts (instruction classes, sizes, modes, ALU/JMP operations, sources).
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, MEM = 0x00, 0x60
K, X = 0x00, 0x08
ADD, RSH, MOV = 0x00, 0x70, 0xB0
JA, JEQ, JGT, JNE, CALL, EXIT = 0x00, 0x10, 0x20, 0x50, 0x80, 0x90

# Helper ids (enum bpf_func_id).
HELPER_MAP_LOOKUP_ELEM = 1
HELPER_PROBE_READ_KERNEL = 113


class PeekError(OSError):
    """The peek program cannot be loaded or run here (with the reason)."""


Insn = tuple[int, int, int, int, int]  # opcode, dst, src, off, imm


def assemble(insns: list[Insn]) -> bytes:
    """Encode instructions as the kernel expects them (``struct bpf_insn``, 8 bytes each)."""
    out = bytearray()
    for op, dst, src, off, imm in insns:
        if not (0 <= dst <= 10 and 0 <= src <= 10):
            raise ValueError(f"register out of range in {(op, dst, src, off, imm)}")
        out += struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
    return bytes(out)


def _ld_map_fd(dst: int, fd: int) -> list[Insn]:
    """``dst = map`` (a 64-bit immediate load of a map fd: two slots)."""
    return [(LD | DW | IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd), (0, 0, 0, 0, 0)]


def peek_program(map_fd: int, max_len: int = MAX_PEEK) -> list[Insn]:
    """The peek program: ``ctx[0]`` = kernel address, ``ctx[1]`` = length.

    Returns (in r0) the result of ``bpf_probe_read_kernel``: 0, or a negative errno;
    ``-7`` (``-E2BIG``) when the length is 0 or over ``max_len``; ``-2`` if the map
    value cannot be found (never, for an array map).
    """
    return [
        (LDX | DW | MEM, 6, 1, 0, 0),  # r6 = ctx[0]  (addr)
        (LDX | DW | MEM, 7, 1, 8, 0),  # r7 = ctx[1]  (len)
        (ALU64 | MOV | K, 0, 0, 0, -7),  # r0 = -E2BIG
        (JMP | JEQ | K, 7, 0, 9, 0),  # if r7 == 0 goto exit
        (JMP | JGT | K, 7, 0, 8, max_len),  # if r7 > max_len goto exit
        (ST | W | MEM, 10, 0, -4, 0),  # *(u32 *)(r10 - 4) = 0   (key)
        (ALU64 | MOV | X, 2, 10, 0, 0),  # r2 = r10
        (ALU64 | ADD | K, 2, 0, 0, -4),  # r2 += -4
        *_ld_map_fd(1, map_fd),  # r1 = map
        (JMP | CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),  # r0 = value or NULL
        (JMP | JNE | K, 0, 0, 2, 0),  # if r0 != 0 goto read
        (ALU64 | MOV | K, 0, 0, 0, -2),  # r0 = -ENOENT
        (JMP | EXIT, 0, 0, 0, 0),
        (ALU64 | MOV | X, 1, 0, 0, 0),  # read: r1 = value
        (ALU64 | MOV | X, 2, 7, 0, 0),  # r2 = len
        (ALU64 | MOV | X, 3, 6, 0, 0),  # r3 = addr
        (JMP | CALL, 0, 0, 0, HELPER_PROBE_READ_KERNEL),  # r0 = probe_read_kernel(...)
        (JMP | EXIT, 0, 0, 0, 0),  # exit
    ]


_libc: ctypes.CDLL | None = None


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    nr = SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise PeekError(errno.ENOSYS, f"bpf(2) syscall number unknown on {os.uname().machine}")
    fn: Callable[..., int] = _libc.syscall
    return fn(nr, cmd, attr, ATTR_SIZE)


def _err(what: str) -> PeekError:
    e = ctypes.get_errno()
    return PeekError(e, f"{what}: {os.strerror(e)}")


class Peeker:
    """Reads kernel memory through the peek program. Close it (or use ``with``).

    >>> with Peeker() as p:                                      # doctest: +SKIP
    ...     p.peek(0xffffffff81000000, 16)
    b'...'
    """

    def __init__(self) -> None:
        if sys.platform != "linux":
            raise PeekError(errno.ENOSYS, "BPF needs Linux")
        self.map_fd = -1
        self.prog_fd = -1
        self.reads = 0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        attr = ctypes.create_string_buffer(
            struct.pack("<IIII", BPF_MAP_TYPE_ARRAY, 4, MAX_PEEK, 1).ljust(ATTR_SIZE, b"\0"),
            ATTR_SIZE,
        )
        fd = _bpf(BPF_MAP_CREATE, attr)
        if fd < 0:
            raise _err("bpf(BPF_MAP_CREATE) for the peek buffer")
        self.map_fd = fd
        code = assemble(peek_program(fd))
        insns = ctypes.create_string_buffer(code, len(code))
        lic = ctypes.create_string_buffer(b"GPL")  # bpf_probe_read_kernel is GPL-only
        log = ctypes.create_string_buffer(1 << 16)
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            BPF_PROG_TYPE_RAW_TRACEPOINT,
            len(code) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(lic),
            1,
            len(log),
            ctypes.addressof(log),
        )
        struct.pack_into("16s", attr, 48, b"pyvmalloc_peek")
        fd = _bpf(BPF_PROG_LOAD, attr)
        if fd < 0:
            err = _err("bpf(BPF_PROG_LOAD) of the peek program")
            text = log.value.decode(errors="replace").strip().splitlines()
            if text:
                err = PeekError(err.errno, f"{err.strerror} (verifier: {text[-1]})")
            raise err
        self.prog_fd = fd
        self._ctx = ctypes.create_string_buffer(16)
        self._run = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<I", self._run, 0, self.prog_fd)
        struct.pack_into("<IIQ", self._run, 40, 16, 0, ctypes.addressof(self._ctx))
        self._key = ctypes.create_string_buffer(4)
        self._value = ctypes.create_string_buffer(MAX_PEEK)
        self._lookup = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into(
            "<IIQQ",
            self._lookup,
            0,
            self.map_fd,
            0,
            ctypes.addressof(self._key),
            ctypes.addressof(self._value),
        )

    def peek(self, addr: int, length: int) -> bytes | None:
        """``length`` bytes (1..4096) of kernel memory at ``addr``, or ``None`` if the
        kernel could not read them (unmapped or not a kernel address)."""
        if not 0 < length <= MAX_PEEK:
            raise ValueError(f"peek length {length} outside 1..{MAX_PEEK}")
        if not 0 <= addr < 1 << 64:
            raise ValueError(f"peek address {addr:#x} is not a 64-bit address")
        struct.pack_into("<QQ", self._ctx, 0, addr, length)
        if _bpf(BPF_PROG_TEST_RUN, self._run) < 0:
            raise _err("bpf(BPF_PROG_TEST_RUN) of the peek program")
        self.reads += 1
        ret = struct.unpack_from("<i", self._run, 4)[0]
        if ret != 0:
            return None
        if _bpf(BPF_MAP_LOOKUP_ELEM, self._lookup) < 0:
            raise _err("bpf(BPF_MAP_LOOKUP_ELEM) of the peek buffer")
        return self._value.raw[:length]

    def close(self) -> None:
        """Close the program and the map (the kernel frees both)."""
        for name in ("prog_fd", "map_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> Peeker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
