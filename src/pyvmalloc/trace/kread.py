"""Read the kernel's hidden vmap state: the free tree's shape, each vmap node's busy and
lazy areas (with their ``va->flags``, which name the node that allocated them) and its
pools (``kstate.json``; format in docs/replay.md).

``/proc/vmallocinfo`` shows the busy and lazily-freed areas but not how the allocator
holds the rest: which free blocks the global free tree (``free_vmap_area_root``) has and
in which shape, which freed areas wait in a vmap node's size-segregated pools
(``vn->pool[pages - 1]``), which node holds which area. A replay that guesses these
guesses wrong for long. This module reads them from the running kernel (Linux >= 6.9,
where ``struct vmap_node`` appeared; written against mm/vmalloc.c of Linux 6.18):

1. **Layouts** come from BTF (:mod:`pyvmalloc.trace.btf`): offsets of ``struct
   vmap_area``, ``struct vmap_node``, ``struct vmap_pool``, ``struct rb_node``, ...
2. **Memory** is read with :class:`~pyvmalloc.trace.Peeker`, a hand-assembled
   BPF program calling ``bpf_probe_read_kernel`` (never faults; ~3 µs a read).
3. **Anchors** (:func:`discover`): the free tree root and the node array pointer are
   static variables of mm/vmalloc.c with no address in ``/proc/kallsyms`` unless
   ``CONFIG_KALLSYMS_ALL``, and a kernel may have no kprobes at all (this machine's
   6.18 has none). But the *functions* that use them are listed, and their machine
   code can be read: it holds the variables' addresses as RIP-relative operands. Every
   such operand is a candidate, accepted only when what it points to has the exact
   shape of the structure: a red-black tree of free blocks spanning 1..``ULONG_MAX``
   (``free_vmap_area_root``), or an array of vmap nodes whose 256 pool heads are empty
   (pointing to themselves, len 0) or linked with a positive len (``vmap_nodes``).
4. **The readout** (:func:`read_kstate`) walks everything without the kernel's locks.
   The kernel changes the state meanwhile, so every readout is checked (tree order,
   parent links, red-black rules, ``subtree_max_size``, list links both ways, pool
   lengths and sizes, and every address from 1 to ``ULONG_MAX`` in exactly one of the
   free tree, a busy list, a lazy list or a pool) and repeated, up to 5 times, until
   one is consistent.

Nothing on the machine is changed: no probes, no tracefs; one BPF program and one
4 KiB array map (kmalloc'ed, so the reader does not move what it reads), closed after.

Run standalone: ``pyvmalloc kstate [--out FILE]`` or ``python -m pyvmalloc.trace.kread``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import os
import platform
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyvmalloc.trace.bpfpeek import MAX_PEEK, Peeker, PeekError
from pyvmalloc.trace.btf import BTF_VMLINUX, Btf, BtfError

__all__ = [
    "FORMAT",
    "VERSION",
    "Anchors",
    "Inconsistent",
    "KreadError",
    "Layout",
    "discover",
    "kstate_unavailable",
    "read_kstate",
    "readout",
    "register_cli",
    "write_kstate",
]

FORMAT = "pyvmalloc-kstate"
VERSION = 1
PAGE_SIZE = 4096
ULONG_MAX = (1 << 64) - 1
#: A walk longer than this is taken for a cycle or garbage.
MAX_NODES = 1_000_000
MAX_VMAP_NODES = 1024
ATTEMPTS = 5
#: Seconds to wait after a torn attempt (times the attempt number).
BACKOFF = 0.002
Peek = Callable[[int, int], bytes | None]
#: (first struct, stop struct, most structs) -> raw structs, ``None`` if unreadable.
Chase = Callable[[int, int, int], list[bytes] | None]


class KreadError(RuntimeError):
    """The state cannot be read on this machine (the message says why, in one line)."""


class Inconsistent(Exception):
    """One readout raced with the kernel or found something impossible."""


# ------------------------------------------------------------------------- layouts


@dataclass(frozen=True, slots=True)
class Layout:
    """Offsets (bytes) of the kernel structs the walkers read, all from BTF."""

    va_size: int  # sizeof(struct vmap_area)
    va_start: int
    va_end: int
    va_rb: int  # vmap_area.rb_node
    va_list: int  # vmap_area.list
    va_subtree: int  # vmap_area.subtree_max_size (union with .vm)
    va_flags: int  # vmap_area.flags (VMAP_RAM/VMAP_BLOCK, encode_vn_id in bits 8..)
    rb_parent: int  # rb_node.__rb_parent_color
    rb_right: int
    rb_left: int
    list_next: int
    list_prev: int
    vn_size: int  # sizeof(struct vmap_node)
    vn_pool: int
    pool_size: int  # sizeof(struct vmap_pool)
    pool_head: int
    pool_len: int
    nr_pools: int
    vn_busy_root: int
    vn_busy_head: int
    vn_lazy_root: int
    vn_lazy_head: int

    @classmethod
    def from_btf(cls, b: Btf) -> Layout:
        """Read the offsets from BTF (raises :class:`~pyvmalloc.trace.btf.BtfError` if a
        struct or member is missing, e.g. a kernel before 6.9 without ``vmap_node``)."""
        vn = b.find("vmap_node")
        pool = b.member(vn, "pool")
        _elem, nr_pools = b.array_info(pool.type_id)
        return cls(
            va_size=b.struct_size("vmap_area"),
            va_start=b.offsetof("vmap_area", "va_start"),
            va_end=b.offsetof("vmap_area", "va_end"),
            va_rb=b.offsetof("vmap_area", "rb_node"),
            va_list=b.offsetof("vmap_area", "list"),
            va_subtree=b.offsetof("vmap_area", "subtree_max_size"),
            va_flags=b.offsetof("vmap_area", "flags"),
            rb_parent=b.offsetof("rb_node", "__rb_parent_color"),
            rb_right=b.offsetof("rb_node", "rb_right"),
            rb_left=b.offsetof("rb_node", "rb_left"),
            list_next=b.offsetof("list_head", "next"),
            list_prev=b.offsetof("list_head", "prev"),
            vn_size=b.sizeof(vn),
            vn_pool=pool.offset,
            pool_size=b.struct_size("vmap_pool"),
            pool_head=b.offsetof("vmap_pool", "head"),
            pool_len=b.offsetof("vmap_pool", "len"),
            nr_pools=nr_pools,
            vn_busy_root=b.member(vn, "busy.root").offset,
            vn_busy_head=b.member(vn, "busy.head").offset,
            vn_lazy_root=b.member(vn, "lazy.root").offset,
            vn_lazy_head=b.member(vn, "lazy.head").offset,
        )

    def __post_init__(self) -> None:
        odd = [k for k in self.__slots__ if k != "nr_pools" and getattr(self, k) % 8]
        if odd:
            raise BtfError(f"unexpected layout: {', '.join(odd)} not multiples of 8 bytes")

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


def _u64(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off : off + 8], "little")


def _read(peek: Peek, addr: int, length: int, what: str) -> bytes:
    """``length`` bytes at ``addr`` (any length: split in peeks of at most 4 KiB)."""
    out = bytearray()
    pos = addr
    while len(out) < length:
        n = min(MAX_PEEK, length - len(out))
        b = peek(pos, n) if pos + n <= 1 << 64 else None
        if b is None or len(b) != n:
            raise Inconsistent(f"cannot read {what} at {pos:#x}")
        out += b
        pos += n
    return bytes(out)


# --------------------------------------------------------------------- the free tree


@dataclass(slots=True)
class _Va:
    addr: int  # address of the struct vmap_area
    start: int
    end: int
    parent_color: int
    right: int  # rb_node pointers (0 = none)
    left: int
    next: int  # list_head pointers
    prev: int
    subtree: int
    flags: int  # va->flags


def _parse_va(lay: Layout, addr: int, b: bytes) -> _Va:
    q = struct.unpack_from(f"<{lay.va_size // 8}Q", b)
    rb = lay.va_rb // 8
    lst = lay.va_list // 8
    return _Va(
        addr,
        q[lay.va_start // 8],
        q[lay.va_end // 8],
        q[rb + lay.rb_parent // 8],
        q[rb + lay.rb_right // 8],
        q[rb + lay.rb_left // 8],
        q[lst + lay.list_next // 8],
        q[lst + lay.list_prev // 8],
        q[lay.va_subtree // 8],
        q[lay.va_flags // 8],
    )


def _read_va(peek: Peek, lay: Layout, addr: int, what: str) -> _Va:
    return _parse_va(lay, addr, _read(peek, addr, lay.va_size, what))


def chain(peek: Peek, lay: Layout, first: int, stop: int, what: str) -> list[_Va]:
    """The ``struct vmap_area``\\ s linked through ``.list.next`` from the one at
    ``first`` up to (not including) the one at ``stop`` (struct addresses; for a list
    head ``h``, ``stop = h - offsetof(struct vmap_area, list)``), one read each."""
    out: list[_Va] = []
    seen: set[int] = set()
    cur = first
    while cur != stop:
        if cur in seen or len(out) >= MAX_NODES:
            raise Inconsistent(f"{what}: a cycle, or more than {MAX_NODES} areas")
        seen.add(cur)
        va = _read_va(peek, lay, cur, what)
        out.append(va)
        if va.next < 1 << 63:
            raise Inconsistent(f"{what}: {va.start:#x} links to {va.next:#x}")
        cur = va.next - lay.va_list
    return out


def walk_free_tree(peek: Peek, lay: Layout, root_va: int) -> tuple[int | None, list[_Va]]:
    """The free tree below ``root_va``, in address order.

    The kernel keeps every free block both in the tree and, in address order, in
    ``free_vmap_area_list``: the blocks are read along the list, found from the leftmost node (whose ``list.prev`` is the list head), and the
    tree's in-order walk through them must meet them in the same order.

    Returns (index of the root in the list, the nodes). Raises :class:`Inconsistent` on a
    cycle, an unreadable node, more than :data:`MAX_NODES` nodes, or a broken invariant.
    """
    va = _read_va(peek, lay, root_va, "free-tree root")
    for _ in range(200):  # a red-black tree of 2^64 nodes is under 128 deep
        if not va.left:
            break
        va = _read_va(peek, lay, va.left - lay.va_rb, "free-tree node")
    else:
        raise Inconsistent("free tree: no leftmost node within 200 levels (a cycle)")
    head = va.prev
    nodes = chain(peek, lay, va.addr, head - lay.va_list, "free list")
    by_addr = {n.addr: n for n in nodes}
    inorder: list[int] = []
    stack: list[_Va] = []
    cur = root_va
    while stack or cur:
        while cur:
            n = by_addr.get(cur)
            if n is None:
                raise Inconsistent(f"free tree: node {cur:#x} is not in the free list")
            if len(inorder) + len(stack) > len(nodes):
                raise Inconsistent("free tree: more nodes than the free list (a cycle)")
            stack.append(n)
            cur = n.left - lay.va_rb if n.left else 0
        n = stack.pop()
        inorder.append(n.addr)
        cur = n.right - lay.va_rb if n.right else 0
    if inorder != [n.addr for n in nodes]:
        raise Inconsistent("free tree: its in-order walk and the free list disagree")
    check_free_tree(lay, root_va, nodes)
    root_index = next((i for i, n in enumerate(nodes) if n.addr == root_va), None)
    return root_index, nodes


def check_free_tree(lay: Layout, root_va: int, nodes: list[_Va]) -> None:
    """The free tree's invariants: address order without overlaps, parent links,
    red-black colours and black height, ``subtree_max_size`` (the largest block size in
    each subtree, what ``compute_subtree_max_size`` keeps), and the address-sorted
    ``free_vmap_area_list`` through the same nodes."""
    by_rb = {n.addr + lay.va_rb: n for n in nodes}
    for i, n in enumerate(nodes):
        if n.start >= n.end:
            raise Inconsistent(f"free tree: empty or inverted block {n.start:#x}-{n.end:#x}")
        if i and nodes[i - 1].end > n.start:
            raise Inconsistent(f"free tree: {n.start:#x} overlaps or precedes its predecessor")
        for link in (n.left, n.right):
            if link and by_rb[link].parent_color & ~3 != n.addr + lay.va_rb:
                raise Inconsistent(f"free tree: parent link of a child of {n.start:#x} is stale")
        if i and nodes[i - 1].next != n.addr + lay.va_list:
            raise Inconsistent(f"free list: the block before {n.start:#x} does not link to it")
        if i and n.prev != nodes[i - 1].addr + lay.va_list:
            raise Inconsistent(f"free list: {n.start:#x} does not link back to its predecessor")
    root = by_rb.get(root_va + lay.va_rb)
    if root is None or root.parent_color & ~3:
        raise Inconsistent("free tree: the root has a parent")
    if not root.parent_color & 1:
        raise Inconsistent("free tree: the root is red")

    # Post-order, iterative: black heights and subtree sizes.
    height: dict[int, int] = {}
    maxsz: dict[int, int] = {}
    order: list[_Va] = []
    stack = [root]
    while stack:
        n = stack.pop()
        order.append(n)
        for c in (n.left, n.right):
            if c:
                stack.append(by_rb[c])
    for n in reversed(order):
        hs = []
        ms = [n.end - n.start]
        black = n.parent_color & 1
        for link in (n.left, n.right):
            if link:
                child = by_rb[link]
                if not black and not child.parent_color & 1:
                    raise Inconsistent(f"free tree: red node {n.start:#x} has a red child")
                hs.append(height[child.addr])
                ms.append(maxsz[child.addr])
            else:
                hs.append(0)
        if hs[0] != hs[1]:
            raise Inconsistent(f"free tree: unequal black heights below {n.start:#x}")
        height[n.addr] = hs[0] + black
        maxsz[n.addr] = max(ms)
        if n.subtree != maxsz[n.addr]:
            raise Inconsistent(
                f"free tree: subtree_max_size of {n.start:#x} is {n.subtree:#x}, "
                f"the subtree's largest block is {maxsz[n.addr]:#x}"
            )


# ------------------------------------------------------------------- lists and nodes


def walk_list(
    peek: Peek, lay: Layout, head: int, first: int, what: str
) -> list[tuple[int, int, int]]:
    """The ``vmap_area``\\ s linked through ``.list`` from the ``list_head`` at ``head``
    (whose ``next`` is ``first``), head first, as (va_start, va_end, va->flags); the
    ``prev`` links must lead back the same way. The flags come with the struct (one
    read per area, in the same burst): 6.9+ ``alloc_vmap_area`` stores the allocating
    CPU's node there (``encode_vn_id``), which ``free_vmap_area_noflush`` and
    ``purge_vmap_node`` use later (lazy list, pool)."""
    vas = chain(peek, lay, first - lay.va_list, head - lay.va_list, what)
    prev = head
    for va in vas:
        if va.prev != prev:
            raise Inconsistent(f"{what}: {va.start:#x} does not link back to its predecessor")
        if va.start >= va.end:
            raise Inconsistent(f"{what}: empty or inverted area {va.start:#x}-{va.end:#x}")
        prev = va.addr + lay.va_list
    return [(va.start, va.end, va.flags) for va in vas]


def read_vmap_node(peek: Peek, lay: Layout, vn: int, index: int) -> dict[str, Any]:
    """One ``struct vmap_node``: its busy and lazy lists and its non-empty pools."""
    raw = _read(peek, vn, lay.vn_size, f"vmap_node {index}")

    def head(off: int) -> tuple[int, int]:
        return vn + off, _u64(raw, off + lay.list_next)

    busy = walk_list(peek, lay, *head(lay.vn_busy_head), f"vmap node {index} busy list")
    lazy = walk_list(peek, lay, *head(lay.vn_lazy_head), f"vmap node {index} lazy list")
    for what, areas in (("busy", busy), ("lazy", lazy)):
        for x, y in itertools.pairwise(areas):
            if x[1] > y[0]:
                raise Inconsistent(f"vmap node {index} {what} list is not in address order")
    pools = []
    for i in range(lay.nr_pools):
        off = lay.vn_pool + i * lay.pool_size
        length = _u64(raw, off + lay.pool_len)
        h, first = head(off + lay.pool_head)
        if first == h and length == 0:
            continue
        what = f"vmap node {index} pool of {i + 1} pages"
        areas = walk_list(peek, lay, h, first, what)
        if len(areas) != length:
            raise Inconsistent(f"{what}: len is {length}, the list has {len(areas)} areas")
        for start, end, _flags in areas:
            if end - start != (i + 1) * PAGE_SIZE:
                raise Inconsistent(f"{what}: holds an area of {(end - start) // PAGE_SIZE} pages")
        pools.append({"pages": i + 1, "len": length, "areas": [a[:2] for a in areas]})
    return {"id": index, "busy": busy, "lazy": lazy, "pools": pools}


def looks_like_vmap_node(raw: bytes, lay: Layout, vn: int) -> bool:
    """Whether ``raw`` (``sizeof(struct vmap_node)`` bytes read at ``vn``) has the shape
    of a vmap node: every pool head is empty (pointing to itself, len 0) or links to
    kernel addresses with a positive len, and so are the busy and lazy list heads."""
    if len(raw) != lay.vn_size:
        return False
    heads = [(lay.vn_pool + i * lay.pool_size + lay.pool_head, True) for i in range(lay.nr_pools)]
    heads += [(lay.vn_busy_head, False), (lay.vn_lazy_head, False)]
    empty_pools = 0
    for off, is_pool in heads:
        nxt = _u64(raw, off + lay.list_next)
        prv = _u64(raw, off + lay.list_prev)
        self_addr = vn + off
        empty = nxt == self_addr and prv == self_addr
        if not empty and (nxt < 1 << 63 or prv < 1 << 63 or self_addr in (nxt, prv)):
            return False
        if is_pool:
            length = _u64(raw, off - lay.pool_head + lay.pool_len)
            if empty != (length == 0) or length > MAX_NODES:
                return False
            empty_pools += empty
    return empty_pools > 0


# ----------------------------------------------------------------------- discovery

#: Functions of mm/vmalloc.c (Linux 6.18) that read the free tree root and the vmap
#: node array; the machine code between the lowest and the highest of them is scanned.
CODE_FUNCTIONS = (
    "vmalloc_info_show",
    "insert_vmap_area",
    "decay_va_pool_node",
    "vmap_node_shrink_scan",
    "__purge_vmap_area_lazy",
    "alloc_vmap_area",
    "pcpu_get_vm_areas",
    "find_vmap_area",
    "vfree",
)
#: Scanning more than this much text means the symbols are not where expected.
MAX_SCAN = 1 << 20


@dataclass(slots=True)
class Anchors:
    """Where the state lives (kernel addresses, fixed for the boot)."""

    free_root: int  # &free_vmap_area_root (a struct rb_root)
    vmap_nodes: int  # vmap_nodes (the value: &array[0])
    nr_vmap_nodes: int
    how: list[str] = field(default_factory=list)


def kallsyms_text(path: Path = Path("/proc/kallsyms")) -> dict[str, int]:
    """Function symbols (types ``t``/``T``) of ``/proc/kallsyms`` with their addresses,
    plus ``_etext``. Raises :class:`KreadError` when the addresses are hidden."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError as e:
        raise KreadError(f"cannot read {path}: {e.strerror}") from None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tT" and len(parts[1]) == 1:
            try:
                out.setdefault(parts[2], int(parts[0], 16))
            except ValueError:
                continue
    if out and max(out.values()) == 0:
        raise KreadError(f"{path} shows zero addresses (kptr_restrict, not root?)")
    return out


