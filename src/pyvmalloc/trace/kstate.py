"""``kstate.json``: the kernel's hidden vmap state, as a capture read it (format v1).

``/proc/vmallocinfo`` shows busy and lazily freed areas, but not what a replay most
needs to agree with the kernel: the shape of ``free_vmap_area_root`` (with an alignment
above PAGE_SIZE the search length grows to ``size + align - 1`` and a smaller block is
found only when it lies on the descent path), the contents of each vmap node's pools
(invisible unless the capture dropped caches), and the node each area belongs to.
``pyvmalloc capture`` reads them from the running kernel (BPF, offsets from BTF) into
``kstate.json``; the format is described in ``docs/replay.md``:

* ``free_tree``: every node of the free tree in address order, each
  ``[va_start, va_end, left, right, is_black, subtree_max_size]`` with ``left``/``right``
  indices into the list (or null) and ``root`` the index of the root;
* ``vmap_nodes``: per node its busy areas (``vn->busy``, address order), its lazy list
  (``vn->lazy.head``, list order) and its non-empty pools (``vn->pool[pages - 1]``, list
  order, head first). Busy and lazy entries may carry ``va->flags`` as a third element.

:func:`load_kstate` reads and checks a file completely — shape and types, the tree
being a valid red-black tree whose in-order walk is the list's order, stored against
recomputed ``subtree_max_size``, no overlap between free, busy, lazy and pooled areas,
pool lengths and sizes — and reports each problem as an
:class:`~pyvmalloc.errors.InputError` naming the file and the place in the document
(``kstate.json: free_tree.nodes[17]: ...``). :func:`kstate_of` writes a model's state
in the same format, for tests and for comparing a model with the kernel.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvmalloc.config import PAGE_SHIFT, PAGE_SIZE
from pyvmalloc.errors import InputError
from pyvmalloc.jsondoc import load_json
from pyvmalloc.rbtree import rb_inorder

if TYPE_CHECKING:
    from pyvmalloc.kernel import Kernel

__all__ = [
    "FORMAT",
    "MAX_KSTATE_BYTES",
    "VERSION",
    "FreeNode",
    "KState",
    "NodeState",
    "Pool",
    "compare_kstate",
    "dump_kstate",
    "kstate_of",
    "load_kstate",
    "parse_kstate",
]

FORMAT = "pyvmalloc-kstate"
VERSION = 1
#: The largest (decompressed) file read: a million free nodes take about 100 MB.
MAX_KSTATE_BYTES = 256 << 20
#: ``MAX_VA_SIZE_PAGES``: 6.9+ pools hold areas of 1..256 pages.
MAX_POOL_PAGES = 256
_ULONG_MAX = (1 << 64) - 1
_HEX = re.compile(r"0x[0-9a-f]{1,16}")
_TAKEN = ("after-snapshot", "after-end-snapshot", "standalone")
#: ``va->flags`` bits below the node id that 6.18 defines: VMAP_RAM (0x1), VMAP_BLOCK (0x2).
_VMAP_FLAGS_MASK = 0x3
#: ``encode_vn_id`` puts node + 1 in the bits from BITS_PER_BYTE up (0: no node).
_VN_ID_SHIFT = 8

#: ``(va_start, va_end, va->flags or None when the file did not give them)``.
Area = tuple[int, int, int | None]
Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FreeNode:
    """One node of ``free_vmap_area_root``: a free block and its place in the tree."""

    va_start: int
    va_end: int
    left: int | None
    right: int | None
    black: bool
    subtree_max_size: int


@dataclass(frozen=True, slots=True)
class Pool:
    """``vn->pool[pages - 1]``: ``len`` as the kernel counts it, ``areas`` head first."""

    pages: int
    len: int
    areas: tuple[Range, ...]


@dataclass(frozen=True, slots=True)
class NodeState:
    """One ``struct vmap_node``: busy areas (address order), lazy list, pools."""

    id: int
    busy: tuple[Area, ...]
    lazy: tuple[Area, ...]
    pools: tuple[Pool, ...]


@dataclass(frozen=True, slots=True)
class KState:
    """A checked ``kstate.json``."""

    kernel: str
    arch: str
    source: str
    taken: str
    attempts: int
    consistent: bool
    nr_vmap_nodes: int
    root: int | None
    nodes: tuple[FreeNode, ...]
    vmap_nodes: tuple[NodeState, ...]
    errors: tuple[str, ...] = ()
    path: str | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """How messages name this readout (its file name)."""
        return self.path or "kstate.json"

    def as_json(self) -> dict[str, Any]:
        """The document this readout was read from (canonical form)."""

        def area(a: Area) -> list[str]:
            out = [hex(a[0]), hex(a[1])]
            if a[2] is not None:
                out.append(hex(a[2]))
            return out

        return {
            "format": FORMAT,
            "version": VERSION,
            "kernel": self.kernel,
            "arch": self.arch,
            "source": self.source,
            "taken": self.taken,
            "attempts": self.attempts,
            "consistent": self.consistent,
            "nr_vmap_nodes": self.nr_vmap_nodes,
            "free_tree": {
                "root": self.root,
                "nodes": [
                    [
                        hex(n.va_start),
                        hex(n.va_end),
                        n.left,
                        n.right,
                        n.black,
                        hex(n.subtree_max_size),
                    ]
                    for n in self.nodes
                ],
            },
            "vmap_nodes": [
                {
                    "id": vn.id,
                    "busy": [area(a) for a in vn.busy],
                    "lazy": [area(a) for a in vn.lazy],
                    "pools": [
                        {
                            "pages": p.pages,
                            "len": p.len,
                            "areas": [[hex(s), hex(e)] for s, e in p.areas],
                        }
                        for p in vn.pools
                    ],
                }
                for vn in self.vmap_nodes
            ],
            "errors": list(self.errors),
        }


# --- reading ------------------------------------------------------------------------


def _read_bytes(p: Path) -> bytes:
    name = str(p)
    try:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            raise InputError("is a symbolic link (links are not followed)", path=name)
        if not stat.S_ISREG(st.st_mode):
            raise InputError("is not a regular file", path=name)
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    raw = g.read(MAX_KSTATE_BYTES + 1)
            else:
                raw = f.read(MAX_KSTATE_BYTES + 1)
    except InputError:
        raise
    except OSError as e:  # includes gzip.BadGzipFile
        raise InputError(f"cannot read: {e.strerror or e}", path=name) from None
    except EOFError:
        raise InputError("truncated gzip stream", path=name) from None
    except zlib.error as e:
        raise InputError(f"corrupt gzip stream ({e})", path=name) from None
    if len(raw) > MAX_KSTATE_BYTES:
        raise InputError(
            f"holds more than {MAX_KSTATE_BYTES} bytes (a readout of a million free "
            "nodes is about 100 MB); refusing to read it",
            path=name,
        )
    return raw


def load_kstate(path: str | os.PathLike[str]) -> KState:
    """Read ``kstate.json`` (or a gzipped one) and check it (:func:`parse_kstate`)."""
    p = Path(path)
    name = str(p)
    raw = _read_bytes(p)
    data = load_json(raw, name)
    return parse_kstate(data, path=name)


class _Doc:
    """Checks on one parsed document; every error names the JSON location."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> InputError:
        return InputError(f"{where}: {message}" if where else message, path=self.path)

    def obj(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"must be a JSON object, not {_short(v)}")
        return v

    def lst(self, v: Any, where: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.fail(where, f"must be a JSON list, not {_short(v)}")
        return v

    def key(self, d: dict[str, Any], k: str, where: str) -> Any:
        if k not in d:
            raise self.fail(where, f"missing {k!r}")
        return d[k]

    def int_(self, v: Any, where: str, lo: int = 0, hi: int | None = None) -> int:
        if type(v) is not int:
            raise self.fail(where, f"must be an integer, not {_short(v)}")
        if v < lo or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise self.fail(where, f"must be {rng}, not {v}")
        return v

    def str_(self, v: Any, where: str) -> str:
        if not isinstance(v, str):
            raise self.fail(where, f"must be a string, not {_short(v)}")
        return v

    def bool_(self, v: Any, where: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(where, f"must be true or false, not {_short(v)}")
        return v

    def hex_(self, v: Any, where: str) -> int:
        if not isinstance(v, str) or not _HEX.fullmatch(v):
            raise self.fail(
                where,
                f'must be a lowercase hex string like "0xffffc90000000000" (64-bit), '
                f"not {_short(v)}",
            )
        return int(v, 16)

    def range_(self, v: Any, where: str, flags: bool) -> Area:
        n = (2, 3) if flags else (2,)
        if not isinstance(v, list) or len(v) not in n:
            shape = (
                "[va_start, va_end] or [va_start, va_end, flags]" if flags else "[va_start, va_end]"
            )
            raise self.fail(where, f"must be {shape}, not {_short(v)}")
        s = self.hex_(v[0], f"{where}[0]")
        e = self.hex_(v[1], f"{where}[1]")
        if s >= e:
            raise self.fail(where, f"empty or reversed range {s:#x}-{e:#x}")
        if (s & (PAGE_SIZE - 1) and s != 1) or (e & (PAGE_SIZE - 1) and e != _ULONG_MAX):
            raise self.fail(where, f"{s:#x}-{e:#x} is not page aligned")
        f = self.hex_(v[2], f"{where}[2]") if len(v) == 3 else None
        return s, e, f


def _short(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_kstate(data: Any, *, path: str = "kstate.json") -> KState:
    """Check a parsed kstate document and return it as a :class:`KState`."""
    d = _Doc(path)
    top = d.obj(data, "")
    fmt = d.key(top, "format", "")
    if fmt != FORMAT:
        raise d.fail("format", f"must be {FORMAT!r}, not {_short(fmt)}")
    version = d.int_(d.key(top, "version", ""), "version")
    if version != VERSION:
        raise d.fail("version", f"this pyvmalloc reads version {VERSION}, not {version}")
    kernel = d.str_(d.key(top, "kernel", ""), "kernel")
    arch = d.str_(d.key(top, "arch", ""), "arch")
    source = d.str_(d.key(top, "source", ""), "source")
    taken = d.str_(d.key(top, "taken", ""), "taken")
    if taken not in _TAKEN:
        raise d.fail("taken", f"must be one of {', '.join(_TAKEN)}, not {_short(taken)}")
    attempts = d.int_(d.key(top, "attempts", ""), "attempts", 1)
    consistent = d.bool_(d.key(top, "consistent", ""), "consistent")
    nr_nodes = d.int_(d.key(top, "nr_vmap_nodes", ""), "nr_vmap_nodes", 1, 1 << 16)
    errors = d.lst(top.get("errors", []), "errors")
    for i, e in enumerate(errors):
        d.str_(e, f"errors[{i}]")
    if "offsets" in top:
        d.obj(top["offsets"], "offsets")
    root, nodes = _free_tree(d, d.obj(d.key(top, "free_tree", ""), "free_tree"))
    vnodes = _vmap_nodes(d, d.lst(d.key(top, "vmap_nodes", ""), "vmap_nodes"), nr_nodes)
    _no_overlaps(d, nodes, vnodes)
    return KState(
        kernel=kernel,
        arch=arch,
        source=source,
        taken=taken,
        attempts=attempts,
        consistent=consistent,
        nr_vmap_nodes=nr_nodes,
        root=root,
        nodes=tuple(nodes),
        vmap_nodes=tuple(vnodes),
        errors=tuple(errors),
        path=path,
    )


def _free_tree(d: _Doc, ft: dict[str, Any]) -> tuple[int | None, list[FreeNode]]:
    raw = d.lst(d.key(ft, "nodes", "free_tree"), "free_tree.nodes")
    n = len(raw)
    root_v = d.key(ft, "root", "free_tree")
    root = None if root_v is None else d.int_(root_v, "free_tree.root", 0, max(0, n - 1))
    if (root is None) != (n == 0):
        raise d.fail(
            "free_tree.root",
            "is null but there are nodes" if root is None else "names a node of an empty tree",
        )
    nodes: list[FreeNode] = []
    for i, v in enumerate(raw):
        w = f"free_tree.nodes[{i}]"
        if not isinstance(v, list) or len(v) != 6:
            raise d.fail(
                w,
                f"must be [va_start, va_end, left, right, is_black, subtree_max_size], not {_short(v)}",
            )
        s, e, _ = d.range_(v[:2], w, False)
        kids: list[int | None] = []
        for j, side in ((2, "left"), (3, "right")):
            c = v[j]
            if c is not None:
                c = d.int_(c, f"{w}[{j}] ({side})", 0, n - 1)
                if c == i:
                    raise d.fail(f"{w}[{j}] ({side})", "a node cannot be its own child")
            kids.append(c)
        black = d.bool_(v[4], f"{w}[4] (is_black)")
        msz = d.hex_(v[5], f"{w}[5] (subtree_max_size)")
        nodes.append(FreeNode(s, e, kids[0], kids[1], black, msz))
        if i and nodes[i - 1].va_end >= s:
            prev = nodes[i - 1]
            what = "touches" if prev.va_end == s else "overlaps"
            raise d.fail(
                w,
                f"{s:#x}-{e:#x} {what} the previous node {prev.va_start:#x}-{prev.va_end:#x}; "
                "the nodes must be in address order and free blocks are merged",
            )
    if root is not None:
        _check_shape(d, nodes, root)
    return root, nodes


def _check_shape(d: _Doc, nodes: list[FreeNode], root: int) -> None:
    """One tree from ``root`` over every node, in-order = list order, red-black rules,
    ``subtree_max_size`` as recomputed."""
    parent: list[int | None] = [None] * len(nodes)
    seen = [False] * len(nodes)
    seen[root] = True
    stack = [root]
    while stack:  # reachability, one parent each (no cycles, no sharing)
        i = stack.pop()
        for c in (nodes[i].left, nodes[i].right):
            if c is None:
                continue
            if seen[c]:
                raise d.fail(
                    f"free_tree.nodes[{i}]",
                    f"child {c} is reached twice (a cycle or a shared child)",
                )
            seen[c] = True
            parent[c] = i
            stack.append(c)
    missing = [i for i, s in enumerate(seen) if not s]
    if missing:
        raise d.fail(
            f"free_tree.nodes[{missing[0]}]",
            f"is not reachable from the root (node {root}); {len(missing)} such nodes",
        )
    # In-order walk: must visit 0, 1, 2, ... (the tree is a BST over the address order).
    expect = 0
    stack = []
    node: int | None = root
    while stack or node is not None:
        while node is not None:
            stack.append(node)
            node = nodes[node].left
        node = stack.pop()
        if node != expect:
            raise d.fail(
                f"free_tree.nodes[{node}]",
                f"is visited {expect}th in order (expected node {expect}): the tree is "
                "not ordered by address",
            )
        expect += 1
        node = nodes[node].right
    if not nodes[root].black:
        raise d.fail(f"free_tree.nodes[{root}]", "the root is red")
    # Post-order: black heights and subtree_max_size.
    height: list[int] = [0] * len(nodes)
    maxsz: list[int] = [0] * len(nodes)
    order: list[int] = []
    stack = [root]
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(c for c in (nodes[i].left, nodes[i].right) if c is not None)
    for i in reversed(order):
        nd = nodes[i]
        w = f"free_tree.nodes[{i}]"
        hs = []
        m = nd.va_end - nd.va_start
        for c in (nd.left, nd.right):
            if c is None:
                hs.append(0)
                continue
            if not nd.black and not nodes[c].black:
                raise d.fail(w, f"red node has a red child (node {c})")
            hs.append(height[c])
            m = max(m, maxsz[c])
        if hs[0] != hs[1]:
            raise d.fail(w, f"black heights of its subtrees differ ({hs[0]} left, {hs[1]} right)")
        height[i] = hs[0] + (1 if nd.black else 0)
        maxsz[i] = m
        if nd.subtree_max_size != m:
            raise d.fail(
                f"{w}[5] (subtree_max_size)",
                f"is {nd.subtree_max_size:#x}, but the largest block in its subtree is {m:#x}",
            )


def _vmap_nodes(d: _Doc, raw: list[Any], nr_nodes: int) -> list[NodeState]:
    if len(raw) != nr_nodes:
        raise d.fail("vmap_nodes", f"has {len(raw)} entries, nr_vmap_nodes is {nr_nodes}")
    out: list[NodeState] = []
    for i, v in enumerate(raw):
        w = f"vmap_nodes[{i}]"
        o = d.obj(v, w)
        vid = d.int_(d.key(o, "id", w), f"{w}.id")
        if vid != i:
            raise d.fail(f"{w}.id", f"is {vid}; the nodes must be listed by id from 0")
        busy = [
            d.range_(a, f"{w}.busy[{j}]", True)
            for j, a in enumerate(d.lst(d.key(o, "busy", w), f"{w}.busy"))
        ]
        lazy = [
            d.range_(a, f"{w}.lazy[{j}]", True)
            for j, a in enumerate(d.lst(d.key(o, "lazy", w), f"{w}.lazy"))
        ]
        for what, areas in (("busy", busy), ("lazy", lazy)):
            for j, a in enumerate(areas):
                if a[2] is not None:
                    _check_flags(d, a[2], f"{w}.{what}[{j}][2] (flags)", nr_nodes)
            for j in range(1, len(areas)):
                if areas[j][0] < areas[j - 1][1]:
                    raise d.fail(
                        f"{w}.{what}[{j}]",
                        f"{areas[j][0]:#x} is below the end of the previous entry "
                        f"({areas[j - 1][1]:#x}): vn->{what} is address-sorted",
                    )
        pools: list[Pool] = []
        for j, pv in enumerate(d.lst(d.key(o, "pools", w), f"{w}.pools")):
            pw = f"{w}.pools[{j}]"
            po = d.obj(pv, pw)
            pages = d.int_(d.key(po, "pages", pw), f"{pw}.pages", 1, MAX_POOL_PAGES)
            ln = d.int_(d.key(po, "len", pw), f"{pw}.len")
            pareas: list[Range] = [
                d.range_(a, f"{pw}.areas[{k}]", False)[:2]
                for k, a in enumerate(d.lst(d.key(po, "areas", pw), f"{pw}.areas"))
            ]
            if pools and pages <= pools[-1].pages:
                raise d.fail(
                    f"{pw}.pages",
                    f"is {pages}, after {pools[-1].pages}: pools are listed by ascending pages, once each",
                )
            if ln != len(pareas):
                raise d.fail(pw, f"len is {ln} but the list walk found {len(pareas)} areas")
            if not pareas:
                raise d.fail(pw, "is empty; only non-empty pools are listed")
            for k, (s, e) in enumerate(pareas):
                if (e - s) >> PAGE_SHIFT != pages or (e - s) & (PAGE_SIZE - 1):
                    raise d.fail(
                        f"{pw}.areas[{k}]", f"{s:#x}-{e:#x} is {e - s:#x} bytes, not {pages} pages"
                    )
            pools.append(Pool(pages, ln, tuple((s, e) for s, e in pareas)))
        out.append(NodeState(vid, tuple(busy), tuple(lazy), tuple(pools)))
    return out


def _check_flags(d: _Doc, flags: int, where: str, nr_nodes: int) -> None:
    """``va->flags`` as 6.18 writes it: VMAP_RAM/VMAP_BLOCK in the low byte and
    ``encode_vn_id(node)`` = ``(node + 1) << 8`` above (0 for no node), with ``node`` a
    node of the readout (``encode_vn_id`` encodes nothing else; ``decode_vn_id`` reads
    an ``unsigned int``, so nothing lies above bit 31)."""
    low = flags & ((1 << _VN_ID_SHIFT) - 1)
    if low & ~_VMAP_FLAGS_MASK:
        raise d.fail(
            where,
            f"{flags:#x} has bits {low & ~_VMAP_FLAGS_MASK:#x} set; 6.18 defines only "
            "VMAP_RAM (0x1) and VMAP_BLOCK (0x2) below the node id",
        )
    enc = flags >> _VN_ID_SHIFT
    if enc > nr_nodes:
        raise d.fail(
            where,
            f"{flags:#x} names vmap node {enc - 1} (encode_vn_id: node + 1 in bits 8..), "
            f"but there are {nr_nodes} nodes (0..{nr_nodes - 1})",
        )


def _no_overlaps(d: _Doc, nodes: list[FreeNode], vnodes: list[NodeState]) -> None:
    """Free, busy, lazy and pooled areas are disjoint (each area is in one place)."""
    pieces: list[tuple[int, int, str]] = [
        (n.va_start, n.va_end, f"free_tree.nodes[{i}]") for i, n in enumerate(nodes)
    ]
    for vn in vnodes:
        w = f"vmap_nodes[{vn.id}]"
        pieces += [(a[0], a[1], f"{w}.busy[{j}]") for j, a in enumerate(vn.busy)]
        pieces += [(a[0], a[1], f"{w}.lazy[{j}]") for j, a in enumerate(vn.lazy)]
        for j, p in enumerate(vn.pools):
            pieces += [(s, e, f"{w}.pools[{j}].areas[{k}]") for k, (s, e) in enumerate(p.areas)]
    pieces.sort()
    for a, b in itertools.pairwise(pieces):
        if b[0] < a[1]:
            raise d.fail(b[2], f"{b[0]:#x}-{b[1]:#x} overlaps {a[2]} ({a[0]:#x}-{a[1]:#x})")


# --- writing --------------------------------------------------------------------------


def dump_kstate(ks: KState, path: str | os.PathLike[str]) -> None:
    """Write ``ks`` as JSON (gzipped when the name ends in ``.gz``)."""
    text = json.dumps(ks.as_json(), separators=(",", ":")) + "\n"
    p = Path(path)
    if p.name.endswith(".gz"):
        with gzip.open(p, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        p.write_text(text, encoding="utf-8")


def kstate_of(kernel: Kernel, *, taken: str = "after-snapshot") -> KState:
    """The model's hidden state in the kernel's format (a readout of the model).

    Lazy lists are listed in address order, as 6.9+ keeps ``vn->lazy.head``; areas in
    a purge between its phases are on no list (as in the kernel). 4.19's list space has
    no free tree: a :class:`ValueError`.
    """
    space = kernel.vmap_space
    free = getattr(space, "free", None)
    if free is None:
        raise ValueError(f"kernel {kernel.profile.name} has no free tree to export")
    blocks = list(free)
    index = {id(va): i for i, va in enumerate(blocks)}
    top = free.root.rb_node
    nodes = tuple(
        FreeNode(
            va.va_start,
            va.va_end,
            None if va.rb_left is None else index[id(va.rb_left)],
            None if va.rb_right is None else index[id(va.rb_right)],
            not va.rb_red,
            va.subtree_max_size,
        )
        for va in blocks
    )
    multi = space.nr_vmap_nodes > 1
    vnodes = []
    for vn in space.nodes:
        busy = tuple((va.va_start, va.va_end, va.flags) for va in rb_inorder(vn.busy))
        lazy = tuple(
            sorted(
                (va.va_start, va.va_end, va.flags)
                for va in space.lazy
                if (space.lazy_node_of(va) if multi else 0) == vn.id
            )
        )
        pools = tuple(
            Pool(idx + 1, len(p), tuple((va.va_start, va.va_end) for va in p))
            for idx, p in sorted(vn.pools.items())
            if p
        )
        vnodes.append(NodeState(vn.id, busy, lazy, pools))
    return KState(
        kernel=f"model {kernel.profile.name}",
        arch=kernel.machine.arch,
        source="model",
        taken=taken,
        attempts=1,
        consistent=True,
        nr_vmap_nodes=space.nr_vmap_nodes,
        root=None if top is None else index[id(top)],
        nodes=nodes,
        vmap_nodes=tuple(vnodes),
    )


# --- comparing ------------------------------------------------------------------------


def _places(ks: KState) -> dict[Range, tuple[tuple[Range, str] | None, bool]]:
    """Each free block -> (its parent's block and side, or None for the root; black)."""
    parent: dict[int, tuple[int, str]] = {}
    for i, n in enumerate(ks.nodes):
        if n.left is not None:
            parent[n.left] = (i, "left")
        if n.right is not None:
            parent[n.right] = (i, "right")
    out: dict[Range, tuple[tuple[Range, str] | None, bool]] = {}
    for i, n in enumerate(ks.nodes):
        p = parent.get(i)
        up = None if p is None else ((ks.nodes[p[0]].va_start, ks.nodes[p[0]].va_end), p[1])
        out[(n.va_start, n.va_end)] = (up, n.black)
    return out


def compare_kstate(model: KState, kernel: KState) -> dict[str, int]:
    """Compare a model's state with the kernel's, node by node.

    Free blocks: present on one side only; present on both but hanging under another
    parent (or on the other side of it: ``free_position_differs``); another colour
    (``free_color_differs``). A node counts as agreeing when range, parent, side and
    colour all agree — the test that the model's rotations are the kernel's. Pool
    entries: at the same node, class and position; elsewhere (``pool_moved``); on
    one side only. ``busy_node_differs``: busy areas whose allocating node
    (``va->flags``) differs, where the kernel's readout gave the flags.
    """
    m, k = _places(model), _places(kernel)
    both = m.keys() & k.keys()

    def pool_slots(ks: KState) -> dict[Range, tuple[int, int, int]]:
        return {
            a: (vn.id, p.pages, i)
            for vn in ks.vmap_nodes
            for p in vn.pools
            for i, a in enumerate(p.areas)
        }

    mp, kp = pool_slots(model), pool_slots(kernel)
    pboth = mp.keys() & kp.keys()
    mflags = {(a[0], a[1]): a[2] for vn in model.vmap_nodes for a in vn.busy}
    node_differs = 0
    for vn in kernel.vmap_nodes:
        for s, e, f in vn.busy:
            g = mflags.get((s, e))
            if f is not None and g is not None and (f >> 8) != (g >> 8):
                node_differs += 1
    return {
        "free_nodes_kernel": len(k),
        "free_nodes_model": len(m),
        "free_agree": sum(m[r] == k[r] for r in both),
        "free_only_model": len(m.keys() - k.keys()),
        "free_only_kernel": len(k.keys() - m.keys()),
        "free_position_differs": sum(m[r][0] != k[r][0] for r in both),
        "free_color_differs": sum(m[r][1] != k[r][1] for r in both),
        "pool_agree": sum(mp[a] == kp[a] for a in pboth),
        "pool_moved": sum(mp[a] != kp[a] for a in pboth),
        "pool_only_model": len(mp.keys() - kp.keys()),
        "pool_only_kernel": len(kp.keys() - mp.keys()),
        "busy_node_differs": node_differs,
    }
