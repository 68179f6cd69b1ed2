"""The vm_struct layer and vmalloc proper (mm/vmalloc.c, v5.4 and v6.18).

This module mirrors the kernel's call flow function for function (the seeds' "Code
Flow" diagram)::

    vmalloc
     +-> __vmalloc_node_flags            (5.4 only; 6.x calls __vmalloc_node directly)
         +-> __vmalloc_node
             +-> __vmalloc_node_range
                 +-> __get_vm_area_node
                 |   +-> kzalloc_node     (the vm_struct itself, kmalloc-64/-96)
                 |   +-> alloc_vmap_area  (pyvmalloc.vmap.area)
                 |   +-> setup_vmalloc_vm
                 +-> __vmalloc_area_node
                     +-> kmalloc_node or a nested __vmalloc_node (the pages array)
                     +-> alloc_page one by one (5.4) / vm_area_alloc_pages (6.x)
                     +-> map_vm_area (5.4) / vmap_pages_range (6.x)

Every kernel-named step is a method of :class:`Vmalloc` whose name is the kernel's
with a leading double underscore shortened to one (Python would mangle ``__x`` inside
a class); the exact names are also installed as aliases, so
``getattr(vm, "__vmalloc_node_range")`` works, and :data:`KERNEL_NAMES` maps them.

Model conventions:

* Addresses are Python ints; NULL is 0. Pages are pfns (``struct page *`` is the pfn;
  ``vmalloc_to_page`` returns a pfn). Page arrays are numpy int64 arrays.
* The kernel prints ``%p`` hashed (``kptr_restrict``); the model prints the address
  in hex (``0xffffc90000001000``) so messages can be matched to the model's state.
* ``cpu=`` on every API call is ``raw_smp_processor_id()``: it picks the 6.x vmap-node
  pool, the per-CPU vmap-block queue and the per-CPU deferred-free list. It is passed
  down, call by call, to every step that needs it (the layer keeps no "current CPU").
* Interrupt context: :meth:`Vmalloc.vfree` with ``in_interrupt=True`` (or inside
  ``Kernel.interrupt_context()``, asked through the ``in_interrupt`` callable the layer
  is built with) defers the free to a work item, as ``vfree_atomic``; allocating there
  is a ``BUG`` (logged; the call returns NULL).
* Kernel-version differences are :class:`~pyvmalloc.config.KernelProfile` fields
  (``sizeof_vm_struct``, ``bulk_page_alloc``, ``vunmap_helper``, ...), each read where
  the kernel's code differs.

The layer sits above the vmap allocator, the page allocator, the page tables and the
slab, which it is given when built; it never imports the :class:`Kernel` that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import pyvmalloc.phys.buddy as _buddy
import pyvmalloc.slab as _slab
import pyvmalloc.vmap.space as _vmap_space_module
from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.args import c_int, host_fits, integer, uint, ulong
from pyvmalloc.config import (
    INT_MAX,
    NUMA_NO_NODE,
    PAGE_SHIFT,
    PAGE_SIZE,
    KernelProfile,
    Machine,
)
from pyvmalloc.errors import InvariantError
from pyvmalloc.gfp import (
    __GFP_DIRECT_RECLAIM,
    __GFP_DMA,
    __GFP_DMA32,
    __GFP_HIGHMEM,
    __GFP_NOFAIL,
    __GFP_NORETRY,
    __GFP_NOWARN,
    __GFP_RETRY_MAYFAIL,
    __GFP_THISNODE,
    __GFP_ZERO,
    GFP_KERNEL,
    GFP_RECLAIM_MASK,
    warn_alloc_text,
)
from pyvmalloc.names import install_kernel_names
from pyvmalloc.pgtable import PAGE_KERNEL, PAGE_KERNEL_NOCACHE, PageTables, pgprot_nx
from pyvmalloc.printk import KernelLog
from pyvmalloc.vmap.area import VMAP_RAM, VmapArea
from pyvmalloc.vmap.block import VmapBlocks
from pyvmalloc.vmap.space import VmapSpace

if TYPE_CHECKING:
    from pyvmalloc.phys import PhysicalMemory
    from pyvmalloc.slab import SlabAllocator

__all__ = [
    "KERNEL_NAMES",
    "VM_ALLOC",
    "VM_ALLOW_HUGE_VMAP",
    "VM_DMA_COHERENT",
    "VM_FLUSH_RESET_PERMS",
    "VM_IOREMAP",
    "VM_MAP",
    "VM_MAP_PUT_PAGES",
    "VM_NO_GUARD",
    "VM_SPARSE",
    "VM_UNINITIALIZED",
    "VM_USERMAP",
    "VmStruct",
    "Vmalloc",
    "describe_fault",
    "get_vm_area_size",
]

# A class body would mangle ``__GFP_X``: module-level aliases.
_GFP_DIRECT_RECLAIM = __GFP_DIRECT_RECLAIM
_GFP_DMA = __GFP_DMA
_GFP_DMA32 = __GFP_DMA32
_GFP_HIGHMEM = __GFP_HIGHMEM
_GFP_NOFAIL = __GFP_NOFAIL
_GFP_NORETRY = __GFP_NORETRY
_GFP_NOWARN = __GFP_NOWARN
_GFP_RETRY_MAYFAIL = __GFP_RETRY_MAYFAIL
_GFP_THISNODE = __GFP_THISNODE
_GFP_ZERO = __GFP_ZERO

# include/linux/vmalloc.h
VM_IOREMAP = 0x001
VM_ALLOC = 0x002
VM_MAP = 0x004
VM_USERMAP = 0x008
VM_DMA_COHERENT = 0x010
VM_UNINITIALIZED = 0x020
VM_NO_GUARD = 0x040
VM_FLUSH_RESET_PERMS = 0x100
VM_MAP_PUT_PAGES = 0x200
VM_ALLOW_HUGE_VMAP = 0x400
VM_SPARSE = 0x1000

GFP_DMA32_KERNEL = GFP_KERNEL | _GFP_DMA32
SHMLBA = PAGE_SIZE  # x86

#: Python method name -> kernel function name, for kernel names starting with ``__``
#: (a class body would mangle them): Python spells ``__x`` as ``_x`` and
#: :func:`~pyvmalloc.names.install_kernel_names` adds the exact name as an alias.
KERNEL_NAMES: dict[str, str] = {
    "_vmalloc_node_flags": "__vmalloc_node_flags",
    "_vmalloc_node": "__vmalloc_node",
    "_vmalloc_node_range": "__vmalloc_node_range",
    "_get_vm_area_node": "__get_vm_area_node",
    "_vmalloc_area_node": "__vmalloc_area_node",
    "_get_vm_area_caller": "__get_vm_area_caller",
    "_vmalloc": "__vmalloc",
}


def _pfn_array(name: str, pfns: object) -> npt.NDArray[np.int64]:
    """A flat int64 array of pfns from a sequence of integers, or a TypeError naming
    the argument (floats, strings and values of 2**63 or more are refused)."""
    try:
        raw = np.asarray(pfns)
    except (OverflowError, TypeError, ValueError):
        raw = np.asarray([], dtype=object)
    ok = raw.ndim == 1 and (raw.dtype.kind in "iu" or raw.size == 0)
    if ok and raw.dtype.kind == "u" and raw.size and int(raw.max()) >= 1 << 63:
        ok = False
    if not ok:
        raise TypeError(f"{name} must be a flat sequence of pfns (integers below 2**63)")
    return raw.astype(np.int64, copy=False)


def get_vm_area_size(area: VmStruct) -> int:
    """``get_vm_area_size``: the usable size, i.e. without the guard page."""
    if area.flags & VM_NO_GUARD:
        return area.size
    return area.size - PAGE_SIZE


def _page_align(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def get_count_order(x: int) -> int:
    """``get_count_order_long``: ceil(log2(x))."""
    return (x - 1).bit_length() if x > 1 else 0


@dataclass(eq=False, slots=True)
class VmStruct:
    """``struct vm_struct``: one get_vm_area/vmalloc/vmap/ioremap area.

    ``size`` includes the guard page. ``pages`` holds the pfns of the small pages
    (``nr_pages`` of them); ``pages_addr`` is the kernel address of the pages array
    itself (a kmalloc address, or a vmalloc address when the array needed more than
    a page: the ``vpages`` mark). ``kaddr`` is where the vm_struct lives (kmalloc).
    """

    addr: int = 0
    size: int = 0
    flags: int = 0
    caller: str | None = None
    pages: npt.NDArray[np.int64] | None = None
    nr_pages: int = 0
    phys_addr: int = 0
    page_order: int = 0
    requested_size: int = 0
    pages_addr: int = 0
    kaddr: int = 0
    #: For an area imported from a snapshot, whose pages are not modelled: the
    #: ``vpages`` mark and the ``N<node>=<pages>`` counts it was printed with.
    vpages: bool = False
    numa_pages: tuple[tuple[int, int], ...] = ()

    def __repr__(self) -> str:
        return (
            f"VmStruct({self.addr:#x}-{self.addr + self.size:#x} {self.size} "
            f"flags={self.flags:#x} pages={self.nr_pages} caller={self.caller})"
        )


# The compiled whole vmalloc()/vfree() (the common case in one call each; they decline,
# having changed nothing, whatever they do not mirror: see _speedups.c).
_c_vmalloc: Callable[[Any, int, int, int, str | None], int | None] | None = (
    _speedups.vmalloc_node_range if _speedups is not None else None
)
_c_vfree: Callable[[Any, int, int], bool | None] | None = (
    _speedups.vfree if _speedups is not None else None
)
#: The lower layers' methods the compiled whole operations stand in for, as imported:
#: a method replaced later (on its class or an instance) is called, not its twin.
_C_ORIGS = (
    _slab.SlabAllocator.kmalloc, _slab.SlabAllocator.kfree,
    _buddy.PhysicalMemory.alloc_pages, _buddy.PhysicalMemory.free_pages,
    PageTables.map_pages, PageTables.unmap, VmapSpace.find_vmap_area,
    VmapSpace.find_unlink_vmap_area, VmapSpace.free_vmap_area_noflush,
    VmapSpace.alloc_vmap_area,
)  # fmt: skip
if _speedups is not None:
    _speedups.init_vmalloc_whole(
        VmStruct, VmapArea, np.array, np.int64, np.empty, vars(_vmap_space_module)
    )


class Vmalloc:
    """The vmalloc layer: vm_structs, the vmalloc/vmap/ioremap API, vmap blocks.

    Holds ``nr_vmalloc_pages`` (VmallocUsed), the per-CPU deferred-free lists and the
    vmap blocks; all area, page, page-table and slab work goes to the layers below,
    which it is given: the vmap area allocator ``space``, the page allocator
    ``phys``, the page tables ``pgtables`` and the kmalloc caches ``slab``.

    The callables connect it to its owner without a reference to it:
    ``schedule_work(name, fn)`` queues deferred work (``vfree_atomic``),
    ``after_call()`` runs when each API call returns (pending work, "shortly after"),
    ``in_interrupt()`` answers ``in_interrupt()``, and ``pages_used()`` /
    ``pgtable_pages_added()`` give the page counts since boot for :meth:`check`.
    """

    def __init__(
        self,
        machine: Machine,
        profile: KernelProfile,
        log: KernelLog,
        space: VmapSpace,
        phys: PhysicalMemory,
        pgtables: PageTables,
        slab: SlabAllocator,
        *,
        schedule_work: Callable[[str, Callable[[], None]], object],
        after_call: Callable[[], None] = lambda: None,
        in_interrupt: Callable[[], bool] = lambda: False,
        pages_used: Callable[[], int] | None = None,
        pgtable_pages_added: Callable[[], int] = lambda: 0,
    ) -> None:
        self.log = log
        self.profile = profile
        self.machine = machine
        self.space = space
        self.phys = phys
        self.pgt = pgtables
        self.slab = slab
        self._schedule_work = schedule_work
        self._after_call = after_call
        self._in_interrupt = in_interrupt
        self._pages_used = pages_used
        self._pgtable_pages_added = pgtable_pages_added
        self.VMALLOC_START = machine.vmalloc_start
        self.VMALLOC_END = machine.vmalloc_end
        self.sizeof_vm_struct = profile.sizeof_vm_struct
        self.ioremap_max_order = machine.ioremap_max_order
        #: ``nr_vmalloc_pages`` (VmallocUsed in pages)
        self.nr_vmalloc_pages = 0
        #: pages owned by VM_MAP_PUT_PAGES areas (freed by vfree, not in VmallocUsed)
        self.put_pages = 0
        #: pages the user took with Kernel.alloc_pages (for vmap tests)
        self.external_pages = 0
        #: the pfns behind ``external_pages`` (what ``free_pages`` may give back)
        self.user_pfns: set[int] = set()
        #: user pages mapped by a live vmap()/vm_map_ram() area, by area address
        self.user_mapped: dict[int, list[int]] = {}
        #: how many live areas map each user page
        self.user_map_count: dict[int, int] = {}
        #: vmalloc'ed areas released without vfree (vunmap, remove_vm_area,
        #: free_vm_area, iounmap): the kernel leaks their pages silently, and so does
        #: the model, but :meth:`check` names them
        self.leaked: list[VmStruct] = []
        #: boot options ``init_on_alloc=`` / ``init_on_free=`` (both off on the
        #: reference machine: CONFIG_INIT_ON_*_DEFAULT_ON=n)
        self.init_on_alloc = False
        self.init_on_free = False
        self._bits = machine.bits_per_long
        self._cpus_online = machine.cpus_online
        self._ulong_max = machine.ulong_max
        #: ``boot_cpu_data.x86_phys_bits``: the reference machine's CPU reports 48
        #: physical address bits (``address sizes`` in /proc/cpuinfo); 32-bit
        #: kernels without PAE/LPAE address 32.
        self.phys_bits = 48 if self._bits == 64 or machine.lpae else 32
        #: width of ``phys_addr_t``/``resource_size_t``: 64 bits on 64-bit and on
        #: 32-bit with LPAE/PAE, else 32
        self.phys_addr_bits = 64 if self._bits == 64 or machine.lpae else 32
        #: ``vmap_allow_huge`` (boot option ``nohugevmalloc`` clears it)
        self.vmap_allow_huge = True
        #: per-CPU ``vfree_deferred`` lists (addresses, pushed LIFO)
        self.deferred: list[list[int]] = [[] for _ in range(machine.cpus_possible)]
        self.ptes_written = 0
        #: the per-CPU vmap blocks of vm_map_ram
        self.blocks = VmapBlocks(
            machine,
            profile,
            log,
            space,
            pgtables,
            # Late-bound, so a call-tree recorder that shadows these methods on this
            # instance (pyvmalloc.explain) sees the blocks' calls too.
            alloc_vmap_area=lambda *a, **kw: self.alloc_vmap_area(*a, **kw),
            map_pages=lambda *a: self.vmap_pages_range(*a),
            free_unmap_vmap_area=lambda va, *, cpu: self.free_unmap_vmap_area(va, cpu=cpu),
        )
        self.stats = {"vmalloc": 0, "vfree": 0, "vmap": 0, "vunmap": 0, "failures": 0}
        #: What the compiled whole vmalloc()/vfree() read and the layer never rebinds:
        #: None for the profiles whose vmalloc path they do not mirror (5.4's
        #: __vmalloc_node_flags and warnings, 5.4's page-by-page allocation, map_vm_area,
        #: __vunmap).
        self._c_whole: tuple[Any, ...] | None = None
        if (
            not profile.vmalloc_node_flags
            and profile.vmalloc_error_warnings
            and profile.bulk_page_alloc
            and not profile.has_map_vm_area
            and not profile.vunmap_helper
        ):
            self._c_whole = (
                space, phys, pgtables, slab, log, self.sizeof_vm_struct,
                self.VMALLOC_START, self.VMALLOC_END, self._cpus_online, self._ulong_max,
                int(profile.pages_array_highmem), int(profile.vm_requested_size), PAGE_KERNEL,
                GFP_KERNEL, _GFP_ZERO, _GFP_HIGHMEM, _GFP_NOWARN, GFP_RECLAIM_MASK,
                _buddy.PhysicalMemory, PageTables, _buddy.PG_PCP, _buddy.PG_ALLOC,
                _buddy.PG_PGTABLE, _buddy.OWNER_NONE, _buddy.WMARK_LOW, _slab.SlabAllocator,
                _slab.KmemCache, _slab.Slab,
                _C_ORIGS,
            )  # fmt: skip

    def __repr__(self) -> str:
        n = sum(1 for _ in self.areas())
        return (
            f"<Vmalloc {self.profile.name}: {n} vm_structs, nr_vmalloc_pages "
            f"{self.nr_vmalloc_pages}>"
        )

    # ------------------------------------------------------------------ helpers
    def _warn_alloc(self, gfp: int, text: str) -> None:
        """``warn_alloc(gfp, NULL, text)``: silent with ``_GFP_NOWARN``."""
        if gfp & _GFP_NOWARN:
            return
        self.log.warn(warn_alloc_text(gfp, text, comm=self.phys.comm, nr_nodes=self.phys.nr_nodes))

    def _enter(self, cpu: int) -> None:
        """An API call starts on ``cpu``: strict-mode warnings wait for :meth:`_leave`."""
        if cpu.__class__ is not int:
            integer("cpu", cpu)
        if not 0 <= cpu < self._cpus_online:
            self.machine.check_cpu(cpu)  # raises the error
        self.log.depth += 1  # log.enter(), inlined

    def _leave(self) -> None:
        """The API call returns: deferred work runs, then a held strict warning is
        raised (the model is unwound by then, as the kernel is after its WARN)."""
        log = self.log
        try:
            self._after_call()
        finally:
            log.depth -= 1
        if log.pending or log.hung is not None:
            log.raise_held()

    @property
    def high_memory(self) -> int:
        """``high_memory``: the virtual address just past the direct-mapped lowmem."""
        return self.phys.page_offset + (self.phys.max_low_pfn << PAGE_SHIFT)

    def is_vmalloc_addr(self, addr: int) -> bool:
        """``is_vmalloc_addr``: ``VMALLOC_START <= addr < VMALLOC_END``."""
        return self.VMALLOC_START <= addr < self.VMALLOC_END

    # =========================================================== vm_struct layer
    def _get_vm_area_node(
        self,
        size: int,
        align: int,
        shift: int,
        flags: int,
        start: int,
        end: int,
        node: int,
        gfp: int,
        caller: str | None,
        *,
        cpu: int,
    ) -> VmStruct | None:
        """``__get_vm_area_node``: a vm_struct plus a busy vmap area for it.

        5.4: ``size = PAGE_ALIGN(size)``, no ``shift`` argument, and the vm_struct is
        bound after ``alloc_vmap_area`` returns (``setup_vmalloc_vm`` under the lock).
        6.x: ``size = ALIGN(size, 1 << shift)`` (huge vmalloc), ``requested_size``
        remembers the caller's size (vrealloc, 6.15+), and ``alloc_vmap_area`` takes
        the vm and binds it before the area is visible. Both: BUG in interrupt
        context; ``VM_IOREMAP`` forces ``align = 1 << clamp(get_count_order(size),
        PAGE_SHIFT, IOREMAP_MAX_ORDER)``; the guard page is added unless
        ``VM_NO_GUARD``.
        """
        if self._in_interrupt():
            self.log.BUG(
                "__get_vm_area_node:in_interrupt()",
                "__get_vm_area_node() called in interrupt context",
            )
            return None
        requested = size
        # ALIGN(size, 1 << shift): PAGE_ALIGN unless a huge mapping is wanted (shift
        # is PAGE_SHIFT on kernels without huge vmalloc).
        a = 1 << shift
        size = (size + a - 1) & ~(a - 1)
        if size == 0:
            return None
        if flags & VM_IOREMAP:
            order = min(max(get_count_order(size), PAGE_SHIFT), self.ioremap_max_order)
            align = 1 << order
        space = self.space
        if space.explain:  # (the recorder shows kzalloc_node)
            kaddr = self.slab.kzalloc(self.sizeof_vm_struct, gfp & GFP_RECLAIM_MASK, node)
        else:  # kzalloc(), whose body is this one call
            kaddr = self.slab.kmalloc(
                self.sizeof_vm_struct, (gfp & GFP_RECLAIM_MASK) | _GFP_ZERO, node
            )
        if not kaddr:
            return None
        if not flags & VM_NO_GUARD:
            size += PAGE_SIZE
        # VmStruct(flags=flags, caller=caller, requested_size=requested, kaddr=kaddr),
        # positionally (addr, size, flags, caller, pages, nr_pages, phys_addr,
        # page_order, requested_size, pages_addr, kaddr): half the cost of the keyword
        # call on this hot path; a test holds the field order.
        area = VmStruct(0, 0, flags, caller, None, 0, 0, 0, requested, 0, kaddr)
        if space.explain:  # the named steps, for the explain recorder
            va = self.alloc_vmap_area(size, align, start, end, node, gfp, area, cpu=cpu)
        else:  # alloc_vmap_area() above, whose body is this one call
            va = space.alloc_vmap_area(
                size, align, start, end, cpu=cpu, gfp_nowarn=bool(gfp & _GFP_NOWARN), vm=area
            )  # fmt: skip (va_flags: the default, 0)
        if not isinstance(va, VmapArea):
            self.slab.kfree(kaddr)
            return None
        if space.explain:
            self.setup_vmalloc_vm(area, va, flags, caller)
        else:  # setup_vmalloc_vm(), inlined (flags and caller are already set)
            area.addr = va.va_start
            area.size = va.va_end - va.va_start
            if not self.profile.vm_requested_size:
                area.requested_size = area.size
            va.vm = area
        return area

    def alloc_vmap_area(
        self,
        size: int,
        align: int,
        start: int,
        end: int,
        node: int,
        gfp: int,
        vm: VmStruct | None,
        va_flags: int = 0,
        *,
        cpu: int,
    ) -> VmapArea | int:
        """``alloc_vmap_area``: delegate to the vmap area allocator on CPU ``cpu``.

        Its ``might_sleep()`` complains in interrupt context only with
        ``CONFIG_DEBUG_ATOMIC_SLEEP`` in ``log.configs`` (``vm_map_ram`` reaches it
        when it needs a new block or a VA of its own)."""
        if self.log.configs and self._in_interrupt():
            self.log.might_sleep("alloc_vmap_area:might_sleep", "alloc_vmap_area() in interrupt")
        return self.space.alloc_vmap_area(
            size,
            align,
            start,
            end,
            cpu=cpu,
            gfp_nowarn=bool(gfp & _GFP_NOWARN),
            va_flags=va_flags,
            vm=vm,
        )

    def setup_vmalloc_vm(self, vm: VmStruct, va: VmapArea, flags: int, caller: str | None) -> None:
        """``setup_vmalloc_vm``: ``vm.addr/size`` from the area, ``va.vm = vm``.

        (6.x does this inside ``alloc_vmap_area`` when given the vm; the effect is the
        same: the area is never visible without its vm_struct.)
        """
        vm.flags = flags
        vm.addr = va.va_start
        vm.size = va.va_end - va.va_start
        if not self.profile.vm_requested_size:
            vm.requested_size = vm.size
        vm.caller = caller
        va.vm = vm

    def clear_vm_uninitialized_flag(self, vm: VmStruct) -> None:
        """``clear_vm_uninitialized_flag``: the area is fully set up (after smp_wmb)."""
        vm.flags &= ~VM_UNINITIALIZED

    def _get_vm_area_caller(
        self, size: int, flags: int, start: int, end: int, caller: str | None, *, cpu: int
    ) -> VmStruct | None:
        """``__get_vm_area_caller``: align 1, caller-chosen range, NUMA_NO_NODE."""
        return self._get_vm_area_node(
            size, 1, PAGE_SHIFT, flags, start, end, NUMA_NO_NODE, GFP_KERNEL, caller, cpu=cpu
        )

    def get_vm_area_caller(
        self, size: int, flags: int, caller: str | None, *, cpu: int
    ) -> VmStruct | None:
        """``get_vm_area_caller``: the full vmalloc range, align 1, GFP_KERNEL."""
        return self._get_vm_area_node(
            size,
            1,
            PAGE_SHIFT,
            flags,
            self.VMALLOC_START,
            self.VMALLOC_END,
            NUMA_NO_NODE,
            GFP_KERNEL,
            caller,
            cpu=cpu,
        )

    def get_vm_area(self, size: int, flags: int, *, cpu: int) -> VmStruct | None:
        """``get_vm_area``: caller is get_vm_area's own return address (None here)."""
        return self.get_vm_area_caller(size, flags, None, cpu=cpu)

    def find_vm_area(self, addr: int) -> VmStruct | None:
        """``find_vm_area``: ``va.vm`` of the busy area containing ``addr``."""
        addr = self._ul("addr", addr)
        va = self.space.find_vmap_area(addr)
        if va is None:
            return None
        vm: VmStruct | None = va.vm
        return vm

    def remove_vm_area(self, addr: int, *, cpu: int) -> VmStruct | None:
        """``remove_vm_area``: unlink the area, clear its PTEs, free its VA lazily.

        Since v6.3 it WARNs on an unaligned address (``vunmap_helper`` off). The kernel's ``find_unlink_vmap_area``
        would unlink (and leak) a vm-less area (vm_map_ram); the model looks first
        and leaves such an area alone, so the allocator's tiling invariant holds.
        """
        if not self.profile.vunmap_helper and addr & (PAGE_SIZE - 1):
            # v6.18: WARN(!PAGE_ALIGNED(addr), "Trying to vfree() bad address (%p)\n")
            # -- the same text for vunmap() and remove_vm_area() callers.
            self.log.WARN(
                f"Trying to vfree() bad address ({addr:#x})", "vfree:bad address", cpu=cpu
            )
            return None
        va = self.space.find_vmap_area(addr)
        if va is None or va.vm is None:
            return None
        space = self.space
        space.find_unlink_vmap_area(addr)
        vm: VmStruct = va.vm
        if space.explain:
            self.free_unmap_vmap_area(va, cpu=cpu)
        else:  # free_unmap_vmap_area(), inlined
            self.pgt.unmap(va.va_start, va.va_end - va.va_start)
            space.free_vmap_area_noflush(va, cpu=cpu)
        if self.user_mapped:
            self._unmap_user_pages(vm.addr)
        return vm

    def _unmap_user_pages(self, addr: int) -> None:
        """The vmap()/vm_map_ram() area at ``addr`` is gone: its user pages may be
        freed again (once no other area maps them)."""
        pfns = self.user_mapped.pop(addr, None)
        if pfns is None:
            return
        counts = self.user_map_count
        for pfn in pfns:
            c = counts[pfn] - 1
            if c:
                counts[pfn] = c
            else:
                del counts[pfn]

    def _released_without_vfree(self, vm: VmStruct, how: str) -> None:
        """A vmalloc'ed area (it owns pages) released by ``how`` instead of vfree:
        the kernel frees the vm_struct (or not) and leaks the pages and the pages
        array silently; the model does too and remembers it for :meth:`check`."""
        if vm.nr_pages and vm.pages is not None:
            self.leaked.append(vm)
            self.log.info(f"pyvmalloc: {vm!r} released with {how}: its pages leak")

    def free_unmap_vmap_area(self, va: VmapArea, *, cpu: int) -> None:
        """``free_unmap_vmap_area``: clear the PTEs of ``[start, end)`` (guard
        included), then ``free_vmap_area_noflush`` (the TLB flush is lazy)."""
        self.pgt.unmap(va.va_start, va.va_end - va.va_start)
        self.space.free_vmap_area_noflush(va, cpu=cpu)

    def free_vm_area(self, area: VmStruct, *, cpu: int) -> None:
        """``free_vm_area``: ``remove_vm_area`` + free the vm_struct.

        A stale ``area`` (freed already, its range free or someone else's now) is
        the kernel's ``BUG_ON(ret != area)``, after ``remove_vm_area`` has taken
        the other owner's area away. The model logs the BUG and refuses the call
        before touching that area, so the model stays one a later call can use."""
        if self.find_vm_area(area.addr) is not area:
            self.log.BUG(
                "free_vm_area:ret!=area",
                f"free_vm_area: remove_vm_area({area.addr:#x}) would not return this area",
            )
            return
        if self.remove_vm_area(area.addr, cpu=cpu) is not area:  # (found just above)
            raise InvariantError(f"free_vm_area: {area!r} was found but not removed")
        self._released_without_vfree(area, "free_vm_area()")
        self.slab.kfree(area.kaddr)

    # ============================================================ vmalloc proper
    def _vmalloc_node_range(
        self,
        size: int,
        align: int,
        start: int,
        end: int,
        gfp: int,
        prot: int,
        vm_flags: int,
        node: int,
        caller: str | None,
        *,
        cpu: int,
    ) -> int:
        """``__vmalloc_node_range``: reserve, populate and map; the address or 0.

        Without ``vmalloc_error_warnings`` (5.4): ``PAGE_ALIGN``; zero size or more
        pages than ``totalram_pages()`` fail with ``vmalloc: allocation failure: %lu
        bytes``; a failure inside ``__vmalloc_area_node`` returns NULL without a
        second warning. With it (v5.13+): zero size is a ``WARN_ON_ONCE``; too large
        warns ``vmalloc error: size %lu, exceeds total pages``; a vm_struct failure
        warns ``vmalloc error: size %lu, vm_struct allocation failed``. With
        ``huge_vmalloc``, ``VM_ALLOW_HUGE_VMAP`` picks ``PMD_SHIFT`` for sizes >=
        PMD_SIZE (x86_64 since 5.18) and raises the alignment to 2 MiB; a failed huge
        attempt retries once with small pages (a fresh VA, the failed one went down
        the free path).
        """
        real_size = size
        real_align = align
        if self._in_interrupt():
            # BUG_ON(in_interrupt()) in __get_vm_area_node: the kernel stops there.
            self.log.BUG("__get_vm_area_node:in_interrupt()", "vmalloc called in interrupt context")
            return 0
        profile = self.profile
        if not profile.vmalloc_error_warnings:
            size = _page_align(size)
            if not size or (size >> PAGE_SHIFT) > self.phys.totalram_pages:
                self._warn_alloc(gfp, f"vmalloc: allocation failure: {real_size} bytes")
                return 0
            area = self._get_vm_area_node(
                size, align, PAGE_SHIFT, VM_ALLOC | VM_UNINITIALIZED | vm_flags,
                start, end, node, gfp, caller, cpu=cpu,
            )  # fmt: skip
            if area is None:
                self._warn_alloc(gfp, f"vmalloc: allocation failure: {real_size} bytes")
                return 0
            addr = self._vmalloc_area_node(area, gfp, prot, PAGE_SHIFT, node, cpu=cpu)
            if not addr:
                return 0
            self.clear_vm_uninitialized_flag(area)
            return addr
        if size == 0:
            self.log.WARN_ONCE(
                "__vmalloc_node_range:!size", "__vmalloc_node_range: WARN_ON_ONCE(!size)", cpu=cpu
            )
            return 0
        if (size >> PAGE_SHIFT) > self.phys.totalram_pages:
            self._warn_alloc(gfp, f"vmalloc error: size {real_size}, exceeds total pages")
            return 0
        shift = PAGE_SHIFT
        if (
            profile.huge_vmalloc
            and self.vmap_allow_huge
            and vm_flags & VM_ALLOW_HUGE_VMAP
            and self.pgt.huge_ok
        ):
            if size >= self.pgt.pmd_size:
                shift = self.pgt.pmd_shift
            # align = max(original_align, 1UL << shift): PAGE_SIZE below PMD_SIZE
            # (v6.18 __vmalloc_node_range_noprof), seen in the tracepoint's align.
            align = max(real_align, 1 << shift)
        nofail = bool(gfp & _GFP_NOFAIL) and profile.vmalloc_nofail_retry
        retried = False
        while True:
            area = self._get_vm_area_node(
                real_size, align, shift, VM_ALLOC | VM_UNINITIALIZED | vm_flags,
                start, end, node, gfp, caller, cpu=cpu,
            )  # fmt: skip
            if area is None:
                self._warn_alloc(
                    gfp,
                    f"vmalloc error: size {real_size}, vm_struct allocation failed"
                    + (". Retrying." if nofail else ""),
                )
                if nofail:
                    # schedule_timeout_uninterruptible(1); goto again. Only deferred
                    # work can change the model while the caller sleeps.
                    if retried and not self._run_deferred():
                        self.log.hang(
                            f"__vmalloc_node_range: __GFP_NOFAIL vm_struct allocation of "
                            f"{real_size} bytes can never succeed in this model (no free "
                            "range and nothing left to purge): the kernel would retry "
                            "forever"
                        )
                        return 0
                    retried = True
                    continue
            else:
                addr = self._vmalloc_area_node(area, gfp, prot, shift, node, cpu=cpu)
                if addr:
                    if self.space.explain:
                        self.clear_vm_uninitialized_flag(area)
                    else:
                        area.flags &= ~VM_UNINITIALIZED  # clear_vm_uninitialized_flag()
                    return addr
            if shift > PAGE_SHIFT:
                shift = PAGE_SHIFT
                align = real_align
                continue
            return 0

    def _vmalloc_area_node(
        self, area: VmStruct, gfp: int, prot: int, page_shift: int, node: int, *, cpu: int
    ) -> int:
        """``__vmalloc_area_node``: pages array, pages, mapping; ``area.addr`` or 0.

        The pages array (8 bytes per small page, zeroed, nested gfp; plus
        ``__GFP_HIGHMEM`` with ``pages_array_highmem``) comes from kmalloc, or from a
        nested ``__vmalloc_node`` with the same caller when larger than a page (the
        area then shows ``vpages``). Pages come one at a time (5.4) or, with
        ``bulk_page_alloc``, from ``vm_area_alloc_pages`` (bulk, then singles; huge
        orders are split). Without ``vmalloc_error_warnings`` a short allocation or a
        mapping failure warns ``vmalloc: allocation failure, allocated %ld of %ld
        bytes``; with it ``vmalloc error: size %lu, failed to allocate pages`` (order
        0 only) or ``..., failed to map pages``, and a failed pages array warns
        ``vmalloc error: size %lu, failed to allocated page array size %lu`` (sic)
        and ``free_vm_area``s. Any other failure frees everything with
        ``vfree(area->addr)``.
        """
        profile = self.profile
        size = get_vm_area_size(area)
        nr_small = size >> PAGE_SHIFT
        array_size = nr_small * 8
        highmem_mask = 0 if gfp & (_GFP_DMA | _GFP_DMA32) else _GFP_HIGHMEM
        if profile.pages_array_highmem:
            # 5.4: ``highmem_mask`` is kept apart: the nested pages array and the
            # page allocations get it, the warn_alloc texts print ``gfp_mask``.
            warn_gfp = gfp
            gfp |= highmem_mask
            nested_gfp = (gfp & GFP_RECLAIM_MASK) | _GFP_ZERO
            array_gfp = nested_gfp | highmem_mask
        else:
            # 6.18: ``gfp_mask |= __GFP_HIGHMEM`` up front (warnings print it); the
            # nested gfp is ``gfp_mask & GFP_RECLAIM_MASK`` (which has no HIGHMEM).
            gfp |= highmem_mask
            warn_gfp = gfp
            nested_gfp = array_gfp = (gfp & GFP_RECLAIM_MASK) | _GFP_ZERO
        observed = self.space.explain
        if array_size > PAGE_SIZE:
            pages_addr = self._vmalloc_node(array_size, 1, array_gfp, node, area.caller, cpu=cpu)
        elif observed:
            pages_addr = self.kmalloc_node(array_size, nested_gfp, node)
        else:  # kmalloc_node(), whose body is this one call
            pages_addr = self.slab.kmalloc(array_size, nested_gfp, node)
        if not pages_addr:
            if profile.vmalloc_error_warnings:
                self._warn_alloc(
                    warn_gfp,
                    f"vmalloc error: size {nr_small * PAGE_SIZE}, failed to allocated page "
                    f"array size {array_size}",
                )
                self.free_vm_area(area, cpu=cpu)
            else:
                self.remove_vm_area(area.addr, cpu=cpu)
                self.slab.kfree(area.kaddr)
            return 0
        area.pages_addr = pages_addr
        order = page_shift - PAGE_SHIFT
        area.page_order = order
        if profile.bulk_page_alloc:
            page_gfp = ((gfp & ~_GFP_NOFAIL) if order else gfp) | _GFP_NOWARN
            pages = self.vm_area_alloc_pages(page_gfp, node, order, nr_small)
        else:
            pages = self.alloc_pages_one_by_one(gfp | _GFP_NOWARN, node, nr_small)
        area.pages = pages
        area.nr_pages = len(pages)
        self.nr_vmalloc_pages += area.nr_pages
        if not profile.vmalloc_error_warnings:
            if area.nr_pages != nr_small or self._map_area(area, prot, pages, page_shift):
                self._warn_alloc(
                    warn_gfp,
                    f"vmalloc: allocation failure, allocated {area.nr_pages * PAGE_SIZE} "
                    f"of {area.size} bytes",
                )
                return self._vmalloc_area_fail(area, cpu=cpu)
            return area.addr
        if area.nr_pages != nr_small:
            if order == 0:
                self._warn_alloc(
                    warn_gfp,
                    f"vmalloc error: size {area.nr_pages * PAGE_SIZE}, failed to allocate pages",
                )
            return self._vmalloc_area_fail(area, cpu=cpu)
        if observed or profile.has_map_vm_area:
            err = self._map_area(area, prot, pages, page_shift)
        else:
            # _map_area() -> vmap_pages_range() -> map_pages(), inlined: the pages
            # cover the area's size exactly (nr_pages == nr_small), so no slice.
            self.ptes_written += nr_small
            err = self.pgt.map_pages(area.addr, pages, prot, page_shift)
        if err:
            if gfp & _GFP_NOFAIL and profile.vmalloc_nofail_retry:
                # do { vmap_pages_range } while (nofail && ret < 0), a tick apart
                self._run_deferred()
                if not self._map_area(area, prot, pages, page_shift):
                    return area.addr
                self._vmalloc_area_fail(area, cpu=cpu)
                self.log.hang(
                    f"__vmalloc_area_node: __GFP_NOFAIL mapping of {area.nr_pages} pages "
                    "can never succeed in this model (no memory for page tables): the "
                    "kernel would retry vmap_pages_range forever"
                )
                return 0
            self._warn_alloc(
                warn_gfp, f"vmalloc error: size {area.nr_pages * PAGE_SIZE}, failed to map pages"
            )
            return self._vmalloc_area_fail(area, cpu=cpu)
        return area.addr

    def _map_area(
        self, area: VmStruct, prot: int, pages: npt.NDArray[np.int64], page_shift: int
    ) -> int:
        """Map the pages of ``area``: ``map_vm_area`` (5.4) or ``vmap_pages_range``."""
        if self.profile.has_map_vm_area:
            return self.map_vm_area(area, prot, pages)
        return self.vmap_pages_range(
            area.addr, area.addr + get_vm_area_size(area), prot, pages, page_shift
        )

    def _run_deferred(self) -> bool:
        """What may run while a ``__GFP_NOFAIL`` caller sleeps a tick: the pending
        deferred work (lazy purge, vfree_atomic). True if anything changed."""
        before = self.space.nr_free, self.phys.nr_free_pages()
        self._after_call()
        return (self.space.nr_free, self.phys.nr_free_pages()) != before

    def _vmalloc_area_fail(self, area: VmStruct, *, cpu: int) -> int:
        self.vfree_now(area.addr, cpu=cpu)
        return 0

    def kmalloc_node(self, size: int, gfp: int, node: int) -> int:
        """``kmalloc_node`` (the pages array when it fits in a page)."""
        return self.slab.kmalloc(size, gfp, node)

    def alloc_pages_one_by_one(self, gfp: int, node: int, nr_pages: int) -> npt.NDArray[np.int64]:
        """5.4: ``alloc_page``/``alloc_pages_node`` per page, stop at the first NULL."""
        out: list[int] = []
        phys = self.phys
        for _ in range(nr_pages):
            pfn = phys.alloc_pages(gfp, 0, node)
            if pfn is None:
                break
            out.append(pfn)
        return np.asarray(out, dtype=np.int64)

    def vm_area_alloc_pages(
        self, gfp: int, nid: int, order: int, nr_pages: int
    ) -> npt.NDArray[np.int64]:
        """``vm_area_alloc_pages`` (6.x): order 0 in bulk chunks of at most 100
        (stop bulk on a short chunk), then single ``2^order`` allocations, high
        orders ``split_page``d into small pages; returns what it got."""
        phys = self.phys
        if nr_pages == 1 and order == 0:
            # One page (vmalloc of 4 KiB): the bulk call asks for one page, which
            # alloc_pages_bulk serves with one alloc_pages(); if that fails, the
            # single-allocation loop below tries once more. The same two calls:
            pfn = phys.alloc_pages(gfp, 0, nid)
            if pfn is None:
                pfn = phys.alloc_pages(gfp, 0, nid)
                if pfn is None:
                    return np.empty(0, dtype=np.int64)
            return np.array((pfn,), dtype=np.int64)
        got: list[int] = []
        if order == 0:
            while len(got) < nr_pages:
                req = min(100, nr_pages - len(got))
                if not got:
                    # First chunk: straight into the empty ``got`` (same appends and
                    # the same count as into a fresh ``chunk``; saves a copy).
                    n = phys.alloc_pages_bulk(gfp, nid, req, got)
                else:
                    chunk: list[int] = []
                    n = phys.alloc_pages_bulk(gfp, nid, req, chunk)
                    got.extend(chunk)
                if n != req:
                    break
        total = len(got)
        if total == nr_pages and total:
            # The bulk loop got every page (the usual case): the general code below
            # would wrap ``got`` in one array and return it as is.
            return np.array(got, dtype=np.int64)
        parts: list[npt.NDArray[np.int64]] = []
        if got:
            parts.append(np.asarray(got, dtype=np.int64))
        step = 1 << order
        while total < nr_pages:
            pfn = phys.alloc_pages(gfp, order, nid)
            if pfn is None:
                break
            if order:
                phys.split_page(pfn, order)
            parts.append(np.arange(pfn, pfn + step, dtype=np.int64))
            total += step
        if not parts:
            return np.empty(0, dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def map_vm_area(self, area: VmStruct, prot: int, pages: npt.NDArray[np.int64]) -> int:
        """``map_vm_area`` (5.4): map ``get_vm_area_size`` bytes PTE by PTE."""
        end = area.addr + get_vm_area_size(area)
        return self.vmap_pages_range(area.addr, end, prot, pages, PAGE_SHIFT)

    def vmap_pages_range(
        self, addr: int, end: int, prot: int, pages: npt.NDArray[np.int64], page_shift: int
    ) -> int:
        """``vmap_pages_range`` (6.x; ``vmap_page_range`` in 5.4): 0 or -errno.

        Huge ``page_shift`` maps 2 MiB-aligned, physically aligned chunks as PMD
        leaves (``vmap_try_huge_pmd``); the rest gets PTEs.
        """
        n = (end - addr) >> PAGE_SHIFT
        self.ptes_written += n
        if n != len(pages):
            pages = pages[:n]  # (a whole-array slice would be an equal view: skipped)
        return self.pgt.map_pages(addr, pages, prot, page_shift)

    def _vmalloc_node(
        self, size: int, align: int, gfp: int, node: int, caller: str | None, *, cpu: int
    ) -> int:
        """``__vmalloc_node``: the full vmalloc range with PAGE_KERNEL, no vm_flags."""
        return self._vmalloc_node_range(
            size, align, self.VMALLOC_START, self.VMALLOC_END, gfp, PAGE_KERNEL, 0, node,
            caller, cpu=cpu,
        )  # fmt: skip

    def _vmalloc_node_flags(
        self, size: int, node: int, gfp: int, caller: str | None, *, cpu: int
    ) -> int:
        """``__vmalloc_node_flags`` (until v5.8, ``vmalloc_node_flags``): align 1,
        PAGE_KERNEL."""
        return self._vmalloc_node(size, 1, gfp, node, caller, cpu=cpu)

    # ================================================================== freeing
    def vfree_now(self, addr: int, *, cpu: int) -> None:
        """The body of ``vfree`` outside interrupt context (5.4: ``__vunmap(addr, 1)``).

        With ``vunmap_helper`` (5.4) it WARNs ``Trying to vfree() bad address (%p)``
        for an unaligned address; all kernels WARN ``Trying to vfree() nonexistent vm area (%p)`` when no area is
        found (also what a double free prints). Then every small page is freed,
        ``nr_vmalloc_pages`` drops (not for VM_MAP_PUT_PAGES in 6.x), the pages array
        is ``kvfree``d (a nested vfree when it was vmalloc'ed, freeing a second VA
        after the main one) and the vm_struct is freed. ``VM_FLUSH_RESET_PERMS``
        runs ``vm_unmap_aliases`` (which may purge).
        """
        if not addr:
            return
        if self.profile.vunmap_helper and not self._vunmap_checks(addr, cpu):
            return
        vm = self.remove_vm_area(addr, cpu=cpu)
        if vm is None:
            self.log.WARN(
                f"Trying to vfree() nonexistent vm area ({addr:#x})", "vfree:nonexistent", cpu=cpu
            )
            return
        if vm.flags & VM_FLUSH_RESET_PERMS:
            self.vm_unmap_aliases_locked(cpu=cpu)
        pages = vm.pages
        nr_pages = vm.nr_pages
        if pages is not None and nr_pages:
            if len(pages) != nr_pages:
                pages = pages[:nr_pages]  # (skipped when it would be the whole array)
            # __free_page() for each page, in order (in bulk where the pages allow).
            if nr_pages == 1:
                self.phys.free_pages(int(pages[0]), 0)  # what free_pages_bulk would call
            else:
                self.phys.free_pages_bulk(pages.tolist())
            if vm.flags & VM_MAP_PUT_PAGES:
                self.put_pages -= nr_pages
            else:
                self.nr_vmalloc_pages -= nr_pages
        if vm.pages_addr:
            self.kvfree_now(vm.pages_addr, cpu=cpu)
        self.slab.kfree(vm.kaddr)

    def kvfree_now(self, addr: int, *, cpu: int) -> None:
        """``kvfree``: ``vfree`` for a vmalloc address, else ``kfree``."""
        if self.VMALLOC_START <= addr < self.VMALLOC_END:  # is_vmalloc_addr(addr)
            self.vfree_now(addr, cpu=cpu)
        elif not self.slab.kfree(addr):
            self.log.WARN(f"kfree: invalid object {addr:#x}")

    def vfree_atomic_now(self, addr: int, *, cpu: int) -> None:
        """``vfree_atomic``: push on this CPU's deferred list, schedule its work."""
        if not addr:
            return
        self.deferred[cpu].append(addr)
        self._schedule_work(f"vfree_deferred/{cpu}", lambda: self.delayed_vfree_work(cpu))

    def delayed_vfree_work(self, cpu: int) -> None:
        """``delayed_vfree_work``: free everything deferred on ``cpu`` (llist order:
        newest first), running on that CPU."""
        lst = self.deferred[cpu]
        self.deferred[cpu] = []
        for addr in reversed(lst):
            self.vfree_now(addr, cpu=cpu)

    def vunmap_now(self, addr: int, *, cpu: int) -> None:
        """``vunmap``: remove the area, keep the pages (BUG in interrupt context).

        Since v6.3 it WARNs ``Trying to vunmap() nonexistent vm area (%p)``; with
        ``vunmap_helper`` (5.4) it goes through ``__vunmap(addr, 0)`` and so prints
        the vfree() texts.
        """
        if self._in_interrupt():
            self.log.BUG("vunmap:in_interrupt()", "vunmap() called in interrupt context")
            return
        if not addr:
            return
        if self.profile.vunmap_helper and not self._vunmap_checks(addr, cpu):
            return
        vm = self.remove_vm_area(addr, cpu=cpu)
        if vm is None:
            self.log.WARN(
                f"Trying to vunmap() nonexistent vm area ({addr:#x})", "vunmap:nonexistent", cpu=cpu
            )
            return
        self._released_without_vfree(vm, "vunmap()")
        self.slab.kfree(vm.kaddr)

    def vm_unmap_aliases_locked(self, *, cpu: int) -> None:
        """``vm_unmap_aliases``: flush dirty vmap blocks and purge lazy areas."""
        self.blocks.vm_unmap_aliases(cpu=cpu)

    # ====================================================================== API
    # Each public method takes ``cpu`` (raw_smp_processor_id), passes it down, and runs
    # deferred work when it returns (``after_call``). The signatures are the ones the
    # ``Kernel`` facade shows: it forwards these methods as they are.

    # --- argument checks (C types; see pyvmalloc.args) ---------------------------
    def _ul(self, name: str, value: object) -> int:
        """An ``unsigned long`` argument (negative values wrap, as in C)."""
        if value.__class__ is int and 0 <= value <= self._ulong_max:
            return value
        return ulong(name, value, self._bits)

    def _node(self, node: object) -> int:
        """A NUMA node argument: ``NUMA_NO_NODE`` or an existing node.

        A node that does not exist is refused: the kernel would hand the id to
        ``alloc_pages_node`` and dereference a NULL ``NODE_DATA(nid)`` (an oops;
        ``VM_BUG_ON`` with CONFIG_DEBUG_VM).
        """
        nid = c_int("node", node)
        if nid != NUMA_NO_NODE and not 0 <= nid < self.phys.nr_nodes:
            raise ValueError(
                f"node {nid} does not exist (nodes 0..{self.phys.nr_nodes - 1}, or "
                f"NUMA_NO_NODE {NUMA_NO_NODE}): the kernel would oops in alloc_pages_node"
            )
        return nid

    def _pages(self, name: str, pages: object, count: object) -> tuple[npt.NDArray[np.int64], int]:
        """A ``struct page **`` array and its ``unsigned int`` count: the pfns as int64,
        each a valid page (``pfn_valid``), at least ``count`` of them."""
        arr = _pfn_array(name, pages)
        n = len(arr) if count is None else uint("count", count)
        if n > len(arr):
            raise ValueError(
                f"count {n} but {name} has only {len(arr)} entries: the kernel would read "
                "past the array"
            )
        arr = arr[:n]
        if n and (int(arr.min()) < 0 or int(arr.max()) >= self.phys.max_pfn):
            bad = next(int(p) for p in arr if not 0 <= p < self.phys.max_pfn)
            raise ValueError(f"{name}: pfn {bad:#x} is not a page of this machine (pfn_valid)")
        return arr, n

    def _alloc_api(self, cpu: int, fn: Callable[[], int]) -> int:
        self._enter(cpu)
        try:
            addr = fn()
        finally:
            self._leave()
        if addr:
            self.stats["vmalloc"] += 1
        else:
            self.stats["failures"] += 1
        return addr

    def _full(
        self,
        size: int,
        align: int,
        gfp: int,
        vm_flags: int,
        node: int,
        caller: str | None,
        *,
        cpu: int,
        prot: int = PAGE_KERNEL,
    ) -> int:
        return self._vmalloc_node_range(
            size, align, self.VMALLOC_START, self.VMALLOC_END, gfp, prot, vm_flags, node,
            caller, cpu=cpu,
        )  # fmt: skip

    def vmalloc(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc(size)``: the address, or 0 (NULL) with the kernel's warning.

        GFP_KERNEL, align 1, any node (5.4: through ``__vmalloc_node_flags``).
        """
        if _c_vmalloc is not None:  # the unobserved common case in one compiled call
            addr = _c_vmalloc(self, size, GFP_KERNEL, cpu, caller)
            if addr is not None:
                return addr
        size = self._ul("size", size)
        if self.profile.vmalloc_node_flags:
            return self._alloc_api(
                cpu,
                lambda: self._vmalloc_node_flags(size, NUMA_NO_NODE, GFP_KERNEL, caller, cpu=cpu),
            )
        if self.space.explain:  # the named steps, for the explain recorder
            return self._alloc_api(
                cpu, lambda: self._vmalloc_node(size, 1, GFP_KERNEL, NUMA_NO_NODE, caller, cpu=cpu)
            )
        # _alloc_api(cpu, __vmalloc_node(...)) with both bodies inlined
        self._enter(cpu)
        try:
            addr = self._vmalloc_node_range(
                size, 1, self.VMALLOC_START, self.VMALLOC_END, GFP_KERNEL, PAGE_KERNEL, 0,
                NUMA_NO_NODE, caller, cpu=cpu,
            )  # fmt: skip
        finally:
            self._leave()
        self.stats["vmalloc" if addr else "failures"] += 1
        return addr

    def vzalloc(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vzalloc(size)``: zeroed vmalloc (``__GFP_ZERO``)."""
        gfp = GFP_KERNEL | _GFP_ZERO
        if _c_vmalloc is not None:  # the unobserved common case in one compiled call
            addr = _c_vmalloc(self, size, gfp, cpu, caller)
            if addr is not None:
                return addr
        size = self._ul("size", size)
        if self.profile.vmalloc_node_flags:
            return self._alloc_api(
                cpu,
                lambda: self._vmalloc_node_flags(size, NUMA_NO_NODE, gfp, caller, cpu=cpu),
            )
        return self._alloc_api(
            cpu, lambda: self._vmalloc_node(size, 1, gfp, NUMA_NO_NODE, caller, cpu=cpu)
        )

    def vmalloc_node(self, size: int, node: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_node(size, node)``."""
        size = self._ul("size", size)
        node = self._node(node)
        return self._alloc_api(
            cpu, lambda: self._vmalloc_node(size, 1, GFP_KERNEL, node, caller, cpu=cpu)
        )

    def vzalloc_node(self, size: int, node: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vzalloc_node(size, node)``."""
        size = self._ul("size", size)
        node = self._node(node)
        gfp = GFP_KERNEL | _GFP_ZERO
        return self._alloc_api(cpu, lambda: self._vmalloc_node(size, 1, gfp, node, caller, cpu=cpu))

    def vmalloc_user(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_user(size)``: zeroed, align SHMLBA, ``VM_USERMAP``."""
        size = self._ul("size", size)
        gfp = GFP_KERNEL | _GFP_ZERO
        return self._alloc_api(
            cpu, lambda: self._full(size, SHMLBA, gfp, VM_USERMAP, NUMA_NO_NODE, caller, cpu=cpu)
        )

    def vmalloc_32(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_32(size)``: pages from ZONE_DMA32 (x86_64)."""
        size = self._ul("size", size)
        return self._alloc_api(
            cpu,
            lambda: self._vmalloc_node(size, 1, GFP_DMA32_KERNEL, NUMA_NO_NODE, caller, cpu=cpu),
        )

    def vmalloc_32_user(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_32_user(size)``: DMA32, zeroed, SHMLBA, ``VM_USERMAP``."""
        size = self._ul("size", size)
        gfp = GFP_DMA32_KERNEL | _GFP_ZERO
        return self._alloc_api(
            cpu, lambda: self._full(size, SHMLBA, gfp, VM_USERMAP, NUMA_NO_NODE, caller, cpu=cpu)
        )

    def vmalloc_huge(
        self, size: int, gfp: int = GFP_KERNEL, cpu: int = 0, caller: str | None = None
    ) -> int:
        """``vmalloc_huge(size, gfp)`` (``huge_vmalloc``): ``VM_ALLOW_HUGE_VMAP``, PMD
        mappings for sizes >= 2 MiB."""
        if not self.profile.huge_vmalloc:
            raise ValueError(f"vmalloc_huge does not exist in kernel {self.profile.name}")
        size = self._ul("size", size)
        gfp = uint("gfp", gfp)
        return self._alloc_api(
            cpu,
            lambda: self._full(size, 1, gfp, VM_ALLOW_HUGE_VMAP, NUMA_NO_NODE, caller, cpu=cpu),
        )

    def _vmalloc(self, size: int, gfp: int, cpu: int = 0, caller: str | None = None) -> int:
        """``__vmalloc(size, gfp)`` (5.8 dropped the prot argument)."""
        if _c_vmalloc is not None:  # GFP_KERNEL [| __GFP_ZERO], unobserved: one C call
            addr = _c_vmalloc(self, size, gfp, cpu, caller)
            if addr is not None:
                return addr
        size = self._ul("size", size)
        gfp = uint("gfp", gfp)
        return self._alloc_api(
            cpu, lambda: self._vmalloc_node(size, 1, gfp, NUMA_NO_NODE, caller, cpu=cpu)
        )

    def vmalloc_node_api(
        self,
        size: int,
        align: int,
        gfp: int,
        node: int,
        caller: str | None = None,
        cpu: int = 0,
    ) -> int:
        """``__vmalloc_node(size, align, gfp, node, caller)``."""
        size = self._ul("size", size)
        align = self._ul("align", align)
        gfp = uint("gfp", gfp)
        node = self._node(node)
        return self._alloc_api(
            cpu, lambda: self._vmalloc_node(size, align, gfp, node, caller, cpu=cpu)
        )

    def vmalloc_node_range_api(
        self,
        size: int,
        align: int,
        start: int | None = None,
        end: int | None = None,
        gfp: int = GFP_KERNEL,
        prot: int | None = None,
        vm_flags: int = 0,
        node: int = NUMA_NO_NODE,
        caller: str | None = None,
        cpu: int = 0,
    ) -> int:
        """``__vmalloc_node_range(size, align, start, end, gfp, prot, vm_flags, node,
        caller)`` (thread stacks, modules, BPF); ``start``/``end`` default to the
        vmalloc range, ``prot`` to PAGE_KERNEL."""
        size = self._ul("size", size)
        align = self._ul("align", align)
        lo = self.VMALLOC_START if start is None else self._ul("start", start)
        hi = self.VMALLOC_END if end is None else self._ul("end", end)
        self.space.check_range(lo, hi)
        gfp = uint("gfp", gfp)
        vm_flags = self._ul("vm_flags", vm_flags)
        node = self._node(node)
        pr = PAGE_KERNEL if prot is None else integer("prot", prot)
        return self._alloc_api(
            cpu,
            lambda: self._vmalloc_node_range(
                size, align, lo, hi, gfp, pr, vm_flags, node, caller, cpu=cpu
            ),
        )

    def vfree(self, addr: int, cpu: int = 0, in_interrupt: bool = False) -> None:
        """``vfree(addr)``; in interrupt context the free is deferred to a work item
        (as ``vfree_atomic``)."""
        if _c_vfree is not None and not in_interrupt and _c_vfree(self, addr, cpu):
            return  # the unobserved common case in one compiled call
        addr = self._ul("addr", addr)
        self._enter(cpu)
        try:
            if in_interrupt or self._in_interrupt():
                self.vfree_atomic_now(addr, cpu=cpu)
            else:
                self.vfree_now(addr, cpu=cpu)
                self.stats["vfree"] += 1
        finally:
            self._leave()

    def vfree_atomic(self, addr: int, cpu: int = 0) -> None:
        """``vfree_atomic(addr)``: always deferred to the per-CPU work item."""
        addr = self._ul("addr", addr)
        self._enter(cpu)
        try:
            self.vfree_atomic_now(addr, cpu=cpu)
        finally:
            self._leave()

    def _vunmap_checks(self, addr: int, cpu: int) -> bool:
        """5.4 ``__vunmap``'s checks before ``remove_vm_area``: False after a WARN."""
        if addr & (PAGE_SIZE - 1):
            self.log.WARN(
                f"Trying to vfree() bad address ({addr:#x})", "vfree:bad address", cpu=cpu
            )
            return False
        if self.find_vm_area(addr) is None:
            self.log.WARN(
                f"Trying to vfree() nonexistent vm area ({addr:#x})", "vfree:nonexistent", cpu=cpu
            )
            return False
        return True

    def vunmap(self, addr: int, cpu: int = 0) -> None:
        """``vunmap(addr)``: release a vmap()ed area (pages stay with the caller)."""
        addr = self._ul("addr", addr)
        self._enter(cpu)
        try:
            self.vunmap_now(addr, cpu=cpu)
            self.stats["vunmap"] += 1
        finally:
            self._leave()

    def vmap(
        self,
        pages: Sequence[int] | npt.NDArray[np.integer[Any]],
        count: int | None = None,
        flags: int = VM_MAP,
        prot: int | None = None,
        cpu: int = 0,
        caller: str | None = None,
    ) -> int:
        """``vmap(pages, count, flags, prot)``: map existing pages contiguously.

        ``flags`` default to VM_MAP, ``prot`` to PAGE_KERNEL. With
        ``vmap_checks_flags`` (6.x) it WARNs and fails on ``VM_FLUSH_RESET_PERMS``,
        WARNs and drops ``VM_NO_GUARD``, maps with ``pgprot_nx(prot)``;
        ``VM_MAP_PUT_PAGES`` makes the area own the pages (vfree frees them). On a
        mapping failure: ``vunmap``. ``pages`` must hold ``count`` valid pages
        (the kernel would read past a shorter array); the pages stay the caller's
        (they cannot be freed while the area maps them) unless VM_MAP_PUT_PAGES.
        """
        arr, n = self._pages("pages", pages, count)
        flags = self._ul("flags", flags)
        prot = PAGE_KERNEL if prot is None else integer("prot", prot)
        if flags & VM_MAP_PUT_PAGES:
            foreign = [p for p in arr.tolist() if p not in self.user_pfns]
            if foreign:
                raise ValueError(
                    f"vmap(VM_MAP_PUT_PAGES): pfn {foreign[0]:#x} was not handed out by "
                    "alloc_pages(), so the area cannot take it over"
                )
        self._enter(cpu)
        try:
            if self.profile.vmap_checks_flags:
                if flags & VM_FLUSH_RESET_PERMS:
                    self.log.WARN_ONCE(
                        "vmap:VM_FLUSH_RESET_PERMS",
                        "vmap: WARN_ON_ONCE(flags & VM_FLUSH_RESET_PERMS)",
                        cpu=cpu,
                    )
                    return 0
                if flags & VM_NO_GUARD:
                    self.log.WARN_ONCE(
                        "vmap:VM_NO_GUARD", "vmap: WARN_ON_ONCE(flags & VM_NO_GUARD)", cpu=cpu
                    )
                    flags &= ~VM_NO_GUARD
                prot = pgprot_nx(prot)
            if n > self.phys.totalram_pages or n <= 0:
                return 0
            size = n << PAGE_SHIFT
            area = self.get_vm_area_caller(size, flags, caller, cpu=cpu)
            if area is None:
                return 0
            if self.vmap_pages_range(area.addr, area.addr + size, prot, arr, PAGE_SHIFT):
                self.vunmap_now(area.addr, cpu=cpu)
                return 0
            if flags & VM_MAP_PUT_PAGES:
                area.pages = arr.copy()
                area.nr_pages = n
                self.put_pages += n
                self.external_pages -= n
                self.user_pfns.difference_update(area.pages.tolist())
            else:
                self._map_user_pages(area.addr, arr)
            self.stats["vmap"] += 1
            return area.addr
        finally:
            self._leave()

    def _map_user_pages(self, addr: int, arr: npt.NDArray[np.int64]) -> None:
        """Remember that the area at ``addr`` maps these user pages."""
        pfns = [p for p in arr.tolist() if p in self.user_pfns]
        if not pfns:
            return
        self.user_mapped[addr] = pfns
        counts = self.user_map_count
        for pfn in pfns:
            counts[pfn] = counts.get(pfn, 0) + 1

    def vmap_pfn(
        self,
        pfns: Sequence[int] | npt.NDArray[np.integer[Any]],
        count: int | None = None,
        cpu: int = 0,
        caller: str | None = None,
        *,
        prot: int = PAGE_KERNEL,
    ) -> int:
        """``vmap_pfn(pfns, count, prot)`` (5.10+): map raw pfns into a ``VM_IOREMAP``
        area (``prot`` defaults to PAGE_KERNEL).

        Only pfns without a ``struct page`` may be mapped: ``vmap_pfn_apply`` hits
        ``WARN_ON_ONCE(pfn_valid(pfn))`` and fails, and ``vmap_pfn`` then
        ``free_vm_area``s (the PTEs already written go with it) and returns NULL
        (v5.10+, v6.18 mm/vmalloc.c). A pfn must fit the PTE's pfn field.
        """
        if not self.profile.has_vmap_pfn:
            raise ValueError(f"vmap_pfn does not exist in kernel {self.profile.name} (v5.10+)")
        arr = _pfn_array("pfns", pfns)
        n = len(arr) if count is None else uint("count", count)
        if n > len(arr):
            raise ValueError(
                f"count {n} but pfns has only {len(arr)} entries: the kernel would read "
                "past the array"
            )
        arr = arr[:n]
        limit = 1 << (self.phys_bits - PAGE_SHIFT)
        if n and (int(arr.min()) < 0 or int(arr.max()) >= limit):
            bad = next(int(p) for p in arr if not 0 <= p < limit)
            raise ValueError(
                f"pfns: {bad:#x} does not fit a page-table entry ({self.phys_bits} physical "
                "address bits)"
            )
        self._enter(cpu)
        try:
            area = self.get_vm_area_caller(n * PAGE_SIZE, VM_IOREMAP, caller, cpu=cpu)
            if area is None:
                return 0
            valid = self.phys.max_pfn
            first_bad = next((i for i, p in enumerate(arr.tolist()) if p < valid), None)
            if first_bad is not None:
                # apply_to_page_range stops at the first valid pfn; the PTEs before
                # it are cleared again by free_vm_area.
                self.log.WARN_ONCE(
                    "vmap_pfn_apply:pfn_valid",
                    "vmap_pfn_apply: WARN_ON_ONCE(pfn_valid(pfn))",
                    cpu=cpu,
                )
                if first_bad:
                    self.pgt.map_pages(area.addr, arr[:first_bad], pgprot_nx(prot))
                self.free_vm_area(area, cpu=cpu)
                return 0
            if self.pgt.map_pages(area.addr, arr, pgprot_nx(prot)):
                self.free_vm_area(area, cpu=cpu)
                return 0
            self.ptes_written += n
            return area.addr
        finally:
            self._leave()

    def ioremap(
        self,
        phys_addr: int,
        size: int,
        cpu: int = 0,
        caller: str | None = None,
        *,
        prot: int = PAGE_KERNEL_NOCACHE,
    ) -> int:
        """x86 ``ioremap(phys_addr, size)`` (``__ioremap_caller``): page-align the
        physical range, ``get_vm_area_caller(size, VM_IOREMAP)`` (size-order
        alignment), record ``phys_addr`` (vmallocinfo ``phys=``), map; returns vaddr
        + offset.

        ``phys_addr`` is a ``resource_size_t`` and ``size`` an ``unsigned long``, so
        a negative value wraps. A zero size or a range that wraps returns NULL
        silently; a start beyond the CPU's physical address bits prints
        ``ioremap: invalid physical address %llx`` and ``WARN_ON_ONCE(1)``, NULL; a
        range touching System RAM (the e820 RAM ranges) is ``WARN_ONCE(1, "ioremap
        on RAM at %pa - %pa")`` and NULL (x86 ``__ioremap_caller``, v5.4 and v6.18).
        """
        phys_addr = ulong("phys_addr", phys_addr, self.phys_addr_bits)
        size = self._ul("size", size)
        prot = integer("prot", prot)
        self._enter(cpu)
        try:
            last = phys_addr + size - 1
            if not size or last >> self.phys_addr_bits:
                return 0  # "Don't allow wraparound or zero size"
            if phys_addr >> self.phys_bits:  # !phys_addr_valid(phys_addr)
                self.log.warn(f"ioremap: invalid physical address {phys_addr:x}")
                self.log.WARN_ONCE(
                    "__ioremap_caller:phys_addr_valid", "__ioremap_caller: WARN_ON_ONCE(1)", cpu=cpu
                )
                return 0
            first_pfn, last_pfn = phys_addr >> PAGE_SHIFT, last >> PAGE_SHIFT
            if any(s <= last_pfn and first_pfn < e for s, e in self.phys.layout.ram_ranges):
                # IORES_MAP_SYSTEM_RAM: "Don't allow anybody to remap normal RAM"
                w = 4 if self.phys_addr_bits == 32 else 8
                self.log.WARN_ONCE(
                    "__ioremap_caller:ram",
                    f"ioremap on RAM at 0x{phys_addr:0{2 * w}x} - 0x{last:0{2 * w}x}",
                    cpu=cpu,
                )
                return 0
            offset = phys_addr & (PAGE_SIZE - 1)
            phys_addr &= ~(PAGE_SIZE - 1)
            size = _page_align(last + 1) - phys_addr
            # the model maps every 4 KiB page (a pfn and a PTE: about 32 host bytes)
            host_fits(f"ioremap of {size:#x} bytes", (size >> PAGE_SHIFT) * 32)
            area = self.get_vm_area_caller(size, VM_IOREMAP, caller, cpu=cpu)
            if area is None:
                return 0
            area.phys_addr = phys_addr
            base = phys_addr >> PAGE_SHIFT
            pfns = np.arange(base, base + (size >> PAGE_SHIFT), dtype=np.int64)
            if self.pgt.map_pages(area.addr, pfns, prot):
                self.free_vm_area(area, cpu=cpu)
                return 0
            self.ptes_written += len(pfns)
            return area.addr + offset
        finally:
            self._leave()

    def iounmap(self, addr: int, cpu: int = 0) -> None:
        """x86 ``iounmap(addr)``: page-align, find the area, ``remove_vm_area`` (lazy
        free) and free the vm_struct.

        An address at or below ``high_memory`` (the direct map and below) is
        ignored; an address with no area prints ``iounmap: bad address %p`` at
        KERN_ERR and dumps the stack (``printk`` + ``dump_stack``, not a WARN:
        strict mode does not raise). x86 ``iounmap``, v5.4 and v6.18.
        """
        addr = self._ul("addr", addr)
        self._enter(cpu)
        try:
            if addr <= self.high_memory:
                return
            addr &= ~(PAGE_SIZE - 1)
            vm = self.find_vm_area(addr)
            if vm is None:
                self.log.warn(f"iounmap: bad address {addr:#x}")  # + dump_stack()
                return
            self.remove_vm_area(vm.addr, cpu=cpu)
            self._released_without_vfree(vm, "iounmap()")
            self.slab.kfree(vm.kaddr)
        finally:
            self._leave()

    def get_vm_area_api(self, size: int, flags: int, cpu: int = 0) -> VmStruct | None:
        """``get_vm_area(size, flags)``."""
        size = self._ul("size", size)
        flags = self._ul("flags", flags)
        self._enter(cpu)
        try:
            return self.get_vm_area_caller(size, flags, None, cpu=cpu)
        finally:
            self._leave()

    def get_vm_area_caller_api(
        self, size: int, flags: int, caller: str | None, cpu: int = 0
    ) -> VmStruct | None:
        """``get_vm_area_caller(size, flags, caller)``."""
        size = self._ul("size", size)
        flags = self._ul("flags", flags)
        self._enter(cpu)
        try:
            return self.get_vm_area_caller(size, flags, caller, cpu=cpu)
        finally:
            self._leave()

    def get_vm_area_caller_range_api(
        self, size: int, flags: int, start: int, end: int, caller: str | None, cpu: int = 0
    ) -> VmStruct | None:
        """``__get_vm_area_caller(size, flags, start, end, caller)``."""
        size = self._ul("size", size)
        flags = self._ul("flags", flags)
        start = self._ul("start", start)
        end = self._ul("end", end)
        self.space.check_range(start, end)
        self._enter(cpu)
        try:
            return self._get_vm_area_caller(size, flags, start, end, caller, cpu=cpu)
        finally:
            self._leave()

    def free_vm_area_api(self, area: VmStruct, cpu: int = 0) -> None:
        """``free_vm_area(area)``."""
        if not isinstance(area, VmStruct):
            raise TypeError(
                f"area must be a VmStruct (struct vm_struct *), not {type(area).__name__}"
            )
        self._enter(cpu)
        try:
            self.free_vm_area(area, cpu=cpu)
        finally:
            self._leave()

    def remove_vm_area_api(self, addr: int, cpu: int = 0) -> VmStruct | None:
        """``remove_vm_area(addr)``: the vm_struct stays the caller's to free."""
        addr = self._ul("addr", addr)
        self._enter(cpu)
        try:
            vm = self.remove_vm_area(addr, cpu=cpu)
            if vm is not None:
                self._released_without_vfree(vm, "remove_vm_area()")
            return vm
        finally:
            self._leave()

    def vm_unmap_aliases(self, cpu: int = 0) -> None:
        """``vm_unmap_aliases()``: flush vmap-block aliases and purge lazy areas."""
        self._enter(cpu)
        try:
            self.vm_unmap_aliases_locked(cpu=cpu)
        finally:
            self._leave()

    # ---------------------------------------------------------- kvmalloc & co
    def kvmalloc(
        self, size: int, gfp: int = GFP_KERNEL, cpu: int = 0, caller: str | None = None
    ) -> int:
        """``kvmalloc(size, gfp)``: kmalloc, or vmalloc for large sizes."""
        return self.kvmalloc_node(size, gfp, NUMA_NO_NODE, cpu, caller)

    def kvzalloc(
        self, size: int, gfp: int = GFP_KERNEL, cpu: int = 0, caller: str | None = None
    ) -> int:
        """``kvzalloc(size, gfp)``: zeroed kvmalloc."""
        gfp = uint("gfp", gfp)
        return self.kvmalloc_node(size, gfp | _GFP_ZERO, NUMA_NO_NODE, cpu, caller)

    def kvmalloc_node(
        self,
        size: int,
        gfp: int = GFP_KERNEL,
        node: int = NUMA_NO_NODE,
        cpu: int = 0,
        caller: str | None = None,
        align: int = 1,
    ) -> int:
        """``kvmalloc_node(size, gfp, node)`` / ``kvmalloc_node_align(size, align, gfp,
        node)``: try kmalloc, fall back to vmalloc for
        more than a page.

        Without ``kvmalloc_any_gfp`` (5.4): non-GFP_KERNEL masks use kmalloc only;
        larger-than-page kmalloc tries get ``_GFP_NOWARN | _GFP_NORETRY``; fallback
        ``__vmalloc_node_flags_caller``. With it (6.16-6.18): the kmalloc try gets
        ``_GFP_NOWARN``, loses direct reclaim (unless ``_GFP_RETRY_MAYFAIL``) and
        ``_GFP_NOFAIL``; non-blocking masks get NULL; sizes above INT_MAX WARN; the
        fallback allows huge mappings.

        v6.18 (``__kvmalloc_node_noprof``, mm/slub.c): a size above INT_MAX is a bare
        ``WARN_ON_ONCE(!(flags & __GFP_NOWARN))`` and NULL; ``align`` (v6.17,
        ``kvmalloc_node_align``) goes to the vmalloc fallback only (kmalloc aligns
        its objects naturally).
        """
        size = self._ul("size", size)
        gfp = uint("gfp", gfp)
        node = self._node(node)
        align = self._ul("align", align)
        if align != 1 and not self.profile.kvmalloc_align:
            raise ValueError(f"kvmalloc_node has no align argument in kernel {self.profile.name}")
        self._enter(cpu)
        try:
            if self._in_interrupt() and gfp & _GFP_DIRECT_RECLAIM:
                # Not a kernel BUG: might_sleep() prints "BUG: sleeping function
                # called from invalid context" only with CONFIG_DEBUG_ATOMIC_SLEEP
                # (off on the 6.18 machine) and the kernel goes on into kmalloc (and
                # a vmalloc fallback would stop at __get_vm_area_node's
                # BUG_ON(in_interrupt())). The model does not run a sleeping
                # allocation in interrupt context: its own refusal.
                self.log.refuse("kvmalloc: a blocking allocation in interrupt context")
                return 0
            any_gfp = self.profile.kvmalloc_any_gfp
            kgfp = gfp
            if not any_gfp:
                if (gfp & GFP_KERNEL) != GFP_KERNEL:
                    return self.slab.kmalloc(size, gfp, node)
                if size > PAGE_SIZE:
                    kgfp |= _GFP_NOWARN
                    if not kgfp & _GFP_RETRY_MAYFAIL:
                        kgfp |= _GFP_NORETRY
            elif size > PAGE_SIZE:
                kgfp |= _GFP_NOWARN
                if not kgfp & _GFP_RETRY_MAYFAIL:
                    kgfp &= ~_GFP_DIRECT_RECLAIM
                kgfp &= ~_GFP_NOFAIL
            ret = self.slab.kmalloc(size, kgfp, node)
            if ret or size <= PAGE_SIZE:
                return ret
            if any_gfp:
                if not gfp & _GFP_DIRECT_RECLAIM:
                    return 0
                if size > INT_MAX:
                    if not gfp & _GFP_NOWARN:
                        self.log.WARN_ONCE(
                            "__kvmalloc_node_noprof:INT_MAX",
                            "__kvmalloc_node_noprof: WARN_ON_ONCE(!(flags & __GFP_NOWARN))",
                            cpu=cpu,
                        )
                    return 0
                return self._full(size, align, gfp, VM_ALLOW_HUGE_VMAP, node, caller, cpu=cpu)
            return self._vmalloc_node_flags(size, node, gfp, caller, cpu=cpu)
        finally:
            self._leave()

    def kvfree(self, addr: int, cpu: int = 0) -> None:
        """``kvfree(addr)``: vfree or kfree depending on ``is_vmalloc_addr``."""
        addr = self._ul("addr", addr)
        self._enter(cpu)
        try:
            self.kvfree_now(addr, cpu=cpu)
        finally:
            self._leave()

    def vrealloc(
        self,
        p: int,
        size: int,
        gfp: int = GFP_KERNEL,
        align: int = 1,
        nid: int = NUMA_NO_NODE,
        cpu: int = 0,
        caller: str | None = None,
    ) -> int:
        """``vrealloc_node_align(p, size, align, gfp, nid)`` (``has_vrealloc``:
        vrealloc since 6.12).

        ``size == 0`` frees; shrinking or growing within the page-rounded area only
        updates ``requested_size`` (shrinking zeroes the tail only when
        ``want_init_on_free() || want_init_on_alloc(gfp)``: the ``init_on_free``/
        ``init_on_alloc`` boot options or ``__GFP_ZERO``); otherwise allocate, copy
        ``requested_size`` bytes, vfree. A vm_struct whose ``requested_size`` exceeds
        the area WARNs ``vrealloc() has mismatched area vs requested sizes`` and an
        address not aligned to ``align`` WARNs ``will not reallocate with a bigger
        alignment``; both return NULL (v6.18 ``vrealloc_node_align_noprof``).
        """
        if not self.profile.has_vrealloc:
            raise ValueError(f"vrealloc does not exist in kernel {self.profile.name}")
        p = self._ul("p", p)
        size = self._ul("size", size)
        gfp = uint("gfp", gfp)
        align = self._ul("align", align)
        nid = self._node(nid)
        self._enter(cpu)
        try:
            if not size:
                self.vfree_now(p, cpu=cpu)
                return 0
            old = 0
            if p:
                vm = self.find_vm_area(p)
                if vm is None:
                    self.log.WARN(
                        f"Trying to vrealloc() nonexistent vm area ({p:#x})",
                        "vrealloc:nonexistent",
                        cpu=cpu,
                    )
                    return 0
                alloced = get_vm_area_size(vm)
                old = vm.requested_size
                if alloced < old:
                    self.log.WARN(
                        f"vrealloc() has mismatched area vs requested sizes ({p:#x})",
                        "vrealloc:sizes",
                        cpu=cpu,
                    )
                    return 0
                if not align or p & (align - 1):  # !IS_ALIGNED(p, align)
                    self.log.WARN(
                        f"will not reallocate with a bigger alignment ({align:#x})",
                        "vrealloc:align",
                        cpu=cpu,
                    )
                    return 0
                need_realloc = bool(
                    gfp & _GFP_THISNODE
                    and nid != NUMA_NO_NODE
                    and vm.pages is not None
                    and vm.nr_pages
                    and self.phys.page_to_nid(int(vm.pages[0])) != nid
                )
                if not need_realloc and size <= old:
                    # want_init_on_free() || want_init_on_alloc(flags): the boot
                    # options, or __GFP_ZERO.
                    if self.init_on_free or self.init_on_alloc or gfp & _GFP_ZERO:
                        self.pgt.write(p + size, bytes(old - size))
                    vm.requested_size = size
                    return p
                if not need_realloc and size <= alloced:
                    vm.requested_size = size
                    return p
            n = self._vmalloc_node(size, align, gfp, nid, caller, cpu=cpu)
            if not n:
                return 0
            if p:
                self.pgt.write(n, self.pgt.read(p, old))
                self.vfree_now(p, cpu=cpu)
            return n
        finally:
            self._leave()

    # ----------------------------------------------------------- vm_map_ram
    def vm_map_ram(
        self,
        pages: Sequence[int] | npt.NDArray[np.integer[Any]],
        count: int | None = None,
        node: int = NUMA_NO_NODE,
        cpu: int = 0,
    ) -> int:
        """``vm_map_ram(pages, count, node)``: small counts from a per-CPU vmap block,
        else a VA of its own (``VMAP_RAM``, align PAGE_SIZE, no guard, no vm_struct).

        ``count`` is an ``unsigned int``; ``pages`` must hold that many valid pages.
        ``count == 0`` reaches ``vb_alloc``'s ``WARN_ON(size == 0)`` and returns NULL.
        In interrupt context the allocation may sleep: where it reaches
        ``alloc_vmap_area``'s ``might_sleep()`` a kernel with
        ``CONFIG_DEBUG_ATOMIC_SLEEP`` prints ``BUG: sleeping function called from
        invalid context at mm/vmalloc.c:LINE`` and goes on (the 6.18 machine's config
        prints nothing); so does the model.
        """
        arr, n = self._pages("pages", pages, count)
        node = self._node(node)
        self._enter(cpu)
        try:
            addr = self.blocks.vm_map_ram(arr, n, node, cpu=cpu)
            if addr:
                self._map_user_pages(addr, arr)
            return addr
        finally:
            self._leave()

    def vm_unmap_ram(self, addr: int, count: int, cpu: int = 0) -> None:
        """``vm_unmap_ram(addr, count)``: ``vb_free`` for small counts, else free the
        VA lazily."""
        addr = self._ul("addr", addr)
        count = uint("count", count)
        self._enter(cpu)
        try:
            if self.blocks.vm_unmap_ram(addr, count, cpu=cpu) and self.user_mapped:
                self._unmap_user_pages(addr)
        finally:
            self._leave()

    # ------------------------------------------------------- pages for the user
    def alloc_pages(self, nr: int = 1, gfp: int = GFP_KERNEL) -> list[int]:
        """Order-0 pages for the caller (e.g. to vmap); tracked by the accounting check.

        Returns fewer than ``nr`` pfns if memory runs out.
        """
        nr = uint("nr", nr)
        gfp = uint("gfp", gfp)
        out: list[int] = []
        self.log.enter()
        try:
            for _ in range(nr):
                pfn = self.phys.alloc_pages(gfp, 0)
                if pfn is None:
                    break
                out.append(pfn)
            self.external_pages += len(out)
            self.user_pfns.update(out)
        finally:
            self.log.leave()
        return out

    def free_pages(self, pfns: Sequence[int]) -> None:
        """Give back pages from :meth:`alloc_pages`.

        Only pages this caller holds are freed. A pfn that ``alloc_pages`` did not
        hand out (a vmalloc area's page, a slab or page-table page, a free page, or
        one given to a ``VM_MAP_PUT_PAGES`` area), or one a live ``vmap``/
        ``vm_map_ram`` area still maps, is refused with a WARN naming it: in the
        kernel the page would be freed under its owner and handed out twice.
        """
        try:
            wanted = [integer("pfn", p) for p in pfns]
        except TypeError:
            raise TypeError("pfns must be a sequence of pfns (integers)") from None
        self.log.enter()
        try:
            for pfn in wanted:
                if pfn not in self.user_pfns:
                    self.log.WARN(
                        f"free_pages: pfn {pfn:#x} was not handed out by alloc_pages() "
                        "(or was given away or already freed): refused"
                    )
                    continue
                if pfn in self.user_map_count:
                    where = next(a for a, ps in self.user_mapped.items() if pfn in ps)
                    self.log.WARN(
                        f"free_pages: pfn {pfn:#x} is still mapped by the vmap area at "
                        f"{where:#x}: refused (unmap it first)"
                    )
                    continue
                self.user_pfns.discard(pfn)
                self.phys.free_pages(pfn, 0)
                self.external_pages -= 1
        finally:
            self.log.leave()

    # ------------------------------------------------------------- inspection
    def vmalloc_to_page(self, addr: int) -> int | None:
        """``vmalloc_to_page``: the pfn mapped at ``addr`` (None for NULL)."""
        addr = self._ul("addr", addr)
        return self.pgt.lookup_pfn(addr)

    def vmalloc_to_pfn(self, addr: int) -> int:
        """``vmalloc_to_pfn``: ``page_to_pfn(vmalloc_to_page(addr))`` (0 if none)."""
        addr = self._ul("addr", addr)
        pfn = self.pgt.lookup_pfn(addr)
        return 0 if pfn is None else pfn

    def vread(self, addr: int, n: int) -> bytes:
        """``vread_iter`` (6.x; ``vread`` in 5.4) into a buffer: bytes of ``[addr,
        addr + n)``; holes (guard pages, unmapped or unused ranges) read as zeros.
        With ``vmap_ram_flags`` an area without a vm_struct is read only if it is a
        ``VMAP_RAM`` one."""
        addr = self._ul("addr", addr)
        n = self._ul("n", n)
        if n > 1 << 32:
            raise ValueError(f"n {n}: the model reads at most 4 GiB at once")
        need_vm = self.profile.vmap_ram_flags
        out = bytearray(n)
        pos = 0
        while pos < n:
            a = addr + pos
            take = min(n - pos, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
            va = self.space.find_vmap_area(a)
            if va is not None and (va.vm is not None or va.flags & VMAP_RAM or not need_vm):
                pfn = self.pgt.lookup_pfn(a)
                if pfn is not None and self.phys.pfn_valid(pfn):
                    out[pos : pos + take] = self.phys.read(pfn, a & (PAGE_SIZE - 1), take)
            pos += take
        return bytes(out)

    def vwrite(self, addr: int, data: bytes) -> int:
        """``vwrite`` (5.4; removed in 6.x): write into mapped vmalloc pages, skipping
        holes; returns the byte count."""
        addr = self._ul("addr", addr)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        pos = 0
        while pos < len(data):
            a = addr + pos
            take = min(len(data) - pos, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
            va = self.space.find_vmap_area(a)
            if va is not None:
                pfn = self.pgt.lookup_pfn(a)
                if pfn is not None and self.phys.pfn_valid(pfn):
                    self.phys.write(pfn, a & (PAGE_SIZE - 1), data[pos : pos + take])
            pos += take
        return len(data)

    def areas(self) -> Iterator[VmStruct]:
        """Every live vm_struct (busy areas with a vm), vmallocinfo order."""
        for va in self.space.busy_areas():
            if va.vm is not None:
                yield va.vm

    # ------------------------------------------------------------- accounting
    def check(self) -> None:
        """Accounting: ``nr_vmalloc_pages`` equals the pages of live VM_ALLOC areas;
        every page the model took is accounted for (vmalloc, vmap-owned, slab,
        page tables, pages handed to the user); areas are consistent."""
        nr = 0
        put = 0
        for vm in self.areas():
            if vm.pages is not None and vm.nr_pages:
                if vm.flags & VM_MAP_PUT_PAGES:
                    put += vm.nr_pages
                else:
                    nr += vm.nr_pages
            va = self.space.find_vmap_area(vm.addr)
            if va is None or va.vm is not vm or va.va_start != vm.addr:
                raise InvariantError(f"{vm!r} is not bound to its vmap area")
            if va.va_end - va.va_start != vm.size:
                raise InvariantError(f"{vm!r}: size differs from its vmap area {va!r}")
            if vm.flags & VM_UNINITIALIZED:
                raise InvariantError(f"{vm!r} is still VM_UNINITIALIZED between calls")
        if self.leaked:
            vm = self.leaked[0]
            more = f" (and {len(self.leaked) - 1} more)" if len(self.leaked) > 1 else ""
            raise InvariantError(
                f"leaked: {vm!r} was vmalloc'ed but released without vfree(): its "
                f"{vm.nr_pages} pages and pages array are never freed{more} "
                "(the kernel leaks them too)"
            )
        if nr != self.nr_vmalloc_pages:
            raise InvariantError(f"nr_vmalloc_pages {self.nr_vmalloc_pages} != {nr} in areas")
        if put != self.put_pages:
            raise InvariantError(f"VM_MAP_PUT_PAGES pages {self.put_pages} != {put}")
        self.blocks.check()
        if self._pages_used is None:
            return
        used = self._pages_used()
        pgtable_pages = self._pgtable_pages_added()
        expect = (
            self.nr_vmalloc_pages
            + self.put_pages
            + self.slab.slab_pages
            + self.slab.large_pages
            + pgtable_pages
            + self.external_pages
        )
        if used != expect:
            raise InvariantError(
                f"page accounting: {used} pages in use since boot, but vmalloc "
                f"{self.nr_vmalloc_pages} + vmap-owned {self.put_pages} + slab "
                f"{self.slab.slab_pages + self.slab.large_pages} + page tables "
                f"{pgtable_pages} + user {self.external_pages} = {expect} "
                "(pages taken from k.phys directly are not tracked: use k.alloc_pages)"
            )


# The exact kernel names (Python would mangle them inside the class body).
install_kernel_names(Vmalloc, *KERNEL_NAMES.values())


# ... and the layer's own method whose twin (vm_area_alloc_pages' order-0 loop, in the
# bulk pages section) the compiled vmalloc calls instead (O_VM_AREA_ALLOC_PAGES).
_C_ORIGS: tuple[Any, ...] = (*_C_ORIGS, Vmalloc.vm_area_alloc_pages)  # type: ignore[no-redef]


def describe_fault(machine: Machine, space: VmapSpace, addr: int) -> str | None:
    """Name the area whose guard page, unmapped part or freed range holds ``addr``.

    The page tables call this (as their ``fault_describer``) to add a line to an oops
    in the vmalloc or module range; it reads only the vmap allocator's state.
    """
    if not machine.vmalloc_start <= addr < machine.vmalloc_end and not (
        machine.modules_vaddr <= addr < machine.modules_end
    ):
        return None
    va = space.find_vmap_area(addr)
    if va is not None:
        vm: VmStruct | None = va.vm
        if vm is None:
            return f"{addr:#x} is inside vm_map_ram area {va.va_start:#x}-{va.va_end:#x} (unmapped part)"
        who = f" ({vm.caller})" if vm.caller else ""
        usable = vm.addr + get_vm_area_size(vm)
        if addr >= usable:
            return (
                f"{addr:#x} is in the guard page of vmalloc area "
                f"{vm.addr:#x}-{vm.addr + vm.size:#x}{who}: out-of-bounds access"
            )
        return (
            f"{addr:#x} is inside vm area {vm.addr:#x}-{vm.addr + vm.size:#x}{who} but not mapped"
        )
    for lazy in space.lazy:
        if lazy.va_start <= addr < lazy.va_end:
            return (
                f"{addr:#x} is in freed vmap area {lazy.va_start:#x}-{lazy.va_end:#x} "
                "(lazily freed, not yet purged): use after vfree()"
            )
    for _nid, _idx, pooled in space.pooled_areas():
        if pooled.va_start <= addr < pooled.va_end:
            return (
                f"{addr:#x} is in freed vmap area {pooled.va_start:#x}-{pooled.va_end:#x} "
                "(in a vmap-node pool): use after vfree()"
            )
    return f"{addr:#x} is in free vmalloc space (never allocated, or freed and purged)"