def candidates_from_code(code: bytes, base: int, lo: int, hi: int) -> set[int]:
    """Addresses (8-aligned, within [lo, hi)) that x86-64 machine code at ``base`` may
    refer to: RIP-relative operands (a ModRM byte with mod=00, r/m=101, then a 32-bit
    displacement; the instruction may end 0, 1 or 4 bytes after it for an immediate)
    and sign-extended 32-bit immediates of ``mov $imm, %r64`` (REX.W C7 /0).

    The scan does not decode instruction boundaries: it over-approximates, and every
    candidate is checked by reading what it points to.
    """
    out: set[int] = set()
    for i in range(3, len(code) - 3):
        d = int.from_bytes(code[i : i + 4], "little", signed=True)
        if code[i - 1] & 0xC7 == 0x05:
            for imm in (0, 1, 4):
                t = base + i + 4 + imm + d
                if lo <= t < hi:
                    out.add(t & ~7)
        if code[i - 3] in (0x48, 0x49) and code[i - 2] == 0xC7 and code[i - 1] & 0xF8 == 0xC0:
            t = d + (1 << 64) if d < 0 else d
            if lo <= t < hi:
                out.add(t & ~7)
    return out


def _is_free_root(peek: Peek, lay: Layout, var: int) -> bool:
    """Whether ``var`` holds an ``rb_root`` whose tree is the free tree: a black
    parentless root, and a consistent walk whose first block starts at address 1 and
    whose last ends at ``ULONG_MAX`` (the free space ``vmap_init_free_space`` set up)."""
    b = peek(var, 8)
    if b is None:
        return False
    rb = _u64(b, 0)
    if rb < 1 << 63 or rb == var:
        return False
    try:
        va = _read_va(peek, lay, rb - lay.va_rb, "candidate root")
        if va.parent_color & ~3 or not va.parent_color & 1 or va.start >= va.end:
            return False
        for _ in range(ATTEMPTS):
            try:
                _root, nodes = walk_free_tree(peek, lay, _root_va(peek, lay, var))
            except Inconsistent:
                continue
            return bool(nodes) and nodes[0].start == 1 and nodes[-1].end == ULONG_MAX
    except Inconsistent:
        return False
    return False


