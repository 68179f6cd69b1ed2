"""The explorer's data: the model's vmap space and a replay's timeline as plain JSON.

``pyvmalloc explore CAPTURE -o FILE.html`` replays a capture and writes one
self-contained page (see :mod:`pyvmalloc.report.explore_html`); ``--tour`` runs a
seeded walk through the vmalloc API instead, with each call's call tree;
``--png FILE.png`` draws the final address-space map (:mod:`pyvmalloc.report.explore_png`).

Everything the page shows is built here, from the model's state as
:func:`snapshot_state` reads it. That function (and its private helpers right below
it) is the only code that touches the model's objects, so changes inside the
allocator or the replay engine need one place updated.

The page works in **page offsets from VMALLOC_START** (JavaScript numbers hold 53
bits; kernel addresses need 64), and turns them back into kernel-style hex addresses
for display. An area is a record ``[kind, start, end, ...]``:

* ``["b", s, e, node, caller, vm_flags, va_flags, nr_pages, guard]`` — a busy
  ``vmap_area`` (``node`` is its busy tree's ``vmap_node``; ``caller`` indexes the
  string table; ``guard`` is 1 for a known guard page, 2 for an assumed one, 0 for
  none);
* ``["f", s, e]`` — a free block of ``free_vmap_area_root`` (clipped to the vmalloc
  range);
* ``["l", s, e, node]`` — a lazily freed area on ``vmap_node[node]``'s purge list;
* ``["p", s, e, node, i, seq]`` — an area in ``vmap_node[node].pool[i]``; sorted by
  ``seq``, highest first, the pool reads in LIFO order from its head (the next one
  handed out). ``seq`` survives pushes and pops at either end, so a pool hit changes
  one record, not the whole pool;
* ``["u", s, e, node]`` — an area a purge has detached and not yet returned.

The timeline is the state after the first event plus, per later event, the records
it added and removed (removals carry the whole record, so the page can step
backwards as cheaply as forwards).
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import io
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyvmalloc.config import PAGE_SHIFT, PAGE_SIZE
from pyvmalloc.vmalloc import (
    VM_NO_GUARD,
)
from pyvmalloc.vmap.area import VMAP_RAM

__all__ = [
    "GUARD_ASSUMED",
    "GUARD_KNOWN",
    "GUARD_NONE",
    "Timeline",
    "build_replay_data",
    "build_tour_data",
    "snapshot_state",
]

GUARD_NONE = 0
GUARD_KNOWN = 1
#: No ``vm_struct`` says (a replay's areas): get_vm_area adds one unless VM_NO_GUARD.
GUARD_ASSUMED = 2

#: Allocations the timeline keeps a free-tree descent for: a sample of all, and the
#: first disagreeing ones.
MAX_WALKS = 200
MAX_MISMATCH_WALKS = 150
#: Free-tree snapshots kept along the timeline (plus the last state): as many as fit
#: in about TREE_BYTES of page, between these bounds.
TREE_SNAPSHOTS = (8, 400)
TREE_BYTES = 1_200_000
#: Free-tree snapshots kept just before disagreeing allocations (the first ones).
TREE_AT_MISMATCHES = 20

Rec = tuple[Any, ...]


# ----------------------------------------------------------------------------------
# The adapter: the only code that reads the model's objects
# ----------------------------------------------------------------------------------
def snapshot_state(
    k: Any,
    *,
    window: tuple[int, int] | None = None,
    pools: Iterable[tuple[int, int]] | None = None,
    tree: bool = False,
    search: tuple[int, int, int, int, int] | None = None,
) -> dict[str, Any]:
    """Read the state of ``k``'s vmap allocator into plain tuples.

    Without ``window`` every busy area, free block, lazily freed and pooled area is
    listed. With ``window=(lo, hi)`` only busy areas and free blocks overlapping it
    are (found by descending the trees), plus cheap fingerprints of the lazy and
    pool lists that tell whether they changed; ``pools`` lists the ``(node, i)``
    pools to read in full. ``tree=True`` adds ``free_vmap_area_root`` node by node;
    ``search=(size, align, vstart, vend, cpu)`` adds the path
    ``find_vmap_lowest_match`` would take for that request now (and the pool head
    ``node_alloc`` would look at first).

    Areas are ``(va_start, va_end, ...)`` in absolute addresses. ``k`` is a
    :class:`~pyvmalloc.kernel.Kernel`, or what holds one as ``.kernel`` (the replay's
    trace harness, which its observer is handed).
    """
    k = getattr(k, "kernel", k)
    space = k.vmap_space
    profile = k.profile
    nr_nodes = len(space.nodes)
    zone = getattr(space, "vmap_zone_size", 16 * PAGE_SIZE if nr_nodes > 1 else 1)
    has_tree = space.free_root.rb_node is not None
    out: dict[str, Any] = {
        "profile": profile.name,
        "cpus": k.machine.cpus_online,
        "vmalloc_start": space.vmalloc_start,
        "vmalloc_end": space.vmalloc_end,
        "nr_nodes": nr_nodes,
        "zone_size": zone,
        "has_tree": has_tree,
        "nr_busy": getattr(space, "nr_busy", None),
        "nr_free": getattr(space, "nr_free", None),
        "vmap_lazy_nr": getattr(space, "vmap_lazy_nr", None),
    }

    def busy_rec(va: Any, node: int) -> Rec:
        vm = va.vm
        if vm is not None:
            guard = GUARD_NONE if vm.flags & VM_NO_GUARD else GUARD_KNOWN
            return (
                va.va_start,
                va.va_end,
                node,
                vm.caller,
                vm.flags,
                va.flags,
                vm.nr_pages,
                guard,
            )
        guard = GUARD_NONE if va.flags & VMAP_RAM else GUARD_ASSUMED
        return (va.va_start, va.va_end, node, None, 0, va.flags, 0, guard)

    lazy = space.lazy
    out["lazy_fp"] = (
        len(lazy),
        lazy[0].va_start if lazy else 0,
        lazy[-1].va_start if lazy else 0,
    )
    out["lazy_tail"] = (
        (lazy[-1].va_start, lazy[-1].va_end, space.lazy_node_of(lazy[-1])) if lazy else None
    )
    fp: dict[tuple[int, int], tuple[int, int, int]] = {}
    for vn in space.nodes:
        for idx, pool in vn.pools.items():
            if pool:
                fp[(vn.id, idx)] = (len(pool), pool[0].va_start, pool[-1].va_start)
    out["pool_fp"] = fp
    in_purge = getattr(space, "in_purge", [])
    out["purging_n"] = sum(len(p.batch) for p in in_purge)

    if window is None:
        # busy_areas(): per node, ascending (4.19 keeps its lazy areas in the one busy
        # tree but not in this list). 6.x picks the busy tree by address zone.
        out["busy"] = [
            busy_rec(va, (va.va_start // zone) % nr_nodes if nr_nodes > 1 else 0)
            for va in space.busy_areas()
        ]
        out["free"] = [(va.va_start, va.va_end) for va in space.free_areas()]
        out["lazy"] = [(va.va_start, va.va_end, space.lazy_node_of(va)) for va in lazy]
        out["pools"] = {
            (vn.id, idx): [(va.va_start, va.va_end) for va in pool]
            for vn in space.nodes
            for idx, pool in sorted(vn.pools.items())
            if pool
        }
        out["purging"] = [
            (va.va_start, va.va_end, space.lazy_node_of(va)) for p in in_purge for va in p.batch
        ]
    else:
        lo, hi = window
        if has_tree:
            out["busy"] = [
                busy_rec(va, vn.id) for vn in space.nodes for va in _overlapping(vn.busy, lo, hi)
            ]
            out["free"] = [(va.va_start, va.va_end) for va in _overlapping(space.free_root, lo, hi)]
        else:
            # 4.19: one tree holds busy and lazily freed areas; free space is its gaps.
            # The gaps inside the window are exact when it starts and ends at area
            # boundaries (a free gap, or an area's own range).
            waiting = {va.va_start for va in lazy if va.va_start < hi and va.va_end > lo}
            waiting.update(va.va_start for p in in_purge for va in p.batch)
            areas = sorted(
                (va for vn in space.nodes for va in _overlapping(vn.busy, lo, hi)),
                key=lambda va: va.va_start,
            )
            out["busy"] = [busy_rec(va, 0) for va in areas if va.va_start not in waiting]
            gaps: list[tuple[int, int]] = []
            at = lo
            for va in areas:
                if va.va_start > at:
                    gaps.append((at, va.va_start))
                at = max(at, va.va_end)
            if hi > at:
                gaps.append((at, hi))
            out["free"] = gaps
        if pools is not None:
            want = set(pools)
            out["pools"] = {
                (vn.id, idx): [(va.va_start, va.va_end) for va in pool]
                for vn in space.nodes
                for idx, pool in vn.pools.items()
                if (vn.id, idx) in want
            }
    if tree and has_tree:
        out["tree"] = _tree_nodes(space.free_root.rb_node)
    if search is not None:
        size, align, vstart, vend, cpu = search
        cpu %= max(1, k.machine.cpus_online)  # as the replay maps a trace's CPU
        out["search"] = _search(space, profile, nr_nodes, size, align, vstart, vend, cpu)
    return out


def _overlapping(root: Any, lo: int, hi: int) -> Iterator[Any]:
    """Areas of an address-keyed rb-tree overlapping ``[lo, hi)``, in address order."""
    stack: list[Any] = []
    node = root.rb_node
    while stack or node is not None:
        while node is not None:
            stack.append(node)
            # Everything left of a node that ends at or below lo ends below lo too.
            node = node.rb_left if node.va_start >= lo or node.va_end > lo else None
        node = stack.pop()
        if node.va_start >= hi:
            return
        if node.va_end > lo:
            yield node
        node = node.rb_right


def _tree_nodes(root: Any) -> list[list[Any]]:
    """``free_vmap_area_root`` as ``[start, end, subtree_max_size, red, left, right]``.

    Index 0 is the root; children are indices (-1: NULL leaf). Addresses and sizes
    are hex strings (a free tree holds the blocks outside the vmalloc range too).
    """
    nodes: list[list[Any]] = []
    stack = [(root, -1, 0)]
    while stack:
        node, parent, side = stack.pop()
        i = len(nodes)
        nodes.append(
            [
                f"{node.va_start:#x}",
                f"{node.va_end:#x}",
                f"{node.subtree_max_size:#x}",
                node.rb_red,
                -1,
                -1,
            ]
        )
        if parent >= 0:
            nodes[parent][4 + side] = i
        if node.rb_right is not None:
            stack.append((node.rb_right, i, 1))
        if node.rb_left is not None:
            stack.append((node.rb_left, i, 0))
    return nodes


def _search(
    space: Any, profile: Any, nr_nodes: int, size: int, align: int, vstart: int, vend: int, cpu: int
) -> dict[str, Any]:
    """What ``alloc_vmap_area`` would do for this request on the current state.

    First ``node_alloc``: with several vmap nodes, a request for the whole vmalloc
    range looks only at the head of its CPU's node's pool of exactly that size; an
    aligned head is taken, a misaligned one is rotated to the tail. Then the free-tree
    descent of ``find_vmap_lowest_match``, written out step by step: at each node it
    goes left if the left subtree has a block of at least the search length and
    ``vstart`` is below the node; else it takes the node if the request fits in it;
    else it goes right if the right subtree may hold it; else it climbs to the first
    ancestor that fits or whose right subtree may (6.x also moves ``vstart`` past
    that ancestor, so no subtree is searched twice).
    """
    res: dict[str, Any] = {"pool": None}
    if nr_nodes > 1 and vstart == space.vmalloc_start and vend == space.vmalloc_end:
        node_id = cpu % nr_nodes
        idx = (size - 1) >> PAGE_SHIFT
        pool = space.nodes[node_id].pools.get(idx)
        if pool:
            head = pool[0]
            hit = head.va_start & (align - 1) == 0
            res["pool"] = {
                "node": node_id,
                "index": idx,
                "head": f"{head.va_start:#x}",
                "hit": hit,
            }
    if space.free_root.rb_node is None:
        res["steps"] = []
        res["found"] = None
        res["note"] = "no free tree in this profile (list walk)"
        return res
    if profile.adjust_search_size:
        adjust = not (align <= PAGE_SIZE or vend - vstart == size)
    else:
        adjust = True
    length = size + align - 1 if adjust else size
    shift = profile.rollback_shifts_vstart
    umax = space.ulong_max
    mask = ~(align - 1) & umax
    steps: list[list[Any]] = []

    def step(node: Any, action: str) -> None:
        steps.append(
            [
                f"{node.va_start:#x}",
                f"{node.va_end:#x}",
                f"{node.subtree_max_size:#x}",
                node.rb_red,
                action,
            ]
        )

    def fits(node: Any, vs: int) -> bool:
        s = node.va_start
        nva = ((s if s > vs else vs) + align - 1) & mask
        return bool(nva + size <= umax and nva >= vs and nva + size <= node.va_end)

    found: Any = None
    node = space.free_root.rb_node
    vs = vstart
    while node is not None and found is None:
        left = node.rb_left
        if left is not None and left.subtree_max_size >= length and vs < node.va_start:
            step(node, "left")
            node = left
            continue
        if fits(node, vs):
            step(node, "fits")
            found = node
            break
        right = node.rb_right
        if right is not None and right.subtree_max_size >= length:
            step(node, "right")
            node = right
            continue
        step(node, "stuck")
        while True:
            node = node.rb_parent
            if node is None:
                break
            if fits(node, vs):
                step(node, "up: fits")
                found = node
                break
            right = node.rb_right
            if right is not None and right.subtree_max_size >= length and vs <= node.va_start:
                if shift:
                    vs = node.va_start + 1
                step(node, "up: right" + (f", vstart={vs:#x}" if shift else ""))
                node = right
                break
            step(node, "up")
        else:  # pragma: no cover - the loop always breaks
            pass
    res["length"] = f"{length:#x}"
    res["steps"] = steps
    if found is not None:
        s = found.va_start
        nva = ((s if s > vs else vs) + align - 1) & mask
        res["found"] = [f"{found.va_start:#x}", f"{found.va_end:#x}"]
        res["addr"] = f"{nva:#x}" if nva + size <= vend else None
    else:
        res["found"] = None
        res["addr"] = None
    return res


# ----------------------------------------------------------------------------------
# Records and the timeline (plain data from here on)
# ----------------------------------------------------------------------------------
@dataclass
class _Mirror:
    """The explorer's copy of one state, keyed for diffing."""

    busy: dict[int, Rec] = field(default_factory=dict)
    busy_starts: list[int] = field(default_factory=list)
    free: dict[int, int] = field(default_factory=dict)  # va_start -> va_end (unclipped)
    free_starts: list[int] = field(default_factory=list)
    lazy: list[Rec] = field(default_factory=list)
    pools: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    pool_seq: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    purging: list[Rec] = field(default_factory=list)
    lazy_fp: tuple[int, int, int] = (0, 0, 0)
    pool_fp: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)
    purging_n: int = 0


