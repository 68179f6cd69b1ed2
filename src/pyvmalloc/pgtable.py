"""Kernel page tables (``init_mm``): x86_64 4-/5-level, i386 2-level, arm, arm64.

Model of the page-table side of vmalloc (``vmap_pages_range``, ``vunmap_range``,
``vmalloc_to_page``) and of the CPU's page walk:

* Each page-table page is a numpy array of entries (512 x 8 bytes on x86_64; 1024 x
  4 bytes on non-PAE i386, held in uint64) keyed by its pfn. Entries use the x86
  hardware bits (``_PAGE_PRESENT`` = bit 0 ... ``_PAGE_NX`` = bit 63). A table entry
  points to the next level with ``_PAGE_TABLE`` (P|RW|USER|A|D = 0x67), as the x86
  ``*_populate()`` helpers do for ``init_mm``.
* Table pages come from the buddy allocator with ``GFP_PGTABLE_KERNEL``
  (``GFP_KERNEL | __GFP_ZERO``), order 0, lowmem; they are marked ``PG_pgtable`` and
  owned by ``OWNER_PGTABLE``. Unmapping never frees them (``vunmap_range`` only
  clears leaf entries), except that installing a huge PMD over an empty PTE table
  frees that table (x86 ``pmd_free_pte_page``).
* Boot state. Static tables that live in the kernel image (``swapper_pg_dir``,
  ``level4_kernel_pgt`` with 5-level, ``level3_kernel_pgt``, ``level2_kernel_pgt``,
  ``level2_fixmap_pgt``) use pfns inside the kernel-image reservation, so mapping in the
  modules area (top 1 GiB) needs only PTE pages. ``preallocate_vmalloc_pages()``
  (arch/x86/mm/init_64.c) runs at construction: for every PGD entry of the vmalloc
  range it allocates the next level from the buddy allocator — the PUD pages with
  4-level paging (64 pages for the 32 TiB range), the P4D pages with 5-level paging
  (50 pages) — so later vmalloc mappings never allocate at the levels that have to be
  synchronised into every process's PGD. i386 has no such preallocation.
* The direct map (``PAGE_OFFSET + phys`` for lowmem) is translated arithmetically;
  its 1 GiB/2 MiB page tables are not modelled.
* ``__supported_pte_mask`` drops ``_PAGE_NX`` on non-PAE i386 (no NX bit there); PTI
  is off, so ``_PAGE_GLOBAL`` stays.
* arm and arm64 use their own table geometry (arm: 2048 x 2 MiB PGD entries and 512
  PTEs, or LPAE's 3 levels; arm64 4K: 3, 4 or 5 levels of 512 entries below a top
  level sized by ``VA_BITS``), but the entries keep the x86 bit encoding above: the
  model's stand-in for ARM's descriptors (what vmalloc needs is present/huge/pfn).

Faults raise :class:`PageFault` whose text follows the kernel's oops header
(``BUG: unable to handle page fault for address: ...``, ``#PF: ...`` and the
``dump_pagetable`` line), plus whatever ``fault_describer`` says about the address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import EBUSY, EINVAL, ENOMEM, PAGE_SHIFT, PAGE_SIZE, Machine
from pyvmalloc.gfp import GFP_PGTABLE_KERNEL
from pyvmalloc.printk import KernelLog

if TYPE_CHECKING:
    from pyvmalloc.phys import PhysicalMemory

__all__ = [
    "PAGE_KERNEL",
    "PAGE_KERNEL_EXEC",
    "PAGE_KERNEL_LARGE",
    "PAGE_KERNEL_NOCACHE",
    "PAGE_KERNEL_RO",
    "PAGE_KERNEL_ROX",
    "PAGE_KERNEL_RX",
    "PageFault",
    "PageTables",
    "Walk",
    "WalkLevel",
    "decode_entry",
    "pgprot_nx",
]

#: the WARN_ON(!pte_none(...)) of vmap_pte_range (6.x: vmap_pages_pte_range)
_PTE_NONE = "vmap_pte_range:!pte_none"

# --- hardware bits (arch/x86/include/asm/pgtable_types.h) -------------------------------
_PAGE_BIT_PRESENT = 0
_PAGE_BIT_RW = 1
_PAGE_BIT_USER = 2
_PAGE_BIT_PWT = 3
_PAGE_BIT_PCD = 4
_PAGE_BIT_ACCESSED = 5
_PAGE_BIT_DIRTY = 6
_PAGE_BIT_PSE = 7  # on PMD/PUD entries: a huge page
_PAGE_BIT_PAT = 7  # on PTEs
_PAGE_BIT_GLOBAL = 8
_PAGE_BIT_PAT_LARGE = 12
_PAGE_BIT_NX = 63

_PAGE_PRESENT = 1 << _PAGE_BIT_PRESENT
_PAGE_RW = 1 << _PAGE_BIT_RW
_PAGE_USER = 1 << _PAGE_BIT_USER
_PAGE_PWT = 1 << _PAGE_BIT_PWT
_PAGE_PCD = 1 << _PAGE_BIT_PCD
_PAGE_ACCESSED = 1 << _PAGE_BIT_ACCESSED
_PAGE_DIRTY = 1 << _PAGE_BIT_DIRTY
_PAGE_PSE = 1 << _PAGE_BIT_PSE
_PAGE_PAT = 1 << _PAGE_BIT_PAT
_PAGE_GLOBAL = 1 << _PAGE_BIT_GLOBAL
_PAGE_PAT_LARGE = 1 << _PAGE_BIT_PAT_LARGE
_PAGE_NX = 1 << _PAGE_BIT_NX

#: ``_PAGE_NOCACHE`` = cachemode2protval(_PAGE_CACHE_MODE_UC) with the default PAT.
_PAGE_NOCACHE = _PAGE_PCD | _PAGE_PWT
#: ``_PAGE_TABLE``: how x86 populates a PGD/P4D/PUD/PMD entry pointing to a table.
_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY
_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY

# --- pgprot values (6.x: __PP|__RW|_USR|___A|__NX|___D|_PSE|___G) ------------------------
__PAGE_KERNEL_EXEC = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_GLOBAL
__PAGE_KERNEL = __PAGE_KERNEL_EXEC | _PAGE_NX
#: Read-only kernel pages have no DIRTY bit since v6.6 (Write=0,Dirty=1 is shadow stack).
__PAGE_KERNEL_RO = _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_NX | _PAGE_GLOBAL
__PAGE_KERNEL_ROX = _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_GLOBAL
__PAGE_KERNEL_NOCACHE = __PAGE_KERNEL | _PAGE_NOCACHE

PAGE_KERNEL = __PAGE_KERNEL  # 0x8000000000000163
PAGE_KERNEL_EXEC = __PAGE_KERNEL_EXEC  # 0x163
PAGE_KERNEL_RO = __PAGE_KERNEL_RO  # 0x8000000000000121
PAGE_KERNEL_ROX = __PAGE_KERNEL_ROX  # 0x121
PAGE_KERNEL_RX = PAGE_KERNEL_ROX
PAGE_KERNEL_NOCACHE = __PAGE_KERNEL_NOCACHE  # 0x800000000000017b
PAGE_KERNEL_LARGE = __PAGE_KERNEL | _PAGE_PSE

#: PTE_PFN_MASK for 52-bit physical addresses.
PTE_PFN_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)

#: pfns below ``1 << _PFN_BITS`` fit a PTE's pfn field (PTE_PFN_MASK, 52-bit phys).
_PFN_BITS = 52 - PAGE_SHIFT


def pgprot_nx(prot: int) -> int:
    """``pgprot_nx()``: add ``_PAGE_NX``."""
    return prot | _PAGE_NX


def pgprot_noncached(prot: int) -> int:
    """``pgprot_noncached()``: UC cache mode (PCD|PWT with the default PAT)."""
    return (prot & ~(_PAGE_PAT | _PAGE_PCD | _PAGE_PWT)) | _PAGE_NOCACHE


def protval_4k_2_large(prot: int) -> int:
    """Move the PAT bit from bit 7 (PTE) to bit 12 (huge PMD/PUD)."""
    return (prot & ~(_PAGE_PAT | _PAGE_PAT_LARGE)) | ((prot & _PAGE_PAT) << 5)


_FLAG_NAMES_PTE = (
    (_PAGE_PRESENT, "PRESENT"),
    (_PAGE_RW, "RW"),
    (_PAGE_USER, "USER"),
    (_PAGE_PWT, "PWT"),
    (_PAGE_PCD, "PCD"),
    (_PAGE_ACCESSED, "ACCESSED"),
    (_PAGE_DIRTY, "DIRTY"),
    (_PAGE_PAT, "PAT"),
    (_PAGE_GLOBAL, "GLOBAL"),
    (_PAGE_NX, "NX"),
)
_FLAG_NAMES_DIR = tuple((bit, "PSE" if bit == _PAGE_PSE else name) for bit, name in _FLAG_NAMES_PTE)


def decode_entry(entry: int, pte_level: bool = True) -> list[str]:
    """The names of the flag bits set in ``entry`` (bit 7 is PAT on PTEs, PSE above)."""
    names = _FLAG_NAMES_PTE if pte_level else _FLAG_NAMES_DIR
    return [name for bit, name in names if entry & bit]


@dataclass(frozen=True)
class LevelSpec:
    name: str
    shift: int
    bits: int

    @property
    def entries(self) -> int:
        return 1 << self.bits


@dataclass
class WalkLevel:
    """One step of a page walk: the table, the index used and the entry found."""

    name: str
    index: int
    entry: int
    flags: list[str]
    table_pfn: int
    leaf: bool = False


@dataclass
class Walk:
    """The result of :meth:`PageTables.walk`."""

    addr: int
    levels: list[WalkLevel] = field(default_factory=list)
    phys: int | None = None
    stopped_at: str | None = None  # level name where a not-present entry was found
    page_size: int = PAGE_SIZE
    direct_map: bool = False
    note: str = ""

    @property
    def present(self) -> bool:
        return self.phys is not None


class PageFault(Exception):
    """A kernel-mode page fault on ``addr``; ``level`` is where the walk stopped."""

    def __init__(self, addr: int, level: str, message: str) -> None:
        super().__init__(message)
        self.addr = addr
        self.level = level


class PageTables:
    """``init_mm``'s page tables for the vmalloc/modules ranges of ``machine``.

    >>> from pyvmalloc.config import Machine, PROFILES
    >>> from pyvmalloc.phys import PhysicalMemory
    >>> log = KernelLog(); m = Machine(ram="64M")
    >>> pm = PhysicalMemory(m, PROFILES["6.18"], log)
    >>> pt = PageTables(m, pm, log)
    >>> pt.nr_pgtable_pages  # preallocate_vmalloc_pages(): 64 PUD pages
    64
    >>> page = pm.alloc_page(0xcc0)
    >>> pt.map_pages(m.vmalloc_start, [page], PAGE_KERNEL)
    0
    >>> pt.translate(m.vmalloc_start + 5) == (page << 12) + 5
    True
    """

    fault_describer: Callable[[int], str | None] | None

    def __init__(
        self,
        machine: Machine,
        phys: PhysicalMemory,
        log: KernelLog,
        *,
        fault_describer: Callable[[int], str | None] | None = None,
    ) -> None:
        self.machine = machine
        self.phys = phys
        self.log = log
        #: Names the vmalloc area of a faulting address in the oops text (optional).
        self.fault_describer = fault_describer
        if machine.arch == "i386":
            self.levels = [LevelSpec("PGD", 22, 10), LevelSpec("PTE", 12, 10)]
            self.va_bits = 32
            self.supported_pte_mask = ((1 << 64) - 1) & ~_PAGE_NX  # no NX without PAE
            self.huge_ok = False  # HAVE_ARCH_HUGE_VMAP needs X86_64 or X86_PAE
            self.folded = ["P4D", "PUD", "PMD"]
        elif machine.arch == "arm":
            # pgtable-2level.h: 2048 PGD entries of 2 MiB (pairs of 1 MiB sections), 512
            # PTEs per table; pgtable-3level.h (LPAE): 4 PGD entries of 1 GiB, 512 PMDs.
            if machine.lpae:
                self.levels = [
                    LevelSpec("PGD", 30, 2),
                    LevelSpec("PMD", 21, 9),
                    LevelSpec("PTE", 12, 9),
                ]
                self.folded = ["P4D", "PUD"]
            else:
                self.levels = [LevelSpec("PGD", 21, 11), LevelSpec("PTE", 12, 9)]
                self.folded = ["P4D", "PUD", "PMD"]
            self.va_bits = 32
            self.supported_pte_mask = (1 << 64) - 1
            self.huge_ok = False  # ARM does not select HAVE_ARCH_HUGE_VMAP
        elif machine.arch == "arm64":
            # 4K granule: 9 bits a level; the top level takes what VA_BITS leaves.
            n = machine.paging_levels
            names = {3: ["PGD", "PMD", "PTE"], 4: ["PGD", "PUD", "PMD", "PTE"]}.get(
                n, ["PGD", "P4D", "PUD", "PMD", "PTE"]
            )
            shifts = [PAGE_SHIFT + 9 * (n - 1 - i) for i in range(n)]
            bits = [machine.va_bits - shifts[0]] + [9] * (n - 1)
            self.levels = [
                LevelSpec(nm, sh, b) for nm, sh, b in zip(names, shifts, bits, strict=True)
            ]
            # TTBR1 translates addresses whose bits [63:VA_BITS] are all ones
            self.va_bits = machine.va_bits + 1
            self.supported_pte_mask = (1 << 64) - 1
            self.huge_ok = True
            self.folded = {3: ["P4D", "PUD"], 4: ["P4D"]}.get(n, [])
        elif machine.paging_levels == 5:
            self.levels = [
                LevelSpec("PGD", 48, 9),
                LevelSpec("P4D", 39, 9),
                LevelSpec("PUD", 30, 9),
                LevelSpec("PMD", 21, 9),
                LevelSpec("PTE", 12, 9),
            ]
            self.va_bits = 57
            self.supported_pte_mask = (1 << 64) - 1
            self.huge_ok = True
            self.folded = []
        else:
            self.levels = [
                LevelSpec("PGD", 39, 9),
                LevelSpec("PUD", 30, 9),
                LevelSpec("PMD", 21, 9),
                LevelSpec("PTE", 12, 9),
            ]
            self.va_bits = 48
            self.supported_pte_mask = (1 << 64) - 1
            self.huge_ok = True
            self.folded = ["P4D"]
        self.pmd_level = len(self.levels) - 2
        self.pmd_shift = self.levels[self.pmd_level].shift
        self.pmd_size = 1 << self.pmd_shift
        self.pte_entries = self.levels[-1].entries
        self.tables: dict[int, npt.NDArray[np.uint64]] = {}
        self.table_level: dict[int, int] = {}
        self.static_tables: set[int] = set()
        #: addr >> pmd_shift -> the PTE table mapping that PMD-sized region
        self._ptecache: dict[int, npt.NDArray[np.uint64]] = {}
        self._static_next = self._kernel_image_end()
        self.root = self._new_static_table(0)
        self._boot_static_tables()
        self._preallocate_vmalloc_pages()

    # ----------------------------------------------------------------------- helpers
    def _kernel_image_end(self) -> int:
        for _s, e, why in self.phys.layout.reserved:
            if why == "kernel image":
                return e
        raise RuntimeError("no kernel image reservation")

    def _new_static_table(self, level: int) -> int:
        self._static_next -= 1
        pfn = self._static_next
        self.tables[pfn] = np.zeros(self.levels[level].entries, np.uint64)
        self.table_level[pfn] = level
        self.static_tables.add(pfn)
        return pfn

    def _index(self, addr: int, level: int) -> int:
        spec = self.levels[level]
        return (addr >> spec.shift) & (spec.entries - 1)

    def _boot_static_tables(self) -> None:
        """The image's own tables for the top 1 GiB..2 GiB (kernel text, modules, fixmap)."""
        if self.machine.arch == "i386":
            return
        top = (1 << 64) - (1 << 30)  # 0xffffffffc0000000: modules + fixmap PMD table
        text = (1 << 64) - (2 << 30)  # 0xffffffff80000000: kernel text PMD table
        for addr in (text, top):
            tbl = self.tables[self.root]
            for level in range(self.pmd_level):
                idx = self._index(addr, level)
                e = int(tbl[idx])
                if not e & _PAGE_PRESENT:
                    child = self._new_static_table(level + 1)
                    tbl[idx] = (child << PAGE_SHIFT) | _PAGE_TABLE
                    e = int(tbl[idx])
                tbl = self.tables[(e & PTE_PFN_MASK) >> PAGE_SHIFT]

    def _alloc_table(self, level: int) -> int | None:
        pfn = self.phys.alloc_pages(GFP_PGTABLE_KERNEL, 0)
        if pfn is None:
            return None
        self.phys.mark_pgtable(pfn)
        self.tables[pfn] = np.zeros(self.levels[level].entries, np.uint64)
        self.table_level[pfn] = level
        return pfn

    def _preallocate_vmalloc_pages(self) -> None:
        """``preallocate_vmalloc_pages()`` (arch/x86/mm/init_64.c, v5.9+): a top-level
        entry for every slot of the range, or ``panic()``. 4.19 and 5.4 have no such
        step (their vmalloc faults sync the entries), so a failure there is the
        model's own refusal."""
        if self.machine.arch != "x86_64":
            return
        step = 1 << self.levels[0].shift
        addr = self.machine.vmalloc_start
        end = self.machine.vmalloc_end
        root = self.tables[self.root]
        while addr <= end:
            idx = self._index(addr, 0)
            if not int(root[idx]) & _PAGE_PRESENT:
                child = self._alloc_table(1)
                if child is None:
                    lvl = "p4d" if self.machine.paging_levels == 5 else "pud"
                    self.log.BUG(
                        "preallocate_vmalloc_pages",
                        f"no page for a {lvl} table at {addr:#x}",
                        lvl,
                    )
                    return
                root[idx] = (child << PAGE_SHIFT) | _PAGE_TABLE
            addr = (addr + step) & ~(step - 1)

    def _canonical(self, addr: int) -> bool:
        if self.va_bits == 32:
            return 0 <= addr < 1 << 32
        top = addr >> (self.va_bits - 1)
        return top == 0 or top == (1 << (65 - self.va_bits)) - 1

    def _table_for(self, addr: int, level: int, alloc: bool) -> npt.NDArray[np.uint64] | int:
        """The table at ``level`` covering ``addr``; allocating on the way if asked.

        Returns the table, or an int: -ENOMEM, -EBUSY (a huge leaf above), or 0 (absent).
        """
        tbl = self.tables[self.root]
        for lv in range(level):
            idx = self._index(addr, lv)
            e = int(tbl[idx])
            if not e & _PAGE_PRESENT:
                if not alloc:
                    return 0
                child = self._alloc_table(lv + 1)
                if child is None:
                    return -ENOMEM
                tbl[idx] = (child << PAGE_SHIFT) | _PAGE_TABLE
                tbl = self.tables[child]
                continue
            if e & _PAGE_PSE:
                return -EBUSY
            tbl = self.tables[(e & PTE_PFN_MASK) >> PAGE_SHIFT]
        return tbl

    def _pte_table(self, addr: int, alloc: bool) -> npt.NDArray[np.uint64] | int:
        key = addr >> self.pmd_shift
        t = self._ptecache.get(key)
        if t is not None:
            return t
        r = self._table_for(addr, len(self.levels) - 1, alloc)
        if not isinstance(r, int):
            self._ptecache[key] = r
        return r

    # -------------------------------------------------------------------- mapping
    def map_pages(
        self,
        addr: int,
        pfns: Sequence[int] | npt.NDArray[np.integer],
        prot: int,
        page_shift: int = PAGE_SHIFT,
    ) -> int:
        """``vmap_pages_range_noflush``: map ``pfns`` (small pages) at ``addr``.

        With ``page_shift`` = PMD_SHIFT each PMD-sized chunk that is virtually and
        physically aligned becomes one huge PMD entry (``vmap_try_huge_pmd``); other
        chunks fall back to PTEs. Returns 0, ``-ENOMEM`` (no page-table page) or
        ``-EBUSY`` (an entry was already in use: WARN as in ``vmap_pages_pte_range``).
        """
        if (
            page_shift == PAGE_SHIFT
            and len(pfns) == 1
            and not addr & (PAGE_SIZE - 1)
            and not int(pfns[0]) >> _PFN_BITS
        ):
            # One small page (vmalloc of a single page): _map_ptes() on a 1-element
            # array without numpy. For 0 <= pfn < 2**40 (a 52-bit physical address)
            # the uint64 arithmetic of the general path equals the int arithmetic here.
            return self._map_one_pte(addr, int(pfns[0]), prot & self.supported_pte_mask)
        if (
            page_shift == PAGE_SHIFT
            and _c_map_cached is not None
            and _c_map_cached(self, addr, pfns, prot)
        ):
            # Several small pages whose PTE tables are all cached, every slot empty: what
            # _map_ptes() below writes, in one C pass (None: anything else, nothing done).
            return 0
        arr = np.asarray(pfns, dtype=np.uint64)
        if addr & (PAGE_SIZE - 1):
            self.log.WARN(f"map_pages: unaligned address {addr:#x}")
            return -EINVAL
        protval = prot & self.supported_pte_mask
        if page_shift == PAGE_SHIFT or not self.huge_ok or page_shift < self.pmd_shift:
            return self._map_ptes(addr, arr, protval)
        chunk = 1 << (page_shift - PAGE_SHIFT)
        per_pmd = self.pmd_size >> PAGE_SHIFT
        n = len(arr)
        i = 0
        while i < n:
            a = addr + (i << PAGE_SHIFT)
            take = min(chunk, n - i)
            if (
                take >= per_pmd
                and not a & (self.pmd_size - 1)
                and not (int(arr[i]) << PAGE_SHIFT) & (self.pmd_size - 1)
            ):
                r = self._map_huge_pmd(a, int(arr[i]), protval)
                if r < 0:
                    return r
                if r > 0:
                    i += per_pmd
                    continue
            r = self._map_ptes(a, arr[i : i + take], protval)
            if r:
                return r
            i += take
        return 0

    def _map_huge_pmd(self, addr: int, pfn: int, protval: int) -> int:
        """``vmap_try_huge_pmd``: 1 if mapped huge, 0 to fall back, <0 on error."""
        tbl = self._table_for(addr, self.pmd_level, alloc=True)
        if isinstance(tbl, int):
            return tbl if tbl < 0 else -ENOMEM
        idx = self._index(addr, self.pmd_level)
        e = int(tbl[idx])
        if e & _PAGE_PRESENT:
            if e & _PAGE_PSE:
                self.log.WARN(f"vmap: huge PMD at {addr:#x} already mapped")
                return -EBUSY
            # pmd_free_pte_page(): drop the (empty) PTE table under this PMD
            child = (e & PTE_PFN_MASK) >> PAGE_SHIFT
            if self.tables[child].any():
                return 0
            tbl[idx] = 0
            self._ptecache.pop(addr >> self.pmd_shift, None)
            del self.tables[child]
            del self.table_level[child]
            self.phys.free_pages(child, 0)
        tbl[idx] = (pfn << PAGE_SHIFT) | protval_4k_2_large(protval) | _PAGE_PSE
        return 1

    def _map_one_pte(self, addr: int, pfn: int, protval: int) -> int:
        """``_map_ptes(addr, [pfn], protval)`` for one page, with plain ints."""
        tbl: npt.NDArray[np.uint64] | int | None = self._ptecache.get(addr >> self.pmd_shift)
        if tbl is None:  # (the get above is _pte_table()'s cache hit, inlined)
            tbl = self._pte_table(addr, alloc=True)
        if isinstance(tbl, int):
            if tbl == -EBUSY:
                self.log.WARN(f"vmap_pages_pte_range: {addr:#x} is inside a huge mapping")
            return tbl if tbl < 0 else -ENOMEM
        idx = (addr >> PAGE_SHIFT) & (self.pte_entries - 1)
        if tbl[idx]:
            self.log.WARN(f"vmap_pages_pte_range: PTE for {addr:#x} is not none", _PTE_NONE)
            return -EBUSY
        tbl[idx] = (pfn << PAGE_SHIFT) | protval
        return 0

    def _map_ptes(self, addr: int, arr: npt.NDArray[np.uint64], protval: int) -> int:
        n = len(arr)
        ents = self.pte_entries
        pv = np.uint64(protval)
        sh = np.uint64(PAGE_SHIFT)
        i = 0
        while i < n:
            a = addr + (i << PAGE_SHIFT)
            tbl = self._pte_table(a, alloc=True)
            if isinstance(tbl, int):
                if tbl == -EBUSY:
                    self.log.WARN(f"vmap_pages_pte_range: {a:#x} is inside a huge mapping")
                return tbl if tbl < 0 else -ENOMEM
            idx = (a >> PAGE_SHIFT) & (ents - 1)
            k = min(n - i, ents - idx)
            if _speedups is not None:
                # The check and the writes below in one C pass (same entries written).
                busy = _speedups.pte_fill(tbl, idx, arr, i, k, protval)
                if busy >= 0:
                    self.log.WARN(
                        f"vmap_pages_pte_range: PTE for {a + (busy << PAGE_SHIFT):#x} is not none",
                        _PTE_NONE,
                    )
                    return -EBUSY
                i += k
                continue
            view = tbl[idx : idx + k]
            if view.any():
                busy = int(np.flatnonzero(view)[0])
                view[:busy] = (arr[i : i + busy] << sh) | pv
                self.log.WARN(
                    f"vmap_pages_pte_range: PTE for {a + (busy << PAGE_SHIFT):#x} is not none",
                    _PTE_NONE,
                )
                return -EBUSY
            view[:] = (arr[i : i + k] << sh) | pv
            i += k
        return 0

    def unmap(self, addr: int, size: int) -> None:
        """``vunmap_range_noflush``: clear leaf entries; page tables stay allocated."""
        end = addr + size
        pmd_shift = self.pmd_shift
        if size > 0 and addr >> pmd_shift == (end - 1) >> pmd_shift:
            ptes = self._ptecache.get(addr >> pmd_shift)
            if ptes is not None:
                # The range lies under one PMD whose PTE table is cached: the loop
                # below would run once, with nxt = end, and clear the same slots.
                i0 = (addr >> PAGE_SHIFT) & (self.pte_entries - 1)
                ptes[i0 : i0 + ((size + PAGE_SIZE - 1) >> PAGE_SHIFT)] = 0
                return
        if _c_clear_cached is not None and _c_clear_cached(self, addr, size):
            return  # every PTE table of the range cached: the loop below, in C
        a = addr
        pmd_size = self.pmd_size
        ents = self.pte_entries
        while a < end:
            nxt = min((a | (pmd_size - 1)) + 1, end)
            tbl = self._pte_table(a, alloc=False)
            if isinstance(tbl, int):
                if tbl == -EBUSY:  # a huge leaf above: pmd_clear_huge()
                    self._clear_huge(a, end)
                else:
                    nxt = self._skip_absent(a, end)
                a = nxt
                continue
            i0 = (a >> PAGE_SHIFT) & (ents - 1)
            i1 = i0 + ((nxt - a + PAGE_SIZE - 1) >> PAGE_SHIFT)
            tbl[i0:i1] = 0
            a = nxt

    def _clear_huge(self, addr: int, end: int) -> None:
        tbl = self.tables[self.root]
        for lv in range(len(self.levels) - 1):
            idx = self._index(addr, lv)
            e = int(tbl[idx])
            if e & _PAGE_PSE:
                size = 1 << self.levels[lv].shift
                start = addr & ~(size - 1)
                if start < addr or start + size > end:
                    self.log.WARN(
                        f"vunmap: partial unmap of a huge {self.levels[lv].name} at {start:#x}"
                    )
                tbl[idx] = 0
                return
            tbl = self.tables[(e & PTE_PFN_MASK) >> PAGE_SHIFT]

    def _skip_absent(self, addr: int, end: int) -> int:
        """Next address after the not-present upper-level entry covering ``addr``."""
        tbl = self.tables[self.root]
        for lv in range(len(self.levels) - 1):
            idx = self._index(addr, lv)
            e = int(tbl[idx])
            if not e & _PAGE_PRESENT:
                size = 1 << self.levels[lv].shift
                return min((addr | (size - 1)) + 1, end)
            tbl = self.tables[(e & PTE_PFN_MASK) >> PAGE_SHIFT]
        return min((addr | (self.pmd_size - 1)) + 1, end)

    # ----------------------------------------------------------------------- walk
    def walk(self, addr: int) -> Walk:
        """Translate ``addr`` step by step, recording every level's entry."""
        w = Walk(addr)
        if self.phys.is_direct_map(addr):
            w.direct_map = True
            w.phys = self.phys.virt_to_phys(addr)
            w.note = "direct map: PAGE_OFFSET + phys (its page tables are not modelled)"
            return w
        if not self._canonical(addr):
            w.stopped_at = self.levels[0].name
            w.note = "non-canonical address (general protection fault, not #PF)"
            return w
        tbl_pfn = self.root
        last = len(self.levels) - 1
        for lv, spec in enumerate(self.levels):
            tbl = self.tables[tbl_pfn]
            idx = (addr >> spec.shift) & (spec.entries - 1)
            e = int(tbl[idx])
            leaf = lv == last or bool(e & _PAGE_PSE and e & _PAGE_PRESENT)
            w.levels.append(
                WalkLevel(spec.name, idx, e, decode_entry(e, lv == last), tbl_pfn, leaf)
            )
            if not e & _PAGE_PRESENT:
                w.stopped_at = spec.name
                return w
            if leaf:
                size = 1 << spec.shift
                base = e & PTE_PFN_MASK & ~(size - 1)
                if lv != last:
                    base &= ~_PAGE_PAT_LARGE
                w.phys = base | (addr & (size - 1))
                w.page_size = size
                return w
            tbl_pfn = (e & PTE_PFN_MASK) >> PAGE_SHIFT
        return w  # pragma: no cover

    def lookup_pfn(self, addr: int) -> int | None:
        """``vmalloc_to_pfn()``: the pfn mapped at ``addr`` or None."""
        try:
            return self.translate(addr) >> PAGE_SHIFT
        except PageFault:
            return None

    def translate(self, addr: int, write: bool = False) -> int:
        """The physical address ``addr`` maps to; raises :class:`PageFault`."""
        t = self._ptecache.get(addr >> self.pmd_shift)
        if t is not None:
            e = int(t[(addr >> PAGE_SHIFT) & (self.pte_entries - 1)])
            if e & _PAGE_PRESENT and (not write or e & _PAGE_RW):
                return (e & PTE_PFN_MASK) | (addr & (PAGE_SIZE - 1))
        w = self.walk(addr)
        if w.phys is None:
            raise self._fault(addr, w, write, present=False)
        if write and not w.direct_map and not w.levels[-1].entry & _PAGE_RW:
            raise self._fault(addr, w, write, present=True)
        return w.phys

    def _fault(self, addr: int, w: Walk, write: bool, present: bool) -> PageFault:
        width = 16 if self.va_bits > 32 else 8
        code = (0x2 if write else 0) | (0x1 if present else 0)
        lines = [
            f"BUG: unable to handle page fault for address: {addr:0{width}x}",
            f"#PF: supervisor {'write' if write else 'read'} access in kernel mode",
            f"#PF: error_code({code:#06x}) - "
            + ("permissions violation" if present else "not-present page"),
        ]
        if w.note:
            lines.append(w.note)
        else:
            parts = []
            for lv in w.levels:
                if self.va_bits == 32:  # 32-bit dump_pagetable: "*pde = ... *pte = ..."
                    parts.append(f"*{'pde' if lv.name == 'PGD' else 'pte'} = {lv.entry:08x}")
                    continue
                parts.append(f"{lv.name} {lv.entry:x}")
                if lv.name == "PGD" and "P4D" in self.folded:
                    parts.append(f"P4D {lv.entry:x}")
            lines.append(" ".join(parts) + " ")
        if self.fault_describer is not None:
            extra = self.fault_describer(addr)
            if extra:
                lines.append(extra)
        level = w.stopped_at or (w.levels[-1].name if w.levels else self.levels[0].name)
        return PageFault(addr, level, "\n".join(lines))

    # ---------------------------------------------------------------- memory access
    def read(self, addr: int, n: int) -> bytes:
        """Read ``n`` bytes at kernel virtual address ``addr`` (may span pages)."""
        out = bytearray()
        while n > 0:
            take = min(n, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            phys = self.translate(addr)
            out += self.phys.read(phys >> PAGE_SHIFT, phys & (PAGE_SIZE - 1), take)
            addr += take
            n -= take
        return bytes(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at kernel virtual address ``addr`` (may span pages)."""
        mv = memoryview(data).cast("B")
        pos = 0
        while pos < len(mv):
            take = min(len(mv) - pos, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            phys = self.translate(addr, write=True)
            self.phys.write(phys >> PAGE_SHIFT, phys & (PAGE_SIZE - 1), mv[pos : pos + take])
            addr += take
            pos += take

    # ------------------------------------------------------------------- reporting
    @property
    def nr_pgtable_pages(self) -> int:
        """Page-table pages taken from the buddy allocator (static ones excluded)."""
        return len(self.tables) - len(self.static_tables)

    def __repr__(self) -> str:
        names = "/".join(level.name for level in self.levels)
        return (
            f"<PageTables init_mm {names}: {len(self.tables)} table pages "
            f"({self.nr_pgtable_pages} allocated since boot)>"
        )

    def render_walk(self, addr: int) -> str:
        """A learner-friendly text rendering of :meth:`walk`."""
        w = self.walk(addr)
        width = 16 if self.va_bits > 32 else 8
        out = [f"walk of {addr:#0{width + 2}x} ({self.machine.arch}, {len(self.levels)}-level)"]
        if w.direct_map:
            out.append(f"  {w.note}")
            out.append(
                f"  => phys {w.phys:#x} (pfn {w.phys >> PAGE_SHIFT:#x})"
                if w.phys is not None
                else ""
            )
            return "\n".join(out)
        if w.note:
            out.append(f"  {w.note}")
        for lv in w.levels:
            spec = next(s for s in self.levels if s.name == lv.name)
            ew = 16 if self.va_bits > 32 else 8
            desc = "|".join(lv.flags) if lv.flags else "none"
            what = ""
            if lv.entry & _PAGE_PRESENT:
                if lv.leaf:
                    what = f" -> {'huge ' if spec.shift > PAGE_SHIFT else ''}page pfn {(lv.entry & PTE_PFN_MASK) >> PAGE_SHIFT:#x}"
                else:
                    what = f" -> table pfn {(lv.entry & PTE_PFN_MASK) >> PAGE_SHIFT:#x}"
            out.append(
                f"  {lv.name:<4} [{lv.index:4d}] (bits {spec.shift + spec.bits - 1}-{spec.shift}) "
                f"entry {lv.entry:0{ew}x}  {desc}{what}"
            )
            if lv.name == "PGD" and self.folded == ["P4D"]:
                out.append("  P4D        (folded into PGD with 4-level paging)")
            elif lv.name == "PGD" and self.folded == ["P4D", "PUD", "PMD"]:
                out.append("  PUD/PMD    (folded: 2-level paging, the PGD entry is the PMD)")
            elif lv.name == "PGD" and self.folded:
                folded = "/".join(self.folded)
                out.append(f"  {folded:<10} (folded into PGD with {len(self.levels)}-level paging)")
        if w.phys is not None:
            out.append(
                f"  => phys {w.phys:#x} (pfn {w.phys >> PAGE_SHIFT:#x}, offset "
                f"{w.phys & (w.page_size - 1):#x} in a {w.page_size >> 10} KiB page)"
            )
        else:
            out.append(f"  => not present: the walk stopped at the {w.stopped_at}")
        return "\n".join(out)

    def check(self) -> None:
        """Every table entry points to a known table of the next level exactly once;
        buddy-allocated tables are PG_pgtable pages and match the allocator's count."""
        from pyvmalloc.phys import PG_ALLOC, PG_PGTABLE, InvariantError

        seen: dict[int, int] = {}
        for pfn, tbl in self.tables.items():
            lv = self.table_level[pfn]
            if lv == len(self.levels) - 1:
                continue
            present = (tbl & np.uint64(_PAGE_PRESENT)) != 0
            huge = (tbl & np.uint64(_PAGE_PSE)) != 0
            kids = (
                (tbl[present & ~huge] & np.uint64(PTE_PFN_MASK)) >> np.uint64(PAGE_SHIFT)
            ).tolist()
            for k in kids:
                if k not in self.tables:
                    raise InvariantError(
                        f"{self.levels[lv].name} table {pfn:#x} points to unknown table {k:#x}", k
                    )
                if self.table_level[k] != lv + 1:
                    raise InvariantError(f"table {k:#x} used at the wrong level", k)
                if k in seen:
                    raise InvariantError(f"table {k:#x} referenced twice", k)
                seen[k] = pfn
        for pfn in self.tables:
            if pfn != self.root and pfn not in seen:
                raise InvariantError(f"page-table page {pfn:#x} is not linked", pfn)
            if pfn in self.static_tables:
                continue
            f = int(self.phys.flags[pfn])
            if not f & PG_PGTABLE or not f & PG_ALLOC:
                raise InvariantError(
                    f"page-table page {pfn:#x} is not a PG_pgtable allocation", pfn
                )
        if self.nr_pgtable_pages != self.phys.nr_pgtable_pages:
            raise InvariantError(
                f"{self.nr_pgtable_pages} page-table pages, allocator counts "
                f"{self.phys.nr_pgtable_pages}"
            )
        for key, t in self._ptecache.items():
            r = self._table_for(key << self.pmd_shift, len(self.levels) - 1, alloc=False)
            if r is not t:
                raise InvariantError(f"stale PTE-table cache for {key << self.pmd_shift:#x}")


#: The compiled twins of the PTE fill and clear over cached tables (``_speedups.c``,
#: bulk pages section): ``map_pages`` of several small pages and ``unmap`` across PMDs,
#: when every PTE table they need is in ``_ptecache`` (and, for the fill, every slot is
#: empty); None, having changed nothing, for anything else. A PageTables with one of
#: these methods replaced gets no twin.
_C_PTE_TWINNED = (
    "map_pages", "unmap", "_map_ptes", "_map_one_pte", "_pte_table", "_table_for",
    "_alloc_table", "_clear_huge", "_skip_absent",
)  # fmt: skip
_c_map_cached: Callable[..., bool | None] | None = None
_c_clear_cached: Callable[..., bool | None] | None = None
if _speedups is not None:
    _speedups.init_bulk_ptes(
        PageTables, _C_PTE_TWINNED, tuple(getattr(PageTables, n) for n in _C_PTE_TWINNED)
    )
    _c_map_cached = _speedups.pte_map_cached
    _c_clear_cached = _speedups.pte_clear_cached
