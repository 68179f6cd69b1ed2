"""A small kmalloc model (mm/slab_common.c size classes over SLUB-like slabs).

What follows the kernel:

* **Size classes** (``kmalloc_info[]``, 4 KiB pages, ``KMALLOC_MIN_SIZE`` = 8):
  8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192. ``kmalloc_index()``
  picks the smallest class that fits, with the two odd classes: sizes 65..96 use
  kmalloc-96 and 129..192 use kmalloc-192.
* ``KMALLOC_MAX_CACHE_SIZE`` = ``1 << (PAGE_SHIFT + 1)`` = 8192: a larger request goes
  straight to the page allocator (``kmalloc_large``: ``alloc_pages(gfp | __GFP_COMP,
  get_order(size))``) and ``kfree`` gives the pages back.
* Objects live in slabs taken from the buddy allocator; addresses are direct-map
  addresses (``page_address(slab) + index * object_size``), so ``is_vmalloc_addr`` is
  false for them, as in the kernel, and the memory can be read through the direct map.
* ``__GFP_ZERO`` (``kzalloc``) zeroes the object.

Simplified (documented, not modelled): one cache per class (no DMA/cgroup/
reclaimable copies, no per-CPU slabs or partial lists), objects are handed out lowest
free index first, an empty slab goes back to the buddy allocator at once (SLUB keeps
``min_partial`` empty slabs). The slab order follows SLUB's ``calc_slab_order`` in its
simplest form: the smallest order <= ``PAGE_ALLOC_COSTLY_ORDER`` (3) giving at least
``min_objects = 4 * (fls(nr_cpu_ids) + 1)`` objects, else order 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyvmalloc.config import NUMA_NO_NODE, PAGE_SHIFT, PAGE_SIZE, fls
from pyvmalloc.gfp import Gfp

if TYPE_CHECKING:
    from pyvmalloc.phys import PhysicalMemory

__all__ = [
    "KMALLOC_MAX_CACHE_SIZE",
    "KMALLOC_SIZES",
    "OWNER_SLAB",
    "Slab",
    "SlabAllocator",
    "get_order",
    "kmalloc_index_size",
]

#: kmalloc-N caches, ascending (``kmalloc_info``; 96 and 192 are the odd ones).
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
#: ``KMALLOC_MAX_CACHE_SIZE``: ``1 << KMALLOC_SHIFT_HIGH`` with SLUB = two pages.
KMALLOC_MAX_CACHE_SIZE = 1 << (PAGE_SHIFT + 1)
#: ``page->owner`` tag of slab pages (model tag; phys uses 0..3).
OWNER_SLAB = 5
PAGE_ALLOC_COSTLY_ORDER = 3

# Plain-int copies of the GFP bits used on the hot paths (``int(Gfp.X)`` on an
# IntFlag member costs a conversion per call).
_GFP_ZERO = int(Gfp.ZERO)
_GFP_COMP = int(Gfp.COMP)
_GFP_LOWMEM_MASK = ~(int(Gfp.HIGHMEM) | int(Gfp.ZERO))


def get_order(size: int) -> int:
    """``get_order(size)``: the smallest order with ``PAGE_SIZE << order >= size``."""
    if size <= PAGE_SIZE:
        return 0
    return ((size - 1) >> PAGE_SHIFT).bit_length()


def kmalloc_index_size(size: int) -> int:
    """The object size of the kmalloc cache serving ``size`` bytes (0 for large)."""
    if size <= 0:
        return 0
    if size > KMALLOC_MAX_CACHE_SIZE:
        return 0
    if 64 < size <= 96:
        return 96
    if 128 < size <= 192:
        return 192
    if size <= 8:
        return 8
    return 1 << (size - 1).bit_length()


@dataclass
class Slab:
    """One slab: ``2**order`` pages holding ``objects`` objects of ``size`` bytes."""

    pfn: int
    order: int
    size: int
    objects: int
    inuse: int = 0
    #: Objects freed since the slab was made, a stack (the next kmalloc takes the last
    #: one pushed); the objects at and above ``fresh`` were never handed out and come
    #: after them, lowest first. Together: the free list of a fresh slab, lowest
    #: index first, with each kfree'd object pushed on top (SLUB's LIFO freelist).
    free: list[int] = field(default_factory=list)
    fresh: int = 0
    #: byte ``i`` is 1 while object ``i`` is free: the same indices as ``free``, kept in
    #: step with it (the O(1) double-free test); a bitmap, because a new slab of
    #: kmalloc-8 has 512 free objects and vmalloc creates and destroys such slabs often
    free_map: bytearray = field(default_factory=bytearray, repr=False, compare=False)
    #: ``page_address(pfn)``, computed once when the slab is created
    addr: int = field(default=0, repr=False, compare=False)


@dataclass
class KmemCache:
    name: str
    size: int
    order: int
    objects: int
    slabs: dict[int, Slab] = field(default_factory=dict)  # pfn -> slab
    partial: list[Slab] = field(default_factory=list)
    active_objs: int = 0
    #: a new slab's ``free_map`` (every object free; copied, never used directly)
    new_free_map: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.new_free_map = b"\x01" * self.objects


class SlabAllocator:
    """The kmalloc caches of one model kernel.

    >>> from pyvmalloc.config import Machine, PROFILES
    >>> from pyvmalloc.phys import PhysicalMemory
    >>> from pyvmalloc.printk import KernelLog
    >>> m = Machine(ram="64M")
    >>> s = SlabAllocator(PhysicalMemory(m, PROFILES["6.18"], KernelLog()), m.cpus_possible)
    >>> a = s.kmalloc(72, 0xcc0); s.ksize(a), s.slab_bytes
    (96, 96)
    >>> s.kfree(a), s.slab_bytes
    (True, 0)
    """

    def __init__(self, phys: PhysicalMemory, nr_cpu_ids: int) -> None:
        self.phys = phys
        min_objects = 4 * (fls(nr_cpu_ids) + 1)
        self.caches: dict[int, KmemCache] = {}
        for sz in KMALLOC_SIZES:
            order = PAGE_ALLOC_COSTLY_ORDER
            for o in range(PAGE_ALLOC_COSTLY_ORDER + 1):
                if (PAGE_SIZE << o) // sz >= min_objects:
                    order = o
                    break
            self.caches[sz] = KmemCache(f"kmalloc-{sz}", sz, order, (PAGE_SIZE << order) // sz)
        #: request size -> its cache (memo of ``kmalloc_index_size``)
        self._size_cache: dict[int, KmemCache] = {}
        #: pfn of every page of every slab -> the slab (``virt_to_slab``).
        self._page_slab: dict[int, Slab] = {}
        #: kmalloc_large allocations: head pfn -> (order, requested size)
        self.large: dict[int, tuple[int, int]] = {}
        #: bytes handed out (object sizes for slab objects, pages for large ones)
        self.slab_bytes = 0
        self.slab_pages = 0
        self.large_pages = 0
        self.nr_allocs = 0
        #: whether the compiled whole vmalloc/vfree may make and destroy order-0 slabs
        #: itself (``_speedups.c``'s test-vmalloc section: twins of the new-slab branch
        #: of :meth:`kmalloc` and the empty-slab branch of :meth:`kfree`); False runs
        #: these methods (the differential tests switch it off)
        self._c_slab_pages = True

    # ------------------------------------------------------------------ helpers
    def _addr(self, pfn: int, off: int = 0) -> int:
        return self.phys.page_address(pfn) + off

    def _lowmem_gfp(self, gfp: int) -> int:
        # kmalloc never returns highmem; __GFP_ZERO is applied per object.
        return gfp & _GFP_LOWMEM_MASK

    # --------------------------------------------------------------- kmalloc
    def kmalloc(self, size: int, gfp: int, node: int = NUMA_NO_NODE) -> int:
        """``kmalloc_node(size, gfp, node)``: a direct-map address, or 0 (NULL).

        ``size == 0`` returns ``ZERO_SIZE_PTR`` (16) as the kernel does.
        """
        if size == 0:
            return 16  # ZERO_SIZE_PTR
        if size > KMALLOC_MAX_CACHE_SIZE:
            order = get_order(size)
            pfn = self.phys.alloc_pages(self._lowmem_gfp(gfp) | _GFP_COMP, order, node)
            if pfn is None:
                return 0
            self.phys.set_owner(pfn, OWNER_SLAB, 1 << order)
            self.large[pfn] = (order, size)
            self.large_pages += 1 << order
            self.slab_bytes += PAGE_SIZE << order
            self.nr_allocs += 1
            if gfp & _GFP_ZERO:
                self.phys.zero(pfn, 1 << order)
            return self._addr(pfn)
        cache = self._size_cache.get(size)
        if cache is None:  # memo of caches[kmalloc_index_size(size)], sizes 1..8192
            cache = self._size_cache[size] = self.caches[kmalloc_index_size(size)]
        partial = cache.partial
        if not partial:
            pfn = self.phys.alloc_pages(self._lowmem_gfp(gfp), cache.order, node)
            if pfn is None:
                return 0
            nr = 1 << cache.order
            self.phys.set_owner(pfn, OWNER_SLAB, nr)
            slab = Slab(pfn, cache.order, cache.size, cache.objects)
            slab.addr = self._addr(pfn)
            slab.free_map = bytearray(cache.new_free_map)
            cache.slabs[pfn] = slab
            partial.append(slab)
            for p in range(pfn, pfn + nr):
                self._page_slab[p] = slab
            self.slab_pages += nr
        slab = partial[-1]
        free = slab.free
        if free:
            idx = free.pop()
        else:
            idx = slab.fresh
            slab.fresh = idx + 1
        slab.free_map[idx] = 0
        inuse = slab.inuse = slab.inuse + 1
        if inuse == slab.objects:  # no free object left: off the partial list
            partial.pop()
        csize = cache.size
        cache.active_objs += 1
        self.slab_bytes += csize
        self.nr_allocs += 1
        off = idx * csize
        if gfp & _GFP_ZERO and self.phys._data:  # (_zero() has nothing to do without data)
            self._zero(slab.pfn, off, csize)
        return slab.addr + off

    def _zero(self, pfn: int, off: int, n: int) -> None:
        p = pfn + (off >> PAGE_SHIFT)
        if p in self.phys._data:
            self.phys.write(pfn, off, bytes(n))

    def kzalloc(self, size: int, gfp: int, node: int = NUMA_NO_NODE) -> int:
        return self.kmalloc(size, gfp | _GFP_ZERO, node)

    def _lookup(self, addr: int) -> tuple[Slab | None, int]:
        pfn = self.phys.virt_to_page(addr)
        return self._page_slab.get(pfn), pfn

    def is_kmalloc_addr(self, addr: int) -> bool:
        """True if ``addr`` is a live kmalloc object or large kmalloc."""
        if addr <= 16 or not self.phys.is_direct_map(addr):
            return False
        slab, pfn = self._lookup(addr)
        return slab is not None or pfn in self.large

    def ksize(self, addr: int) -> int:
        """``ksize``: usable size of the object at ``addr``."""
        slab, pfn = self._lookup(addr)
        if slab is not None:
            return slab.size
        if pfn in self.large:
            return PAGE_SIZE << self.large[pfn][0]
        raise ValueError(f"{addr:#x} is not a kmalloc address")

    def kfree(self, addr: int) -> bool:
        """``kfree``: free an object; NULL/ZERO_SIZE_PTR are ignored. False if bogus."""
        if addr <= 16:
            return True
        phys = self.phys
        # is_direct_map() + virt_to_page() in one step: the same range test on
        # ``addr - PAGE_OFFSET``, then the pfn (what _lookup() computes).
        pa = addr - phys.page_offset
        if not 0 <= pa < phys.max_low_pfn << PAGE_SHIFT:
            return False
        pfn = pa >> PAGE_SHIFT
        slab = self._page_slab.get(pfn)
        if slab is None:
            if pfn in self.large and addr == self._addr(pfn):
                order, _ = self.large.pop(pfn)
                self.large_pages -= 1 << order
                self.slab_bytes -= PAGE_SIZE << order
                phys.free_pages(pfn, order)
                return True
            return False
        spfn = slab.pfn
        ssize = slab.size
        idx, rem = divmod(addr - slab.addr, ssize)
        free = slab.free
        free_map = slab.free_map
        # (an index at or past ``objects`` is the slab's unused tail: not an object)
        if rem or idx >= slab.objects or free_map[idx]:  # ``idx in free``, mirrored
            return False
        cache = self.caches[ssize]
        if slab.inuse == slab.objects:  # was full: back on the partial list
            cache.partial.append(slab)
        free.append(idx)
        free_map[idx] = 1
        slab.inuse -= 1
        cache.active_objs -= 1
        self.slab_bytes -= ssize
        if slab.inuse == 0:
            # ``partial.remove(slab)`` by identity: two slabs never compare equal
            # (distinct pfns), and this skips the dataclass ``__eq__`` calls.
            partial = cache.partial
            for i in range(len(partial) - 1, -1, -1):
                if partial[i] is slab:
                    del partial[i]
                    break
            else:
                raise ValueError("list.remove(x): x not in list")
            del cache.slabs[spfn]
            nr = 1 << slab.order
            page_slab = self._page_slab
            for p in range(spfn, spfn + nr):
                del page_slab[p]
            self.slab_pages -= nr
            phys.free_pages(spfn, slab.order)
        return True

    def slabinfo(self) -> str:
        """A /proc/slabinfo-like excerpt for the kmalloc caches."""
        out = ["# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"]
        for c in self.caches.values():
            num = len(c.slabs) * c.objects
            out.append(
                f"{c.name:<17} {c.active_objs:6d} {num:6d} {c.size:6d} {c.objects:4d} "
                f"{1 << c.order:4d}"
            )
        return "\n".join(out) + "\n"

    def __repr__(self) -> str:
        return (
            f"<SlabAllocator {self.slab_bytes} bytes in kmalloc objects, "
            f"{self.slab_pages} slab pages, {self.large_pages} large-kmalloc pages>"
        )

    def check(self) -> None:
        """Counters agree with the slabs; every slab page is allocated and tagged."""
        from pyvmalloc.phys import PG_ALLOC, InvariantError

        objs = 0
        pages = 0
        for c in self.caches.values():
            n = 0
            for pfn, s in c.slabs.items():
                mirror = bytearray(s.objects)
                mirror[s.fresh :] = b"\x01" * (s.objects - s.fresh)
                for i in s.free:
                    mirror[i] = 1
                if (
                    s.free_map != mirror
                    or len(set(s.free)) != len(s.free)
                    or any(i >= s.fresh for i in s.free)
                ):
                    raise InvariantError(f"slab {pfn:#x} of {c.name}: free set out of sync", pfn)
                if s.inuse != s.fresh - len(s.free) or s.inuse <= 0:
                    raise InvariantError(f"slab {pfn:#x} of {c.name}: inuse out of sync", pfn)
                if not int(self.phys.flags[pfn]) & PG_ALLOC:
                    raise InvariantError(f"slab page {pfn:#x} is not allocated", pfn)
                n += s.inuse
                pages += 1 << s.order
            if n != c.active_objs:
                raise InvariantError(f"{c.name}: active_objs {c.active_objs} != {n}")
            objs += n * c.size
        large = sum(PAGE_SIZE << o for o, _ in self.large.values())
        if objs + large != self.slab_bytes:
            raise InvariantError(f"slab bytes {self.slab_bytes} != {objs + large}")
        if pages != self.slab_pages:
            raise InvariantError(f"slab pages {self.slab_pages} != {pages}")