def _reseq(
    old: list[tuple[int, int]], old_seq: dict[int, int], new: list[tuple[int, int]]
) -> dict[int, int]:
    """Sequence numbers for pool ``new`` (head first) that keep ``old``'s where it can.

    Covers what pools do: pops and pushes at the head (``list_add``), a misaligned head
    moved to the tail (``list_move_tail``), and decay from the head. Anything else
    renumbers the pool.
    """
    if len(old) > 1 and len(new) == len(old) and new == old[1:] + old[:1]:
        seq = dict(old_seq)
        seq[old[0][0]] = min(old_seq.values()) - 1
        return seq
    for j in range(len(old) + 1):
        tail = old[j:]
        if len(tail) <= len(new) and new[len(new) - len(tail) :] == tail:
            seq = {s: old_seq[s] for s, _ in tail}
            top = max(seq.values(), default=0)
            for n, (s, _e) in enumerate(reversed(new[: len(new) - len(tail)])):
                seq[s] = top + 1 + n
            return seq
    return {s: len(new) - pos for pos, (s, _e) in enumerate(new)}  # pragma: no cover


class Timeline:
    """Turns successive model states into page records and per-event diffs.

    ``observe(k, event)`` after each event; most events change a handful of areas
    and are diffed through a window around the event's address; purges, and
    anything the fingerprints cannot account for, take a full read.
    """

    def __init__(self, labels: dict[tuple[int, int], tuple[str | None, str]] | None = None):
        self.labels = labels or {}
        self.strings: list[str] = [""]
        self._string_ids: dict[str, int] = {"": 0}
        self.meta: dict[str, Any] = {}
        self.init: list[list[Any]] = []
        self.diffs: list[list[list[list[Any]]]] = []
        self.frag: dict[str, list[int]] = {"largest": [], "count": [], "used": [], "lazy": []}
        self.full_reads = 0
        self._m: _Mirror | None = None
        self._recs: dict[tuple[str, int], list[Any]] = {}
        self._vs = 0
        self._ve = 0
        self._largest = 0
        self._used = 0
        self._lazy_pages = 0
        self._count = 0
        self.lo = 1 << 62
        self.hi = -(1 << 62)

    # --- records --------------------------------------------------------------------
    def _sid(self, text: str | None) -> int:
        if not text:
            return 0
        i = self._string_ids.get(text)
        if i is None:
            i = self._string_ids[text] = len(self.strings)
            self.strings.append(text)
        return i

    def _pg(self, addr: int) -> int:
        return (addr - self._vs) >> PAGE_SHIFT

    def _records(self, m: _Mirror) -> dict[tuple[str, int], list[Any]]:
        recs: dict[tuple[str, int], list[Any]] = {}
        for r in m.busy.values():
            recs[("b", r[0])] = self._busy_rec(r)
        for s, e in m.free.items():
            fr = self._free_rec(s, e)
            if fr is not None:
                recs[("f", max(s, self._vs))] = fr
        for s, e, node in m.lazy:
            recs[("l", s)] = ["l", self._pg(s), self._pg(e), node]
        for (node, idx), lst in m.pools.items():
            seq = m.pool_seq[(node, idx)]
            for s, e in lst:
                recs[("p", s)] = ["p", self._pg(s), self._pg(e), node, idx, seq[s]]
        for s, e, node in m.purging:
            recs[("u", s)] = ["u", self._pg(s), self._pg(e), node]
        return recs

    def _busy_rec(self, r: Rec) -> list[Any]:
        start, end, node, caller, vm_flags, va_flags, nr_pages, guard = r
        label = self.labels.get((start, end))
        if caller is None and label is not None:
            caller = label[0]
        kind = label[1] if label is not None and not vm_flags else ""
        if kind == "vm_map_ram":
            guard = GUARD_NONE
        rec = [
            "b",
            self._pg(start),
            self._pg(end),
            node,
            self._sid(caller),
            vm_flags,
            va_flags,
            nr_pages,
            guard,
        ]
        if kind:
            rec.append(self._sid(kind))
        return rec

    def _free_rec(self, s: int, e: int) -> list[Any] | None:
        s2, e2 = max(s, self._vs), min(e, self._ve)
        if e2 <= s2:
            return None
        return ["f", self._pg(s2), self._pg(e2)]

    # --- mirrors ----------------------------------------------------------------------
    def _mirror(self, st: dict[str, Any]) -> _Mirror:
        m = _Mirror()
        m.busy = {r[0]: r for r in st["busy"]}
        m.busy_starts = sorted(m.busy)
        m.free = dict(st["free"])
        m.free_starts = sorted(m.free)
        m.lazy = list(st["lazy"])
        m.pools = {key: list(v) for key, v in st["pools"].items()}
        old = self._m
        for key, lst in m.pools.items():
            m.pool_seq[key] = _reseq(
                old.pools.get(key, []) if old else [],
                old.pool_seq.get(key, {}) if old else {},
                lst,
            )
        m.purging = list(st["purging"])
        m.lazy_fp = st["lazy_fp"]
        m.pool_fp = dict(st["pool_fp"])
        m.purging_n = st["purging_n"]
        return m

    def _start(self, st: dict[str, Any]) -> None:
        self._vs, self._ve = st["vmalloc_start"], st["vmalloc_end"]
        self.meta = {
            "profile": st["profile"],
            "cpus": st["cpus"],
            "vmalloc_start": f"{self._vs:#x}",
            "vmalloc_end": f"{self._ve:#x}",
            "range_pages": (self._ve - self._vs) >> PAGE_SHIFT,
            "nr_nodes": st["nr_nodes"],
            "zone_pages": max(1, st["zone_size"] >> PAGE_SHIFT),
            "has_tree": st["has_tree"],
        }
        self._m = self._mirror(st)
        self._recs = self._records(self._m)
        self.init = list(self._recs.values())
        for r in self.init:
            self._extend(r)
        self._recount()

    def _recount(self) -> None:
        sizes = [r[2] - r[1] for key, r in self._recs.items() if key[0] == "f"]
        self._count = len(sizes)
        self._largest = max(sizes, default=0)
        self._used = sum(
            r[2] - r[1] for key, r in self._recs.items() if key[0] == "b" and self._in_range(r)
        )
        self._lazy_pages = sum(r[2] - r[1] for key, r in self._recs.items() if key[0] in ("l", "u"))

    def _push_frag(self) -> None:
        self.frag["largest"].append(self._largest)
        self.frag["count"].append(self._count)
        self.frag["used"].append(self._used)
        self.frag["lazy"].append(self._lazy_pages)

    def _apply(
        self, new: dict[tuple[str, int], list[Any]], keys: Iterable[tuple[str, int]]
    ) -> None:
        """Replace the records under ``keys`` by ``new``'s and log the diff."""
        added: list[list[Any]] = []
        removed: list[list[Any]] = []
        recount_largest = False
        for key in keys:
            old = self._recs.get(key)
            nw = new.get(key)
            if old == nw:
                continue
            if old is not None:
                removed.append(old)
                del self._recs[key]
                self._account(old, -1)
                if old[0] == "f" and old[2] - old[1] >= self._largest:
                    recount_largest = True
            if nw is not None:
                added.append(nw)
                self._recs[key] = nw
                self._account(nw, 1)
                self._extend(nw)
        if recount_largest:
            self._largest = max(
                (r[2] - r[1] for key, r in self._recs.items() if key[0] == "f"), default=0
            )
        self.diffs.append([added, removed])

    def _extend(self, r: list[Any]) -> None:
        """Widen the extent of the areas seen (modules may lie above the range)."""
        if r[0] != "f":
            self.lo = min(self.lo, r[1])
            self.hi = max(self.hi, r[2])

    def _in_range(self, r: list[Any]) -> bool:
        return bool(r[1] >= 0 and r[2] <= self.meta["range_pages"])

    def _account(self, r: list[Any], sign: int) -> None:
        kind, size = r[0], r[2] - r[1]
        if kind == "f":
            self._count += sign
            if sign > 0 and size > self._largest:
                self._largest = size
        elif kind == "b" and self._in_range(r):
            self._used += sign * size
        elif kind in ("l", "u"):
            self._lazy_pages += sign * size

    # --- observing --------------------------------------------------------------------
    def observe(self, k: Any, event: Any = None) -> None:
        """Record the state of ``k`` after ``event`` (the first call sets the start)."""
        if self._m is None:
            self._start(snapshot_state(k))
            self._push_frag()
            return
        if not self._observe_local(k, event):
            self._observe_full(k)
        self._push_frag()

    def _observe_full(self, k: Any) -> None:
        self.full_reads += 1
        m = self._mirror(snapshot_state(k))
        new = self._records(m)
        self._m = m
        self._apply(new, list(self._recs.keys() | new.keys()))

    def _observe_local(self, k: Any, ev: Any) -> bool:
        """Diff only around ``ev``'s address; False when that cannot account for it."""
        m = self._m
        assert m is not None
        name = getattr(ev, "name", "")
        if name == "alloc_vmap_area":
            if ev.failed:
                return False  # rare; a failure may have purged
            lo, hi = ev.addr, ev.addr + ev.size
        elif name == "free_vmap_area_noflush":
            lo, hi = ev.va_start, ev.va_start + PAGE_SIZE
        else:
            return False
        # The free block the allocation was carved from (if it was), whole.
        i = bisect.bisect_right(m.free_starts, lo) - 1
        if i >= 0 and m.free[m.free_starts[i]] > lo:
            lo = min(lo, m.free_starts[i])
            hi = max(hi, m.free[m.free_starts[i]])
        st = snapshot_state(k, window=(lo, hi))
        if st["purging_n"] != m.purging_n:
            return False
        # Lazy list: unchanged, or one area appended (a lazy free).
        lazy_fp = st["lazy_fp"]
        lazy_added: Rec | None = None
        if lazy_fp != m.lazy_fp:
            n0, h0, _ = m.lazy_fp
            n1, h1, _ = lazy_fp
            if n1 != n0 + 1 or (n0 and h1 != h0) or st["lazy_tail"] is None:
                return False
            lazy_added = st["lazy_tail"]
        changed_pools = [
            key
            for key in m.pool_fp.keys() | st["pool_fp"].keys()
            if m.pool_fp.get(key) != st["pool_fp"].get(key)
        ]
        if len(changed_pools) > 2:
            return False
        pools_now: dict[tuple[int, int], list[tuple[int, int]]] = {}
        if changed_pools:
            pools_now = snapshot_state(k, window=(lo, lo + 1), pools=changed_pools)["pools"]
        # Apply to the mirror.
        keys: set[tuple[str, int]] = set()
        j = bisect.bisect_left(m.busy_starts, lo)
        while j < len(m.busy_starts) and m.busy_starts[j] < hi:
            s = m.busy_starts.pop(j)
            del m.busy[s]
            keys.add(("b", s))
        # The window starts at a free block or at an area's own start, so no busy
        # area starting below it overlaps it; still, take what the model reports.
        for r in st["busy"]:
            if r[0] not in m.busy:
                bisect.insort(m.busy_starts, r[0])
            m.busy[r[0]] = r
            keys.add(("b", r[0]))
        j = bisect.bisect_left(m.free_starts, lo)
        while j < len(m.free_starts) and m.free_starts[j] < hi:
            s = m.free_starts.pop(j)
            del m.free[s]
            keys.add(("f", max(s, self._vs)))
        for s, e in st["free"]:
            if s in m.free:
                m.free_starts.remove(s)
            m.free[s] = e
            bisect.insort(m.free_starts, s)
            keys.add(("f", max(s, self._vs)))
        if lazy_added is not None:
            m.lazy.append(lazy_added)
            keys.add(("l", lazy_added[0]))
        for key in changed_pools:
            for s, _e in m.pools.get(key, []):
                keys.add(("p", s))
            lst = pools_now.get(key, [])
            if lst:
                m.pool_seq[key] = _reseq(m.pools.get(key, []), m.pool_seq.get(key, {}), lst)
                m.pools[key] = lst
            else:
                m.pools.pop(key, None)
                m.pool_seq.pop(key, None)
            for s, _e in lst:
                keys.add(("p", s))
        m.lazy_fp = lazy_fp
        m.pool_fp = dict(st["pool_fp"])
        if (st["nr_busy"] is not None and len(m.busy) != st["nr_busy"]) or (
            st["nr_free"] is not None and len(m.free) != st["nr_free"]
        ):
            return False
        if st["nr_busy"] is None or st["nr_free"] is None:
            return False
        new: dict[tuple[str, int], list[Any]] = {}
        for kind, s in keys:
            if kind == "b" and s in m.busy:
                new[(kind, s)] = self._busy_rec(m.busy[s])
            elif kind == "f":
                pass
            elif kind == "l":
                new[(kind, s)] = ["l", self._pg(s), self._pg(lazy_added[1]), lazy_added[2]]  # type: ignore[index]
        for key in changed_pools:
            node, idx = key
            seq = m.pool_seq.get(key, {})
            for s, e in m.pools.get(key, []):
                new[("p", s)] = ["p", self._pg(s), self._pg(e), node, idx, seq[s]]
        # Free records are keyed by their clipped start.
        for s, e in st["free"]:
            fr = self._free_rec(s, e)
            if fr is not None:
                new[("f", max(s, self._vs))] = fr
        self._apply(new, keys)
        return True

    def check_against(self, k: Any) -> None:
        """Raise if the records differ from a full read of ``k`` (for tests)."""
        want = self._records(self._mirror(snapshot_state(k)))
        if want != self._recs:
            missing = [r for key, r in want.items() if self._recs.get(key) != r][:3]
            extra = [r for key, r in self._recs.items() if want.get(key) != r][:3]
            raise AssertionError(f"timeline drifted: missing {missing}, extra {extra}")

    def as_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "strings": self.strings,
            "init": self.init,
            "diffs": self.diffs,
            "frag": self.frag,
            # Pages spanned by areas over the whole timeline (modules may lie above
            # the vmalloc range).
            "extent": [min(self.lo, 0), max(self.hi, self.meta["range_pages"])],
        }


