"""The zoned buddy page allocator (mm/page_alloc.c) over compact page columns.

What follows the kernel (v6.x):

* **Free lists.** One list per zone and order up to ``max_page_order`` (10).
  ``__rmqueue_smallest`` takes the block at the *head* of the smallest non-empty list;
  ``expand()`` puts the upper halves back at the *head* of their lists.
  ``__free_one_page`` merges with free buddies of the same zone and order, then adds the
  block at the head, or at the *tail* when ``buddy_merge_likely()`` says the buddy of
  the merged block at the next order is free (only below ``MAX_PAGE_ORDER - 1``).
  Boot memory is freed with ``FPI_TO_TAIL`` in ascending address order, so a fresh
  zone's lists are sorted by pfn. The free-area shuffle (``page_alloc.shuffle``) is
  off, as by default.
* **Per-CPU lists (pcp), order 0 only, one CPU.** Order-0 allocations are served from
  the zone's pcp list: when empty it is refilled with ``batch`` pages taken one by one
  with ``__rmqueue`` and appended at the tail (``rmqueue_bulk``); allocation takes the
  head. Frees go to the head (LIFO); when ``count >= high`` the ``batch`` oldest pages
  (tail) go back to the buddy lists. ``batch`` follows ``zone_batchsize()``; ``high``
  is the static ``zone_highsize()`` (low watermark / CPUs of the node, at least
  ``4 * batch``; its ``high_min``) since v5.14, ``6 * batch`` before. Simplified: no per-CPU instances (the model runs on CPU 0), no pcp
  for orders 1..3 or THP, no dynamic high/batch scaling (``free_count``,
  ``alloc_factor``), no ``free_high`` heuristics. pcp pages count as allocated from the
  zone's point of view (``NR_FREE_PAGES`` and /proc/buddyinfo exclude them).
* **Watermarks.** ``min_free_kbytes = clamp(int_sqrt(lowmem_kbytes * 16), 128, 262144)``;
  per zone min is the zone's share of ``min_free_kbytes`` (highmem: managed/1024
  clamped to 32..128), low = min + max(min/4, managed * 10 / 10000), high = low + same.
  ``lowmem_reserve`` uses the ratios 256/256/32. The fast path checks the *low*
  watermark, the slow path the *min* watermark with ``__GFP_HIGH`` (ALLOC_MIN_RESERVE:
  -1/2) and non-blocking ``GFP_ATOMIC`` (ALLOC_NON_BLOCK: a further -1/4) reserves;
  ``__GFP_MEMALLOC`` ignores watermarks. There is no reclaim, compaction or OOM killer
  in the model, so what the slow path cannot find fails; ``__GFP_NOFAIL`` tries the
  ``ALLOC_MIN_RESERVE`` fallback and then fails with a WARN where the kernel would loop
  forever. No highatomic reserves, no migratetypes (all pages behave as one type), no
  CMA.
* **Zonelists.** ``gfp_zone()`` picks the highest usable zone; the zonelist is the
  preferred node's populated zones from high to low, then the other nodes in the order
  N, N+1, ..., 0, ..., N-1 (equal distances); ``__GFP_THISNODE`` uses the local node
  only. ``NUMA_NO_NODE`` means the current CPU's node (0).
* **Failure report.** ``warn_alloc()``'s first line (no rate limit, no show_mem) unless
  ``__GFP_NOWARN``.

Page columns (numpy, 13 bytes per page): ``flags`` (uint8, model bits ``PG_*``),
``refcount`` (int32), ``order`` (int8: buddy order of a free head / order of an
allocated head), ``zone`` (uint8 index into :attr:`PhysicalMemory.zones`, 255 = none),
``node`` (uint8), ``owner`` (int32 tag). Free lists are intrusive doubly linked lists
kept in per-zone dicts keyed by the free block's head pfn (the kernel's ``page->buddy_list``),
so building a zone costs O(number of max-order blocks). Page contents live in a dict
``pfn -> bytearray(4096)`` only for pages that were written; freed pages keep their
stale contents (no init_on_free) and ``__GFP_ZERO`` drops them.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator, MutableSequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import NUMA_NO_NODE, PAGE_SHIFT, PAGE_SIZE, KernelProfile, Machine
from pyvmalloc.errors import InvariantError
from pyvmalloc.gfp import Gfp, format_gfp, warn_alloc_text
from pyvmalloc.phys.layout import MemoryLayout, ZoneLayout, build_layout
from pyvmalloc.printk import KernelLog

__all__ = [
    "NUMA_NO_NODE",
    "OWNER_KERNEL",
    "OWNER_MEMMAP",
    "OWNER_NONE",
    "OWNER_PGTABLE",
    "PG_ALLOC",
    "PG_BUDDY",
    "PG_HOLE",
    "PG_PCP",
    "PG_PGTABLE",
    "PG_RESERVED",
    "InvariantError",
    "PhysicalMemory",
    "Zone",
]


# model page flags (uint8 column)
PG_RESERVED = 0x01  # PageReserved: memblock reservation or hole
PG_BUDDY = 0x02  # PageBuddy: head of a free block in a buddy list
PG_PCP = 0x04  # on the zone's per-cpu list
PG_PGTABLE = 0x08  # PageTable: a kernel page-table page
PG_ALLOC = 0x10  # head of an allocated block (order in the order column)
PG_HOLE = 0x20  # no RAM behind this pfn

PAGE_FLAG_NAMES = (
    (PG_RESERVED, "reserved"),
    (PG_BUDDY, "buddy"),
    (PG_PCP, "pcp"),
    (PG_PGTABLE, "pgtable"),
    (PG_ALLOC, "alloc"),
    (PG_HOLE, "hole"),
)

# owner tags below 16 belong to the phys/pgtable layers
OWNER_NONE = 0
OWNER_PGTABLE = 1
OWNER_KERNEL = 2
OWNER_MEMMAP = 3

NO_ZONE = 255

# alloc_flags (mm/internal.h)
WMARK_MIN, WMARK_LOW, WMARK_HIGH = 0, 1, 2
ALLOC_WMARK_MASK = 0x03
ALLOC_NO_WATERMARKS = 0x04
ALLOC_OOM = 0x08
ALLOC_NON_BLOCK = 0x10
ALLOC_MIN_RESERVE = 0x20
ALLOC_HIGHATOMIC = 0x200
ALLOC_RESERVES = ALLOC_NON_BLOCK | ALLOC_MIN_RESERVE | ALLOC_HIGHATOMIC | ALLOC_OOM

#: sysctl_lowmem_reserve_ratio by zone index
LOWMEM_RESERVE_RATIO = {
    "x86_64": (256, 256, 32, 0),
    "i386": (256, 32, 0, 0),
}
SWAP_CLUSTER_MAX = 32
WATERMARK_SCALE_FACTOR = 10
PAGE_ALLOC_COSTLY_ORDER = 3

_DMA = int(Gfp.DMA)
_HIGHMEM = int(Gfp.HIGHMEM)
_DMA32 = int(Gfp.DMA32)
_MOVABLE = int(Gfp.MOVABLE)
_ZERO = int(Gfp.ZERO)
_NOWARN = int(Gfp.NOWARN)
_NOFAIL = int(Gfp.NOFAIL)
_HIGH = int(Gfp.HIGH)
_DIRECT_RECLAIM = int(Gfp.DIRECT_RECLAIM)
_NOMEMALLOC = int(Gfp.NOMEMALLOC)
_MEMALLOC = int(Gfp.MEMALLOC)
_THISNODE = int(Gfp.THISNODE)


#: The compiled twins of :meth:`PhysicalMemory.alloc_pages_bulk` and
#: :meth:`PhysicalMemory.free_pages_bulk` (pcp refills and drains over the buddy lists
#: included); each returns None, having changed nothing, for a call it does not mirror.
#: The differential tests set them to None to run the reference.
_c_alloc_bulk: Callable[..., int | None] | None = (
    _speedups.phys_alloc_pages_bulk if _speedups is not None else None
)
_c_free_bulk: Callable[..., bool | None] | None = (
    _speedups.phys_free_pages_bulk if _speedups is not None else None
)


def _rounddown_pow_of_two(x: int) -> int:
    return 1 << (x.bit_length() - 1) if x > 0 else 0


class Zone:
    """One ``struct zone``: spans, counters, watermarks, free lists and the pcp list."""

    __slots__ = (
        "end_pfn",
        "free_order",
        "free_pages",
        "gidx",
        "idx",
        "lowmem_reserve",
        "managed",
        "max_order",
        "name",
        "nid",
        "nr_free",
        "nxt",
        "pcp",
        "pcp_batch",
        "pcp_high",
        "present",
        "prv",
        "start_pfn",
        "wmark",
    )

    def __init__(self, zl: ZoneLayout, gidx: int, max_order: int) -> None:
        self.nid = zl.nid
        self.idx = zl.idx
        self.name = zl.name
        self.start_pfn = zl.start_pfn
        self.end_pfn = zl.end_pfn
        self.present = zl.present
        self.managed = zl.managed
        self.gidx = gidx
        self.max_order = max_order
        self.nr_free = [0] * (max_order + 1)
        self.free_pages = 0
        self.free_order: dict[int, int] = {}
        self.nxt: dict[int, int] = {}
        self.prv: dict[int, int] = {}
        for o in range(max_order + 1):
            self.nxt[-1 - o] = -1 - o
            self.prv[-1 - o] = -1 - o
        self.wmark = [0, 0, 0, 0]  # min, low, high, promo
        self.lowmem_reserve = [0, 0, 0, 0]
        self.pcp: deque[int] = deque()
        self.pcp_batch = 1
        self.pcp_high = 4

    @property
    def spanned(self) -> int:
        return self.end_pfn - self.start_pfn

    def __repr__(self) -> str:
        return (
            f"<Zone node {self.nid} {self.name} pfn {self.start_pfn:#x}-{self.end_pfn:#x} "
            f"managed {self.managed} free {self.free_pages}>"
        )

    # -- intrusive free lists ----------------------------------------------------------
    def add_head(self, pfn: int, order: int) -> None:
        s = -1 - order
        nxt = self.nxt
        n = nxt[s]
        nxt[s] = pfn
        nxt[pfn] = n
        self.prv[pfn] = s
        self.prv[n] = pfn
        self.free_order[pfn] = order
        self.nr_free[order] += 1
        self.free_pages += 1 << order

    def add_tail(self, pfn: int, order: int) -> None:
        s = -1 - order
        prv = self.prv
        p = prv[s]
        prv[s] = pfn
        prv[pfn] = p
        self.nxt[pfn] = s
        self.nxt[p] = pfn
        self.free_order[pfn] = order
        self.nr_free[order] += 1
        self.free_pages += 1 << order

    def remove(self, pfn: int) -> int:
        order = self.free_order.pop(pfn)
        n = self.nxt.pop(pfn)
        p = self.prv.pop(pfn)
        self.nxt[p] = n
        self.prv[n] = p
        self.nr_free[order] -= 1
        self.free_pages -= 1 << order
        return order

    def first(self, order: int) -> int:
        """Head of the order's list, or -1 if empty."""
        n = self.nxt[-1 - order]
        return n if n >= 0 else -1

    def free_list(self, order: int) -> list[int]:
        """The order's free list from head to tail."""
        out = []
        n = self.nxt[-1 - order]
        while n >= 0:
            out.append(n)
            n = self.nxt[n]
        return out

    def bulk_fill(self, blocks: list[tuple[int, int]]) -> None:
        """Append ``(pfn, order)`` blocks at the tails, in the given order."""
        per: list[list[int]] = [[] for _ in range(self.max_order + 1)]
        for pfn, o in blocks:
            per[o].append(pfn)
        for o, pfns in enumerate(per):
            if not pfns:
                continue
            s = -1 - o
            tail = self.prv[s]
            chain = [tail, *pfns, s]
            self.nxt.update(itertools.pairwise(chain))
            self.prv.update(zip(chain[1:], chain[:-1], strict=True))
            self.free_order.update(dict.fromkeys(pfns, o))
            self.nr_free[o] += len(pfns)
            self.free_pages += len(pfns) << o