def _root_va(peek: Peek, lay: Layout, var: int) -> int:
    """The ``struct vmap_area`` at the root of the ``rb_root`` at ``var`` (0: empty)."""
    rb = _u64(_read(peek, var, 8, "rb_root"), 0)
    return rb - lay.va_rb if rb else 0


def count_vmap_nodes(peek: Peek, lay: Layout, first: int, limit: int = MAX_VMAP_NODES) -> int:
    """How many ``struct vmap_node`` follow each other from ``first`` (by their shape),
    up to ``limit``."""
    n = 0
    while n < limit:
        at = first + n * lay.vn_size
        raw = peek_all(peek, at, lay.vn_size)
        if raw is None or not looks_like_vmap_node(raw, lay, at):
            break
        n += 1
    return n


def discover(peek: Peek, lay: Layout, syms: dict[str, int] | None = None) -> Anchors:
    """Find ``free_vmap_area_root`` and ``vmap_nodes`` (see the module docstring).

    Both are static variables of mm/vmalloc.c without a kallsyms entry, but the
    functions that use them are listed: their machine code is read with the peek and
    scanned for the data addresses it refers to (:func:`candidates_from_code`); a
    candidate is taken only when what it points to has the exact shape of the
    structure (a free tree spanning 1..ULONG_MAX; an array of vmap nodes).
    """
    syms = kallsyms_text() if syms is None else syms
    have = [syms[f] for f in CODE_FUNCTIONS if f in syms]
    if len(have) < 3 or "_etext" not in syms:
        missing = [f for f in CODE_FUNCTIONS if f not in syms]
        raise KreadError(f"vmalloc functions missing from /proc/kallsyms: {', '.join(missing)}")
    lo = min(have)
    after = sorted(a for a in syms.values() if a > max(have))
    hi = after[0] if after else max(have) + 4096
    if hi - lo > MAX_SCAN:
        raise KreadError(f"the vmalloc functions span {hi - lo} bytes: not one mm/vmalloc.c")
    code = peek_all(peek, lo, hi - lo)
    if code is None:
        raise KreadError(f"cannot read the kernel text at {lo:#x}")
    etext = syms["_etext"]
    cands = sorted(candidates_from_code(code, lo, etext, etext + (1 << 30)))
    roots: list[int] = []
    arrays: list[int] = []
    for var in cands:
        b = peek(var, 8)
        if b is None:
            continue
        v = _u64(b, 0)
        if v < 1 << 63 or v == var:
            continue
        raw = peek_all(peek, v, lay.vn_size)
        if raw is not None and looks_like_vmap_node(raw, lay, v):
            # a pointer to some node of the array counts as the array's start
            while count_vmap_nodes(peek, lay, v - lay.vn_size, limit=1):
                v -= lay.vn_size
            arrays.append(v)
        elif _is_free_root(peek, lay, var):
            roots.append(var)
    arrays = sorted(set(arrays))
    if len(roots) != 1:
        raise KreadError(
            f"{len(roots)} candidates for free_vmap_area_root among {len(cands)} addresses "
            f"the code of mm/vmalloc.c refers to (need exactly 1)"
        )
    if len(arrays) != 1:
        raise KreadError(
            f"{len(arrays)} candidates for vmap_nodes among {len(cands)} addresses "
            f"the code of mm/vmalloc.c refers to (need exactly 1)"
        )
    n = count_vmap_nodes(peek, lay, arrays[0])
    how = [
        f"scanned {hi - lo} bytes of mm/vmalloc.c code at {lo:#x}: {len(cands)} data "
        f"references; free_vmap_area_root at {roots[0]:#x}, vmap_nodes = {arrays[0]:#x} "
        f"({n} node(s) of {lay.vn_size} bytes)"
    ]
    return Anchors(roots[0], arrays[0], n, how)


