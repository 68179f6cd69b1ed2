"""The kstate reader against a synthetic kernel memory image (no kernel needed), the
writer against the kstate.json contract, and (``-m live``) the real kernel.

The image holds hand-made ``struct vmap_area``\\ s, ``struct vmap_node``\\ s and the two
static variables at addresses chosen here, with the field offsets of Linux 6.18 as
BTF gives them on x86_64 (except for a smaller pool array, to keep the image small).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc.trace import kread
from pyvmalloc.trace.kread import Anchors, Layout

DATA = Path(__file__).parent.parent / "data" / "kstate"
V = 0xFFFFC90000000000  # VMALLOC_START on x86_64 (4-level page tables)
ULONG_MAX = (1 << 64) - 1
PAGE = 4096

# struct vmap_area / rb_node / list_head as in 6.18 (BTF of this machine: va 72 bytes).
# struct vmap_node with 4 pools instead of 256: pool[4] at 0 (24 bytes each), busy at
# 96 (root, head, lock), lazy at 128.
LAY = Layout(
    va_size=72, va_start=0, va_end=8, va_rb=16, va_list=40, va_subtree=56, va_flags=64,
    rb_parent=0, rb_right=8, rb_left=16, list_next=0, list_prev=8,
    vn_size=160, vn_pool=0, pool_size=24, pool_head=0, pool_len=16, nr_pools=4,
    vn_busy_root=96, vn_busy_head=104, vn_lazy_root=128, vn_lazy_head=136,
)  # fmt: skip
RED, BLACK = 0, 1


class Mem:
    """Sparse kernel memory: 4 KiB pages, created by writing; a read touching a page
    never written fails, as ``bpf_probe_read_kernel`` does on an unmapped address."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.reads = 0

    def write(self, addr: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            a = addr + i
            self.pages.setdefault(a >> 12, bytearray(PAGE))[a & 0xFFF] = byte

    def u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value))

    def peek(self, addr: int, n: int) -> bytes | None:
        self.reads += 1
        out = bytearray()
        for a in range(addr, addr + n):
            page = self.pages.get(a >> 12)
            if page is None:
                return None
            out.append(page[a & 0xFFF])
        return bytes(out)


def write_va(mem: Mem, addr: int, start: int, end: int, *, parent: int = 0, color: int = 0,
             left: int = 0, right: int = 0, nxt: int = 0, prev: int = 0,
             subtree: int = 0, flags: int = 0) -> None:  # fmt: skip
    """A struct vmap_area at ``addr``; tree links are vmap_area addresses (0 = none);
    ``flags`` is ``va->flags`` (the last member, after the subtree_max_size/vm union)."""
    rb = lambda va: va + LAY.va_rb if va else 0  # noqa: E731
    mem.write(
        addr,
        struct.pack(
            "<QQQQQQQQQ", start, end, rb(parent) | color, rb(right), rb(left), nxt, prev,
            subtree, flags,
        ),
    )  # fmt: skip


def link_list(mem: Mem, head: int, vas: list[int]) -> None:
    """Link the vmap_areas ``vas`` (in order) through ``.list`` from the list_head at
    ``head`` (circular, both ways)."""
    nodes = [head] + [va + LAY.va_list for va in vas]
    for i, n in enumerate(nodes):
        mem.u64(n + LAY.list_next, nodes[(i + 1) % len(nodes)])
        mem.u64(n + LAY.list_prev, nodes[i - 1])


FREE_ROOT_VAR = 0xFFFFFFFF83B8BA40  # &free_vmap_area_root
FREE_LIST_VAR = 0xFFFFFFFF83B8BA50  # &free_vmap_area_list
NODES_VAR = 0xFFFFFFFF831331D0  # &vmap_nodes
NODES = 0xFFFF888100054000  # vmap_nodes (the array)
SLAB = 0xFFFF888120000000  # where the struct vmap_areas are

# The address space: free [1, V), busy0 [V, V+2p), busy1 [V+2p, V+3p), free [V+3p, V+5p),
# lazy0 [V+5p, V+6p), pooled on node 1 (2 pages) [V+6p, V+8p), free [V+8p, ULONG_MAX).
F0, F1, F2 = SLAB, SLAB + 0x100, SLAB + 0x200
B0, B1, L0, P1 = SLAB + 0x300, SLAB + 0x400, SLAB + 0x500, SLAB + 0x600


