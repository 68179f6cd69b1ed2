"""Read kernel memory from Python with two tiny hand-assembled BPF programs.

There is no clang or libbpf on the machines pyvmalloc captures on, so the programs are
emitted here as bytes, instruction by instruction, following the eBPF instruction set
(``Documentation/bpf/standardization/instruction-set.rst`` of Linux 6.18): each
instruction is 8 bytes — opcode, ``dst_reg`` (low nibble) and ``src_reg`` (high
nibble), a signed 16-bit offset and a signed 32-bit immediate, little-endian; a 64-bit
immediate load takes two slots.

Both are of type ``BPF_PROG_TYPE_RAW_TRACEPOINT`` and never attached: they run only
when this process asks, through ``BPF_PROG_TEST_RUN`` (supported for raw tracepoint
programs since Linux 5.10), with their arguments in the context:

* :func:`peek_program` ``(addr, len)`` calls ``bpf_probe_read_kernel(value, len,
  addr)`` once;
* :func:`chase_program` ``(first, stop, most)`` reads struct after struct along a
  linked list, up to 4 KiB in one run (a bounded loop).

The bytes land in the value of a one-entry array map, which userspace reads with
``BPF_MAP_LOOKUP_ELEM``. ``bpf_probe_read_kernel`` never faults: an unmapped address
gives ``-EFAULT``. The map value is 4 KiB, so the array is kmalloc'ed, not vmalloc'ed:
the reader does not disturb what it reads.

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
    "chase_program",
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


JGE = 0x30


def chase_program(
    map_fd: int, size: int, link: int, adj: int, capacity: int = MAX_PEEK
) -> list[Insn]:
    """The list-walking program: read structs of ``size`` bytes one after the other,
    following a pointer inside each, into the map value — up to ``capacity`` bytes in
    one run instead of one system call per struct.

    Context: ``ctx[0]`` = address of the first struct, ``ctx[1]`` = the struct address
    at which to stop (not read), ``ctx[2]`` = the most bytes to fill. After reading a
    struct at ``addr`` the next address is ``*(u64 *)(addr + link) + adj`` (for a
    ``list_head`` at offset L of the struct: ``link = L + offsetof(next)``, ``adj =
    -L``). Returns the number of bytes filled (a multiple of ``size``), or the
    negative error of ``bpf_probe_read_kernel`` when the first struct is unreadable.
    The loop is bounded (the offset grows by the constant ``size`` up to
    ``capacity``), which the verifier accepts since Linux 5.3.
    """
    if not 0 < size <= capacity or not 0 <= link <= size - 8:
        raise ValueError(f"chase: struct size {size} / link offset {link} do not fit")
    return [
        (ALU64 | MOV | X, 6, 1, 0, 0),  # 0: r6 = ctx
        (ST | W | MEM, 10, 0, -4, 0),  # 1: key = 0
        (ALU64 | MOV | X, 2, 10, 0, 0),  # 2: r2 = r10
        (ALU64 | ADD | K, 2, 0, 0, -4),  # 3: r2 += -4
        *_ld_map_fd(1, map_fd),  # 4-5: r1 = map
        (JMP | CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),  # 6
        (JMP | JNE | K, 0, 0, 2, 0),  # 7: if r0 != 0 goto 10
        (ALU64 | MOV | K, 0, 0, 0, -2),  # 8: r0 = -ENOENT
        (JMP | EXIT, 0, 0, 0, 0),  # 9
        (ALU64 | MOV | X, 9, 0, 0, 0),  # 10: r9 = value
        (LDX | DW | MEM, 7, 6, 0, 0),  # 11: r7 = ctx[0] (addr)
        (ALU64 | MOV | K, 8, 0, 0, 0),  # 12: r8 = 0 (bytes filled)
        (JMP | JGT | K, 8, 0, 18, capacity - size),  # 13: loop: if r8 > cap - size: done
        (LDX | DW | MEM, 1, 6, 16, 0),  # 14: r1 = ctx[2] (most bytes)
        (JMP | JGE | X, 8, 1, 16, 0),  # 15: if r8 >= r1 goto done
        (ALU64 | MOV | X, 1, 9, 0, 0),  # 16: r1 = value
        (ALU64 | ADD | X, 1, 8, 0, 0),  # 17: r1 += r8
        (ALU64 | MOV | K, 2, 0, 0, size),  # 18: r2 = size
        (ALU64 | MOV | X, 3, 7, 0, 0),  # 19: r3 = addr
        (JMP | CALL, 0, 0, 0, HELPER_PROBE_READ_KERNEL),  # 20
        (JMP | JNE | K, 0, 0, 8, 0),  # 21: if r0 != 0 goto fail (30)
        (ALU64 | ADD | K, 8, 0, 0, size),  # 22: r8 += size
        (ALU64 | MOV | X, 1, 9, 0, 0),  # 23: r1 = value
        (ALU64 | ADD | X, 1, 8, 0, 0),  # 24: r1 += r8
        (LDX | DW | MEM, 7, 1, link - size, 0),  # 25: r7 = link pointer of that struct
        (ALU64 | ADD | K, 7, 0, 0, adj),  # 26: r7 += adj
        (LDX | DW | MEM, 1, 6, 8, 0),  # 27: r1 = ctx[1] (stop)
        (JMP | JEQ | X, 7, 1, 3, 0),  # 28: if r7 == stop goto done
        (JMP | JA, 0, 0, -17, 0),  # 29: goto loop (13)
        (JMP | JNE | K, 8, 0, 1, 0),  # 30: fail: if r8 != 0 goto done
        (JMP | EXIT, 0, 0, 0, 0),  # 31: return the error
        (ALU64 | MOV | X, 0, 8, 0, 0),  # 32: done: r0 = r8
        (JMP | EXIT, 0, 0, 0, 0),  # 33
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

    def __init__(self, chase: tuple[int, int, int] | None = None) -> None:
        """``chase``: (struct size, link offset, adjustment) for :meth:`chase`, see
        :func:`chase_program`; without it, only :meth:`peek` is available."""
        if sys.platform != "linux":
            raise PeekError(errno.ENOSYS, "BPF needs Linux")
        self.map_fd = -1
        self.prog_fd = -1
        self.chase_fd = -1
        self.reads = 0
        self._shape = chase
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
        self.prog_fd = self._load(peek_program(fd), b"pyvmalloc_peek")
        if self._shape is not None:
            self.chase_fd = self._load(chase_program(fd, *self._shape), b"pyvmalloc_chase")
        self._ctx = ctypes.create_string_buffer(24)
        self._run = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<I", self._run, 0, self.prog_fd)
        struct.pack_into("<IIQ", self._run, 40, 16, 0, ctypes.addressof(self._ctx))
        self._run_chase = ctypes.create_string_buffer(ATTR_SIZE)
        if self.chase_fd >= 0:  # a peek-only Peeker has no chase program
            struct.pack_into("<I", self._run_chase, 0, self.chase_fd)
        struct.pack_into("<IIQ", self._run_chase, 40, 24, 0, ctypes.addressof(self._ctx))
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

    def _load(self, program: list[Insn], name: bytes) -> int:
        code = assemble(program)
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
        struct.pack_into("16s", attr, 48, name)
        fd = _bpf(BPF_PROG_LOAD, attr)
        if fd < 0:
            err = _err(f"bpf(BPF_PROG_LOAD) of {name.decode()}")
            text = log.value.decode(errors="replace").strip().splitlines()
            if text:
                err = PeekError(err.errno, f"{err.strerror} (verifier: {text[-1]})")
            raise err
        return fd

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

    def chase(self, first: int, stop: int, limit: int) -> list[bytes] | None:
        """Up to ``limit`` structs from ``first`` on, following their links (see
        :func:`chase_program`), stopping before ``stop``; fewer when one is unreadable
        or the buffer is full (call again from the last one's link). ``None`` when
        ``first`` itself cannot be read."""
        if self._shape is None:
            raise PeekError(errno.EINVAL, "this Peeker was made without a chase shape")
        size = self._shape[0]
        most = min(limit, MAX_PEEK // size) * size
        if most <= 0:
            return []
        struct.pack_into("<QQQ", self._ctx, 0, first, stop, most)
        if _bpf(BPF_PROG_TEST_RUN, self._run_chase) < 0:
            raise _err("bpf(BPF_PROG_TEST_RUN) of the chase program")
        self.reads += 1
        got = struct.unpack_from("<i", self._run_chase, 4)[0]
        if got <= 0:
            return None if got < 0 else []
        if got % size or got > most:
            raise PeekError(errno.EIO, f"chase program returned {got} bytes")
        if _bpf(BPF_MAP_LOOKUP_ELEM, self._lookup) < 0:
            raise _err("bpf(BPF_MAP_LOOKUP_ELEM) of the peek buffer")
        raw = self._value.raw
        return [raw[i : i + size] for i in range(0, got, size)]

    def close(self) -> None:
        """Close the programs and the map (the kernel frees them)."""
        for name in ("chase_fd", "prog_fd", "map_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> Peeker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