def peek_all(peek: Peek, addr: int, length: int) -> bytes | None:
    """Like :func:`_read` but ``None`` instead of an exception."""
    try:
        return _read(peek, addr, length, "memory")
    except Inconsistent:
        return None


# ------------------------------------------------------------------------- readout


def _hex(x: int) -> str:
    return f"{x:#x}"


def _check_cover(areas: list[tuple[int, int, str]]) -> None:
    """Free, busy, lazy and pooled areas tile [1, ULONG_MAX) exactly once."""
    areas.sort()
    pos = 1
    for a, b, what in areas:
        if a < pos:
            raise Inconsistent(f"{what} area {a:#x}-{b:#x} overlaps another")
        if a > pos:
            raise Inconsistent(
                f"addresses {pos:#x}-{a:#x} are in no tree, list or pool (a purge or "
                "allocation in flight)"
            )
        pos = b
    if pos != ULONG_MAX:
        raise Inconsistent(f"addresses {pos:#x}-{ULONG_MAX:#x} are in no tree, list or pool")


def prefetch(
    peek: Peek, lay: Layout, anchors: Anchors, chase: Chase | None = None
) -> dict[int, bytes]:
    """Every byte a readout needs, read as fast as possible, as {address: bytes}.

    The kernel keeps changing the state while it is read, so the reads come first, in
    one burst (the root, the free list, each node with its lists and pools, following
    only the ``next`` links), and all checks and decoding come after, from this copy:
    the window in which a change can tear the readout is the burst alone.
    """
    cache: dict[int, bytes] = {}

    def get(addr: int, n: int, what: str) -> bytes:
        out = b""
        while len(out) < n:
            k = min(MAX_PEEK, n - len(out))
            b = _read(peek, addr + len(out), k, what)
            cache[addr + len(out)] = b
            out += b
        return out

    link = lay.va_list + lay.list_next

    def fetch_chain(first: int, stop: int, what: str) -> None:
        cur = first
        seen: set[int] = set()
        while cur != stop:
            raws = (
                chase(cur, stop, MAX_NODES) if chase is not None else [get(cur, lay.va_size, what)]
            )
            if not raws:
                raise Inconsistent(f"{what}: cannot read the area at {cur:#x}")
            for raw in raws:
                if cur in seen or len(seen) >= MAX_NODES:
                    raise Inconsistent(f"{what}: a cycle, or more than {MAX_NODES} areas")
                seen.add(cur)
                cache[cur] = raw
                nxt = _u64(raw, link)
                if nxt < 1 << 63:
                    raise Inconsistent(f"{what}: the area at {cur:#x} links to {nxt:#x}")
                cur = nxt - lay.va_list

    rb = _u64(get(anchors.free_root, 8, "free_vmap_area_root"), 0)
    if rb == 0:
        raise Inconsistent("free_vmap_area_root is empty")
    va = rb - lay.va_rb
    for _ in range(200):  # a red-black tree of 2^64 nodes is under 128 deep
        raw = get(va, lay.va_size, "free-tree node")
        left = _u64(raw, lay.va_rb + lay.rb_left)
        if not left:
            break
        va = left - lay.va_rb
    else:
        raise Inconsistent("free tree: no leftmost node within 200 levels (a cycle)")
    head = _u64(raw, lay.va_list + lay.list_prev)
    fetch_chain(va, head - lay.va_list, "free list")
    for i in range(anchors.nr_vmap_nodes):
        vn = anchors.vmap_nodes + i * lay.vn_size
        raw = get(vn, lay.vn_size, f"vmap_node {i}")
        heads = [lay.vn_busy_head, lay.vn_lazy_head]
        heads += [lay.vn_pool + p * lay.pool_size + lay.pool_head for p in range(lay.nr_pools)]
        for off in heads:
            first = _u64(raw, off + lay.list_next)
            if first != vn + off:
                fetch_chain(first - lay.va_list, vn + off - lay.va_list, f"vmap node {i} list")
    return cache


