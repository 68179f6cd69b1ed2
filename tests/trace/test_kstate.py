"""kstate.json: the reader's checks, exact-shape seeding and the replay seeded from it.

The addresses expected here follow from 6.18's rules (mm/vmalloc.c), derived by hand in
the comments: ``find_vmap_lowest_match`` descends left while the left subtree's
``subtree_max_size`` is at least the search length and ``vstart`` lies below the node,
else takes the node if the request fits it (``is_within_this_va``), else goes right if
that subtree is long enough, else rolls back up to the first ancestor that fits or has
a long-enough right subtree. With ``align > PAGE_SIZE`` on the full vmalloc range the
search length is ``size + align - 1`` (``adjust_search_size``), so a block shorter than
that is found only when it lies on the descent path.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc import _accel
from pyvmalloc.errors import InputError
from pyvmalloc.trace.capturedir import load_capture_dir
from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy
from pyvmalloc.trace.harness import TraceHarness
from pyvmalloc.trace.kstate import (
    compare_kstate,
    dump_kstate,
    kstate_of,
    load_kstate,
    parse_kstate,
)
from pyvmalloc.trace.replay import replay

V = 0xFFFFC90000000000  # VMALLOC_START (x86_64, 4-level paging)
VEND = 0xFFFFE8FFFFFFFFFF  # VMALLOC_END
ULONG_MAX = (1 << 64) - 1
K = 1024
STACK = 20 * K  # THREAD_SIZE 16 KiB + the guard page
ALIGN = 16 * K  # THREAD_ALIGN

# The address space of the hand-built kernel (offsets from VMALLOC_START; 2 vmap nodes,
# address zones of 64 KiB, so everything below V+128K is in node 0's zone 0, V+64K..
# V+128K in node 1's zone, V+128K.. in node 0's again):
#   F0 [1, V)            free (everything below the vmalloc range)
#   B1 [V, V+16K)        busy
#   H  [V+16K, V+36K)    free: a 20 KiB hole, 16 KiB aligned: a stack fits exactly
#   B2 [V+36K, V+64K)    busy
#   G  [V+64K, V+128K)   free, 64 KiB (longer than a stack's search length 36K-1)
#   B3 [V+128K, V+144K)  busy
#   P  [V+144K, V+164K)  node 0's pool of 5-page areas (16 KiB aligned)
#   FT [V+164K, ULONG_MAX) free
F0 = (1, V)
B1 = (V, V + 16 * K)
H = (V + 16 * K, V + 36 * K)
B2 = (V + 36 * K, V + 64 * K)
G = (V + 64 * K, V + 128 * K)
B3 = (V + 128 * K, V + 144 * K)
P = (V + 144 * K, V + 164 * K)
FT = (V + 164 * K, ULONG_MAX)
FREE = [F0, H, G, FT]

#: Two valid red-black shapes over the same four blocks (index: left, right, black).
#: Hole at the root: H over F0 and G, FT red under G (black height 2 on every path).
HOLE_AT_ROOT = (
    1,
    {0: (None, None, True), 1: (0, 2, True), 2: (None, 3, True), 3: (None, None, False)},
)
#: Hole as a leaf: G over F0 and FT, H red under F0's right.
HOLE_AS_LEAF = (
    2,
    {0: (None, 1, True), 1: (None, None, False), 2: (0, 3, True), 3: (None, None, True)},
)


def _maxes(blocks: list[tuple[int, int]], shape: dict[int, tuple[Any, Any, bool]]) -> list[int]:
    """subtree_max_size by definition: the largest block in each node's subtree."""

    def m(i: int | None) -> int:
        if i is None:
            return 0
        left, right, _ = shape[i]
        return max(blocks[i][1] - blocks[i][0], m(left), m(right))

    return [m(i) for i in range(len(blocks))]


def doc(
    shape: tuple[int, dict[int, tuple[Any, Any, bool]]] = HOLE_AS_LEAF,
    blocks: list[tuple[int, int]] | None = None,
    busy0: list[list[str]] | None = None,
    busy1: list[list[str]] | None = None,
    lazy0: list[list[str]] | None = None,
    pools0: list[dict[str, Any]] | None = None,
    taken: str = "after-snapshot",
) -> dict[str, Any]:
    """A kstate document of the space above (defaults: busy B1, B2, B3; P pooled)."""
    blocks = blocks or FREE
    root, sh = shape
    mx = _maxes(blocks, sh)
    nodes = [
        [hex(s), hex(e), sh[i][0], sh[i][1], sh[i][2], hex(mx[i])]
        for i, (s, e) in enumerate(blocks)
    ]
    hx = lambda r, *f: [hex(r[0]), hex(r[1]), *f]  # noqa: E731
    return {
        "format": "pyvmalloc-kstate",
        "version": 1,
        "kernel": "6.18.44",
        "arch": "x86_64",
        "source": "test",
        "taken": taken,
        "attempts": 1,
        "consistent": True,
        "nr_vmap_nodes": 2,
        "free_tree": {"root": root, "nodes": nodes},
        "vmap_nodes": [
            {
                "id": 0,
                "busy": busy0 if busy0 is not None else [hx(B1, "0x100"), hx(B2, "0x100"), hx(B3)],
                "lazy": lazy0 or [],
                "pools": pools0 if pools0 is not None else [{"pages": 5, "len": 1, "areas": [hx(P)]}],
            },
            {"id": 1, "busy": busy1 or [], "lazy": [], "pools": []},
        ],
        "errors": [],
    }  # fmt: skip