def build(mem: Mem | None = None) -> Mem:
    """The whole synthetic state (one consistent picture)."""
    mem = mem or Mem()
    big = ULONG_MAX - (V + 8 * PAGE)
    # free tree: F1 (black) at the root, F0 and F2 red children
    write_va(mem, F0, 1, V, parent=F1, color=RED, subtree=V - 1)
    write_va(mem, F1, V + 3 * PAGE, V + 5 * PAGE, color=BLACK, left=F0, right=F2, subtree=V - 1)
    write_va(mem, F2, V + 8 * PAGE, ULONG_MAX, parent=F1, color=RED, subtree=big)
    link_list(mem, FREE_LIST_VAR, [F0, F1, F2])
    mem.u64(FREE_ROOT_VAR, F1 + LAY.va_rb)
    # va->flags: B0 allocated on CPU 1 (node 1: encode_vn_id(1) = 2 << 8) though it lies
    # in node 0's zone; B1 a vmap block from node 0 (VMAP_RAM | VMAP_BLOCK | 1 << 8); L0
    # freed from node 0 (1 << 8); P1 pooled (its stale flags are not part of the format).
    write_va(mem, B0, V, V + 2 * PAGE, flags=0x200)
    write_va(mem, B1, V + 2 * PAGE, V + 3 * PAGE, flags=0x103)
    write_va(mem, L0, V + 5 * PAGE, V + 6 * PAGE, flags=0x100)
    write_va(mem, P1, V + 6 * PAGE, V + 8 * PAGE, flags=0x200)
    for i in range(2):
        vn = NODES + i * LAY.vn_size
        for p in range(LAY.nr_pools):
            head = vn + LAY.vn_pool + p * LAY.pool_size + LAY.pool_head
            link_list(mem, head, [])
            mem.u64(vn + LAY.vn_pool + p * LAY.pool_size + LAY.pool_len, 0)
        mem.u64(vn + LAY.vn_busy_root, 0)
        mem.u64(vn + LAY.vn_lazy_root, 0)
        link_list(mem, vn + LAY.vn_busy_head, [B0] if i == 0 else [B1])
        link_list(mem, vn + LAY.vn_lazy_head, [L0] if i == 0 else [])
    vn1 = NODES + LAY.vn_size
    link_list(mem, vn1 + LAY.vn_pool + 1 * LAY.pool_size, [P1])  # pool[1]: 2 pages
    mem.u64(vn1 + LAY.vn_pool + 1 * LAY.pool_size + LAY.pool_len, 1)
    mem.u64(NODES_VAR, NODES)
    return mem


ANCHORS = Anchors(free_root=FREE_ROOT_VAR, vmap_nodes=NODES, nr_vmap_nodes=2)


def test_readout_of_the_synthetic_state() -> None:
    mem = build()
    doc = kread.read_kstate(mem.peek, LAY, ANCHORS, taken="after-snapshot", kernel="6.18.44",
                            arch="x86_64")  # fmt: skip
    assert doc["consistent"] and doc["attempts"] == 1 and doc["errors"] == []
    big = hex(ULONG_MAX - (V + 8 * PAGE))
    assert doc["free_tree"] == {
        "root": 1,
        "nodes": [
            ["0x1", hex(V), None, None, False, hex(V - 1)],
            [hex(V + 3 * PAGE), hex(V + 5 * PAGE), 0, 2, True, hex(V - 1)],
            [hex(V + 8 * PAGE), hex(ULONG_MAX), None, None, False, big],
        ],
    }
    assert doc["vmap_nodes"] == [
        {"id": 0, "busy": [[hex(V), hex(V + 2 * PAGE), "0x200"]],
         "lazy": [[hex(V + 5 * PAGE), hex(V + 6 * PAGE), "0x100"]], "pools": []},
        {"id": 1, "busy": [[hex(V + 2 * PAGE), hex(V + 3 * PAGE), "0x103"]], "lazy": [],
         "pools": [{"pages": 2, "len": 1, "areas": [[hex(V + 6 * PAGE), hex(V + 8 * PAGE)]]}]},
    ]  # fmt: skip
    check_contract(doc)
    assert _vn_ids(doc) == [1, 0, 0]  # B0, L0 (node 0's lists), then B1