# ----------------------------------------------------------------------------------
# Page data for a replay
# ----------------------------------------------------------------------------------
def state_at(data: dict[str, Any], index: int) -> dict[tuple[str, int], list[Any]]:
    """The records after event ``index`` of a page's data, keyed like the page keys them."""
    if not 0 <= index < len(data["events"]):
        raise ValueError(f"event index {index} is outside 0..{len(data['events']) - 1}")
    state = {(r[0], r[1]): r for r in data["init"]}
    for added, removed in data["diffs"][:index]:
        for r in removed:
            del state[(r[0], r[1])]
        for r in added:
            state[(r[0], r[1])] = r
    return state


def _labels(paths: Iterable[Path]) -> dict[tuple[int, int], tuple[str | None, str]]:
    """Callers and kinds of areas by exact range, from vmallocinfo files.

    A replay's model has no ``vm_struct``s (the trace does not say who allocated);
    the capture's snapshots do, for the areas they list.
    """
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    out: dict[tuple[int, int], tuple[str | None, str]] = {}
    for p in paths:
        if p.exists():
            for e in parse_vmallocinfo(p).busy:
                kind = " ".join(sorted(e.flags)) if e.flags else e.kind
                out[(e.start, e.end)] = (e.caller, kind)
    return out


def _event_json(ev: Any, vs: int, ve: int) -> list[Any]:
    """``[name, line, cpu, fields...]`` of a trace event, addresses as hex.

    An allocation's range is 0, 0 when it is the vmalloc range ``[vs, ve)``.
    """
    name = ev.name
    if name == "alloc_vmap_area":
        full = ev.vstart == vs and ev.vend == ve
        return [
            "alloc",
            ev.line,
            ev.cpu,
            f"{ev.addr:#x}",
            ev.size,
            ev.align,
            0 if full else f"{ev.vstart:#x}",
            0 if full else f"{ev.vend:#x}",
            ev.failed,
        ]
    if name == "free_vmap_area_noflush":
        return ["free", ev.line, ev.cpu, f"{ev.va_start:#x}", ev.nr_lazy, ev.nr_lazy_max]
    if name == "purge_vmap_area_lazy":
        return ["purge", ev.line, ev.cpu, f"{ev.start:#x}", f"{ev.end:#x}", ev.npurged]
    return [name, getattr(ev, "line", 0), getattr(ev, "cpu", 0)]