def write(tmp_path: Path, d: Any, name: str = "kstate.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


# --- the reader's checks --------------------------------------------------------------


def test_a_good_file_loads_and_round_trips(tmp_path: Path) -> None:
    ks = load_kstate(write(tmp_path, doc()))
    assert ks.root == 2 and len(ks.nodes) == 4 and ks.nr_vmap_nodes == 2
    assert ks.vmap_nodes[0].busy[0] == (B1[0], B1[1], 0x100)
    assert ks.vmap_nodes[0].busy[2] == (B3[0], B3[1], None)
    assert ks.vmap_nodes[0].pools[0].areas == (P,)
    assert parse_kstate(ks.as_json()) == ks
    gz = tmp_path / "kstate.json.gz"
    dump_kstate(ks, gz)
    with gzip.open(gz) as f:
        assert f.read(2) == b'{"'
    assert load_kstate(gz) == ks


def _bad(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    *parts, last = path.split("/")
    cur: Any = d
    for p in parts:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


CASES = [
    # (mutation path, value, where the error must point, what it must say)
    ("format", "other", "format", "must be 'pyvmalloc-kstate'"),
    ("version", 2, "version", "reads version 1"),
    ("consistent", "yes", "consistent", "true or false"),
    ("taken", "later", "taken", "must be one of"),
    ("nr_vmap_nodes", 3, "vmap_nodes", "has 2 entries, nr_vmap_nodes is 3"),
    ("free_tree/nodes/1/0", "0XFFFFC90000004000", "free_tree.nodes[1][0]", "lowercase hex"),
    ("free_tree/nodes/1/0", "ffffc90000004000", "free_tree.nodes[1][0]", "lowercase hex"),
    ("free_tree/nodes/1/0", "0x1ffffc90000004000", "free_tree.nodes[1][0]", "64-bit"),
    ("free_tree/nodes/1/2", 9, "free_tree.nodes[1][2] (left)", "must be 0..3"),
    ("free_tree/nodes/1/3", 1, "free_tree.nodes[1][3] (right)", "its own child"),
    ("free_tree/nodes/1/4", "black", "free_tree.nodes[1][4] (is_black)", "true or false"),
    ("free_tree/nodes/1", [hex(H[0]), hex(H[1])], "free_tree.nodes[1]", "must be [va_start"),
    ("free_tree/root", 7, "free_tree.root", "must be 0..3"),
    ("free_tree/root", None, "free_tree.root", "is null but there are nodes"),
    ("free_tree/nodes/1/5", hex(STACK - 4096), "free_tree.nodes[1][5] (subtree_max_size)",
     "the largest block in its subtree is 0x5000"),
    ("free_tree/nodes/1/4", True, "free_tree.nodes[0]", "black heights of its subtrees differ"),
    ("free_tree/nodes/3/4", False, "free_tree.nodes[2]", "black heights"),
    ("free_tree/nodes/2/4", False, "free_tree.nodes[2]", "the root is red"),
    ("free_tree/nodes/1/1", hex(B2[1]), "free_tree.nodes[2]", "touches the previous node"),
    ("free_tree/nodes/1/1", hex(G[0] + 4096), "free_tree.nodes[2]", "overlaps the previous node"),
    ("free_tree/nodes/1/0", hex(H[0] + 1), "free_tree.nodes[1]", "not page aligned"),
    ("vmap_nodes/0/busy/0/1", hex(H[0] + 4096), "free_tree.nodes[1]", "overlaps vmap_nodes[0].busy[0]"),
    ("vmap_nodes/0/busy/1/0", hex(B1[0]), "vmap_nodes[0].busy[1]", "address-sorted"),
    ("vmap_nodes/0/lazy", [[hex(P[0]), hex(P[1])]], "vmap_nodes[0].pools[0].areas[0]", "overlaps vmap_nodes[0].lazy[0]"),
    ("vmap_nodes/0/pools/0/len", 2, "vmap_nodes[0].pools[0]", "len is 2 but the list walk found 1"),
    ("vmap_nodes/0/pools/0/pages", 4, "vmap_nodes[0].pools[0].areas[0]", "not 4 pages"),
    ("vmap_nodes/0/pools/0/pages", 257, "vmap_nodes[0].pools[0].pages", "must be 1..256"),
    ("vmap_nodes/1/id", 0, "vmap_nodes[1].id", "listed by id"),
    ("vmap_nodes/1/busy", {}, "vmap_nodes[1].busy", "must be a JSON list"),
    # va->flags: encode_vn_id(node) = (node + 1) << 8 with node < nr_vmap_nodes (2 here)
    ("vmap_nodes/0/busy/0/2", "0x300", "vmap_nodes[0].busy[0][2] (flags)", "names vmap node 2"),
    ("vmap_nodes/0/busy/1/2", "0x100000100", "vmap_nodes[0].busy[1][2] (flags)", "names vmap node"),
    ("vmap_nodes/0/busy/0/2", "0x104", "vmap_nodes[0].busy[0][2] (flags)", "bits 0x4 set"),
    ("vmap_nodes/0/busy/0/2", "0x1000", "vmap_nodes[0].busy[0][2] (flags)", "names vmap node 15"),
    ("vmap_nodes/0/busy/0/2", "200", "vmap_nodes[0].busy[0][2]", "lowercase hex"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "where", "says"), CASES)
def test_each_rule_is_checked_and_located(
    tmp_path: Path, path: str, value: Any, where: str, says: str
) -> None:
    f = write(tmp_path, _bad(doc(), path, value))
    with pytest.raises(InputError) as e:
        load_kstate(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: {where}: "), msg
    assert says in msg, msg


def test_tree_structure_errors(tmp_path: Path) -> None:
    # The children of G swapped: in-order becomes F0's subtree, G, ... out of order.
    d = _bad(doc(), "free_tree/nodes/2/2", 3)
    d = _bad(d, "free_tree/nodes/2/3", 0)
    with pytest.raises(InputError, match=r"free_tree.nodes\[3\]: is visited 0th in order"):
        parse_kstate(d)
    # F0's right child is G itself: G is reached twice (a cycle).
    d = _bad(doc(), "free_tree/nodes/0/3", 2)
    with pytest.raises(InputError, match=r"free_tree.nodes\[0\]: child 2 is reached twice"):
        parse_kstate(d)
    # H not linked from F0: unreachable.
    d = _bad(doc(), "free_tree/nodes/0/3", None)
    with pytest.raises(InputError, match=r"free_tree.nodes\[1\]: is not reachable from the root"):
        parse_kstate(d)
    # Red H given a red child: FT hung under it (and taken from G) breaks black heights
    # first at G; a red-red pair is reported where it is.
    sh = {0: (None, 1, True), 1: (None, None, False), 2: (0, 3, True), 3: (None, None, False)}
    d = doc((2, sh))
    d = _bad(d, "free_tree/nodes/0/4", False)  # F0 red over red H
    with pytest.raises(InputError, match=r"free_tree.nodes\[0\]: red node has a red child"):
        parse_kstate(d)


def test_json_errors_name_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "kstate.json"
    f.write_text('{\n  "format": "pyvmalloc-kstate",\n  "version": 1,,\n}')
    with pytest.raises(InputError, match=r"kstate.json:3: not valid JSON \(.*column 16\)"):
        load_kstate(f)
    f.write_text('{"format": "pyvmalloc-kstate", "format": "x"}')
    with pytest.raises(InputError, match="duplicate key 'format'"):
        load_kstate(f)
    f.write_text("[1, 2]")
    with pytest.raises(InputError, match="must be a JSON object"):
        load_kstate(f)
    gz = tmp_path / "kstate.json.gz"
    packed = gzip.compress(json.dumps(doc()).encode())
    gz.write_bytes(packed[:40])
    with pytest.raises(InputError, match="truncated gzip stream"):
        load_kstate(gz)
    gz.write_bytes(packed[:12] + bytes(b ^ 0x55 for b in packed[12:40]) + packed[40:])
    with pytest.raises(InputError, match=f"{gz}: (corrupt gzip|cannot read)"):
        load_kstate(gz)
    link = tmp_path / "link.json"
    link.symlink_to(f)
    with pytest.raises(InputError, match="symbolic link"):
        load_kstate(link)


def test_capture_dir_finds_and_checks_the_kstate_files(tmp_path: Path) -> None:
    (tmp_path / "trace").write_text("# tracer: nop\n")
    (tmp_path / "vmallocinfo").write_text("")
    write(tmp_path, doc())
    dump_kstate(parse_kstate(doc(taken="after-end-snapshot")), tmp_path / "kstate.end.json.gz")
    cap = load_capture_dir(tmp_path)
    ks, ke = cap.kstates()
    assert ks is not None and ke is not None and ke.taken == "after-end-snapshot"
    write(tmp_path, doc(), "kstate.json.gz")
    with pytest.raises(InputError, match=r"both kstate\.json and kstate\.json\.gz"):
        load_capture_dir(tmp_path)


# --- exact-shape seeding ----------------------------------------------------------------


def seeded(shape: tuple[int, dict[int, tuple[Any, Any, bool]]]) -> TraceHarness:
    h = TraceHarness("6.18", cpus=2)
    h.seed_kstate(parse_kstate(doc(shape)), None)
    return h


def test_fresh_model_is_vmap_init_free_space() -> None:
    # 6.18 vmap_init_free_space() (mm/vmalloc.c): free areas for the gaps of vmlist in
    # [1, ULONG_MAX); x86_64 has no early vmlist areas, so one block [1, ULONG_MAX):
    # the kernel's lowest free node starts at 1, its highest ends at ULONG_MAX.
    h = TraceHarness("6.18", cpus=2)
    assert [(va.va_start, va.va_end) for va in h.space.free] == [(1, ULONG_MAX)]


def test_the_hole_is_taken_only_on_the_descent_path() -> None:
    # A stack: size 20 KiB, align 16 KiB, full range: search length 36 KiB - 1.
    # Hole at the root: at H, the left subtree (F0, about VMALLOC_START bytes) is long
    # enough and vstart V < H's start: go left. F0 has no children and does not fit
    # (ALIGN(vstart) = V, V + 20K > F0's end V); no right subtree: roll back to H. H
    # fits (ALIGN(V+16K) = V+16K, V+36K <= H's end): the kernel returns V+16K.
    # (The CPU 1 request goes to node 1, whose pools are empty: a tree search.)
    a = seeded(HOLE_AT_ROOT)
    va = a.alloc(STACK, ALIGN, V, VEND, cpu=1)
    assert va.va_start == V + 16 * K
    # Hole as a leaf: at G, left subtree F0+H is long enough, vstart < G's start: go
    # to F0. F0 does not fit; its right subtree is H alone, 20 KiB < 36K - 1: not
    # entered. Roll back: G fits at ALIGN(V+64K) = V+64K. H is never visited.
    b = seeded(HOLE_AS_LEAF)
    vb = b.alloc(STACK, ALIGN, V, VEND, cpu=1)
    assert vb.va_start == V + 64 * K
    # And node 0's CPU takes its pool head P (16 KiB aligned) without a search.
    assert b.alloc(STACK, ALIGN, V, VEND, cpu=0).va_start == P[0]
    for h in (a, b):
        h.kernel.check()


def test_seeded_tree_is_the_kernels_node_by_node() -> None:
    for shape in (HOLE_AT_ROOT, HOLE_AS_LEAF):
        want = parse_kstate(doc(shape))
        got = kstate_of(seeded(shape).kernel)
        assert got.root == want.root
        assert got.nodes == want.nodes  # ranges, children, colours, subtree_max_size
        assert got.vmap_nodes[0].pools == want.vmap_nodes[0].pools
        diff = compare_kstate(got, want)
        assert diff["free_agree"] == 4 and diff["pool_agree"] == 1
        assert diff["free_position_differs"] == diff["free_color_differs"] == 0
    # The two shapes hold the same blocks; the comparison sees where they differ:
    # F0 hangs left of H vs left of G, H is the root vs F0's right child, G is H's
    # right child vs the root; FT is G's right child in both, but red vs black, and H
    # is black vs red. So 3 positions and 2 colours differ, and no node agrees fully.
    d = compare_kstate(kstate_of(seeded(HOLE_AT_ROOT).kernel), parse_kstate(doc(HOLE_AS_LEAF)))
    assert d["free_only_model"] == d["free_only_kernel"] == 0
    assert d["free_position_differs"] == 3 and d["free_color_differs"] == 2
    assert d["free_agree"] == 0


def test_seed_refuses_what_it_cannot_hold_and_leaves_the_model_alone() -> None:
    h = TraceHarness("6.18", cpus=2)
    with pytest.raises(InputError, match="with 2 vmap nodes; this model has 1"):
        TraceHarness("6.18", cpus=1).seed_kstate(parse_kstate(doc()), None)
    gap = doc(pools0=[])  # P in no structure: an area in a purge when read
    with pytest.raises(InputError, match=f"{P[0]:#x}-{P[1]:#x} is in none of"):
        h.seed_kstate(parse_kstate(gap), None)
    wrong = doc(busy0=[[hex(B1[0]), hex(B1[1])], [hex(B2[0]), hex(B2[1])]],
                busy1=[[hex(B3[0]), hex(B3[1])]])  # fmt: skip
    with pytest.raises(InputError, match=r"busy .* belongs to node 0"):
        h.seed_kstate(parse_kstate(wrong), None)
    lazy = doc(busy0=[[hex(B1[0]), hex(B1[1])], [hex(B2[0]), hex(B2[1])]],
               lazy0=[[hex(B3[0]), hex(B3[1]), "0x200"]])  # fmt: skip
    with pytest.raises(InputError, match="send it to node 1's list"):
        h.seed_kstate(parse_kstate(lazy), None)
    assert [(va.va_start, va.va_end) for va in h.space.free] == [(1, ULONG_MAX)]
    h.kernel.check()


def test_shape_builder_refuses_what_is_not_a_red_black_tree() -> None:
    from pyvmalloc.errors import InvariantError
    from pyvmalloc.rbtree import RBNode, RBRoot, RBTreeError, rb_build

    nodes = [RBNode() for _ in range(3)]
    with pytest.raises(RBTreeError, match="node 0 has two parents"):
        rb_build(RBRoot(), nodes, 1, [(None, None), (0, 2), (0, None)], [True] * 3)
    with pytest.raises(RBTreeError, match="node 1 has two parents"):  # the root as a child
        rb_build(RBRoot(), nodes, 1, [(None, 1), (None, None), (None, None)], [True] * 3)
    root = RBRoot()
    rb_build(root, nodes, 1, [(None, None), (0, 2), (None, None)], [True, True, True])
    assert root.rb_node is nodes[1] and nodes[0].rb_parent is nodes[1]
    with pytest.raises(RBTreeError, match="not empty"):
        rb_build(root, nodes, 1, [(None, None), (0, 2), (None, None)], [True] * 3)
    # FreeTree.seed_shape computes subtree_max_size and checks the red-black rules.
    tree = TraceHarness("6.18", cpus=2).space.free
    with pytest.raises(InvariantError, match="free tree: black height"):
        tree.seed_shape([F0, H, G], 1, [(None, None), (0, 2), (None, None)], [True, True, False])
    assert [(va.va_start, va.va_end) for va in tree] == [(1, ULONG_MAX)]  # unchanged
    areas = tree.seed_shape(
        [F0, H, G], 1, [(None, None), (0, 2), (None, None)], [False, True, False]
    )
    assert [va.subtree_max_size for va in areas] == [V - 1, V - 1, 64 * K]


_ROUND_TRIP = r"""
import json, random
from pyvmalloc import _accel
from pyvmalloc.trace.harness import TraceHarness
from pyvmalloc.trace.kstate import kstate_of, parse_kstate
h = TraceHarness("6.18", cpus=2)
sp = h.space
rng = random.Random(7)
live = []
for i in range(2500):
    if live and rng.random() < 0.45:
        h.free(live.pop(rng.randrange(len(live))).va_start, rng.randrange(2))
    else:
        size = rng.choice([2, 3, 5, 5, 9, 17]) * 4096
        va = h.alloc(size, 16384 if size == 20480 else 4096, sp.vmalloc_start,
                     sp.vmalloc_end, rng.randrange(2))
        live.append(va)
    if i % 600 == 599:
        h.purge(None, False)
ks = kstate_of(h.kernel)
again = TraceHarness("6.18", cpus=2)
again.seed_kstate(parse_kstate(ks.as_json()), None)
again.kernel.check()
print(json.dumps({"accel": _accel.ACCELERATED, "same": kstate_of(again.kernel) == ks,
                  "doc": ks.as_json()}))
"""


def test_round_trip_gives_an_identical_tree_pure_and_accelerated(
    fresh_python: Callable[..., str],
) -> None:
    pure = json.loads(fresh_python("-c", _ROUND_TRIP, pure=True, timeout=300))
    assert pure["accel"] is False and pure["same"] is True
    assert len(pure["doc"]["free_tree"]["nodes"]) > 50
    assert any(vn["pools"] for vn in pure["doc"]["vmap_nodes"])
    if not _accel.ACCELERATED:
        pytest.skip("no compiled accelerator")
    fast = json.loads(fresh_python("-c", _ROUND_TRIP, pure=False, timeout=300))
    assert fast["accel"] is True and fast["same"] is True
    assert fast["doc"] == pure["doc"]  # the same workload builds the same tree


# --- a replay seeded from kstate -------------------------------------------------------


class Trace:
    """A 6.18 trace written event by event, 1 ms apart (2 CPUs)."""

    def __init__(self) -> None:
        self.lines = ["# tracer: nop", "#"]
        self.t = 100.0

    def _tick(self) -> float:
        self.t += 0.001
        return self.t

    def marker(self, name: str) -> None:
        self.lines.append(
            f"       pyvmalloc-1       [000] ...1. {self._tick():>12.6f}: "
            f"tracing_mark_write: pyvmalloc: {name}"
        )

    def alloc(self, addr: int, size: int, align: int, cpu: int) -> None:
        ev = AllocVmapArea(
            addr=addr, size=size, align=align, vstart=V, vend=VEND, failed=0, cpu=cpu,
            task="t", pid=10, timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))

    def free(self, addr: int, nr_lazy: int) -> None:
        ev = FreeVmapAreaNoflush(
            va_start=addr, nr_lazy=nr_lazy, nr_lazy_max=16384, cpu=0, task="t", pid=10,
            timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))


def capture(tmp_path: Path, shape: Any = HOLE_AS_LEAF) -> Path:
    """A capture of the hand-built kernel (tree with the hole as a leaf, P pooled).

    Trace: the snapshot; X, a 128 KiB allocation (only FT is long enough and can
    hold it at or above vstart: FT's bottom V+164K); the kstate readout, during which
    B1 and B2 are freed (B1 before its node was read: lazy in kstate; B2 after: still
    busy there); then a stack on CPU 0 (node 0's pool head P) and one on CPU 1 (node 1
    has no pool: the tree search of test_the_hole_is_taken_only_on_the_descent_path,
    V+64K); then the end readout.
    """
    d = tmp_path / "cap"
    d.mkdir()
    X = (FT[0], FT[0] + 128 * K)
    tr = Trace()
    tr.marker("snapshot-begin")
    tr.marker("snapshot-end")
    tr.alloc(X[0], 128 * K, 4096, cpu=0)
    tr.marker("kstate-begin")
    tr.free(B1[0], nr_lazy=4)
    tr.free(B2[0], nr_lazy=11)
    tr.marker("kstate-end")
    tr.alloc(P[0], STACK, ALIGN, cpu=0)
    tr.alloc(G[0], STACK, ALIGN, cpu=1)
    tr.marker("end-kstate-begin")
    tr.marker("end-kstate-end")
    (d / "trace").write_text("\n".join(tr.lines) + "\n")
    (d / "vmallocinfo").write_text(
        "".join(
            f"{s:#x}-{e:#x} {e - s:>8} kernel_clone+0xb8/0x400 pages={(e - s) // 4096 - 1} vmalloc\n"
            for s, e in (B1, B2, B3)
        )
    )
    (d / "meta.json").write_text(json.dumps({"drop_caches": True, "cpus_possible": [0, 1]}))
    hx = lambda r, *f: [hex(r[0]), hex(r[1]), *f]  # noqa: E731
    ft = (X[1], ULONG_MAX)
    start = doc(
        shape,
        blocks=[F0, H, G, ft],
        busy0=[hx(B2, "0x100"), hx(B3, "0x100"), hx(X, "0x100")],
        lazy0=[hx(B1, "0x100")],
    )
    write(d, start)
    # At the end: P and the CPU 1 stack busy (the latter in node 1's zone, flags of
    # node 1), G clipped from the left (LE fit: same node, same place), no pools.
    g2 = (G[0] + STACK, G[1])
    end = doc(
        shape,
        blocks=[F0, H, g2, ft],
        busy0=[hx(B3, "0x100"), hx(P, "0x100"), hx(X, "0x100")],
        busy1=[hx((G[0], g2[0]), "0x200")],
        lazy0=[hx(B1, "0x100"), hx(B2, "0x100")],
        pools0=[],
        taken="after-end-snapshot",
    )
    write(d, end, "kstate.end.json")
    return d


def test_replay_seeded_from_kstate_agrees_where_the_snapshot_cannot(tmp_path: Path) -> None:
    d = capture(tmp_path)
    cap = load_capture_dir(d)
    ks, ke = cap.kstates()
    meta = cap.meta
    res = replay(cap.trace, cap.snapshot, meta=meta, kstate=ks, kstate_end=ke)
    assert res.seed == "kstate" and res.seed_note == ""
    assert res.skipped_before_snapshot == 1  # X: reflected in kstate
    assert (res.window_reflected, res.window_applied) == (1, 1)  # B1 lazy, B2 applied
    assert (res.allocs_compared, res.allocs_matched) == (2, 2)
    assert res.known_compared == 2 and res.agreement_known == 1.0
    assert res.lazy_drift == 0
    e = res.end_kstate
    assert e is not None
    assert e["free_agree"] == e["free_nodes_kernel"] == 4
    assert e["pool_only_model"] == e["pool_only_kernel"] == e["busy_node_differs"] == 0
    # From the snapshot alone, P looks free (pools are invisible in vmallocinfo), and
    # the model's tree, rebuilt by clipping the snapshot's areas, has H at the root.
    # X is compared: the model's lowest block of 128 KiB is P+FT merged, from V+144K;
    # the kernel's was FT, from V+164K. The CPU 0 stack: the kernel takes its pool head
    # V+144K, the model (no pool) searches its tree and finds H, V+16K. Only then does
    # the model learn H is off the kernel's path (and gets the CPU 1 stack right).
    snap = replay(cap.trace, cap.snapshot, meta=meta)
    assert snap.seed == "snapshot"
    assert snap.allocs_compared == 3
    assert [(m.kernel, m.model) for m in snap.mismatches] == [(FT[0], P[0]), (P[0], H[0])]


def test_a_mismatch_on_a_fact_the_readout_gave_is_a_rule_difference(tmp_path: Path) -> None:
    # The same trace, but the readout says the hole is at the root: by the kernel's
    # rules the CPU 1 stack would then take H (V+16K), yet the trace says G. The shape
    # was read, not guessed: the disagreement is the rules' (or the readout's), and
    # it is not excluded from the known part.
    cap = load_capture_dir(capture(tmp_path, HOLE_AT_ROOT))
    ks, ke = cap.kstates()
    res = replay(cap.trace, cap.snapshot, meta=cap.meta, kstate=ks, kstate_end=ke)
    assert res.seed == "kstate"
    assert [(m.kernel, m.model) for m in res.mismatches] == [(G[0], H[0])]
    m = res.mismatches[0]
    assert m.cause_class == "rule difference" and "although kstate.json gave it" in m.cause
    assert res.known_compared == 2 and res.agreement_known == 0.5


def test_cli_uses_kstate_unless_told_not_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyvmalloc.cli import main

    d = capture(tmp_path)
    assert main(["replay", str(d), "--json", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr().out
    assert "2/2 allocations agree" in out and "seeded from" in out and "kstate.json" in out
    assert "free tree vs the kernel's kstate.end: 4/4 nodes agree" in out
    k = json.loads((tmp_path / "k.json").read_text())
    assert k["seed"] == "kstate" and k["end_kstate"]["free_agree"] == 4
    assert main(["replay", str(d), "--no-kstate"]) == 0
    out = capsys.readouterr().out
    assert "1/3 allocations agree" in out and "the snapshot" in out
    # A readout that raced on every attempt is not trusted: the snapshot seeds, and
    # the summary says why.
    bad = json.loads((d / "kstate.json").read_text())
    bad["consistent"], bad["attempts"] = False, 5
    (d / "kstate.json").write_text(json.dumps(bad))
    assert main(["replay", str(d)]) == 0
    out = capsys.readouterr().out
    assert "1/3 allocations agree" in out and "every readout raced (5 attempts)" in out
    # A broken file is an input error (exit status 2), not a silent fallback.
    (d / "kstate.json").write_text("{")
    assert main(["replay", str(d)]) == 2
    assert "kstate.json:1: not valid JSON" in capsys.readouterr().err


# --- a real readout ---------------------------------------------------------------------

SAMPLE = Path(__file__).parent.parent / "data" / "kstate" / "sample-6.18.44.json.gz"


def _lowest_match(ks: Any, size: int, align: int, vstart: int) -> int | None:
    """find_vmap_lowest_match over the readout itself (6.18 rules, see the module
    docstring), returning the address ``__alloc_vmap_area`` would use."""
    nodes = ks.nodes
    parent: dict[int, int] = {}
    for i, n in enumerate(nodes):
        for c in (n.left, n.right):
            if c is not None:
                parent[c] = i

    def fits(i: int, vstart: int) -> int | None:
        s = max(nodes[i].va_start, vstart)
        nva = (s + align - 1) & ~(align - 1)
        return nva if nva >= vstart and nva + size <= nodes[i].va_end else None

    def msz(i: int | None) -> int:
        return 0 if i is None else nodes[i].subtree_max_size

    length = size + align - 1 if align > 4096 else size  # adjust_search_size
    i: int | None = ks.root
    while i is not None:
        n = nodes[i]
        if msz(n.left) >= length and vstart < n.va_start:
            i = n.left
            continue
        if fits(i, vstart) is not None:
            return fits(i, vstart)
        if msz(n.right) >= length:
            i = n.right
            continue
        while True:
            i = parent.get(i)  # type: ignore[arg-type]
            if i is None:
                return None
            if fits(i, vstart) is not None:
                return fits(i, vstart)
            if msz(nodes[i].right) >= length and vstart <= nodes[i].va_start:
                vstart = nodes[i].va_start + 1
                i = nodes[i].right
                break
    return None


def test_a_real_readout_seeds_a_model_that_searches_the_kernels_tree() -> None:
    # Read by kread's BPF peek on this machine (6.18.44, 2 vmap nodes), standalone.
    ks = load_kstate(SAMPLE)
    assert ks.consistent and ks.nr_vmap_nodes == 2 and len(ks.nodes) > 500
    # vmap_init_free_space: the lowest free node starts at 1, the highest ends at
    # ULONG_MAX (everything below VMALLOC_START is one free block on x86_64).
    assert (ks.nodes[0].va_start, ks.nodes[0].va_end) == (1, V)
    assert ks.nodes[-1].va_end == ULONG_MAX
    h = TraceHarness("6.18", cpus=2)
    seed = h.seed_kstate(ks, None)
    assert seed.free == len(ks.nodes) and seed.pooled > 100
    h.kernel.check()
    model = kstate_of(h.kernel)
    assert model.nodes == ks.nodes and model.root == ks.root
    d = compare_kstate(model, ks)
    assert d["free_agree"] == len(ks.nodes) and d["pool_agree"] == seed.pooled
    # Requests that node 1's pools cannot serve (CPU 1, no pool of that size) search
    # the tree: each lands where the kernel's own search over the readout would.
    pools1 = {p.pages for p in ks.vmap_nodes[1].pools}
    checked = 0
    for pages, align in ((5, 16 * K), (2, 8 * K), (17, 64 * K), (1025, 2 << 20), (7, 4 * K)):
        if pages in pools1:
            continue
        want = _lowest_match(ks, pages * 4096, align, V)
        got = TraceHarness("6.18", cpus=2)
        got.seed_kstate(ks, None)
        va = got.alloc(pages * 4096, align, V, VEND, cpu=1)
        assert va.va_start == want, (pages, align)
        checked += 1
    assert checked >= 3
    # The shape matters here: the lowest 16 KiB-aligned slot of 5 pages in address
    # order (a linear scan) lies below what the kernel's descent finds.
    linear = min(
        (n.va_start + ALIGN - 1) & ~(ALIGN - 1)
        for n in ks.nodes
        if n.va_start >= V and ((n.va_start + ALIGN - 1) & ~(ALIGN - 1)) + STACK <= n.va_end
    )
    assert linear < _lowest_match(ks, STACK, ALIGN, V)  # type: ignore[operator]


# --- real captures with kstate (kread's, tests/data/kstate/<name>) -------------------

KSTATE_CAPTURES = Path(__file__).parent.parent / "data" / "kstate"


@pytest.mark.parametrize("name", ["bpf-churn", "bpf-churn-nodrop"])
def test_real_capture_with_kstate(name: str) -> None:
    d = KSTATE_CAPTURES / name
    if not (d / "kstate.json.gz").exists():
        pytest.skip(f"{d} is recorded on the kread branch (merged into main)")
    cap = load_capture_dir(d)
    ks, ke = cap.kstates()
    res = replay(
        cap.trace, cap.snapshot, meta=cap.meta, kstate=ks, kstate_end=ke,
        end_snapshot=cap.end_snapshot,
    )  # fmt: skip
    assert res.seed == "kstate", res.seed_note
    assert res.allocs_compared > 150
    assert res.agreement >= 0.99 and res.agreement_known >= 0.99
    assert res.lazy_drift == 0
    # The final free tree, after the trace's frees, merges, clips and purges, is the
    # kernel's node by node: every node under the same parent, on the same side, with
    # the same colour (the model's fix-ups are lib/rbtree.c's), and the pools agree.
    e = res.end_kstate
    assert e is not None and e["free_nodes_kernel"] > 100
    assert e["free_agree"] == e["free_nodes_kernel"] == e["free_nodes_model"]
    assert e["pool_only_model"] == e["pool_only_kernel"] == e["pool_moved"] == 0
    # The readouts carry va->flags: every busy area's allocating node was read, none
    # guessed, and at the end each one agrees with the kernel's (with the flags
    # stripped from kstate.json, the address-zone guess is wrong for 130 and 124).
    assert all(len(a) == 3 for vn in ks.as_json()["vmap_nodes"] for a in vn["busy"])
    assert e["busy_node_differs"] == 0
    # Without the readout the replay has to guess the pools and the tree.
    snap = replay(cap.trace, cap.snapshot, meta=cap.meta)
    assert snap.agreement <= res.agreement


def test_mutated_readouts_give_input_errors_never_tracebacks() -> None:
    """Random damage to a real readout: each result is a KState or an InputError."""
    import random

    raw = gzip.decompress(SAMPLE.read_bytes())
    rng = random.Random(2026)
    junk: list[Any] = [None, True, -1, 0, 1 << 70, 1.5, "", "0x", "0xg", "0x" + "f" * 17,
                       [], {}, [None] * 6, {"pages": 1}, "0x1000"]  # fmt: skip
    errors = loaded = 0
    for _ in range(200):
        d = json.loads(raw)
        for _ in range(rng.randint(1, 3)):
            # Walk to a random container and damage one of its members.
            cur: Any = d
            for _ in range(rng.randint(0, 4)):
                kids = list(cur.values()) if isinstance(cur, dict) else cur
                kids = [k for k in kids if isinstance(k, (dict, list)) and k]
                if not kids:
                    break
                cur = rng.choice(kids)
            if isinstance(cur, dict) and cur:
                k = rng.choice(list(cur))
                if rng.random() < 0.2:
                    del cur[k]
                else:
                    cur[k] = rng.choice(junk)
            elif isinstance(cur, list) and cur:
                i = rng.randrange(len(cur))
                op = rng.random()
                if op < 0.2:
                    del cur[i]
                elif op < 0.4:
                    cur.append(copy.deepcopy(cur[i]))
                else:
                    cur[i] = rng.choice(junk)
        try:
            parse_kstate(d, path="k.json")
            loaded += 1
        except InputError as e:
            assert str(e).startswith("k.json: ")
            errors += 1
    assert errors > 120 and loaded > 0  # some damage hits informational fields only


# --- va->flags: the node that allocated a busy area --------------------------------------
#
# 6.18 (mm/vmalloc.c): alloc_vmap_area stores ``va_flags | encode_vn_id(cpu % nr)``
# in va->flags for a request of the whole vmalloc range (node_alloc; encode_vn_id(n) =
# (n + 1) << 8), while the area is linked into the busy tree of ``addr_to_node``, the
# node of its address zone (64 KiB zones here, alternating). free_vmap_area_noflush
# puts the freed area on the lazy list of ``decode_vn_id(va->flags)`` when that id is
# valid (else the address's node), and purge_vmap_node offers each area to that node's
# pool (node_pool_add_va, pool[pages - 1]) only when the id is valid. node_alloc then
# serves a request of the whole range, align <= the area's alignment, from the pool of
# the CPU's node, head first.
#
# The hand-built case: B1 [V, V+16K) lies in node 0's zone (and busy list) but was
# allocated on CPU 1: flags 0x200. It is freed (on CPU 0: the freeing CPU does not
# matter), a purge follows, then CPU 1 asks for 16 KiB, align PAGE_SIZE, whole range.
# Kernel: B1 went to node 1's lazy list, then into node 1's pool[3] (4 pages);
# node_alloc on CPU 1 (node 1) takes pool[3]'s head: B1, address V.
# Without the flags the model can only guess the address zone's node 0: B1 goes into
# node 0's pool, node 1's pool[3] is empty, and the tree search (find_vmap_lowest_match,
# length 16K, see the module docstring) on HOLE_AS_LEAF goes from G left to F0, which
# cannot hold 16K at or above V, then right to H, which can: V+16K.

PAGE = 4096
B1_FROM_CPU1 = [hex(B1[0]), hex(B1[1]), "0x200"]


def _b1_doc(flags: bool) -> dict[str, Any]:
    b1 = B1_FROM_CPU1 if flags else [hex(B1[0]), hex(B1[1])]
    return doc(busy0=[b1, [hex(B2[0]), hex(B2[1]), "0x100"], [hex(B3[0]), hex(B3[1]), "0x100"]])


def test_flags_send_a_pre_snapshot_area_to_its_allocating_nodes_pool() -> None:
    h = TraceHarness("6.18", cpus=2)
    seed = h.seed_kstate(parse_kstate(_b1_doc(True)), None)
    assert seed.guessed == []  # every busy area's node was read
    b1 = h.space.find_vmap_area(B1[0])
    assert b1 is not None and b1.flags == 0x200
    assert h.space.addr_to_node_id(B1[0]) == 0  # in node 0's zone and busy tree
    assert h.free(B1[0], cpu=0)
    assert [(va.va_start, h.space.lazy_node_of(va)) for va in h.space.lazy] == [(B1[0], 1)]
    h.purge(None, False)
    assert [(va.va_start, va.va_end) for va in h.space.nodes[1].pools[3]] == [B1]
    assert h.alloc(16 * K, PAGE, V, VEND, cpu=1).va_start == V
    h.kernel.check()
    # Without flags: the address zone's node is the guess, and the same steps end in H.
    g = TraceHarness("6.18", cpus=2)
    seed = g.seed_kstate(parse_kstate(_b1_doc(False)), None)
    assert [(va.va_start, va.flags) for va in seed.guessed] == [(B1[0], 0x100)]
    assert g.free(B1[0], cpu=0)
    g.purge(None, False)
    assert [(va.va_start, va.va_end) for va in g.space.nodes[0].pools[3]] == [B1]
    assert g.alloc(16 * K, PAGE, V, VEND, cpu=1).va_start == H[0]
    g.kernel.check()


def test_flags_as_read_keep_vmap_ram_and_block_bits() -> None:
    # A vm_map_ram block of node 1 in node 0's zone: VMAP_RAM | VMAP_BLOCK | 2 << 8.
    d = doc(busy0=[[hex(B1[0]), hex(B1[1]), "0x203"], [hex(B2[0]), hex(B2[1])],
                   [hex(B3[0]), hex(B3[1]), "0x0"]])  # fmt: skip
    h = TraceHarness("6.18", cpus=2)
    seed = h.seed_kstate(parse_kstate(d), None)
    flags = {va.va_start: va.flags for va in h.space.busy_areas()}
    # B2 without flags: the address-zone guess; B3 with "no node" (0) stays untagged.
    assert flags == {B1[0]: 0x203, B2[0]: 0x100, B3[0]: 0x0}
    assert [va.va_start for va in seed.guessed] == [B2[0]]
    assert kstate_of(h.kernel).vmap_nodes[0].busy == (
        (B1[0], B1[1], 0x203), (B2[0], B2[1], 0x100), (B3[0], B3[1], 0x0),
    )  # fmt: skip


def test_seed_refuses_flags_naming_a_node_the_model_lacks() -> None:
    import dataclasses

    good = parse_kstate(_b1_doc(True))
    vn0 = good.vmap_nodes[0]
    bad_busy = dataclasses.replace(vn0, busy=((B1[0], B1[1], 0x300), *vn0.busy[1:]))
    ks = dataclasses.replace(good, vmap_nodes=(bad_busy, *good.vmap_nodes[1:]))
    h = TraceHarness("6.18", cpus=2)
    with pytest.raises(InputError, match=r"vmap_nodes\[0\]\.busy\[0\]\[2\] \(flags\): 0x300 names "
                       r"vmap node 2; this model has 2"):  # fmt: skip
        h.seed_kstate(ks, None)
    bad_lazy = dataclasses.replace(vn0, lazy=((P[1], P[1] + 4 * PAGE, 0x500),))
    ks = dataclasses.replace(good, vmap_nodes=(bad_lazy, *good.vmap_nodes[1:]))
    with pytest.raises(InputError, match=r"vmap_nodes\[0\]\.lazy\[0\]\[2\] \(flags\): 0x500"):
        h.seed_kstate(ks, None)
    assert [(va.va_start, va.va_end) for va in h.space.free] == [(1, ULONG_MAX)]
    h.kernel.check()


def _b1_capture(tmp_path: Path, flags: bool) -> Path:
    """The case above as a capture: snapshot, readout, free B1, purge, the CPU 1 request."""
    d = tmp_path / ("flags" if flags else "noflags")
    d.mkdir()
    tr = Trace()
    for m in ("snapshot-begin", "snapshot-end", "kstate-begin", "kstate-end"):
        tr.marker(m)
    tr.free(B1[0], nr_lazy=4)
    ev = PurgeVmapAreaLazy(start=B1[0], end=B1[1], npurged=1, cpu=0, task="t", pid=10,
                           timestamp=tr._tick())  # fmt: skip
    tr.lines.append(str(ev))
    tr.alloc(V, 16 * K, PAGE, cpu=1)
    (d / "trace").write_text("\n".join(tr.lines) + "\n")
    (d / "vmallocinfo").write_text(
        "".join(
            f"{s:#x}-{e:#x} {e - s:>8} kernel_clone+0xb8/0x400 pages={(e - s) // 4096 - 1} vmalloc\n"
            for s, e in (B1, B2, B3)
        )
    )
    (d / "meta.json").write_text(json.dumps({"drop_caches": True, "cpus_possible": [0, 1]}))
    write(d, _b1_doc(flags))
    return d


def test_replay_knows_the_node_of_a_pre_snapshot_area_from_its_flags(tmp_path: Path) -> None:
    for flags in (True, False):
        cap = load_capture_dir(_b1_capture(tmp_path, flags))
        ks, _ = cap.kstates()
        res = replay(cap.trace, cap.snapshot, meta=cap.meta, kstate=ks)
        assert res.seed == "kstate" and res.allocs_compared == 1
        if flags:
            # The node was read, not guessed: the match counts as fully known.
            assert res.mismatches == [] and res.known_compared == 1
            assert res.agreement_known == 1.0
        else:
            # The guess (node 0) was wrong: a hidden-state mismatch, outside the known part.
            assert [(m.kernel, m.model) for m in res.mismatches] == [(V, H[0])]
            assert res.mismatches[0].cause_class == "hidden state"
            assert res.known_compared == 0


def test_a_pool_hit_on_another_nodes_pooled_area_the_readout_gave_is_a_rule_difference(
    tmp_path: Path,
) -> None:
    # The readout puts P in node 0's pool[4]. By the kernel's rules CPU 1 takes node
    # 1's pool (empty) and then the tree; the trace says P. P's node was read, not
    # guessed, so the disagreement stays in the part where the state was fully known.
    d = tmp_path / "pooled"
    d.mkdir()
    tr = Trace()
    for m in ("snapshot-begin", "snapshot-end", "kstate-begin", "kstate-end"):
        tr.marker(m)
    tr.alloc(P[0], STACK, ALIGN, cpu=1)
    (d / "trace").write_text("\n".join(tr.lines) + "\n")
    (d / "vmallocinfo").write_text(
        "".join(
            f"{s:#x}-{e:#x} {e - s:>8} kernel_clone+0xb8/0x400 pages={(e - s) // 4096 - 1} vmalloc\n"
            for s, e in (B1, B2, B3)
        )
    )
    (d / "meta.json").write_text(json.dumps({"drop_caches": True, "cpus_possible": [0, 1]}))
    write(d, doc())
    cap = load_capture_dir(d)
    ks, _ = cap.kstates()
    res = replay(cap.trace, cap.snapshot, meta=cap.meta, kstate=ks)
    assert res.seed == "kstate"
    assert [m.kernel for m in res.mismatches] == [P[0]]
    m = res.mismatches[0]
    assert m.cause_class == "rule difference" and "although kstate.json gave it" in m.cause
    assert m.cause_key == f"pooled-node:{P[0]:#x}"
    assert res.known_compared == 1 and res.agreement_known == 0.0