def test_flags_are_read_at_the_offset_btf_gives() -> None:
    """The reader takes ``va->flags`` from ``Layout.va_flags``, not from a fixed place:
    a layout with flags and subtree_max_size swapped reads each at its own offset."""
    mem = build()
    moved = Layout(**{**LAY.as_dict(), "va_flags": 56, "va_subtree": 64})
    for va in (F0, F1, F2):  # the free blocks' subtree_max_size moves to offset 64
        raw = mem.peek(va + 56, 8)
        assert raw is not None
        mem.write(va + 64, raw)
    for va, word in ((B0, 0x1200), (B1, 0x103), (L0, 0x0)):
        mem.u64(va + 56, word)
    doc = kread.read_kstate(mem.peek, moved, ANCHORS, taken="standalone")
    assert doc["consistent"], doc["errors"]
    assert [a[2] for vn in doc["vmap_nodes"] for a in vn["busy"] + vn["lazy"]] == [
        "0x1200", "0x0", "0x103",
    ]  # fmt: skip
    assert doc["offsets"]["va_flags"] == 56


def fake_chase(mem: Mem, batch: int = 2) -> kread.Chase:
    """What the BPF chase program does (``bpfpeek.chase_program``), over ``mem``: at
    most ``batch`` structs a call (a small buffer, to exercise the resumption)."""

    def chase(first: int, stop: int, limit: int) -> list[bytes] | None:
        out: list[bytes] = []
        cur = first
        while len(out) < min(limit, batch):
            raw = mem.peek(cur, LAY.va_size)
            if raw is None:
                return out or None
            out.append(raw)
            cur = struct.unpack_from("<Q", raw, LAY.va_list + LAY.list_next)[0] - LAY.va_list
            if cur == stop:
                break
        return out

    return chase


def test_the_chase_reads_the_same_state_in_fewer_calls() -> None:
    mem = build()
    calls = {"peek": 0, "chase": 0}

    def peek(addr: int, n: int) -> bytes | None:
        calls["peek"] += 1
        return mem.peek(addr, n)

    inner = fake_chase(mem)

    def chase(first: int, stop: int, limit: int) -> list[bytes] | None:
        calls["chase"] += 1
        return inner(first, stop, limit)

    plain = kread.read_kstate(peek, LAY, ANCHORS, taken="after-snapshot")
    slow = calls["peek"]
    calls["peek"] = 0
    fast = kread.read_kstate(peek, LAY, ANCHORS, taken="after-snapshot", chase=chase)
    assert fast["consistent"]
    for key in ("free_tree", "vmap_nodes"):
        assert fast[key] == plain[key]
    # free list of 3 in 2 calls (2 + 1); 4 one-area lists in one call each
    assert calls["chase"] == 6
    assert calls["peek"] + calls["chase"] < slow


def _raced(mutate: Any, message: str) -> None:
    mem = build()
    mutate(mem)
    doc = kread.read_kstate(mem.peek, LAY, ANCHORS, taken="after-snapshot", attempts=3)
    assert not doc["consistent"] and doc["attempts"] == 3
    assert len(doc["errors"]) == 3 and re.search(message, doc["errors"][-1]), doc["errors"]
    assert doc["free_tree"] == {"root": None, "nodes": []} and doc["vmap_nodes"] == []
    check_contract(doc)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # F2's right child points back at the root: a cycle
        (lambda m: m.u64(F2 + LAY.va_rb + LAY.rb_right, F1 + LAY.va_rb), "cycle"),
        # a stale subtree_max_size (an augment update in flight)
        (lambda m: m.u64(F1 + LAY.va_subtree, PAGE), "subtree_max_size"),
        # F0's parent pointer not yet updated after a rotation
        (lambda m: m.u64(F0 + LAY.va_rb, F2 + LAY.va_rb | RED), "parent link"),
        # two red nodes in a row
        (lambda m: m.u64(F1 + LAY.va_rb, 0 | RED), "root is red"),
        # a child pointer into memory that is not there
        (lambda m: m.u64(F0 + LAY.va_rb + LAY.rb_left, 0xFFFF888200000000 + 16), "cannot read"),
        # the pool's len says 2 but one area is linked
        (lambda m: m.u64(NODES + LAY.vn_size + LAY.pool_size + LAY.pool_len, 2), "len is 2"),
        # the busy area of node 1 vanished (moved between lists): a gap
        (lambda m: link_list(m, NODES + LAY.vn_size + LAY.vn_busy_head, []), "in no tree"),
        # the lazy area also appears in node 1's lazy list: an overlap
        (
            lambda m: link_list(m, NODES + LAY.vn_size + LAY.vn_lazy_head, [L0]),
            "back|overlaps|cycle",
        ),
        # the free list skips F1
        (lambda m: m.u64(F0 + LAY.va_list + LAY.list_next, F2 + LAY.va_list), "free list"),
        # the root variable is NULL (the tree is being rebuilt)
        (lambda m: m.u64(FREE_ROOT_VAR, 0), "empty"),
    ],
)
def test_races_and_impossible_states_are_inconsistent(mutate: Any, message: str) -> None:
    _raced(mutate, message)