def _replay_text(res: Any, show: int) -> str:
    """What ``pyvmalloc replay`` prints for ``res`` (its own printer, captured)."""
    from pyvmalloc.trace.replay import print_result

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_result(res, show)
    return buf.getvalue()


def _mismatch_json(m: Any) -> dict[str, Any]:
    d = dict(m.as_json()) if hasattr(m, "as_json") else dict(vars(m))
    cause = d.get("cause") or getattr(m, "cause", None)
    d["cause"] = str(cause) if cause else "unclassified"
    for key in ("kernel", "model", "vstart", "vend"):
        if isinstance(d.get(key), int):
            d[key] = f"{d[key]:#x}"
    return d


def build_replay_data(
    capture: str | Path,
    *,
    profile: str = "6.18",
    cpus: int | None = None,
    policy: Any = None,
) -> dict[str, Any]:
    """Replay ``capture`` and return the page's data (see the module docstring)."""
    from pyvmalloc.trace.replay import load_capture, replay

    cap = Path(capture)
    if not cap.is_dir():
        raise ValueError(f"{cap}: not a capture directory (trace, vmallocinfo, meta.json)")
    trace, snap, meta = load_capture(cap)
    end = cap / "vmallocinfo.end"
    kwargs: dict[str, Any] = {"profile": profile, "cpus": cpus, "meta": meta}
    if end.exists():
        kwargs["end_snapshot"] = end
    if policy is not None:
        kwargs.update(_policy_kwargs(replay, policy))
    # Pass 1: the events as replayed (the look-ahead the free-tree descents need).
    events: list[Any] = []
    first = replay(trace, snap, observer=lambda i, ev, k: events.append(ev), **kwargs)
    if not events:
        raise ValueError(f"{cap}: the trace has no event after the snapshot; nothing to explore")
    allocs = [i for i, ev in enumerate(events) if ev.name == "alloc_vmap_area"]
    step = max(1, len(allocs) // MAX_WALKS)
    sampled = set(allocs[::step])
    bad_lines = {m.line for m in first.mismatches}
    bad = [i for i in allocs if events[i].line in bad_lines]
    sampled.update(bad[:MAX_MISMATCH_WALKS])
    tree_before = {i - 1 for i in bad[:TREE_AT_MISMATCHES] if i > 0}
    tl = Timeline(_labels([snap, end]))
    walks: dict[int, Any] = {}
    trees: dict[int, Any] = {}
    # A tree node costs about 64 bytes of page; the free tree has about as many
    # nodes as there are free blocks (in the range, plus the two outside it).
    nodes = max(first.end_free_blocks_in_range, 1) + 2
    n_trees = min(max(TREE_BYTES // (64 * nodes), TREE_SNAPSHOTS[0]), TREE_SNAPSHOTS[1])
    tree_every = max(1, len(events) // n_trees)

    def observer(i: int, ev: Any, k: Any) -> None:
        tl.observe(k, ev)
        nxt = events[i + 1] if i + 1 < len(events) else None
        tree = i % tree_every == 0 or i == len(events) - 1 or i in tree_before
        search = None
        if nxt is not None and nxt.name == "alloc_vmap_area" and i + 1 in sampled:
            search = (nxt.size, nxt.align, nxt.vstart, nxt.vend, nxt.cpu)
        if tree or search is not None:
            st = snapshot_state(k, window=(0, 0), tree=tree, search=search)
            if tree and "tree" in st:
                trees[i] = st["tree"]
            if search is not None:
                w = st["search"]
                w["request"] = [
                    search[0],
                    search[1],
                    f"{search[2]:#x}",
                    f"{search[3]:#x}",
                    search[4],
                ]
                w["when"] = "the model's tree after the previous event"
                walks[i + 1] = w

    if policy is not None:
        sampled = set()  # the descent shown is lowest match's, not this policy's
    # Pass 2: the same replay, observed; its result is what `replay` reports.
    res = replay(trace, snap, observer=observer, **kwargs)
    line_to_index = {ev.line: i for i, ev in enumerate(events)}
    mismatches = []
    for m in res.mismatches:
        d = _mismatch_json(m)
        d["index"] = line_to_index.get(m.line, -1)
        mismatches.append(d)
    pct = 100 * res.agreement
    data = tl.as_json()
    data.update(
        {
            "mode": "replay",
            "title": f"{cap.name}: replay under kernel {res.profile}",
            "capture": str(cap),
            "kernel_release": meta.get("kernel_release", "?"),
            "events": [_event_json(ev, tl._vs, tl._ve) for ev in events],
            "mismatches": mismatches,
            "walks": {str(i): w for i, w in walks.items()},
            "trees": {str(i): t for i, t in trees.items()},
            "replay": {
                "headline": (
                    f"kernel {res.profile}, {res.cpus} CPUs: "
                    f"{res.allocs_matched}/{res.allocs_compared} allocations agree "
                    f"({pct:.2f} %)"
                )
                if res.allocs_compared
                else f"kernel {res.profile}: the trace has no allocation to compare",
                "text": _replay_text(res, 5),
                "counts": {
                    key: v
                    for key, v in res.as_json().items()
                    if key not in ("mismatches", "notes", "seconds", "events_per_second")
                },
                "notes": list(res.notes),
            },
            "full_reads": tl.full_reads,
            "walk_note": _walk_note(policy),
        }
    )
    return data


def _walk_note(policy: Any) -> str:
    if policy is None:
        return ""
    return (
        f"no descent is shown: the placement policy here is {policy}, and the descent "
        "this page draws is the kernel's find_vmap_lowest_match"
    )


def _policy_kwargs(fn: Callable[..., Any], policy: Any) -> dict[str, Any]:
    """``{"placement": policy}`` if ``fn`` takes a placement policy, else a clear error.

    ``policy`` is passed through as given: a name (``best-fit``), ``module:Class``, a
    class or an instance, which the model resolves (with its own clear errors).
    """
    if "placement" not in inspect.signature(fn).parameters:
        raise ValueError(
            f"--policy: {getattr(fn, '__qualname__', fn)} takes no placement policy in this "
            "version of pyvmalloc"
        )
    return {"placement": policy}


# ----------------------------------------------------------------------------------
# Page data for the API tour
# ----------------------------------------------------------------------------------
def _call_tree(node: Any) -> list[Any]:
    """``[label, pages, ptes, children]`` of an :mod:`pyvmalloc.explain` call node."""
    return [node.label(), node.pages, node.ptes, [_call_tree(c) for c in node.children]]


def _tour_calls(seed: int, ops: int, cpus: int) -> Iterator[tuple[str, str, int]]:
    """A seeded mix of API calls: (call text, kind, cpu); frees name a live result."""
    rng = random.Random(seed)
    sizes = [4096, 8192, 16384, 20000, 65536, 300_000, 2 << 20]
    for i in range(ops):
        cpu = rng.randrange(cpus)
        r = rng.random()
        if i < 3:
            r = 0.5  # start with vmalloc()s
        if r < 0.38:
            yield "free", "free", cpu
        elif r < 0.72:
            yield f"vmalloc({rng.choice(sizes)}, cpu={cpu})", "vmalloc", cpu
        elif r < 0.82:
            yield f"vzalloc({rng.randrange(1, 200_000)}, cpu={cpu})", "vmalloc", cpu
        elif r < 0.88:
            phys = 0xFE000000 + rng.randrange(0, 256) * PAGE_SIZE
            yield f"ioremap({phys:#x}, {rng.randrange(1, 40000)}, cpu={cpu})", "io", cpu
        elif r < 0.95:
            yield f"kvmalloc({rng.choice([5000, 70000, 3 << 20])}, cpu={cpu})", "kv", cpu
        else:
            yield f"vmalloc_user({rng.randrange(1, 100_000)}, cpu={cpu})", "vmalloc", cpu


def build_tour_data(
    *,
    profile: str = "6.18",
    cpus: int = 2,
    ops: int = 160,
    seed: int = 1,
    policy: Any = None,
    calls: list[str] | None = None,
) -> dict[str, Any]:
    """Run a seeded API tour, each call recorded (call tree, pages, PTEs).

    With ``calls`` (``explain``'s language: ``"vmalloc(8192)"``, ``"vfree(_)"``) those
    calls are run instead, in order; ``_`` and ``_N`` name earlier results.
    """
    from pyvmalloc.explain import parse_calls, record, run_call
    from pyvmalloc.kernel import Kernel

    kwargs: dict[str, Any] = {}
    if policy is not None:
        kwargs.update(_policy_kwargs(Kernel, policy))
    k = Kernel(profile=profile, cpus=cpus, **kwargs)
    rng = random.Random(seed ^ 0x5EED)
    live: list[tuple[int, str]] = []
    tl = Timeline()
    events: list[list[Any]] = []
    recorded: list[Any] = []
    trees: dict[str, Any] = {}
    walks: dict[str, Any] = {}
    shared: list[int] = []  # results that _ and _N refer to (explain mode)
    if calls is not None:
        plan = [(text, "call", 0) for text in calls]
        for text in calls:
            parse_calls(text)  # a clear error before anything runs
    else:
        plan = list(_tour_calls(seed, ops, cpus))
        # A purge near the end, so the tour shows lazily freed areas going back.
        plan.insert(max(1, len(plan) - 12), ("vm_unmap_aliases(cpu=0)", "purge", 0))
    # The descent of each call's first alloc_vmap_area, read just before it searches.
    searches: list[dict[str, Any]] = []
    space = k.vmap_space
    orig_alloc = space.alloc_vmap_area

    def spy(size: int, align: int, vstart: int, vend: int, **kw: Any) -> Any:
        cpu = int(kw.get("cpu", 0))
        if not searches and policy is None:
            st = snapshot_state(k, window=(0, 0), search=(size, align, vstart, vend, cpu))
            w = st["search"]
            w["request"] = [size, align, f"{vstart:#x}", f"{vend:#x}", cpu]
            w["when"] = "the tree as alloc_vmap_area was called"
            searches.append(w)
        return orig_alloc(size, align, vstart, vend, **kw)

    space.alloc_vmap_area = spy  # type: ignore[method-assign]
    for text, kind, cpu in plan:
        if kind == "free":
            if not live:
                continue
            addr, what = live.pop(rng.randrange(len(live)))
            fn = {"io": "iounmap", "kv": "kvfree"}.get(what, "vfree")
            text = f"{fn}({addr:#x}, cpu={cpu})"
        call = parse_calls(text)[0]
        results: list[int] = shared if calls is not None else []
        searches.clear()

        def run(call: Any = call, results: list[int] = results) -> int | None:
            return run_call(k, call, results)

        rec = record(k, run, label=text)
        if searches:
            walks[str(len(events))] = searches[0]
        ret = results[-1] if results else 0
        if kind in ("vmalloc", "io", "kv") and ret:
            live.append((ret, kind))
        events.append(["call", len(events) + 1, cpu, text, f"{ret:#x}" if ret else ""])
        recorded.append(
            {
                "tree": _call_tree(rec.root),
                "state": [[key, rec.before[key], rec.after[key]] for key in rec.before],
            }
        )
        tl.observe(k, None)
        # A tour's tree is small: keep it after every call.
        tree = snapshot_state(k, window=(0, 0), tree=True).get("tree")
        if tree is not None:
            trees[str(len(events) - 1)] = tree
    del space.alloc_vmap_area  # the spy was an instance attribute
    k.check()
    data = tl.as_json()
    data.update(
        {
            "mode": "tour" if calls is None else "explain",
            "title": f"a tour of the vmalloc API: kernel {k.profile.name}, seed {seed}"
            if calls is None
            else f"explain {calls[-1]}: kernel {k.profile.name}",
            "events": events,
            "calls": recorded,
            "start": len(events) - 1 if calls is not None else 0,
            "mismatches": [],
            "walks": walks,
            "trees": {key: t for key, t in trees.items() if t is not None},
            "replay": None,
            "full_reads": tl.full_reads,
            "walk_note": _walk_note(policy),
        }
    )
    return data


def dumps(data: dict[str, Any]) -> str:
    """Compact JSON for embedding in the page."""
    return json.dumps(data, separators=(",", ":"))