@contextlib.contextmanager
def _not_preempted() -> Iterator[None]:
    """Run the burst of reads as a real-time task (``SCHED_FIFO``, lowest priority),
    when allowed, so that ordinary tasks do not preempt it mid-way and stretch the
    window in which the kernel can tear the readout; the policy is restored after."""
    try:
        old = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):  # not permitted, or not Linux
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, old[0], old[1])


def _cached(cache: dict[int, bytes]) -> Peek:
    def peek(addr: int, n: int) -> bytes | None:
        b = cache.get(addr)
        return b[:n] if b is not None and len(b) >= n else None

    return peek


def read_once(
    peek: Peek, lay: Layout, anchors: Anchors, chase: Chase | None = None
) -> tuple[dict[str, Any], float]:
    """One readout and the seconds its reads took (raises :class:`Inconsistent` if it
    raced or found something impossible)."""
    with _not_preempted():
        t0 = time.monotonic()
        cache = prefetch(peek, lay, anchors, chase)
        window = time.monotonic() - t0
    mem = _cached(cache)
    root_va = _root_va(mem, lay, anchors.free_root)
    root_index, nodes = walk_free_tree(mem, lay, root_va)
    index = {n.addr + lay.va_rb: i for i, n in enumerate(nodes)}
    vns = [
        read_vmap_node(mem, lay, anchors.vmap_nodes + i * lay.vn_size, i)
        for i in range(anchors.nr_vmap_nodes)
    ]
    cover = [(n.start, n.end, "free") for n in nodes]
    for vn in vns:
        cover += [(a, b, "busy") for a, b, _f in vn["busy"]]
        cover += [(a, b, "lazy") for a, b, _f in vn["lazy"]]
        for p in vn["pools"]:
            cover += [(a, b, "pooled") for a, b in p["areas"]]
    _check_cover(cover)
    body = {
        "free_tree": {
            "root": root_index,
            "nodes": [
                [
                    _hex(n.start),
                    _hex(n.end),
                    index[n.left] if n.left else None,
                    index[n.right] if n.right else None,
                    bool(n.parent_color & 1),
                    _hex(n.subtree),
                ]
                for n in nodes
            ],
        },
        "vmap_nodes": [
            {
                "id": vn["id"],
                "busy": [[_hex(a), _hex(b), _hex(f)] for a, b, f in vn["busy"]],
                "lazy": [[_hex(a), _hex(b), _hex(f)] for a, b, f in vn["lazy"]],
                "pools": [
                    {
                        "pages": p["pages"],
                        "len": p["len"],
                        "areas": [[_hex(a), _hex(b)] for a, b in p["areas"]],
                    }
                    for p in vn["pools"]
                ],
            }
            for vn in vns
        ],
    }
    return body, window