def test_a_race_that_goes_away_is_retried() -> None:
    mem = build()
    mem.u64(F1 + LAY.va_subtree, PAGE)  # stale during the first attempt only
    real = mem.peek
    roots = {"read": 0}

    def peek(addr: int, n: int) -> bytes | None:
        if addr == FREE_ROOT_VAR:
            roots["read"] += 1
            if roots["read"] == 2:  # attempt 2 begins: the kernel has finished its update
                mem.u64(F1 + LAY.va_subtree, V - 1)
        return real(addr, n)

    doc = kread.read_kstate(peek, LAY, ANCHORS, taken="after-snapshot")
    assert doc["consistent"] and doc["attempts"] == 2
    assert "subtree_max_size" in doc["errors"][0]


def test_vmap_node_shape() -> None:
    mem = build()
    raw = mem.peek(NODES, LAY.vn_size)
    assert raw is not None and kread.looks_like_vmap_node(raw, LAY, NODES)
    # the same bytes seen at another address: the self-pointers do not match
    assert not kread.looks_like_vmap_node(raw, LAY, NODES + 8)
    assert not kread.looks_like_vmap_node(bytes(LAY.vn_size), LAY, NODES)
    assert kread.count_vmap_nodes(mem.peek, LAY, NODES) == 2


def _code(base: int, refs: list[tuple[bytes, int, int]]) -> bytes:
    """Machine code at ``base``: filler (int3) with instructions that refer RIP-
    relatively to data: (opcode bytes up to ModRM, target, immediate bytes after)."""
    code = bytearray(b"\xcc" * 64)
    for op, target, imm in refs:
        end = base + len(code) + len(op) + 4 + imm
        code += op + struct.pack("<i", target - end) + b"\x00" * imm
    return bytes(code + b"\xcc" * 16)


def test_candidates_from_code() -> None:
    base = 0xFFFFFFFF8161D000
    code = _code(
        base,
        [
            (b"\x48\x8b\x05", NODES_VAR, 0),  # mov 0x..(%rip), %rax
            (b"\x83\x3d", FREE_ROOT_VAR + 4, 1),  # cmpl $imm8, 0x..(%rip)
        ],
    )
    code += b"\x48\xc7\xc6" + struct.pack("<i", FREE_LIST_VAR - (1 << 64))  # mov $sym, %rsi
    lo, hi = 0xFFFFFFFF82276508, 0xFFFFFFFF90000000
    got = kread.candidates_from_code(code, base, lo, hi)
    assert {NODES_VAR, FREE_ROOT_VAR, FREE_LIST_VAR} <= got
    assert all(lo <= c < hi and c % 8 == 0 for c in got)


def test_discover_finds_both_variables_from_code() -> None:
    mem = build()
    base = 0xFFFFFFFF8161D000
    node1_var = NODES_VAR + 0x40  # another pointer, to node 1: the same array
    mem.u64(node1_var, NODES + LAY.vn_size)
    code = _code(base, [(b"\x48\x8b\x05", NODES_VAR, 0), (b"\x48\x8b\x3d", FREE_ROOT_VAR, 0),
                        (b"\x48\x8d\x3d", FREE_LIST_VAR, 0),
                        (b"\x48\x8b\x15", node1_var, 0)])  # fmt: skip
    mem.write(base, code)
    syms = {
        "vmalloc_info_show": base,
        "insert_vmap_area": base + 0x10,
        "alloc_vmap_area": base + 0x20,
        "next_function": base + len(code),
        "_etext": 0xFFFFFFFF82276508,
    }
    a = kread.discover(mem.peek, LAY, syms)
    assert (a.free_root, a.vmap_nodes, a.nr_vmap_nodes) == (FREE_ROOT_VAR, NODES, 2)
    assert "free_vmap_area_root at 0xffffffff83b8ba40" in a.how[0]
    # Without the reference to the root, discovery says what is missing.
    mem2 = build()
    mem2.write(base, _code(base, [(b"\x48\x8b\x05", NODES_VAR, 0)]))
    with pytest.raises(kread.KreadError, match="0 candidates for free_vmap_area_root"):
        kread.discover(mem2.peek, LAY, {**syms, "next_function": base + 200})
    with pytest.raises(kread.KreadError, match="missing from /proc/kallsyms"):
        kread.discover(mem.peek, LAY, {"vfree": base, "_etext": 1})


