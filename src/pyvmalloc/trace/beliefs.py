"""What a replay does not know about the kernel's state, and how it learns it.

A snapshot (``/proc/vmallocinfo``) and a trace leave some of the kernel's state hidden.
A replay has to guess it, and every allocation the kernel makes is evidence about the
guess. :class:`Beliefs` keeps each guess explicit and revises it when a kernel decision
contradicts it, so that one wrong guess costs one mismatch, not every later allocation
of the same kind:

* **The node of an area older than the snapshot.** 6.x tags every area with the node
  of the CPU that allocated it (``va->flags``), and that node's lazy list and pools take
  the area back when it is freed. vmallocinfo does not show it; the guess is the
  address-zone node. A kernel pool hit below such an area in the model's pool, or a
  kernel allocation that skips it, says it is in another node's pool: it moves there,
  at the place its purge put it (each purge pushes its areas to the pool head in
  ascending address order, so a pool reads newest purge first, descending addresses).
* **Pool entries the kernel does not have.** A known-node pool entry the kernel passes
  over (its pool was shorter, e.g. a decay took one more area) went back to the free
  tree with that decay.
* **The free tree's shape.** With an alignment above PAGE_SIZE the search length is
  ``size + align - 1``; a smaller free block that still fits once aligned is found only
  when it lies on the descent path, which depends on the tree the kernel built over
  its whole history. When the kernel passes over such a block the model chose, the
  block is marked unreachable for that search length, and the model's later searches
  skip it until the block changes.
* **Pools at snapshot time** (captures without ``drop_caches``): pooled areas look like
  free space in vmallocinfo. A kernel address that the model sees as free, away from
  the model's choice, of exactly the allocation's size, bounded by busy areas (an
  exact-size hole), was that node's pool head; the other exact-size holes of that size
  below it are the likely next heads (:meth:`Beliefs.hidden_pool_head`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import PAGE_SHIFT, PAGE_SIZE
from pyvmalloc.rbtree import rb_prev
from pyvmalloc.vmap.area import VaState, VmapArea
from pyvmalloc.vmap.space import VmapSpace

__all__ = ["Beliefs", "Cause", "short_fitting_below"]

#: The compiled twin of :func:`short_fitting_below` (absent in an older build).
_c_short_fitting_below = getattr(_speedups, "short_fitting_below", None)
#: The compiled twin of :meth:`Beliefs.search_skipping`'s walk.
_c_search_skipping = getattr(_speedups, "search_skipping", None)
#: The compiled loop of :meth:`Beliefs.after_refill` (replay purge section).
_c_stamp = getattr(_speedups, "stamp", None)
#: The compiled scan of :meth:`Beliefs._insert_by_purge_order` from a given place.
_c_insert_from = getattr(_speedups, "insert_from", None)
#: Compiled twins of the pool walks (pool_ranges, _insert_by_purge_order; the replay
#: no longer walks the pool ids and stamps: a refill reports what it added); None: the
#: comprehensions.
_c_pool_ranges = getattr(_speedups, "pool_ranges", None)
_c_insert_by_purge_order = getattr(_speedups, "insert_by_purge_order", None)
_c_ranges_below = getattr(_speedups, "ranges_below", None)
#: The compiled twin of next_hidden_head / next_hidden_area (NotImplemented: the
#: reference runs).
_c_hidden_guess = getattr(_speedups, "hidden_guess", None)

#: Mismatch classes (see docs/replay.md).
RULE = "rule difference"
HIDDEN = "hidden state"
RACE = "race"
#: Refutations of one address-zone guess after which the other guessed areas follow.
SWITCH_AFTER = 2
#: Pool classes for those votes: one per size up to the pools' largest, then one.
MAX_CLASS = 256


@dataclass
class Cause:
    """Why the model and the kernel chose differently."""

    kind: str  # RULE, HIDDEN or RACE
    fact: str  # which fact, in words
    key: tuple[object, ...]  # identifies the one cause (for cascades)


class Beliefs:
    """The replay's explicit unknowns about one model's hidden state."""

    def __init__(self, space: VmapSpace) -> None:
        self.space = space
        #: Areas whose allocating node is a guess: va_start -> area (pre-snapshot).
        self.unknown_node: dict[int, VmapArea] = {}
        #: Nodes already refuted for such an area.
        self.refuted_nodes: dict[int, set[int]] = {}
        #: Kernel pool hits below each known pool entry (id(area) -> (area, count)).
        #: The entry holds the area, so that its id is not reused by a new area while
        #: the count is kept (a new area pooled under a dead one's id would inherit its
        #: count, and the result would depend on where the allocator put objects).
        self.passed: dict[int, tuple[VmapArea, int]] = {}
        #: Purge generation of each pool entry (id(area) -> purge number).
        self.gen: dict[int, int] = {}
        self.purge_seq = 0
        #: Free blocks the kernel's search does not reach: (start, end, search length).
        self.unreachable: dict[tuple[int, int], set[int]] = {}
        #: Free blocks (to the model) the kernel's tree does not have, taken out of the
        #: model's free tree until the kernel allocates in them: start -> block.
        self.parked: dict[int, VmapArea] = {}
        self._parked_starts: list[int] = []
        #: Free blocks of the snapshot, and per search length the highest address the
        #: kernel's tree search returned (see passed_over).
        self.old_blocks: set[tuple[int, int]] = set()
        self.kernel_tree_high: dict[int, int] = {}
        #: Areas freed in the trace and not allocated again: start -> size. Each may
        #: sit in a pool of the kernel whatever the model did with it.
        self.recycled: dict[int, int] = {}
        #: Pools at snapshot time (no drop_caches): (node, class) -> the last head the
        #: kernel took from it; absent = not seen yet, None = seen empty.
        self.hidden_head: dict[tuple[int, int], int | None] = {}
        #: The heads the kernel took from a hidden pool before the last one.
        self.hidden_prev: dict[tuple[int, int], int] = {}
        self.hidden_prev2: dict[tuple[int, int], int] = {}
        #: Slots refuted as heads of a hidden pool: (node, class) -> addresses.
        self.hidden_refuted: dict[tuple[int, int], set[int]] = {}
        #: Number of revisions made (each one a refuted guess).
        self.revisions = 0
        #: Kernel decisions on areas of guessed node: (pool class, guessed node,
        #: kernel's node) -> count (see vote_node).
        self.node_votes: dict[tuple[int, int, int], int] = {}
        #: Guessed areas moved to another node at once (see vote_node).
        self.node_switches = 0
        #: Nodes whose pool the kernel took an entry below this area from (start ->
        #: nodes): the area is not in that node's pool, and a switch leaves it alone.
        self.skipped_in_pool: dict[int, set[int]] = {}

    def hidden_pool_seen(self, key: tuple[int, int]) -> bool:
        """Whether the kernel has shown a head of the pool ``key`` hidden at snapshot
        time that is not known to be used up since."""
        return self.hidden_head.get(key) is not None

    def saw_hidden_head(self, key: tuple[int, int], addr: int) -> None:
        """The kernel took ``addr`` from the pool ``key`` hidden at snapshot time."""
        last = self.hidden_head.get(key)
        if last is not None and last != addr:
            before = self.hidden_prev.get(key)
            if before is not None:
                self.hidden_prev2[key] = before
            self.hidden_prev[key] = last
        self.hidden_head[key] = addr

    # --- node of pre-snapshot areas -------------------------------------------------
    def guess_node(self, va: VmapArea) -> None:
        """``va`` was busy at snapshot time: its node is the address-zone guess."""
        self.unknown_node[va.va_start] = va

    def vote_node(self, va: VmapArea, guessed: int, actual: int) -> None:
        """The kernel showed that ``va``, an area the model had guessed on node
        ``guessed``, was allocated on node ``actual`` (a pool hit on it, or its purge).

        The areas of one size busy at snapshot time were mostly allocated by the same
        long-running tasks (a thread pool's stacks, a BPF loader's programs), so their
        nodes go together: once the kernel has refuted the address-zone guess
        ``guessed`` for ``SWITCH_AFTER`` areas of ``va``'s pool class and more than
        twice as often as it confirmed it, every other area of that class still
        guessed on ``guessed`` (busy, lazy or pooled) is moved to ``actual``: still a
        guess, revised one by one as before."""
        cls = min((va.va_end - va.va_start - 1) >> PAGE_SHIFT, MAX_CLASS)
        votes = self.node_votes
        key = (cls, guessed, actual)
        votes[key] = votes.get(key, 0) + 1
        if guessed == actual:
            return
        wrong, right = votes[key], votes.get((cls, guessed, guessed), 0)
        if wrong < SWITCH_AFTER or wrong <= 2 * right:
            return
        votes[key] = votes[(cls, guessed, guessed)] = 0
        space = self.space
        if not (0 <= guessed < space.nr_vmap_nodes and 0 <= actual < space.nr_vmap_nodes):
            return
        flags = space.encode_vn_id(actual)
        moved = 0
        refuted = self.skipped_in_pool
        for other in self.unknown_node.values():
            if actual in refuted.get(other.va_start, ()):
                continue  # the kernel already said it is not there
            if (
                other.state in (VaState.BUSY, VaState.LAZY)
                and (other.flags >> 8) - 1 == guessed
                and min((other.va_end - other.va_start - 1) >> PAGE_SHIFT, MAX_CLASS) == cls
            ):
                other.flags = (other.flags & 0xFF) | flags
                moved += 1
        src = space.nodes[guessed].pools.get(cls)
        if src:
            dst = space.nodes[actual].pools.setdefault(cls, deque())
            hints: dict[int, tuple[int, VmapArea]] = {}  # dst changes only by the moves
            for other in [
                x
                for x in src
                if not self.node_known(x) and actual not in refuted.get(x.va_start, ())
            ]:
                src.remove(other)
                other.flags = (other.flags & 0xFF) | flags
                self._insert_by_purge_order(dst, other, hints)
                moved += 1
        if moved:
            self.node_switches += moved
            self.revisions += 1

    def node_known(self, va: VmapArea) -> bool:
        return self.unknown_node.get(va.va_start) is not va

    def guessed_starts(self) -> set[int]:
        """Starts of the areas whose node is still a guess."""
        return set(self.unknown_node)

    def forget(self, start: int) -> None:
        """The range at ``start`` was allocated again: its new node is known."""
        if self.unknown_node:
            self.unknown_node.pop(start, None)
        if self.refuted_nodes:
            self.refuted_nodes.pop(start, None)
        if self.recycled:
            self.recycled.pop(start, None)

    # --- pools ----------------------------------------------------------------------
    def before_refill(self) -> list[VmapArea]:
        """A purge's refill is about to run: record what it pools (see after_refill)."""
        added: list[VmapArea] = []
        self.space.pool_added = added
        return added

    def after_refill(self, added: list[VmapArea]) -> None:
        """Stamp the entries a purge just added (``added``, recorded by the purge) with
        the purge's number.

        This is the same as restamping a walk of every pool (entries pooled before the
        refill keep their stamp, or 0, the new ones get the purge's number, the others
        lose theirs): a stamp is read only for an area that is pooled, and an area
        enters a pool only through a refill (which stamps it here) or back at its head
        right after an allocation took it, with no refill in between (which keeps it);
        so the stamp left behind by an area that has left the pools, or by a dead area
        whose ``id`` a new one reuses, is never read. Those are dropped once they
        outnumber the pooled areas."""
        self.space.pool_added = None
        gen = self.gen
        seq = self.purge_seq
        if _c_stamp is not None:
            _c_stamp(gen, added, seq)
        else:
            for va in added:
                gen[id(va)] = seq
        if len(gen) > 1024 and len(gen) > 4 * self.space.vmap_node_shrink_count():
            get = gen.get
            self.gen = {
                i: get(i, 0)
                for i in [id(va) for vn in self.space.nodes for p in vn.pools.values() for va in p]
            }

    def _insert_by_purge_order(
        self,
        pool: deque[VmapArea],
        va: VmapArea,
        hints: dict[int, tuple[int, VmapArea]] | None = None,
    ) -> None:
        """Put ``va`` where its purge would have: newest purge first, then descending.

        ``va`` goes before the first entry with an older stamp, or the same stamp and a
        lower start. ``hints`` (id(pool) -> where the last area went and that area),
        from a caller that changes ``pool`` only through this method meanwhile, lets
        the scan skip the entries before the last one put there when ``va`` does not
        go above it: they did not have a lower order than it, so not than ``va``."""
        gen = self.gen
        start = 0
        if hints is not None:
            hint = hints.get(id(pool))
            if hint is not None:
                at, last = hint
                lg, g = gen.get(id(last), 0), gen.get(id(va), 0)
                if g < lg or (g == lg and va.va_start <= last.va_start):
                    start = at + 1
        elif _c_insert_by_purge_order is not None:
            _c_insert_by_purge_order(pool, va, gen)
            return
        i = _c_insert_from(pool, va, gen, start) if _c_insert_from is not None else None
        if i is None:
            i = self._insert_from(pool, va, start)
        if hints is not None:
            hints[id(pool)] = (i, va)

    def _insert_from(self, pool: deque[VmapArea], va: VmapArea, start: int) -> int:
        """The scan of :meth:`_insert_by_purge_order` from ``start``; where ``va`` went."""
        get = self.gen.get
        g = get(id(va), 0)
        for i, other in enumerate(islice(pool, start, None), start):
            og = get(id(other), 0)
            if og < g or (og == g and other.va_start < va.va_start):
                pool.insert(i, va)
                return i
        pool.append(va)
        return len(pool) - 1

    def refute_pool_entries(
        self, node: int, idx: int, above: list[VmapArea], same_pool: bool
    ) -> None:
        """The kernel's pool (node, idx) holds none of ``above``, the entries the model
        had above the kernel's choice (head first): refute each (see
        :meth:`refute_pool_entry`). When the kernel took its entry from this very
        pool (``same_pool``), an entry of known node passed over for the first time is
        kept (the kernel's pool holds it in another order: a decay or refill raced;
        the second time, it is gone), and the kernel's node is noted as not holding
        the others."""
        hints: dict[int, tuple[int, VmapArea]] = {}
        for va in above:
            if same_pool and self.node_known(va) and self.passed_once(va):
                continue
            if same_pool and not self.node_known(va):
                self.skipped_in_pool.setdefault(va.va_start, set()).add(node)
            self.refute_pool_entry(node, idx, va, hints)

    def refute_pool_entry(
        self,
        node: int,
        idx: int,
        va: VmapArea,
        hints: dict[int, tuple[int, VmapArea]] | None = None,
    ) -> str:
        """The kernel's pool (node, idx) does not hold ``va``: move it where it can be.

        An area of unknown node goes to the next node not yet refuted for it; a known
        one (or one refuted on every node) was decayed into the free tree. ``hints``:
        see :meth:`_insert_by_purge_order` (the destination is another node's pool).
        """
        space = self.space
        pool = space.nodes[node].pools.get(idx)
        if pool is None or va not in pool:
            return "gone"
        pool.remove(va)
        self.revisions += 1
        if not self.node_known(va):
            refuted = self.refuted_nodes.setdefault(va.va_start, set())
            refuted.add(node)
            for other in range(space.nr_vmap_nodes):
                if other not in refuted:
                    va.flags = (va.flags & ~0xFF00) | space.encode_vn_id(other)
                    dst = space.nodes[other].pools.setdefault(idx, deque())
                    self._insert_by_purge_order(dst, va, hints)
                    return f"moved to node {other}'s pool"
        va.state = VaState.DETACHED
        self.gen.pop(id(va), None)
        space.merge_or_add_vmap_area(va)
        return "returned to the free tree"

    def passed_once(self, va: VmapArea) -> bool:
        """Count a kernel pool hit below ``va``; True the first time for this area."""
        got = self.passed.get(id(va))
        n = got[1] if got is not None and got[0] is va else 0
        self.passed[id(va)] = (va, n + 1)
        return n == 0

    # --- a purge's decay in flight ------------------------------------------------
    def before_decay(self) -> list[tuple[int, int, int]]:
        """A purge's decay is about to run: record the ranges it takes from the pools."""
        decayed: list[tuple[int, int, int]] = []
        self.space.pool_decayed = decayed
        return decayed

    def after_decay(self, decayed: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """The pooled areas the decay took (recorded since :meth:`before_decay`), as
        ``(start, end, node)`` in ascending order: what left the pools, as a walk of
        :meth:`pool_ranges` before and after would find."""
        self.space.pool_decayed = None
        return sorted(set(decayed))

    def pool_ranges(self) -> set[tuple[int, int, int]]:
        """Every pooled area as ``(start, end, node)``."""
        if _c_pool_ranges is not None:
            return _c_pool_ranges(self.space.nodes)  # type: ignore[no-any-return]
        return {
            (va.va_start, va.va_end, vn.id)
            for vn in self.space.nodes
            for pool in vn.pools.values()
            for va in pool
        }

    def hold_decayed(self, ranges: list[tuple[int, int, int]]) -> list[VmapArea]:
        """A purge's decay had not reached the kernel's free tree yet: take these
        decayed ranges back out of the model's free tree (parked) until it has.

        ``decay_va_pool_node`` gathers a node's decayed areas in a private tree and
        merges them into the global free tree only after all of that node's pools
        (``reclaim_list_global``), so an allocation on another CPU meanwhile searches
        a tree without them. Returns the parked blocks (for :meth:`release`).
        """
        free = self.space.free
        held: list[VmapArea] = []
        for start, end, _node in sorted(ranges):
            blk = free.pvm_find_va_enclose_addr(start)
            if blk is None or blk.va_start > start or blk.va_end < end:
                continue  # the model allocated in it meanwhile
            if free.va_clip(blk, start, end - start):
                continue
            va = VmapArea(start, end)
            self._park(va)
            held.append(va)
        if held:
            self.revisions += 1
        return held

    def release(self, held: list[VmapArea]) -> None:
        """Give blocks parked by :meth:`hold_decayed` back to the free tree."""
        free = self.space.free
        for va in held:
            if self.parked.get(va.va_start) is va:
                free.merge_or_add_vmap_area_augment(self._unpark(va.va_start))

    # --- tree shape -----------------------------------------------------------------
    def park(self, block: tuple[int, int]) -> bool:
        """The kernel's tree does not have what the model sees as the free block
        ``block`` (pooled before the snapshot, or held by an allocation not traced yet):
        take it out of the model's free tree, so that no search of any size finds it,
        until the kernel allocates in it (:meth:`unpark_overlapping`)."""
        free = self.space.free
        blk = free.pvm_find_va_enclose_addr(block[0])
        if blk is None or blk.va_start != block[0] or blk.va_end != block[1]:
            return False
        free.unlink_va_augment(blk)
        self._park(blk)
        self.revisions += 1
        return True

    def range_is_free(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` lies in one free block of the model's tree or in
        one parked block."""
        blk = self.space.free.pvm_find_va_enclose_addr(start)
        if blk is not None and blk.va_start <= start and end <= blk.va_end:
            return True
        pk = self.parked_at(start) if self.parked else None
        return pk is not None and end <= pk.va_end

    def parked_at(self, addr: int) -> VmapArea | None:
        i = bisect_right(self._parked_starts, addr) - 1
        if i >= 0:
            va = self.parked[self._parked_starts[i]]
            if addr < va.va_end:
                return va
        return None

    def _park(self, va: VmapArea) -> None:
        self.parked[va.va_start] = va
        insort(self._parked_starts, va.va_start)

    def _unpark(self, start: int) -> VmapArea:
        self._parked_starts.pop(bisect_left(self._parked_starts, start))
        return self.parked.pop(start)

    def ranges_below(self, addr: int) -> Iterator[tuple[int, int]]:
        """Free ranges to the model (in its tree or parked) below ``addr``, highest
        first."""
        blk = self.space.free.pvm_find_va_enclose_addr(addr - 1)
        starts = self._parked_starts
        i = bisect_left(starts, addr) - 1
        while blk is not None or i >= 0:
            if i < 0 or (blk is not None and blk.va_start > starts[i]):
                assert blk is not None
                yield blk.va_start, blk.va_end
                blk = rb_prev(blk)
            else:
                va = self.parked[starts[i]]
                yield va.va_start, va.va_end
                i -= 1

    def ranges_below_list(self, addr: int, limit: int) -> list[tuple[int, int]]:
        """The first ``limit`` ranges of :meth:`ranges_below`, as a list."""
        if _c_ranges_below is not None:
            starts = self._parked_starts
            blk = self.space.free.pvm_find_va_enclose_addr(addr - 1)
            got = _c_ranges_below(blk, starts, bisect_left(starts, addr) - 1, self.parked, limit)
            if got is not None:
                return got  # type: ignore[no-any-return]
        return list(islice(self.ranges_below(addr), limit))

    def ranges_below_chunks(
        self, addr: int, limit: int, first: int
    ) -> Iterator[Iterable[tuple[int, int]]]:
        """The first ``limit`` ranges of :meth:`ranges_below` in two lists: ``first``
        of them, then (only if the caller reads on) the rest; without the compiled
        walk, the generator itself (read only as far as the caller reads)."""
        if _c_ranges_below is None:
            yield islice(self.ranges_below(addr), limit)
            return
        head = self.ranges_below_list(addr, min(first, limit))
        yield head
        if len(head) == first < limit:
            yield self.ranges_below_list(addr, limit)[first:]

    def unpark_overlapping(self, start: int, end: int) -> int:
        """Give parked blocks overlapping ``[start, end)`` back to the free tree."""
        starts = self._parked_starts
        if not starts:
            return 0
        lo = max(0, bisect_right(starts, start) - 1)
        hi = bisect_left(starts, end)
        if hi <= lo:
            return 0
        parked = self.parked
        hits = [s for s in starts[lo:hi] if parked[s].va_end > start]
        for s in hits:
            self.space.free.merge_or_add_vmap_area_augment(self._unpark(s))
        return len(hits)

    def split_parked(self, va: VmapArea, start: int, end: int) -> None:
        """The kernel took ``[start, end)`` from inside the parked block ``va`` (a pool
        entry there): the rest stays parked."""
        self._unpark(va.va_start)
        if va.va_start < start:
            self._park(VmapArea(va.va_start, start))
        if end < va.va_end:
            self._park(VmapArea(end, va.va_end))

    def unpark_all(self) -> None:
        """Back to the free tree: the model's own accounting of free space."""
        self.unpark_overlapping(0, self.space.ulong_max)

    def mark_unreachable(self, block: tuple[int, int], length: int) -> None:
        self.unreachable.setdefault((block[0], block[1]), set()).add(length)
        self.revisions += 1

    def mark_passed_over(
        self, lo: int, hi: int, size: int, align: int, length: int, limit: int = 256
    ) -> int:
        """The kernel's search went past every free block in ``[lo, hi)``: none of the
        small ones that would fit (once aligned) lies on its descent path.

        The search checks a block shorter than the search length only when it is an
        ancestor of the block it ends in; a block it passed over is not, and stays so
        while the tree around it does not change. Returns how many were marked.
        """
        space = self.space
        blk = space.free.pvm_find_va_enclose_addr(hi - 1)
        found = None
        if _c_short_fitting_below is not None:
            found = _c_short_fitting_below(blk, lo, hi, size, align, length, limit, space.ulong_max)
        if found is None:
            found = short_fitting_below(blk, lo, hi, size, align, length, limit, space.ulong_max)
        unreachable = self.unreachable
        marked = 0
        for key in found:
            lengths = unreachable.get(key)
            if lengths is None:
                unreachable[key] = {length}
                marked += 1
            elif length not in lengths:
                lengths.add(length)
                marked += 1
        return marked

    def unmark(self, block: tuple[int, int]) -> bool:
        """The kernel allocated in ``block``: it was free and reachable after all."""
        gone = self.unreachable.pop((block[0], block[1]), None)
        if (block[0], block[1]) in self.old_blocks and gone:
            self.old_blocks.discard((block[0], block[1]))
        return bool(gone)

    def is_unreachable(self, block: tuple[int, int], length: int) -> bool:
        if length in self.unreachable.get((block[0], block[1]), ()):
            return True
        return self.passed_over(block[0], block[1], length)

    def passed_over(self, start: int, end: int, length: int) -> bool:
        """Whether the kernel's search passed over this block, a free block of the
        snapshot shorter than ``length``, since the replay began.

        The kernel's search returns the first fitting block on its descent path, and
        every block of the path below it was checked before; so a block below a
        kernel's tree choice is not on the path to that choice, nor (the tree being
        the same around it: a block is an ancestor of another only when it is the
        shallowest of the blocks between them) on the path to any higher one.
        """
        high = self.kernel_tree_high.get(length)
        return (
            high is not None
            and start < high
            and end - start < length
            and (start, end) in self.old_blocks
        )

    def saw_kernel_tree_choice(self, addr: int, length: int) -> None:
        """The kernel took ``addr`` from its free tree with this search length."""
        if addr > self.kernel_tree_high.get(length, 0):
            self.kernel_tree_high[length] = addr

    def remember_old_blocks(self) -> None:
        """Note the free blocks of the snapshot (their place in the tree is unknown)."""
        self.old_blocks = {(va.va_start, va.va_end) for va in self.space.free_areas()}

    def search_skipping(self, size: int, align: int, vstart: int, length: int) -> VmapArea | None:
        """``find_vmap_lowest_match`` over the model's tree, treating unreachable blocks
        (for this search length) as if they did not fit."""
        space = self.space
        bad = self.unreachable
        node = space.free_root.rb_node
        umax = space.ulong_max
        mask = ~(align - 1) & umax
        # passed_over(start, end, length), with its lookups hoisted
        high = self.kernel_tree_high.get(length)
        old = self.old_blocks
        if _c_search_skipping is not None:  # the compiled twin of the walk below
            try:
                found: VmapArea | None = _c_search_skipping(
                    node, size, align, vstart, length, umax, bad, high, old
                )
            except OverflowError:  # a value past 64 bits: the reference below
                pass
            else:
                return found

        def fits(n: VmapArea, vstart: int) -> bool:
            s, e = n.va_start, n.va_end
            nva = ((s if s > vstart else vstart) + align - 1) & mask
            end = nva + size
            if end > umax or nva < vstart or end > e:
                return False
            if bad and length in bad.get((s, e), ()):
                return False
            return high is None or s >= high or e - s >= length or (s, e) not in old

        while node is not None:
            left = node.rb_left
            if left is not None and left.subtree_max_size >= length and vstart < node.va_start:
                node = left
                continue
            if fits(node, vstart):
                return node  # type: ignore[no-any-return]
            right = node.rb_right
            if right is not None and right.subtree_max_size >= length:
                node = right
                continue
            while True:
                node = node.rb_parent
                if node is None:
                    return None
                if fits(node, vstart):
                    return node  # type: ignore[no-any-return]
                right = node.rb_right
                if (
                    right is not None
                    and right.subtree_max_size >= length
                    and vstart <= node.va_start
                ):
                    vstart = node.va_start + 1
                    node = right
                    break
        return None


def short_fitting_below(
    blk: VmapArea | None,
    lo: int,
    hi: int,
    size: int,
    align: int,
    length: int,
    limit: int,
    ulong_max: int,
) -> list[tuple[int, int]]:
    """The free blocks from ``blk`` down (at most ``limit``, while they end above
    ``lo``) that are shorter than the search ``length``, lie in ``[lo, hi)`` and take
    ``size`` bytes once their start is aligned to ``align``: ``(start, end)``, highest
    first. The reference of the compiled ``short_fitting_below`` (_speedups.c)."""
    mask = ~(align - 1) & ulong_max
    out: list[tuple[int, int]] = []
    for _ in range(limit):
        if blk is None or blk.va_end <= lo:
            break
        s, e = blk.va_start, blk.va_end
        if e - s < length and e <= hi and s >= lo and ((s + align - 1) & mask) + size <= e:
            out.append((s, e))
        blk = rb_prev(blk)
    return out


def pool_class(size: int) -> int:
    """The pool index of an area of ``size`` bytes (pages - 1)."""
    return (size - 1) >> PAGE_SHIFT


#: How many free blocks below the last head :func:`next_hidden_head` looks at.
HIDDEN_SCAN_BLOCKS = 64
#: How many free ranges below the last head :func:`next_hidden_area` looks at for one
#: of exactly the allocation's size.
EXACT_SCAN_BLOCKS = 16


def next_hidden_head(b: Beliefs, node: int, idx: int, size: int, align: int) -> int | None:
    """The likely next head of node ``node``'s pool ``idx`` at snapshot time.

    A purge pushes its areas onto the pool head in ascending address order, so one
    purge's areas leave the pool in descending address order: the next head lies below
    the last one the kernel took. Pooled areas look like free space in vmallocinfo.
    The candidate is the highest aligned slot of the free space below that no kernel
    decision has refuted: for thread stacks (align > PAGE_SIZE, pooled side by side)
    any such slot, for other sizes the top slot of each free range.
    """
    if _c_hidden_guess is not None and align > PAGE_SIZE:
        got = _c_hidden_guess(b, node, idx, size, align)
        if got is not NotImplemented:
            return got  # type: ignore[no-any-return]
    last = b.hidden_head.get((node, idx))
    if last is None:
        return None
    space = b.space
    refuted = b.hidden_refuted.get((node, idx), set())
    mask = ~(max(align, PAGE_SIZE) - 1)
    # (one range more than are looked at: the one that ends the scan)
    ranges = chain.from_iterable(b.ranges_below_chunks(last, HIDDEN_SCAN_BLOCKS + 1, 8))
    for n, (start, end) in enumerate(ranges):
        if n >= HIDDEN_SCAN_BLOCKS or start < space.vmalloc_start:
            return None
        top = min(end, last)
        y = (top - size) & mask
        # Stacks (align > PAGE_SIZE) were pooled side by side at the alignment's stride;
        # other areas are taken as the top of a free range only.
        step = align if align > PAGE_SIZE else top
        while y >= start:
            if y not in refuted and y + size <= top:
                return int(y)
            y -= step
    return None


def next_hidden_area(b: Beliefs, node: int, idx: int, size: int) -> int | None:
    """The likely next head of node ``node``'s pool ``idx`` at snapshot time, for an
    area with align <= PAGE_SIZE, once the kernel has shown one head of it.

    A purge pushes its areas onto the pool head in ascending address order, so one
    purge's areas leave the pool in descending order. Below the last head, the
    candidates are, in this order: the slot one stride further down when the last
    three heads were ``stride`` apart (a workload that allocated the same sequence
    again and again left its areas at a regular stride), then the highest free range
    of exactly this size (one pooled area between busy ones). Slots the kernel
    refuted are skipped. Before the stride: the slot right below when the last two
    heads were side by side (see _adjacent_hidden_area; where both apply they name
    the same slot, so this step may come first, also before a compiled twin).
    """
    if _c_hidden_guess is not None:  # all three steps below
        got = _c_hidden_guess(b, node, idx, size, PAGE_SIZE)
        if got is not NotImplemented:
            return got  # type: ignore[no-any-return]
    adjacent = _adjacent_hidden_area(b, node, idx, size)
    if adjacent is not None:
        return adjacent
    key = (node, idx)
    last = b.hidden_head.get(key)
    if last is None:
        return None
    refuted = b.hidden_refuted.get(key, ())
    vs = b.space.vmalloc_start
    prev = b.hidden_prev.get(key)
    if prev is not None and prev > last and b.hidden_prev2.get(key) == prev + (prev - last):
        y = last - (prev - last)
        if y >= vs and y not in refuted and b.range_is_free(y, y + size):
            return y
    # Maximal free ranges below ``last``, highest first (a parked block may touch a
    # tree block: they are one range).
    cur: tuple[int, int] | None = None
    ranges = chain.from_iterable(
        b.ranges_below_chunks(last, EXACT_SCAN_BLOCKS + 1, EXACT_SCAN_BLOCKS + 1)
    )
    for n, (start, end) in enumerate(ranges):
        if n >= EXACT_SCAN_BLOCKS or start < vs:
            break
        end = min(end, last)
        if cur is not None and cur[0] == end:
            cur = (start, cur[1])
            continue
        if cur is not None and cur[1] - cur[0] == size and cur[0] not in refuted:
            return cur[0]
        cur = (start, end)
    if cur is not None and cur[1] - cur[0] == size and cur[0] not in refuted:
        return cur[0]
    return None


def _adjacent_hidden_area(b: Beliefs, node: int, idx: int, size: int) -> int | None:
    """The slot right below the last hidden head, after two adjacent heads.

    Areas of one size freed side by side (a burst of allocations served one after
    another from the bottom of one free block, then freed) are pushed by one purge in
    ascending order and so leave the pool one after another downwards: once the kernel
    took two adjacent heads, the next is the area just below the last one. Only when
    that slot is free space to the model (the kernel holds it pooled, not busy) and
    was not refuted. After one head alone no such guess: a wrong guess costs more
    than the hit gains (measured: docs/replay.md).
    """
    key = (node, idx)
    last = b.hidden_head.get(key)
    if last is None or b.hidden_prev.get(key) != last + size:
        return None
    y = last - size
    if y < b.space.vmalloc_start or y in b.hidden_refuted.get(key, ()):
        return None
    return y if b.range_is_free(y, last) else None