def read_kstate(
    peek: Peek,
    lay: Layout,
    anchors: Anchors,
    *,
    taken: str,
    attempts: int = ATTEMPTS,
    kernel: str | None = None,
    arch: str | None = None,
    chase: Chase | None = None,
    backoff: float = 0.0,
) -> dict[str, Any]:
    """The ``kstate.json`` document: up to ``attempts`` readouts until one is consistent
    (``consistent: false`` and the last attempt's reason in ``errors`` otherwise),
    waiting ``backoff`` × the attempt number between them."""
    errors: list[str] = []
    body: dict[str, Any] | None = None
    tried = 0
    window = 0.0
    t0 = time.monotonic()
    for tried in range(1, attempts + 1):
        try:
            body, window = read_once(peek, lay, anchors, chase)
            break
        except Inconsistent as e:
            errors.append(f"attempt {tried}: {e}")
            if tried < attempts and backoff > 0:
                time.sleep(backoff * tried)  # let a burst of kernel activity pass
    seconds = time.monotonic() - t0
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kernel": kernel if kernel is not None else platform.release(),
        "arch": arch if arch is not None else platform.machine(),
        "source": "bpf-peek",
        "taken": taken,
        "attempts": tried,
        "consistent": body is not None,
        "nr_vmap_nodes": anchors.nr_vmap_nodes,
    }
    if body is None:
        doc["free_tree"] = {"root": None, "nodes": []}
        doc["vmap_nodes"] = []
    else:
        doc.update(body)
    doc["errors"] = errors
    doc["offsets"] = lay.as_dict()
    doc["read_seconds"] = round(window, 6)  # the reads of the readout kept
    doc["seconds"] = round(seconds, 6)  # all attempts, checks included
    return doc