def test_kallsyms_parsing(tmp_path: Path) -> None:
    f = tmp_path / "kallsyms"
    f.write_text(
        "ffffffff8161d000 t vmalloc_info_show\nffffffff83b8ba40 b free_vmap_area_root\n"
        "ffffffff82276508 T _etext\nffffffffc0000000 t helper\t[mod]\n"
    )
    syms = kread.kallsyms_text(f)
    assert syms == {"vmalloc_info_show": 0xFFFFFFFF8161D000, "_etext": 0xFFFFFFFF82276508,
                    "helper": 0xFFFFFFFFC0000000}  # fmt: skip
    f.write_text("0000000000000000 t vmalloc_info_show\n")
    with pytest.raises(kread.KreadError, match="zero addresses"):
        kread.kallsyms_text(f)


def test_write_kstate_modes_and_gzip(tmp_path: Path) -> None:
    doc = kread.read_kstate(build().peek, LAY, ANCHORS, taken="after-snapshot")
    for name in ("k.json", "k.json.gz"):
        p = tmp_path / name
        kread.write_kstate(doc, p)
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        raw = p.read_bytes()
        text = gzip.decompress(raw) if name.endswith(".gz") else raw
        assert json.loads(text) == doc


# --------------------------------------------------------------------- the contract

HEX = re.compile(r"^0x[0-9a-f]+$")


def _area(a: Any, flags: bool = False) -> tuple[int, int]:
    """``[va_start, va_end]``, or with ``flags`` (busy and lazy entries) also
    ``[va_start, va_end, va->flags]``."""
    n = (2, 3) if flags else (2,)
    assert isinstance(a, list) and len(a) in n and all(HEX.match(x) for x in a), a
    start, end = int(a[0], 16), int(a[1], 16)
    assert start < end
    return start, end


def _vn_ids(doc: dict[str, Any]) -> list[int | None]:
    """The node each busy and lazy area's ``va->flags`` names (``decode_vn_id``: bits
    8.. hold the node + 1, 0 for "no node"); ``None`` for "no node". Asserts that every
    entry has flags and that each id is a node of the readout (6.18 ``encode_vn_id``
    stores nothing else)."""
    out: list[int | None] = []
    for vn in doc["vmap_nodes"]:
        for a in vn["busy"] + vn["lazy"]:
            assert len(a) == 3, a
            flags = int(a[2], 16)
            assert flags < 1 << 32, a  # va->flags holds VMAP_* bits and the encoded id
            enc = flags >> 8
            assert enc <= doc["nr_vmap_nodes"], f"{a}: node id {enc - 1} is not a node"
            out.append(enc - 1 if enc else None)
    return out