def _decompose(start: int, end: int, max_order: int) -> list[tuple[int, int]]:
    """Split [start, end) into maximal aligned blocks, ascending (memblock_free_pages)."""
    out: list[tuple[int, int]] = []
    big = 1 << max_order
    while start < end and start & (big - 1):
        o = min(max_order, (start & -start).bit_length() - 1)
        while start + (1 << o) > end:
            o -= 1
        out.append((start, o))
        start += 1 << o
    mid_end = start + ((end - start) // big) * big
    if mid_end > start:
        out.extend((int(p), max_order) for p in range(start, mid_end, big))
        start = mid_end
    while start < end:
        o = max_order
        while start + (1 << o) > end:
            o -= 1
        out.append((start, o))
        start += 1 << o
    return out


class PhysicalMemory:
    """Physical pages of a :class:`~pyvmalloc.config.Machine` and their allocator.

    >>> from pyvmalloc.config import Machine, PROFILES
    >>> pm = PhysicalMemory(Machine(ram="64M"), PROFILES["6.18"], KernelLog())
    >>> pfn = pm.alloc_pages(0xcc0, 0)  # GFP_KERNEL, order 0: smallest free block first
    >>> hex(pfn), pm.page_zone(pfn).name
    ('0x3c00', 'DMA32')
    >>> pm.free_pages(pfn, 0); pm.check()
    """

    comm: str = "swapper/0"

    def __init__(self, machine: Machine, profile: KernelProfile, log: KernelLog) -> None:
        self.machine = machine
        self.profile = profile
        self.log = log
        self.max_order = profile.max_page_order
        self.layout: MemoryLayout = build_layout(machine, self.max_order)
        lay = self.layout
        n = lay.max_pfn
        self.max_pfn = n
        self.max_low_pfn = lay.max_low_pfn
        self.page_offset = machine.layout["PAGE_OFFSET"]
        self.flags: npt.NDArray[np.uint8] = np.full(n, PG_HOLE | PG_RESERVED, np.uint8)
        self.refcount: npt.NDArray[np.int32] = np.ones(n, np.int32)
        self.order: npt.NDArray[np.int8] = np.zeros(n, np.int8)
        self.zone: npt.NDArray[np.uint8] = np.full(n, NO_ZONE, np.uint8)
        self.node: npt.NDArray[np.uint8] = np.zeros(n, np.uint8)
        self.owner: npt.NDArray[np.int32] = np.zeros(n, np.int32)
        self._data: dict[int, bytearray] = {}
        self.nr_pgtable_pages = 0
        self._totalram = -1  # totalram_pages, once the zones are built
        self.highmem_idx = 2 if lay.zone_model == "i386" else -1

        for s, e in lay.ram_ranges:
            self.flags[s:e] = 0
            self.refcount[s:e] = 0
        for s, e, why in lay.reserved:
            e = min(e, n)
            self.flags[s:e] |= PG_RESERVED
            self.refcount[s:e] = 1
            tag = OWNER_MEMMAP if why.startswith("memmap") else OWNER_KERNEL
            self.owner[s:e] = np.where(self.flags[s:e] & PG_HOLE, 0, tag)

        self.zones: list[Zone] = []
        self.node_zones: list[list[Zone | None]] = []
        for node in lay.nodes:
            nz: list[Zone | None] = [None, None, None, None]
            self.node[node.start_pfn : node.end_pfn] = node.nid
            for zl in node.zones:
                z = Zone(zl, len(self.zones), self.max_order)
                self.zones.append(z)
                nz[zl.idx] = z
                self.zone[zl.start_pfn : zl.end_pfn] = z.gidx
            self.node_zones.append(nz)
        self.nr_nodes = len(self.node_zones)
        self._build_free_lists()
        self._setup_watermarks()
        self._zonelists: dict[tuple[int, bool, int], list[Zone]] = {}
        #: (nid, gfp) -> (zonelist, gfp_zone) for masks with valid zone modifiers:
        #: both are pure functions of their arguments then (gfp_zone() only has a side
        #: effect, the BUG, for bad modifiers, which are never cached).
        self._zl_gfp: dict[tuple[int, int], tuple[list[Zone], int]] = {}
        # memoryviews: much faster scalar access than numpy indexing
        self._fl = memoryview(self.flags.data)
        self._rc = memoryview(self.refcount.data)
        self._od = memoryview(self.order.data)
        self._ow = memoryview(self.owner.data)
        self._zn = memoryview(self.zone.data)

    # ------------------------------------------------------------------------- boot
    def _build_free_lists(self) -> None:
        free = (self.flags == 0).view(np.int8)
        for z in self.zones:
            seg = free[z.start_pfn : z.end_pfn]
            d = np.diff(np.concatenate(([0], seg, [0])).astype(np.int8))
            starts = np.flatnonzero(d == 1) + z.start_pfn
            ends = np.flatnonzero(d == -1) + z.start_pfn
            blocks: list[tuple[int, int]] = []
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                blocks.extend(_decompose(s, e, self.max_order))
            if not blocks:
                continue
            z.bulk_fill(blocks)
            heads = np.fromiter((b[0] for b in blocks), np.int64, len(blocks))
            orders = np.fromiter((b[1] for b in blocks), np.int8, len(blocks))
            self.flags[heads] |= PG_BUDDY
            self.order[heads] = orders

    def _setup_watermarks(self) -> None:
        lowmem = sum(z.managed for z in self.zones if not self._is_highmem(z) and z.idx != 3)
        lowmem = max(lowmem, 1)
        self.min_free_kbytes = min(max(math.isqrt(lowmem * (PAGE_SIZE >> 10) * 16), 128), 262144)
        pages_min = self.min_free_kbytes >> (PAGE_SHIFT - 10)
        for z in self.zones:
            tmp = pages_min * z.managed // lowmem
            if self._is_highmem(z):
                wmin = min(max(z.managed // 1024, SWAP_CLUSTER_MAX), 128)
            else:
                wmin = tmp
            tmp = max(tmp >> 2, z.managed * WATERMARK_SCALE_FACTOR // 10000)
            z.wmark = [wmin, wmin + tmp, wmin + 2 * tmp, wmin + 3 * tmp]
        ratios = LOWMEM_RESERVE_RATIO[self.layout.zone_model]
        for nz in self.node_zones:
            managed = [zz.managed if zz else 0 for zz in nz]
            for i, nzi in enumerate(nz):
                if nzi is None:
                    continue
                clear = not ratios[i] or not managed[i]
                acc = 0
                for j in range(i + 1, 4):
                    acc += managed[j]
                    nzi.lowmem_reserve[j] = 0 if clear else acc // ratios[i]
        cpus_per_node = max(1, self.machine.cpus_online // self.nr_nodes)
        for z in self.zones:
            batch = min(z.managed >> 10, (1 << 20) // PAGE_SIZE) // 4
            batch = max(batch, 1)
            batch = _rounddown_pow_of_two(batch + batch // 2) - 1
            z.pcp_batch = max(1, batch)
            if self.profile.pcp_high_from_low_wmark:  # zone_highsize() (v5.14+)
                z.pcp_high = max(z.wmark[WMARK_LOW] // cpus_per_node, z.pcp_batch << 2)
            else:  # pageset_set_batch(): 6 * zone_batchsize()
                z.pcp_high = 6 * batch

    def _is_highmem(self, z: Zone) -> bool:
        return z.idx == self.highmem_idx

    # ------------------------------------------------------------------- accounting
    @property
    def totalram_pages(self) -> int:
        """``totalram_pages()``: managed pages of all zones (fixed at boot: the model
        has no memory hotplug, so the sum is taken once, on first use)."""
        n = self._totalram
        if n < 0:
            n = 0
            for z in self.zones:
                n += z.managed
            self._totalram = n
        return n

    def nr_free_pages(self) -> int:
        """Global ``NR_FREE_PAGES``: pages in buddy lists (pcp pages not included)."""
        return sum(z.free_pages for z in self.zones)

    def __repr__(self) -> str:
        zones = ", ".join(f"{z.name} {z.free_pages}/{z.managed}" for z in self.zones)
        return (
            f"<PhysicalMemory {self.totalram_pages} pages managed, "
            f"{self.nr_free_pages()} free (zone free/managed: {zones})>"
        )

    def page_zone(self, pfn: int) -> Zone:
        g = self._zn[pfn]
        if g == NO_ZONE:
            raise ValueError(f"pfn {pfn:#x} is in no zone")
        return self.zones[g]

    def page_to_nid(self, pfn: int) -> int:
        return int(self.node[pfn])

    def pfn_valid(self, pfn: int) -> bool:
        return 0 <= pfn < self.max_pfn

    def page_address(self, pfn: int) -> int:
        """``page_address()``: the direct-map (lowmem) virtual address of a page."""
        if not 0 <= pfn < self.max_low_pfn:
            raise ValueError(f"pfn {pfn:#x} is not in lowmem (highmem needs kmap)")
        return self.page_offset + (pfn << PAGE_SHIFT)

    def virt_to_phys(self, addr: int) -> int:
        """``__pa()`` for a direct-map address."""
        phys = addr - self.page_offset
        if not 0 <= phys < self.max_low_pfn << PAGE_SHIFT:
            raise ValueError(f"{addr:#x} is not a direct-map address")
        return phys

    def virt_to_page(self, addr: int) -> int:
        """``virt_to_page()`` as a pfn."""
        return self.virt_to_phys(addr) >> PAGE_SHIFT

    def is_direct_map(self, addr: int) -> bool:
        return 0 <= addr - self.page_offset < self.max_low_pfn << PAGE_SHIFT

    # --------------------------------------------------------------------- zonelist
    def gfp_zone(self, gfp: int) -> int:
        """``gfp_zone()``: the highest zone index the mask may use."""
        bits = gfp & (_DMA | _HIGHMEM | _DMA32 | _MOVABLE)
        x86_64 = self.layout.zone_model == "x86_64"
        # A bad combination is VM_BUG_ON((GFP_ZONE_BAD >> bit) & 1): it stops only
        # with CONFIG_DEBUG_VM; without it GFP_ZONE_TABLE holds 0 there (ZONE_DMA).
        if bits & _DMA:
            if bits & (_HIGHMEM | _DMA32):
                self.log.BUG(
                    "gfp_zone:GFP_ZONE_BAD",
                    f"gfp_zone: bad zone modifiers {gfp:#x}({format_gfp(gfp)})",
                )
            return 0
        if bits & _DMA32:
            if bits & _HIGHMEM:
                self.log.BUG(
                    "gfp_zone:GFP_ZONE_BAD",
                    f"gfp_zone: bad zone modifiers {gfp:#x}({format_gfp(gfp)})",
                )
                return 0
            return 1  # x86_64: ZONE_DMA32; i386: OPT_ZONE_DMA32 is ZONE_NORMAL (also 1)
        if bits & _HIGHMEM:
            if bits & _MOVABLE:
                return 3
            return 2  # i386: ZONE_HIGHMEM; x86_64: OPT_ZONE_HIGHMEM is ZONE_NORMAL (also 2)
        return 2 if x86_64 else 1

    def zonelist(self, nid: int, gfp: int) -> list[Zone]:
        """Zones to try, in order, filtered by ``gfp_zone(gfp)``."""
        if nid == NUMA_NO_NODE:
            nid = 0
        thisnode = bool(gfp & _THISNODE)
        highest = self.gfp_zone(gfp)
        key = (nid, thisnode, highest)
        zl = self._zonelists.get(key)
        if zl is None:
            n = self.nr_nodes
            order = [nid] if thisnode else [(nid + k) % n for k in range(n)]
            zl = [
                z
                for node in order
                for z in reversed(self.node_zones[node])
                if z is not None and z.present and z.idx <= highest
            ]
            self._zonelists[key] = zl
        return zl

    # ------------------------------------------------------------------- watermarks
    def zone_watermark_ok(
        self, z: Zone, order: int, mark: int, highest: int, alloc_flags: int
    ) -> bool:
        """``zone_watermark_fast`` + ``__zone_watermark_ok`` (no highatomic, no CMA)."""
        free = z.free_pages - ((1 << order) - 1)
        wmin = mark
        if alloc_flags & ALLOC_RESERVES and alloc_flags & ALLOC_MIN_RESERVE:
            wmin -= wmin // 2
            if alloc_flags & ALLOC_NON_BLOCK:
                wmin -= wmin // 4
        if alloc_flags & ALLOC_OOM:
            wmin -= wmin // 2
        if free <= wmin + z.lowmem_reserve[highest]:
            return False
        if not order:
            return True
        nr_free = z.nr_free
        return any(nr_free[o] for o in range(order, self.max_order + 1))

    def gfp_to_alloc_flags(self, gfp: int, order: int) -> int:
        flags = WMARK_MIN
        if gfp & _HIGH:
            flags |= ALLOC_MIN_RESERVE
        if not gfp & _DIRECT_RECLAIM:
            if not gfp & _NOMEMALLOC:
                flags |= ALLOC_NON_BLOCK
            if order > 0:
                flags |= ALLOC_HIGHATOMIC
        return flags

    # ---------------------------------------------------------------------- buddy
    def _rmqueue_smallest(self, z: Zone, order: int) -> int:
        """``__rmqueue_smallest`` + ``expand``: -1 if no block is large enough."""
        nxt = z.nxt
        for cur in range(order, self.max_order + 1):
            pfn = nxt[-1 - cur]  # z.first(cur), inlined: an empty list's head is negative
            if pfn < 0:
                continue
            z.remove(pfn)
            fl, od = self._fl, self._od
            fl[pfn] &= ~PG_BUDDY
            while cur > order:
                cur -= 1
                half = pfn + (1 << cur)
                z.add_head(half, cur)
                fl[half] |= PG_BUDDY
                od[half] = cur
            return pfn
        return -1

    def _free_one_page(self, z: Zone, pfn: int, order: int, to_tail: bool = False) -> None:
        """``__free_one_page``: merge with free buddies, then add at head or tail."""
        fl, od = self._fl, self._od
        free_order = z.free_order
        max_order = self.max_order
        buddy = pfn
        while order < max_order:
            buddy = pfn ^ (1 << order)
            if free_order.get(buddy) != order:
                break
            z.remove(buddy)
            fl[buddy] &= ~PG_BUDDY
            pfn &= buddy
            order += 1
        fl[pfn] |= PG_BUDDY
        od[pfn] = order
        if not to_tail and order < max_order - 1:
            # buddy_merge_likely(): is the buddy of the next-order block free?
            higher = buddy & pfn
            to_tail = free_order.get(higher ^ (1 << (order + 1))) == order + 1
        if to_tail:
            z.add_tail(pfn, order)
        else:
            z.add_head(pfn, order)

    def _rmqueue(self, z: Zone, order: int) -> int:
        if order == 0:
            pcp = z.pcp
            if not pcp:
                for _ in range(z.pcp_batch):  # rmqueue_bulk
                    p = self._rmqueue_smallest(z, 0)
                    if p < 0:
                        break
                    self._fl[p] |= PG_PCP
                    pcp.append(p)
                if not pcp:
                    return -1
            p = pcp.popleft()
            self._fl[p] &= ~PG_PCP
            return p
        return self._rmqueue_smallest(z, order)

    def _get_page_from_freelist(
        self, zones: list[Zone], order: int, alloc_flags: int, highest: int
    ) -> int:
        mark_idx = alloc_flags & ALLOC_WMARK_MASK
        for z in zones:
            if not alloc_flags & ALLOC_NO_WATERMARKS and not self.zone_watermark_ok(
                z, order, z.wmark[mark_idx], highest, alloc_flags
            ):
                continue
            pfn = self._rmqueue(z, order)
            if pfn >= 0:
                return pfn
        return -1

    def _prep_new_page(self, pfn: int, order: int, gfp: int) -> None:
        self._fl[pfn] |= PG_ALLOC
        self._od[pfn] = order
        self._rc[pfn] = 1
        self._ow[pfn] = OWNER_NONE
        if gfp & _ZERO and self._data:
            if order == 0:
                self._data.pop(pfn, None)
            else:
                for p in range(pfn, pfn + (1 << order)):
                    self._data.pop(p, None)

    def _prep_new_pages_bulk(self, pfns: list[int], gfp: int) -> None:
        """Order-0 ``_prep_new_page`` for many pages taken off a pcp list (numpy)."""
        if len(pfns) < 8:
            fl = self._fl
            for p in pfns:
                fl[p] &= ~PG_PCP
                self._prep_new_page(p, 0, gfp)
            return
        # The same column writes in one C loop (False: a pfn out of range, nothing
        # written; the numpy path below then raises as the reference does).
        if (
            _speedups is not None
            and pfns.__class__ is list
            and _speedups.phys_prep_bulk(
                self.flags, self.order, self.refcount, self.owner, pfns, PG_PCP, PG_ALLOC,
                OWNER_NONE,
            )
        ):  # fmt: skip
            if gfp & _ZERO and self._data:
                for p in pfns:
                    self._data.pop(p, None)
            return
        idx = np.fromiter(pfns, dtype=np.intp, count=len(pfns))
        self.flags[idx] = (self.flags[idx] & (0xFF & ~PG_PCP)) | PG_ALLOC
        self.order[idx] = 0
        self.refcount[idx] = 1
        self.owner[idx] = OWNER_NONE
        if gfp & _ZERO and self._data:
            for p in pfns:
                self._data.pop(p, None)

    # ----------------------------------------------------------------- public alloc
    def _zones_for(self, nid: int, gfp: int) -> tuple[list[Zone], int]:
        """``(zonelist(nid, gfp), gfp_zone(gfp))``, memoised for valid zone bits."""
        key = (nid, gfp)
        r = self._zl_gfp.get(key)
        if r is not None:
            return r
        r = (self.zonelist(nid, gfp), self.gfp_zone(gfp))
        bad = (gfp & _DMA and gfp & (_HIGHMEM | _DMA32)) or (gfp & _DMA32 and gfp & _HIGHMEM)
        if not bad:
            self._zl_gfp[key] = r
        return r

    def alloc_pages(self, gfp: int, order: int = 0, nid: int = NUMA_NO_NODE) -> int | None:
        """``alloc_pages_node(nid, gfp, order)``: the head pfn, or None on failure."""
        if order > self.max_order or order < 0:
            if not gfp & _NOWARN:
                self.log.WARN_ONCE(
                    "alloc_pages:order",
                    f"alloc_pages: order {order} > MAX_PAGE_ORDER {self.max_order}",
                )
            return None
        zh = self._zl_gfp.get((nid, gfp))
        zones, highest = zh if zh is not None else self._zones_for(nid, gfp)
        pfn = -1
        if zones and order == 0:
            # Fast path for the first zone of an order-0 request: this is the first
            # iteration of _get_page_from_freelist(zones, 0, WMARK_LOW, highest) with
            # zone_watermark_ok() inlined (WMARK_LOW carries no ALLOC_* reserve bits,
            # and order 0 needs no free-area check), and _rmqueue() inlined when the
            # pcp list has a page. A miss falls through to the general loop, which
            # re-tests this zone with the same (unchanged) result.
            z = zones[0]
            if z.free_pages > z.wmark[WMARK_LOW] + z.lowmem_reserve[highest]:
                pcp = z.pcp
                if pcp:
                    pfn = pcp.popleft()
                    self._fl[pfn] &= ~PG_PCP
                else:
                    pfn = self._rmqueue(z, 0)
        if pfn < 0:
            pfn = self._get_page_from_freelist(zones, order, WMARK_LOW, highest)
        if pfn < 0:
            pfn = self._alloc_slowpath(gfp, order, zones, highest)
            if pfn < 0:
                return None
        self._prep_new_page(pfn, order, gfp)
        return pfn

    def _alloc_slowpath(self, gfp: int, order: int, zones: list[Zone], highest: int) -> int:
        alloc_flags = self.gfp_to_alloc_flags(gfp, order)
        pfn = self._get_page_from_freelist(zones, order, alloc_flags, highest)
        if pfn >= 0:
            return pfn
        if gfp & _MEMALLOC and not gfp & _NOMEMALLOC:
            pfn = self._get_page_from_freelist(zones, order, ALLOC_NO_WATERMARKS, highest)
            if pfn >= 0:
                return pfn
        # no reclaim, compaction or OOM killer in the model
        if gfp & _NOFAIL:
            pfn = self._get_page_from_freelist(zones, order, WMARK_MIN | ALLOC_MIN_RESERVE, highest)
            if pfn >= 0:
                return pfn
            self.log.WARN(
                f"__GFP_NOFAIL allocation of order {order} cannot be satisfied: "
                "the kernel would retry forever here"
            )
        if not gfp & _NOWARN:
            self.log.warn(
                warn_alloc_text(
                    gfp,
                    f"page allocation failure: order:{order}",
                    comm=self.comm,
                    nr_nodes=self.nr_nodes,
                )
            )
        return -1

    def alloc_page(self, gfp: int) -> int | None:
        return self.alloc_pages(gfp, 0)

    def alloc_pages_node(self, nid: int, gfp: int, order: int = 0) -> int | None:
        return self.alloc_pages(gfp, order, nid)

    def alloc_pages_bulk(self, gfp: int, nid: int, nr: int, out_list: MutableSequence[int]) -> int:
        """``alloc_pages_bulk_node``: append pages to ``out_list`` until it holds ``nr``.

        Returns the number of pages in ``out_list`` afterwards (the kernel's
        ``nr_populated``: pre-filled entries count). Like the kernel it serves order-0
        pages from the pcp list of the first *local* zone that passes the low watermark
        plus ``nr``, and falls back to one ordinary allocation when that zone gives
        nothing or only one page is wanted.
        """
        if (
            _c_alloc_bulk is not None
            and (n := _c_alloc_bulk(self, gfp, nid, nr, out_list)) is not None
        ):
            return n
        populated = len(out_list)
        if nr <= 0 or populated >= nr:
            return populated
        if nr - populated > 1:
            zh = self._zl_gfp.get((nid, gfp))
            zones, highest = zh if zh is not None else self._zones_for(nid, gfp)
            pref = zones[0] if zones else None
            chosen = None
            for z in zones:
                if self.nr_nodes > 1 and pref is not None and z.nid != pref.nid:
                    break
                if self.zone_watermark_ok(
                    z, 0, z.wmark[WMARK_LOW] + nr, pref.idx if pref else highest, 0
                ):
                    chosen = z
                    break
            if chosen is not None:
                # Take the pages as _rmqueue would (pcp head first, a refill from the
                # buddy lists whenever the pcp list runs dry), then prepare them all at
                # once: _prep_new_page's column writes do not affect which page comes
                # next, so doing them in bulk gives the same pages and the same state.
                got: list[int] = []
                pcp = chosen.pcp
                fl = self._fl
                want = nr - populated
                while len(got) < want:
                    if pcp:
                        take = min(want - len(got), len(pcp))
                        if _speedups is not None:
                            _speedups.deque_popleft_into(pcp, take, got)
                        else:
                            got.extend([pcp.popleft() for _ in range(take)])
                        continue
                    p = self._rmqueue(chosen, 0)  # refills the pcp list (rmqueue_bulk)
                    if p < 0:
                        break
                    fl[p] |= PG_PCP  # cleared below with the others
                    got.append(p)
                if got:
                    self._prep_new_pages_bulk(got, gfp)
                    out_list.extend(got)
                    return populated + len(got)
        p1 = self.alloc_pages(gfp, 0, nid)
        if p1 is not None:
            out_list.append(p1)
            populated += 1
        return populated

    # ------------------------------------------------------------------------- free
    def _bad_page(self, pfn: int, reason: str) -> None:
        self.log.WARN(f"BUG: Bad page state in process {self.comm}  pfn:{pfn:#x} ({reason})")

    def free_pages(self, pfn: int, order: int = 0) -> None:
        """``__free_pages(page, order)``: drop a reference, free the block at zero."""
        fl, od = self._fl, self._od
        if not 0 <= pfn < self.max_pfn or not fl[pfn] & PG_ALLOC:
            self._bad_page(pfn, "freeing a page that is not allocated")
            return
        if od[pfn] != order:
            self._bad_page(pfn, f"freed with order {order}, allocated with {od[pfn]}")
            return
        rc = self._rc[pfn] - 1
        self._rc[pfn] = rc
        if rc > 0:
            return
        f = fl[pfn]
        if f & PG_PGTABLE:
            f &= ~PG_PGTABLE
            self.nr_pgtable_pages -= 1
        od[pfn] = 0
        self._ow[pfn] = OWNER_NONE
        z = self.zones[self._zn[pfn]]
        if order == 0:
            pcp = z.pcp
            pcp.appendleft(pfn)
            fl[pfn] = (f & ~PG_ALLOC) | PG_PCP
            if len(pcp) >= z.pcp_high:
                for _ in range(min(z.pcp_batch, len(pcp))):  # free_pcppages_bulk
                    p = pcp.pop()
                    fl[p] &= ~PG_PCP
                    self._free_one_page(z, p, 0)
            return
        fl[pfn] = f & ~PG_ALLOC
        self._free_one_page(z, pfn, order)

    def free_page(self, pfn: int) -> None:
        self.free_pages(pfn, 0)

    def free_pages_bulk(self, pfns: list[int]) -> None:
        """``__free_pages(page, 0)`` for each of ``pfns`` in order (vfree's page loop).

        Same result as calling :meth:`free_pages` for each page. When every page is a
        distinct order-0 page with one reference in one zone (what vmalloc frees), the
        column updates are one numpy step and the pcp list is filled in runs up to
        each ``free_pcppages_bulk`` drain; anything else takes the per-page path.
        """
        if _c_free_bulk is not None and _c_free_bulk(self, pfns):
            return
        n = len(pfns)
        if n < 16:
            for pfn in pfns:
                self.free_pages(pfn, 0)
            return
        if _speedups is not None and pfns.__class__ is list:
            # The checks and the column writes below in one C pass; -1 means a page
            # that needs the per-page path, and nothing was changed.
            zi = _speedups.phys_free_bulk_mark(
                self.flags, self.order, self.refcount, self.owner, self.zone, pfns,
                PG_ALLOC, PG_PGTABLE, PG_PCP, OWNER_NONE,
            )  # fmt: skip
            if zi < 0:
                for pfn in pfns:
                    self.free_pages(pfn, 0)
                return
            self._fill_pcp_freed(self.zones[zi], pfns)
            return
        idx = np.fromiter(pfns, dtype=np.intp, count=n)
        if idx.min() < 0 or idx.max() >= self.max_pfn:
            for pfn in pfns:
                self.free_pages(pfn, 0)
            return
        flags = self.flags[idx]
        zone = self.zone[idx]
        if (
            (flags & (PG_ALLOC | PG_PGTABLE) != PG_ALLOC).any()
            or self.order[idx].any()
            or (self.refcount[idx] != 1).any()
            or (zone != zone[0]).any()
            or len(np.unique(idx)) != n
        ):
            for pfn in pfns:
                self.free_pages(pfn, 0)
            return
        self.refcount[idx] = 0
        self.owner[idx] = OWNER_NONE
        self.flags[idx] = (flags & (0xFF & ~PG_ALLOC)) | PG_PCP
        self._fill_pcp_freed(self.zones[int(zone[0])], pfns)

    def _fill_pcp_freed(self, z: Zone, pfns: list[int]) -> None:
        """The list half of :meth:`free_pages_bulk`: the freed pages (columns already
        updated) go to the head of ``z``'s pcp list, drained as ``free_pages`` would."""
        n = len(pfns)
        pcp, high, batch = z.pcp, z.pcp_high, z.pcp_batch
        fl = self._fl
        i = 0
        while i < n:
            # appendleft one by one until the list reaches pcp_high, then drain
            k = min(max(high - len(pcp), 1), n - i)
            pcp.extendleft(pfns[i : i + k])
            i += k
            if len(pcp) >= high:
                for _ in range(min(batch, len(pcp))):  # free_pcppages_bulk
                    p = pcp.pop()
                    fl[p] &= ~PG_PCP
                    self._free_one_page(z, p, 0)

    def get_page(self, pfn: int) -> None:
        if not self._fl[pfn] & PG_ALLOC:
            self._bad_page(pfn, "get_page on a free page")
            return
        self._rc[pfn] += 1

    def drain_pages(self) -> None:
        """``drain_all_pages()``: give every pcp page back to the buddy lists."""
        for z in self.zones:
            while z.pcp:
                p = z.pcp.pop()
                self._fl[p] &= ~PG_PCP
                self._free_one_page(z, p, 0)

    def split_page(self, pfn: int, order: int) -> None:
        """``split_page()``: turn an order-N allocation into 2^N order-0 pages."""
        if not self._fl[pfn] & PG_ALLOC or self._od[pfn] != order:
            self.log.WARN(f"split_page: pfn {pfn:#x} is not an order-{order} allocation")
            return
        end = pfn + (1 << order)
        self.flags[pfn:end] |= PG_ALLOC
        self.order[pfn:end] = 0
        self.refcount[pfn:end] = 1
        self.owner[pfn:end] = self._ow[pfn]

    # ------------------------------------------------------------------- ownership
    def set_owner(self, pfn: int, tag: int, nr: int = 1) -> None:
        if nr == 1:
            self._ow[pfn] = tag
        else:
            self.owner[pfn : pfn + nr] = tag

    def get_owner(self, pfn: int) -> int:
        return int(self._ow[pfn])

    def mark_pgtable(self, pfn: int) -> None:
        """``pagetable_alloc`` bookkeeping: the page now holds a page table."""
        self._fl[pfn] |= PG_PGTABLE
        self._ow[pfn] = OWNER_PGTABLE
        self.nr_pgtable_pages += 1

    def page_flags(self, pfn: int) -> list[str]:
        f = self._fl[pfn]
        return [name for bit, name in PAGE_FLAG_NAMES if f & bit]

    # --------------------------------------------------------------------- contents
    def read(self, pfn: int, offset: int, n: int) -> bytes:
        """Read ``n`` bytes of physical memory from ``pfn``'s page at ``offset``."""
        out = bytearray()
        while n > 0:
            pfn += offset >> PAGE_SHIFT
            offset &= PAGE_SIZE - 1
            if not 0 <= pfn < self.max_pfn:
                raise ValueError(f"pfn {pfn:#x} beyond max_pfn")
            take = min(n, PAGE_SIZE - offset)
            buf = self._data.get(pfn)
            out += buf[offset : offset + take] if buf is not None else bytes(take)
            n -= take
            offset += take
        return bytes(out)

    def write(self, pfn: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` to physical memory starting in ``pfn``'s page at ``offset``."""
        t = type(data)
        n = len(data) if t is bytes or t is bytearray else 0
        if n and 0 <= offset <= PAGE_SIZE - n:
            # bytes within one page (the usual store): the loop below's single pass
            if not 0 <= pfn < self.max_pfn:
                raise ValueError(f"pfn {pfn:#x} beyond max_pfn")
            buf = self._data.get(pfn)
            if buf is None:
                buf = self._data[pfn] = bytearray(PAGE_SIZE)
            buf[offset : offset + n] = data
            return
        mv = memoryview(data).cast("B")
        pos = 0
        while pos < len(mv):
            pfn += offset >> PAGE_SHIFT
            offset &= PAGE_SIZE - 1
            if not 0 <= pfn < self.max_pfn:
                raise ValueError(f"pfn {pfn:#x} beyond max_pfn")
            take = min(len(mv) - pos, PAGE_SIZE - offset)
            buf = self._data.get(pfn)
            if buf is None:
                buf = self._data[pfn] = bytearray(PAGE_SIZE)
            buf[offset : offset + take] = mv[pos : pos + take]
            pos += take
            offset += take

    def zero(self, pfn: int, nr: int = 1) -> None:
        """``clear_page()``: the page reads as zeros again."""
        for p in range(pfn, pfn + nr):
            self._data.pop(p, None)

    @property
    def nr_written_pages(self) -> int:
        return len(self._data)

    # ------------------------------------------------------------------- reporting
    def buddyinfo(self) -> str:
        """/proc/buddyinfo (``frag_show_print``): populated zones, nr_free per order."""
        lines = []
        for z in self.zones:
            if not z.present:
                continue
            counts = "".join(f"{c:6d} " for c in z.nr_free)
            lines.append(f"Node {z.nid}, zone {z.name:>8s} {counts}")
        return "".join(line + "\n" for line in lines)

    def stats(self) -> dict[str, Any]:
        return {
            "totalram_pages": self.totalram_pages,
            "nr_free_pages": self.nr_free_pages(),
            "pcp_pages": sum(len(z.pcp) for z in self.zones),
            "nr_pgtable_pages": self.nr_pgtable_pages,
            "min_free_kbytes": self.min_free_kbytes,
            "max_pfn": self.max_pfn,
            "column_bytes": self.column_bytes,
            "written_pages": len(self._data),
            "zones": [
                {
                    "node": z.nid,
                    "name": z.name,
                    "start_pfn": z.start_pfn,
                    "spanned": z.spanned,
                    "present": z.present,
                    "managed": z.managed,
                    "free": z.free_pages,
                    "min": z.wmark[0],
                    "low": z.wmark[1],
                    "high": z.wmark[2],
                    "lowmem_reserve": list(z.lowmem_reserve),
                    "pcp_count": len(z.pcp),
                    "pcp_batch": z.pcp_batch,
                    "pcp_high": z.pcp_high,
                    "nr_free": list(z.nr_free),
                }
                for z in self.zones
            ],
        }

    @property
    def column_bytes(self) -> int:
        cols = (self.flags, self.refcount, self.order, self.zone, self.node, self.owner)
        return sum(c.nbytes for c in cols)

    def zoneinfo(self) -> str:
        """A short /proc/zoneinfo-like summary (pages, watermarks, counts)."""
        out = []
        for z in self.zones:
            out.append(
                f"Node {z.nid}, zone {z.name:>8s}\n"
                f"  pages free     {z.free_pages}\n"
                f"        min      {z.wmark[0]}\n"
                f"        low      {z.wmark[1]}\n"
                f"        high     {z.wmark[2]}\n"
                f"        spanned  {z.spanned}\n"
                f"        present  {z.present}\n"
                f"        managed  {z.managed}\n"
                f"        protection: ({', '.join(str(x) for x in z.lowmem_reserve)})\n"
                f"  pagesets\n    cpu: 0\n              count: {len(z.pcp)}\n"
                f"              high:  {z.pcp_high}\n              batch: {z.pcp_batch}\n"
                f"  start_pfn:           {z.start_pfn}"
            )
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------------ check
    def check(self) -> None:
        """Verify the allocator's invariants; raise :class:`InvariantError` naming a pfn.

        Every page is in exactly one state — in one buddy block, on a pcp list, in an
        allocated block, or reserved; list counts match; no two free buddies that
        should have merged; page-table pages are counted.
        """
        n = self.max_pfn
        cover = np.zeros(n + 1, np.int32)
        flags = self.flags
        for z in self.zones:
            total = 0
            for o in range(self.max_order + 1):
                lst = z.free_list(o)
                if len(lst) != z.nr_free[o]:
                    raise InvariantError(
                        f"zone {z.name}: order-{o} list has {len(lst)} blocks, "
                        f"nr_free says {z.nr_free[o]}",
                        lst[0] if lst else None,
                    )
                total += len(lst) << o
                for pfn in lst:
                    if z.free_order.get(pfn) != o:
                        raise InvariantError(
                            f"pfn {pfn:#x} on order-{o} list but order differs", pfn
                        )
                    if pfn & ((1 << o) - 1):
                        raise InvariantError(
                            f"free block pfn {pfn:#x} not aligned to order {o}", pfn
                        )
                    if not (z.start_pfn <= pfn and pfn + (1 << o) <= z.end_pfn):
                        raise InvariantError(f"free block pfn {pfn:#x} outside zone {z.name}", pfn)
                    if not flags[pfn] & PG_BUDDY or self.order[pfn] != o:
                        raise InvariantError(
                            f"free head pfn {pfn:#x} lacks PG_buddy/order {o}", pfn
                        )
                    if o < self.max_order:
                        b = pfn ^ (1 << o)
                        if z.free_order.get(b) == o:
                            raise InvariantError(
                                f"free buddies pfn {min(pfn, b):#x} and {max(pfn, b):#x} "
                                f"(order {o}) were not merged",
                                min(pfn, b),
                            )
                if lst:
                    arr = np.asarray(lst, np.int64)
                    np.add.at(cover, arr, 1)
                    np.add.at(cover, arr + (1 << o), -1)
            if total != z.free_pages:
                raise InvariantError(
                    f"zone {z.name}: free_pages {z.free_pages} != sum of lists {total}"
                )
            if len(z.free_order) != sum(z.nr_free):
                raise InvariantError(f"zone {z.name}: free_order index out of sync")
            for p in z.pcp:
                if not flags[p] & PG_PCP or self._zn[p] != z.gidx:
                    raise InvariantError(
                        f"pcp page pfn {p:#x} lacks PG_pcp or is in another zone", p
                    )
                cover[p] += 1
                cover[p + 1] -= 1
        alloc = np.flatnonzero(flags & PG_ALLOC)
        if alloc.size:
            np.add.at(cover, alloc, 1)
            np.add.at(cover, alloc + (1 << self.order[alloc].astype(np.int64)), -1)
        res = np.flatnonzero(flags & PG_RESERVED)
        np.add.at(cover, res, 1)
        np.add.at(cover, res + 1, -1)
        state = np.cumsum(cover[:n])
        bad = np.flatnonzero(state != 1)
        if bad.size:
            pfn = int(bad[0])
            raise InvariantError(
                f"pfn {pfn:#x} is in {int(state[pfn])} states (flags {self.page_flags(pfn)})",
                pfn,
            )
        buddy_heads = int(np.count_nonzero(flags & PG_BUDDY))
        if buddy_heads != sum(sum(z.nr_free) for z in self.zones):
            raise InvariantError("PG_buddy pages do not match the free lists")
        pcp_pages = int(np.count_nonzero(flags & PG_PCP))
        if pcp_pages != sum(len(z.pcp) for z in self.zones):
            raise InvariantError("PG_pcp pages do not match the pcp lists")
        if alloc.size and np.any(self.refcount[alloc] < 1):
            pfn = int(alloc[np.argmax(self.refcount[alloc] < 1)])
            raise InvariantError(f"allocated pfn {pfn:#x} has refcount < 1", pfn)
        pt = np.flatnonzero(flags & PG_PGTABLE)
        if pt.size != self.nr_pgtable_pages:
            raise InvariantError(
                f"{pt.size} PG_pgtable pages but nr_pgtable_pages = {self.nr_pgtable_pages}"
            )
        if pt.size and np.any((flags[pt] & PG_ALLOC) == 0):
            pfn = int(pt[np.argmax((flags[pt] & PG_ALLOC) == 0)])
            raise InvariantError(f"page-table pfn {pfn:#x} is not allocated", pfn)

    def iter_free_blocks(self) -> Iterator[tuple[Zone, int, int]]:
        for z in self.zones:
            for o in range(self.max_order + 1):
                for pfn in z.free_list(o):
                    yield z, pfn, o


#: The methods whose work the compiled twins (``_speedups.c``, bulk pages section) do
#: over the same structures; a PhysicalMemory with any of them replaced (on its class
#: or the instance) gets no twin.
_C_TWINNED = (
    "alloc_pages", "alloc_pages_bulk", "free_pages", "free_pages_bulk", "_rmqueue",
    "_rmqueue_smallest", "_free_one_page", "_fill_pcp_freed", "_prep_new_page",
    "_prep_new_pages_bulk", "_get_page_from_freelist", "zone_watermark_ok", "_zones_for",
    "_alloc_slowpath", "page_address",
)  # fmt: skip
if _speedups is not None:
    _speedups.init_bulk_pages(
        PhysicalMemory, Zone, deque, _C_TWINNED,
        tuple(getattr(PhysicalMemory, n) for n in _C_TWINNED),
        PG_BUDDY, PG_PCP, PG_ALLOC, PG_PGTABLE, OWNER_NONE, _ZERO,
    )  # fmt: skip

# ``__free_pages`` as an alias (defined outside the class body: a name starting with two
# underscores written inside a class would be mangled).
setattr(PhysicalMemory, "__free_pages", PhysicalMemory.free_pages)