def write_kstate(doc: dict[str, Any], path: Path | None = None) -> bytes:
    """Serialize ``doc`` (compact rows, one node per line) and return the bytes; written
    to ``path`` (mode 0600: real kernel addresses) when given."""
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    data = text.encode()
    if path is not None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return data


def kstate_unavailable() -> str | None:
    """Why the state cannot be read here (``None`` if it can be tried; the BPF
    programs, BTF contents and kallsyms are checked by :meth:`Reader.prepare`)."""
    if sys.platform != "linux":
        return "kstate needs Linux"
    if os.uname().machine != "x86_64":
        return f"kstate reading supports x86_64 only (this is {os.uname().machine})"
    if os.geteuid() != 0:
        return "kstate reading needs root (BPF, kernel addresses)"
    if not BTF_VMLINUX.exists():
        return f"no {BTF_VMLINUX} (kernel without CONFIG_DEBUG_INFO_BTF)"
    if not Path("/proc/kallsyms").exists():
        return "no /proc/kallsyms (kernel without CONFIG_KALLSYMS)"
    return None


class Reader:
    """A reusable reader: the BTF layout, the peek program and the anchors, prepared
    once (:meth:`prepare`), then any number of :meth:`read`\\ s. Close it (or ``with``)."""

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.peeker: Peeker | None = None
        self.anchors: Anchors | None = None

    def prepare(self) -> None:
        """Load BTF and the peek program and find the anchors; :class:`KreadError`
        (one line saying why) when this machine cannot do it."""
        why = kstate_unavailable()
        if why:
            raise KreadError(why)
        try:
            b = Btf.load()
        except BtfError as e:
            raise KreadError(f"BTF: {e}") from None
        try:
            b.find("vmap_node")
        except BtfError:
            raise KreadError(
                "this kernel has no struct vmap_node (per-node vmap state exists from Linux 6.9 on)"
            ) from None
        try:
            self.layout = Layout.from_btf(b)
        except BtfError as e:
            raise KreadError(f"BTF: {e}") from None
        try:
            lay = self.layout
            self.peeker = Peeker(chase=(lay.va_size, lay.va_list + lay.list_next, -lay.va_list))
        except PeekError as e:
            raise KreadError(f"the BPF peek program cannot run: {e.strerror}") from None
        syms = kallsyms_text()
        try:
            self.anchors = discover(self.peeker.peek, self.layout, syms)
        except OSError as e:  # a bpf(2) call failing midway (PeekError)
            raise KreadError(f"reading kernel memory failed: {e.strerror}") from None

    def read(self, taken: str) -> dict[str, Any]:
        """One ``kstate.json`` document (see :func:`read_kstate`)."""
        if self.layout is None or self.peeker is None or self.anchors is None:
            raise KreadError("Reader.read before prepare")
        before = self.peeker.reads
        try:
            doc = read_kstate(
                self.peeker.peek,
                self.layout,
                self.anchors,
                taken=taken,
                chase=self.peeker.chase,
                backoff=BACKOFF,
            )
        except OSError as e:  # a bpf(2) call failing midway (PeekError)
            raise KreadError(f"reading kernel memory failed: {e.strerror}") from None
        doc["peeks"] = self.peeker.reads - before
        doc["found"] = self.anchors.how
        return doc

    def close(self) -> None:
        """Close the BPF program and map."""
        if self.peeker is not None:
            self.peeker.close()
            self.peeker = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def readout(taken: str = "standalone") -> dict[str, Any]:
    """Prepare, read once, clean up: the standalone readout."""
    with Reader() as r:
        r.prepare()
        return r.read(taken)