def check_contract(doc: dict[str, Any]) -> None:
    """``doc`` follows /work/notes/kstate-format.md (v1); a consistent one also holds
    the kernel's invariants, recomputed here from the JSON alone."""
    assert doc["format"] == "pyvmalloc-kstate" and doc["version"] == 1
    assert isinstance(doc["kernel"], str) and isinstance(doc["arch"], str)
    assert doc["source"] == "bpf-peek"
    assert doc["taken"] in ("after-snapshot", "after-end-snapshot", "standalone")
    assert 1 <= doc["attempts"] <= 5 and isinstance(doc["consistent"], bool)
    assert isinstance(doc["nr_vmap_nodes"], int) and isinstance(doc["errors"], list)
    nodes = doc["free_tree"]["nodes"]
    root = doc["free_tree"]["root"]
    if not doc["consistent"]:
        return
    assert root is None if not nodes else 0 <= root < len(nodes)
    areas = []
    for i, (s, e, left, right, black, sub) in enumerate(nodes):
        start, end = _area([s, e])
        assert HEX.match(sub) and isinstance(black, bool)
        assert left is None or left < i
        assert right is None or right > i
        areas.append((start, end))

    def check(i: int | None) -> tuple[int, int, int, int]:  # (height, max, first, last)
        if i is None:
            return 0, 0, -1, -1
        s, e, left, right, black, sub = nodes[i]
        hl, ml, fl, _ll = check(left)
        hr, mr, _fr, lr = check(right)
        assert hl == hr, "black heights"
        for c in (left, right):
            assert c is None or black or nodes[c][4], "red node with a red child"
        size = int(e, 16) - int(s, 16)
        assert int(sub, 16) == max(size, ml, mr), "subtree_max_size"
        return (
            hl + black,
            max(size, ml, mr),
            fl if left is not None else i,
            (lr if right is not None else i),
        )

    if nodes:
        assert nodes[root][4], "the root is black"
        _h, _m, first, last = check(root)
        assert (first, last) == (0, len(nodes) - 1)
    assert len(doc["vmap_nodes"]) == doc["nr_vmap_nodes"]
    for i, vn in enumerate(doc["vmap_nodes"]):
        assert vn["id"] == i
        busy = [_area(a, True) for a in vn["busy"]]
        assert busy == sorted(busy)
        areas += busy
        areas += [_area(a, True) for a in vn["lazy"]]
        pages = [p["pages"] for p in vn["pools"]]
        assert pages == sorted(set(pages)) and all(p >= 1 for p in pages)
        for p in vn["pools"]:
            pooled = [_area(a) for a in p["areas"]]
            assert p["len"] == len(pooled) > 0
            assert all(e - s == p["pages"] * PAGE for s, e in pooled)
            areas += pooled
    areas.sort()
    pos = 1
    for s, e in areas:
        assert s == pos, f"gap or overlap at {pos:#x}"
        pos = e
    assert pos == ULONG_MAX