# ----------------------------------------------------------------------------- CLI

_HELP = """\
Read the running kernel's hidden vmap state — the free tree (every free block, its
children, colour and subtree_max_size), each vmap node's busy and lazy areas (with
va->flags: the allocating node), and its pools — with a BPF program (root, Linux >= 6.9
with BTF, x86_64), and write it as kstate.json (the format `pyvmalloc capture` writes
after its snapshot). Nothing on the machine is changed.
"""


def _handler(args: argparse.Namespace) -> int:
    try:
        doc = readout()
    except KreadError as e:
        print(f"kstate: {e}", file=sys.stderr)
        return 1
    if args.out is None or str(args.out) == "-":
        sys.stdout.write(write_kstate(doc).decode())
    else:
        write_kstate(doc, args.out)
    nodes = doc["free_tree"]["nodes"]
    pooled = sum(p["len"] for vn in doc["vmap_nodes"] for p in vn["pools"])
    print(
        f"kstate: {'consistent' if doc['consistent'] else 'INCONSISTENT'} after "
        f"{doc['attempts']} attempt(s): {len(nodes)} free blocks, "
        f"{doc['nr_vmap_nodes']} vmap nodes, {pooled} pooled areas, "
        f"{doc['read_seconds'] * 1e3:.1f} ms",
        file=sys.stderr,
    )
    return 0 if doc["consistent"] else 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, help="write here, mode 0600 (.gz: gzip); default or '-': stdout"
    )


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``kstate`` subcommand."""
    p = subparsers.add_parser(
        "kstate",
        help="read the kernel's free tree, vmap nodes, lazy lists and pools (root, BPF)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=_handler)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pyvmalloc.trace.kread",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return _handler(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