@pytest.mark.parametrize(
    "path",
    sorted(DATA.glob("*/kstate*.json.gz")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_bundled_real_kstates_follow_the_contract(path: Path) -> None:
    doc = json.loads(gzip.decompress(path.read_bytes()))
    assert doc["consistent"], doc["errors"]
    check_contract(doc)
    assert doc["nr_vmap_nodes"] == 2 and doc["kernel"].startswith("6.18")
    if path.parent.name.startswith("bpf-churn"):  # re-recorded with va->flags
        ids = _vn_ids(doc)
        assert None in ids and 0 in ids and 1 in ids
    meta = json.loads((path.parent / "meta.json").read_text())
    key = "after-end-snapshot" if ".end." in path.name else "after-snapshot"
    assert doc["taken"] == key and meta["kstate"][key]["file"] == path.name


def test_bundled_real_kstate_matches_its_vmallocinfo() -> None:
    """Every area of the capture's vmallocinfo (read just before the kstate) is busy or
    lazy in the kstate, except the few the trace shows changing in between."""
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    cap = DATA / "bpf-churn-nodrop"
    doc = json.loads(gzip.decompress((cap / "kstate.json.gz").read_bytes()))
    held = {
        int(a[0], 16): int(a[1], 16) for vn in doc["vmap_nodes"] for a in vn["busy"] + vn["lazy"]
    }
    info = parse_vmallocinfo(cap)
    entries = list(info.busy) + list(getattr(info, "lazy", []))
    missing = [e for e in entries if e.start not in held]
    assert len(entries) > 200 and len(missing) <= 3, missing[:5]


# ---------------------------------------------------------------------- live kernel


def _live_reason() -> str | None:
    return kread.kstate_unavailable()


live = pytest.mark.skipif(_live_reason() is not None, reason=str(_live_reason()))


def _bpf_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "bpf" in target:
            out.append(target)
    return out


def _vmallocinfo() -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(busy, lazy) areas of /proc/vmallocinfo, as (start, end)."""
    busy: set[tuple[int, int]] = set()
    lazy: set[tuple[int, int]] = set()
    for line in Path("/proc/vmallocinfo").read_text().splitlines():
        m = re.match(r"0x([0-9a-f]+)-0x([0-9a-f]+)\s+\d+\s+(.*)", line)
        if m:
            area = (int(m.group(1), 16), int(m.group(2), 16))
            (lazy if m.group(3).startswith("unpurged vm_area") else busy).add(area)
    return busy, lazy


@pytest.mark.live
@live
def test_live_readout_matches_vmallocinfo_and_leaves_nothing() -> None:
    fds_before = _bpf_fds()
    mounts_before = Path("/proc/mounts").read_text()
    kptr = Path("/proc/sys/kernel/kptr_restrict")
    kptr_old = kptr.read_text().strip()
    if kptr_old != "1":  # vmallocinfo's %pK shows real addresses to root only so
        kptr.write_text("1")
    try:
        busy1, lazy1 = _vmallocinfo()
        doc = kread.readout("standalone")
        busy2, lazy2 = _vmallocinfo()
    finally:
        if kptr_old != "1":
            kptr.write_text(kptr_old)
    assert doc["consistent"], doc["errors"]
    check_contract(doc)
    assert doc["nr_vmap_nodes"] >= 1 and doc["free_tree"]["nodes"]
    assert doc["free_tree"]["nodes"][0][0] == "0x1"
    # Every busy and lazy area carries va->flags whose id is a node or "no node".
    ids = _vn_ids(doc)
    assert ids and all(i is None or 0 <= i < doc["nr_vmap_nodes"] for i in ids)
    kbusy = {_area(a, True) for vn in doc["vmap_nodes"] for a in vn["busy"]}
    klazy = {_area(a, True) for vn in doc["vmap_nodes"] for a in vn["lazy"]}
    # Areas in both reads of vmallocinfo were there throughout (or nearly): they must
    # be in the kstate, busy ones busy (vmallocinfo prints a vm_struct's range, which
    # is its vmap_area's), lazy ones busy-turned-lazy at worst.
    stable_busy = busy1 & busy2
    stable_lazy = lazy1 & lazy2
    assert stable_busy and len(stable_busy - kbusy) <= max(2, len(stable_busy) // 100)
    assert len(stable_lazy - klazy) <= max(2, len(stable_lazy) // 100)
    # vmallocinfo lists only areas with a vm_struct or vm_map_ram: a subset of busy.
    changing = (busy1 ^ busy2) | (lazy1 ^ lazy2)
    assert len(kbusy - busy1 - busy2) <= len(changing) + len(kbusy) // 10
    # Nothing left behind: no BPF fds, no mounts.
    assert _bpf_fds() == fds_before
    assert Path("/proc/mounts").read_text() == mounts_before


def test_bundled_kstate_pools_predict_the_kernels_choices() -> None:
    """The pools read at snapshot time are what the kernel then allocates from
    (node_alloc in mm/vmalloc.c of 6.18): an allocation of the whole vmalloc range,
    align 1, of at most 256 pages, looks in the pool of its size of the vmap node of its
    CPU (cpu % nr_vmap_nodes); if that pool is not empty it takes its head (pools are
    LIFO), else it goes to the free tree and takes no pooled area. Checked on every
    allocation until the first purge (which decays and refills the pools)."""
    from pyvmalloc.trace.parse import parse_trace

    cap = DATA / "bpf-churn-nodrop"
    doc = json.loads(gzip.decompress((cap / "kstate.json.gz").read_bytes()))
    nr = doc["nr_vmap_nodes"]
    pools = {
        (vn["id"], p["pages"]): [int(a[0], 16) for a in p["areas"]]
        for vn in doc["vmap_nodes"]
        for p in vn["pools"]
    }
    pooled = {a for v in pools.values() for a in v}
    res = parse_trace(cap)
    start = res.marker("kstate-end")
    assert start is not None
    heads = misses = 0
    for e in res.events:
        if e.line <= start.line:
            continue
        if e.name == "purge_vmap_area_lazy":
            break
        if e.name != "alloc_vmap_area":
            continue
        pages = e.size // PAGE
        if not (e.align == 1 and e.vstart == V and pages <= 256):
            assert e.addr not in pooled
            continue
        pool = pools.get((e.cpu % nr, pages), [])
        if pool:
            assert e.addr == pool.pop(0), f"{e.addr:#x}: not the head of its node's pool"
            heads += 1
        else:
            assert e.addr not in pooled, f"{e.addr:#x} came from another node's pool"
            misses += 1
    assert heads >= 100 and misses >= 10  # 125 and 18 in the bundled capture


def test_not_preempted_restores_the_scheduling_policy() -> None:
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no sched_getscheduler here")
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    with kread._not_preempted():
        pass
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
