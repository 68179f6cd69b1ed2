"""``Kernel``: one model of one machine running one kernel version.

The Kernel owns all state — there are no globals — so several models can run side by
side (for instance the same trace under "5.4" and "6.18"). It wires the layers
together, one way down: API → vmap allocator → trees; later layers (pages, page
tables, vm_struct) hang off the same object.

>>> k = Kernel(profile="6.18", cpus=2)
>>> va = k.alloc_vmap_area(8192, 1, k.VMALLOC_START, k.VMALLOC_END)
>>> hex(va.va_start), va.size
('0xffffc90000000000', 8192)
>>> k.free_vmap_area_noflush(va.va_start)
>>> k.vmap_space.vmap_lazy_nr
2
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pyvmalloc.config import NUMA_NO_NODE, Arch, KernelProfile, Machine, get_profile
from pyvmalloc.errors import InvariantError
from pyvmalloc.policies import MECHANISMS, mechanism_of, placement_policy, pool_policy
from pyvmalloc.printk import KernelLog
from pyvmalloc.vmap.area import VaState, VmapArea, is_err
from pyvmalloc.vmap.pcpu import pcpu_free_vm_areas, pcpu_get_vm_areas
from pyvmalloc.vmap.placement import PlacementPolicy
from pyvmalloc.vmap.pools import PoolPolicy
from pyvmalloc.vmap.space import VmapSpace
from pyvmalloc.vmap.tracepoints import TraceEvent

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pyvmalloc.pgtable import PageTables
    from pyvmalloc.phys import PhysicalMemory
    from pyvmalloc.slab import SlabAllocator
    from pyvmalloc.vmalloc import Vmalloc, VmStruct

__all__ = ["Kernel", "Work", "WorkQueue", "is_err"]

_GFP_KERNEL = 0xCC0


@dataclass
class Work:
    """A queued work item (``struct work_struct``): a name and the function to run."""

    name: str
    func: Callable[[], None]
    queued_at: int


@dataclass
class WorkQueue:
    """The system workqueue, made explicit and inspectable.

    ``schedule_work`` queues an item unless the same item is already pending (as in the
    kernel). With ``auto`` on (the default) pending work runs when the API call that
    queued it returns — "shortly after", deterministically. A replay turns ``auto`` off
    and runs work where the trace shows the kernel did.
    """

    auto: bool = True
    pending: list[Work] = field(default_factory=list)
    ran: int = 0
    _tick: int = 0

    def schedule_work(self, name: str, func: Callable[[], None]) -> bool:
        """Queue ``func``; False if an item of this name is already pending."""
        if any(w.name == name for w in self.pending):
            return False
        self._tick += 1
        self.pending.append(Work(name, func, self._tick))
        return True

    def run_pending(self) -> int:
        """Run every pending item (and items they queue) in order; return how many."""
        n = 0
        while self.pending:
            work = self.pending.pop(0)
            work.func()
            n += 1
        self.ran += n
        return n


class Kernel:
    """A model kernel: machine + profile + every vmalloc layer.

    Parameters
    ----------
    profile:
        "4.19", "5.4" or "6.18" (or a :class:`KernelProfile`).
    cpus:
        Online CPUs (``num_online_cpus()``); possible CPUs default to the same.
    machine:
        A full :class:`Machine`; other machine keywords build one.
    strict:
        Raise :class:`~pyvmalloc.printk.KernelWarning` where the kernel would WARN.
    placement, pools:
        Override the profile's policies for this model: a registered name
        (``"best-fit"``), ``"module:Class"``, a class or an instance (see
        :mod:`pyvmalloc.policies`).
    """

    def __init__(
        self,
        profile: str | KernelProfile = "6.18",
        cpus: int = 2,
        *,
        machine: Machine | None = None,
        possible_cpus: int = 0,
        paging_levels: int = 4,
        ram: int | str = 4 << 30,
        numa_nodes: int = 1,
        arch: Arch = "x86_64",
        nr_cpus: int = 256,
        strict: bool = False,
        deferred_work: Literal["auto", "manual"] = "auto",
        placement: str | PlacementPolicy | type | None = None,
        pools: str | PoolPolicy | type | None = None,
    ) -> None:
        self.profile = get_profile(profile)
        if machine is None:
            from pyvmalloc.config import parse_size

            machine = Machine(
                arch=arch,
                paging_levels=paging_levels if arch == "x86_64" else 2,
                cpus_online=cpus,
                cpus_possible=possible_cpus,
                nr_cpus=nr_cpus,
                ram=parse_size(ram),
                numa_nodes=numa_nodes,
            )
        self.machine = machine
        self.log = KernelLog(strict=strict)
        self.workqueue = WorkQueue(auto=deferred_work == "auto")
        self._clock_us = 0
        place = placement_policy(
            self.profile.placement if placement is None else placement, self.profile
        )
        pool = pool_policy(self.profile.pools if pools is None else pools, self.profile)
        #: The vmap area allocator (free tree, busy trees, lazy list, pools), on the
        #: mechanism its placement policy runs on.
        self.vmap_space: VmapSpace = MECHANISMS[mechanism_of(place)](
            machine,
            self.profile,
            self.log,
            placement=place,
            pools=pool,
            clock=self._clock,
            schedule_work=self.workqueue.schedule_work,
            purge_fragmented=self._purge_fragmented_blocks,
        )
        #: interrupt context flag (``in_interrupt()``); see :meth:`interrupt_context`
        self.in_interrupt = False
        #: CONFIG_NUMA (x86_64 default y): vmallocinfo prints ``N<node>=<pages>``
        self.config_numa = True
        #: kptr_restrict for %pK in vmallocinfo (1: real addresses, 2: zeros)
        self.kptr_restrict = 1
        # The page allocator, page tables, slab and vmalloc layers are built on first
        # use: PhysicalMemory for 4 GiB takes ~45 ms, and many Kernels (replay,
        # bench) only need the vmap allocator.
        self._phys: PhysicalMemory | None = None
        self._pgtables: PageTables | None = None
        self._slab: SlabAllocator | None = None
        self._vm: Vmalloc | None = None
        self._used0 = 0
        self._pgtable0 = 0

    # --- lazily built layers ------------------------------------------------------
    def _build_memory(self) -> None:
        from pyvmalloc.pgtable import PageTables
        from pyvmalloc.phys import PhysicalMemory
        from pyvmalloc.slab import SlabAllocator

        phys = PhysicalMemory(self.machine, self.profile, self.log)
        pgt = PageTables(self.machine, phys, self.log)
        self._phys = phys
        self._pgtables = pgt
        self._slab = SlabAllocator(phys, self.machine.cpus_possible)
        self._used0 = self._phys_used_now()
        self._pgtable0 = phys.nr_pgtable_pages

    @property
    def phys(self) -> PhysicalMemory:
        """The buddy page allocator (:class:`~pyvmalloc.phys.PhysicalMemory`)."""
        if self._phys is None:
            self._build_memory()
        assert self._phys is not None
        return self._phys

    @property
    def pgtables(self) -> PageTables:
        """``init_mm``'s page tables (:class:`~pyvmalloc.pgtable.PageTables`)."""
        if self._pgtables is None:
            self._build_memory()
        assert self._pgtables is not None
        return self._pgtables

    @property
    def slab(self) -> SlabAllocator:
        """The kmalloc caches (:class:`~pyvmalloc.slab.SlabAllocator`)."""
        if self._slab is None:
            self._build_memory()
        assert self._slab is not None
        return self._slab

    @property
    def vm(self) -> Vmalloc:
        """The vm_struct / vmalloc layer (:class:`~pyvmalloc.vmalloc.Vmalloc`)."""
        if self._vm is None:
            from pyvmalloc.vmalloc import Vmalloc

            self._vm = Vmalloc(self)
            self.pgtables.fault_describer = self._vm.describe_fault
        return self._vm

    def _phys_used_now(self) -> int:
        p = self._phys
        assert p is not None
        return p.totalram_pages - p.nr_free_pages() - sum(len(z.pcp) for z in p.zones)

    def phys_pages_used(self) -> int:
        """Pages taken from the buddy allocator since boot (pcp pages count as free)."""
        if self._phys is None:
            return 0
        return self._phys_used_now() - self._used0

    def pgtable_pages_added(self) -> int:
        """Page-table pages allocated since boot (they are never freed on unmap)."""
        if self._phys is None:
            return 0
        return self._phys.nr_pgtable_pages - self._pgtable0

    @contextlib.contextmanager
    def interrupt_context(self) -> Iterator[None]:
        """Run the body "in interrupt": vfree defers, allocation BUGs."""
        saved = self.in_interrupt
        self.in_interrupt = True
        try:
            yield
        finally:
            self.in_interrupt = saved

    # --- constants ----------------------------------------------------------------
    @property
    def VMALLOC_START(self) -> int:
        return self.machine.vmalloc_start

    @property
    def VMALLOC_END(self) -> int:
        return self.machine.vmalloc_end

    def _clock(self) -> float:
        """Model time in seconds: one microsecond per traced event."""
        self._clock_us += 1
        return self._clock_us / 1e6

    def _purge_fragmented_blocks(self) -> None:
        """Before the allocation-failure purge: ``purge_fragmented_blocks_allcpus``."""
        if self._vm is not None:
            self._vm.blocks.purge_fragmented_blocks_allcpus()

    def _after_call(self) -> None:
        if self.workqueue.auto and self.workqueue.pending:
            self.workqueue.run_pending()

    # --- the vmap area allocator ------------------------------------------------------
    def alloc_vmap_area(
        self,
        size: int,
        align: int = 1,
        vstart: int | None = None,
        vend: int | None = None,
        cpu: int = 0,
        *,
        node: int = NUMA_NO_NODE,
        gfp_nowarn: bool = False,
        va_flags: int = 0,
    ) -> VmapArea | int:
        """``alloc_vmap_area(size, align, vstart, vend, node, gfp)`` on CPU ``cpu``.

        ``size`` includes the guard page if the caller wants one. Returns the busy
        :class:`VmapArea` or a negative errno (``-EINVAL``, ``-EBUSY``).
        """
        self._check_cpu(cpu)
        va = self.vmap_space.alloc_vmap_area(
            size,
            align,
            self.VMALLOC_START if vstart is None else vstart,
            self.VMALLOC_END if vend is None else vend,
            cpu=cpu,
            gfp_nowarn=gfp_nowarn,
            va_flags=va_flags,
        )
        self._after_call()
        return va

    def find_vmap_area(self, addr: int) -> VmapArea | None:
        """``find_vmap_area``: the busy area containing ``addr``."""
        return self.vmap_space.find_vmap_area(addr)

    def free_vmap_area_noflush(self, va: VmapArea | int, cpu: int = 0) -> None:
        """Lazily free a busy area, given as the area or any address inside it.

        This is what ``remove_vm_area``/``vm_unmap_ram`` do: ``find_unlink_vmap_area``
        then ``free_vmap_area_noflush``. An address that is not busy (never
        allocated, or already freed) gets the kernel's warning and changes nothing.
        """
        self._check_cpu(cpu)
        addr = va.va_start if isinstance(va, VmapArea) else va
        if isinstance(va, VmapArea) and va.state != VaState.BUSY:
            self.log.WARN(
                f"free_vmap_area_noflush: vmap_area {va.va_start:#x}-{va.va_end:#x} "
                f"is not busy (it is {VaState.NAMES[va.state]}): double free?"
            )
            return
        found = self.vmap_space.find_unlink_vmap_area(addr)
        if found is None:
            self.log.WARN(f"find_unlink_vmap_area: no busy vmap_area at {addr:#x}")
            return
        self.vmap_space.free_vmap_area_noflush(found, cpu=cpu)
        self._after_call()

    def free_vmap_area(self, va: VmapArea) -> None:
        """``free_vmap_area``: immediate (non-lazy) free, as error paths do."""
        self.vmap_space.free_vmap_area(va)

    def purge_vmap_area_lazy(self) -> bool:
        """Purge lazily freed areas now; True if any were purged.

        5.4: ``purge_vmap_area_lazy()``. 6.18: what the ``drain_vmap_work`` worker runs,
        ``__purge_vmap_area_lazy(ULONG_MAX, 0, false)`` (pools decay by 25 %).
        """
        done = self.vmap_space.purge_vmap_area_lazy()
        self._after_call()
        return done

    def reclaim_and_purge_vmap_areas(self) -> bool:
        """The allocation-failure purge (6.x: pools fully decayed, none refilled)."""
        return self.vmap_space.reclaim_and_purge_vmap_areas()

    def pcpu_get_vm_areas(
        self, offsets: list[int], sizes: list[int], align: int, cpu: int = 0
    ) -> list[VmapArea] | None:
        """``pcpu_get_vm_areas(offsets, sizes, nr_vms, align)``: congruent areas."""
        self._check_cpu(cpu)
        vas = pcpu_get_vm_areas(self.vmap_space, offsets, sizes, align, cpu)
        self._after_call()
        return vas

    def pcpu_free_vm_areas(self, vas: list[VmapArea], cpu: int = 0) -> None:
        """``pcpu_free_vm_areas(vms, nr_vms)``: free them lazily."""
        pcpu_free_vm_areas(self.vmap_space, vas, cpu)
        self._after_call()

    def run_deferred_work(self) -> int:
        """Run the pending work items (6.x lazy purge worker); return how many ran."""
        return self.workqueue.run_pending()

    def drop_caches(self, mode: int = 2) -> int:
        """``echo mode > /proc/sys/vm/drop_caches``: with bit 2, run the shrinkers.

        The "vmap-node" shrinker empties every vmap-node pool into the free tree.
        Returns the number of pooled areas released.
        """
        if mode not in (1, 2, 3):
            raise ValueError("drop_caches takes 1, 2 or 3")
        return self.vmap_space.vmap_node_shrink_scan() if mode & 2 else 0

    # --- tracepoints ----------------------------------------------------------------
    def trace_subscribe(self, event: str, fn: Callable[[TraceEvent], None]) -> None:
        """Attach ``fn`` to a ``vmalloc`` tracepoint (``alloc_vmap_area``, ...).

        The events exist since v6.2; a 5.4 or 4.19 model has none to attach to.
        """
        if not self.profile.has_tracepoints:
            raise ValueError(
                f"kernel {self.profile.name} has no vmalloc tracepoints (added in v6.2)"
            )
        lists = {
            "alloc_vmap_area": self.vmap_space.tp_alloc,
            "free_vmap_area_noflush": self.vmap_space.tp_free,
            "purge_vmap_area_lazy": self.vmap_space.tp_purge,
        }
        if event == "all":
            for lst in lists.values():
                lst.append(fn)
            return
        try:
            lists[event].append(fn)
        except KeyError:
            raise ValueError(
                f"unknown vmalloc event {event!r}; known: {', '.join(lists)}"
            ) from None

    def trace_unsubscribe(self, fn: Callable[[TraceEvent], None]) -> None:
        for lst in (self.vmap_space.tp_alloc, self.vmap_space.tp_free, self.vmap_space.tp_purge):
            while fn in lst:
                lst.remove(fn)

    # --- whole-model checks -----------------------------------------------------------
    def check(self) -> None:
        """Run every invariant of every layer; raise on the first broken one.

        With the memory layers built this also runs the page allocator's,
        the page tables' and the slab's checks and the vmalloc accounting check
        (every page taken since boot is vmalloc'ed, slab, page-table or user-held).
        """
        self.vmap_space.check()
        if self._phys is not None:
            self._phys.check()
            assert self._pgtables is not None and self._slab is not None
            self._pgtables.check()
            self._slab.check()
            if self._vm is not None:
                self._vm.check()
            elif self.phys_pages_used() != (
                self._slab.slab_pages + self._slab.large_pages + self.pgtable_pages_added()
            ):
                raise InvariantError("pages taken from k.phys directly are not accounted")

    # --- vmalloc API (kernel names; cpu= is the CPU the call runs on) ---------------
    def vmalloc(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc(size)``: the address, or 0 (NULL) with the kernel's warning."""
        return self.vm.vmalloc(size, cpu=cpu, caller=caller)

    def vzalloc(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vzalloc(size)``: zeroed vmalloc."""
        return self.vm.vzalloc(size, cpu=cpu, caller=caller)

    def vmalloc_node(self, size: int, node: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_node(size, node)``."""
        return self.vm.vmalloc_node(size, node, cpu=cpu, caller=caller)

    def vzalloc_node(self, size: int, node: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vzalloc_node(size, node)``."""
        return self.vm.vzalloc_node(size, node, cpu=cpu, caller=caller)

    def vmalloc_user(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_user(size)``: zeroed, ``VM_USERMAP``."""
        return self.vm.vmalloc_user(size, cpu=cpu, caller=caller)

    def vmalloc_32(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_32(size)``: DMA32 pages."""
        return self.vm.vmalloc_32(size, cpu=cpu, caller=caller)

    def vmalloc_32_user(self, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """``vmalloc_32_user(size)``."""
        return self.vm.vmalloc_32_user(size, cpu=cpu, caller=caller)

    def vmalloc_huge(
        self, size: int, gfp: int = _GFP_KERNEL, cpu: int = 0, caller: str | None = None
    ) -> int:
        """``vmalloc_huge(size, gfp)`` (6.x): PMD mappings, size rounded to 2 MiB."""
        return self.vm.vmalloc_huge(size, gfp, cpu=cpu, caller=caller)

    def _k_vmalloc(self, size: int, gfp: int, cpu: int = 0, caller: str | None = None) -> int:
        """``__vmalloc(size, gfp)``."""
        return self.vm._vmalloc(size, gfp, cpu=cpu, caller=caller)

    def _k_vmalloc_node(
        self,
        size: int,
        align: int,
        gfp: int,
        node: int,
        caller: str | None = None,
        cpu: int = 0,
    ) -> int:
        """``__vmalloc_node(size, align, gfp, node, caller)``."""
        return self.vm.vmalloc_node_api(size, align, gfp, node, cpu=cpu, caller=caller)

    def _k_vmalloc_node_range(
        self,
        size: int,
        align: int,
        start: int | None = None,
        end: int | None = None,
        gfp: int = _GFP_KERNEL,
        prot: int | None = None,
        vm_flags: int = 0,
        node: int = NUMA_NO_NODE,
        caller: str | None = None,
        cpu: int = 0,
    ) -> int:
        """``__vmalloc_node_range(size, align, start, end, gfp, prot, vm_flags, node,
        caller)``; ``start``/``end`` default to the vmalloc range, ``prot`` to
        PAGE_KERNEL."""
        from pyvmalloc.pgtable import PAGE_KERNEL

        return self.vm.vmalloc_node_range_api(
            size,
            align,
            self.VMALLOC_START if start is None else start,
            self.VMALLOC_END if end is None else end,
            gfp,
            PAGE_KERNEL if prot is None else prot,
            vm_flags,
            node,
            cpu=cpu,
            caller=caller,
        )

    def vfree(self, addr: int, cpu: int = 0, in_interrupt: bool = False) -> None:
        """``vfree(addr)``; in interrupt context the free is deferred to a work item."""
        self.vm.vfree(addr, cpu=cpu, in_interrupt=in_interrupt)

    def vfree_atomic(self, addr: int, cpu: int = 0) -> None:
        """``vfree_atomic(addr)``: always deferred."""
        self.vm.vfree_atomic(addr, cpu=cpu)

    def vunmap(self, addr: int, cpu: int = 0) -> None:
        """``vunmap(addr)``."""
        self.vm.vunmap(addr, cpu=cpu)

    def vmap(
        self,
        pages: Sequence[int] | npt.NDArray[np.integer[Any]],
        count: int | None = None,
        flags: int = 0x4,
        prot: int | None = None,
        cpu: int = 0,
        caller: str | None = None,
    ) -> int:
        """``vmap(pages, count, flags, prot)``: map existing pages (flags default VM_MAP)."""
        from pyvmalloc.pgtable import PAGE_KERNEL

        return self.vm.vmap(
            pages, count, flags, PAGE_KERNEL if prot is None else prot, cpu=cpu, caller=caller
        )

    def vmap_pfn(
        self,
        pfns: Sequence[int] | npt.NDArray[np.integer[Any]],
        count: int | None = None,
        cpu: int = 0,
        caller: str | None = None,
    ) -> int:
        """``vmap_pfn(pfns, count, PAGE_KERNEL)``."""
        return self.vm.vmap_pfn(pfns, count, cpu=cpu, caller=caller)

    def ioremap(self, phys_addr: int, size: int, cpu: int = 0, caller: str | None = None) -> int:
        """x86 ``ioremap(phys_addr, size)``."""
        return self.vm.ioremap(phys_addr, size, cpu=cpu, caller=caller)

    def iounmap(self, addr: int, cpu: int = 0) -> None:
        """x86 ``iounmap(addr)``."""
        self.vm.iounmap(addr, cpu=cpu)

    def vm_map_ram(
        self,
        pages: Sequence[int] | npt.NDArray[np.integer[Any]],
        count: int | None = None,
        node: int = NUMA_NO_NODE,
        cpu: int = 0,
    ) -> int:
        """``vm_map_ram(pages, count, node)``."""
        return self.vm.vm_map_ram(pages, count, node, cpu=cpu)

    def vm_unmap_ram(self, addr: int, count: int, cpu: int = 0) -> None:
        """``vm_unmap_ram(addr, count)``."""
        self.vm.vm_unmap_ram(addr, count, cpu=cpu)

    def vm_unmap_aliases(self, cpu: int = 0) -> None:
        """``vm_unmap_aliases()``: flush vmap blocks, purge lazy areas."""
        self.vm.vm_unmap_aliases(cpu=cpu)

    def get_vm_area(self, size: int, flags: int, cpu: int = 0) -> VmStruct | None:
        """``get_vm_area(size, flags)``."""
        return self.vm.get_vm_area_api(size, flags, cpu=cpu)

    def get_vm_area_caller(
        self, size: int, flags: int, caller: str | None, cpu: int = 0
    ) -> VmStruct | None:
        """``get_vm_area_caller(size, flags, caller)``."""
        return self.vm.get_vm_area_api(size, flags, cpu=cpu, caller=caller)

    def _k_get_vm_area_caller(
        self, size: int, flags: int, start: int, end: int, caller: str | None, cpu: int = 0
    ) -> VmStruct | None:
        """``__get_vm_area_caller(size, flags, start, end, caller)``."""
        return self.vm.get_vm_area_caller_range_api(size, flags, start, end, cpu=cpu, caller=caller)

    def find_vm_area(self, addr: int) -> VmStruct | None:
        """``find_vm_area(addr)``."""
        return self.vm.find_vm_area(addr)

    def remove_vm_area(self, addr: int, cpu: int = 0) -> VmStruct | None:
        """``remove_vm_area(addr)``: the vm_struct stays the caller's to free."""
        return self.vm.remove_vm_area_api(addr, cpu=cpu)

    def free_vm_area(self, area: VmStruct, cpu: int = 0) -> None:
        """``free_vm_area(area)``."""
        self.vm.free_vm_area_api(area, cpu=cpu)

    def vrealloc(
        self,
        p: int,
        size: int,
        gfp: int = _GFP_KERNEL,
        align: int = 1,
        nid: int = NUMA_NO_NODE,
        cpu: int = 0,
        caller: str | None = None,
    ) -> int:
        """``vrealloc_node_align(p, size, align, gfp, nid)`` (6.12+)."""
        return self.vm.vrealloc(p, size, gfp, align=align, nid=nid, cpu=cpu, caller=caller)

    def kvmalloc(
        self, size: int, gfp: int = _GFP_KERNEL, cpu: int = 0, caller: str | None = None
    ) -> int:
        """``kvmalloc(size, gfp)``: kmalloc, or vmalloc for large sizes."""
        return self.vm.kvmalloc_node(size, gfp, NUMA_NO_NODE, cpu=cpu, caller=caller)

    def kvmalloc_node(
        self,
        size: int,
        gfp: int = _GFP_KERNEL,
        node: int = NUMA_NO_NODE,
        cpu: int = 0,
        caller: str | None = None,
    ) -> int:
        """``kvmalloc_node(size, gfp, node)``."""
        return self.vm.kvmalloc_node(size, gfp, node, cpu=cpu, caller=caller)

    def kvzalloc(
        self, size: int, gfp: int = _GFP_KERNEL, cpu: int = 0, caller: str | None = None
    ) -> int:
        """``kvzalloc(size, gfp)``."""
        return self.vm.kvmalloc_node(size, gfp | 0x100, NUMA_NO_NODE, cpu=cpu, caller=caller)

    def kvfree(self, addr: int, cpu: int = 0) -> None:
        """``kvfree(addr)``."""
        self.vm.kvfree(addr, cpu=cpu)

    def kmalloc(self, size: int, gfp: int = _GFP_KERNEL) -> int:
        """``kmalloc(size, gfp)`` (direct-map address or 0)."""
        return self.slab.kmalloc(size, gfp)

    def kfree(self, addr: int) -> None:
        """``kfree(addr)``."""
        if not self.slab.kfree(addr):
            self.log.WARN(f"kfree: invalid object {addr:#x}")

    def alloc_pages(self, nr: int = 1, gfp: int = _GFP_KERNEL) -> list[int]:
        """Order-0 pages for the caller (e.g. to vmap); tracked by the accounting check.

        Returns fewer than ``nr`` pfns if memory runs out.
        """
        out: list[int] = []
        for _ in range(nr):
            pfn = self.phys.alloc_pages(gfp, 0)
            if pfn is None:
                break
            out.append(pfn)
        self.vm.external_pages += len(out)
        return out

    def free_pages(self, pfns: Sequence[int]) -> None:
        """Give back pages from :meth:`alloc_pages`."""
        for pfn in pfns:
            self.phys.free_pages(int(pfn), 0)
        self.vm.external_pages -= len(pfns)

    def vmalloc_to_page(self, addr: int) -> int | None:
        """``vmalloc_to_page(addr)``: the pfn (the model's ``struct page *``)."""
        return self.vm.vmalloc_to_page(addr)

    def vmalloc_to_pfn(self, addr: int) -> int:
        """``vmalloc_to_pfn(addr)``."""
        return self.vm.vmalloc_to_pfn(addr)

    def is_vmalloc_addr(self, addr: int) -> bool:
        """``is_vmalloc_addr(addr)``."""
        return self.VMALLOC_START <= addr < self.VMALLOC_END

    def vread(self, addr: int, n: int) -> bytes:
        """``vread_iter`` into bytes: holes read as zeros, never faults."""
        return self.vm.vread(addr, n)

    def vwrite(self, addr: int, data: bytes) -> int:
        """``vwrite`` (5.4): write mapped pages, skip holes."""
        return self.vm.vwrite(addr, data)

    def read(self, addr: int, n: int) -> bytes:
        """A kernel load through the page tables; raises PageFault like the CPU."""
        return self.pgtables.read(addr, n)

    def write(self, addr: int, data: bytes) -> None:
        """A kernel store through the page tables; raises PageFault like the CPU."""
        self.pgtables.write(addr, data)

    def walk(self, addr: int) -> str:
        """The page-table walk of ``addr``, rendered."""
        return self.pgtables.render_walk(addr)

    # --- /proc -------------------------------------------------------------------
    def vmallocinfo(self) -> str:
        """``/proc/vmallocinfo`` in this kernel version's format and order."""
        from pyvmalloc.procfs import vmallocinfo

        return vmallocinfo(self.vm, numa=self.config_numa, kptr_restrict=self.kptr_restrict)

    def meminfo(self) -> str:
        """The ``Vmalloc*`` lines of ``/proc/meminfo``."""
        from pyvmalloc.procfs import meminfo

        return meminfo(self.vm)

    def buddyinfo(self) -> str:
        """``/proc/buddyinfo``."""
        return self.phys.buddyinfo()

    @property
    def nr_vmalloc_pages(self) -> int:
        """``nr_vmalloc_pages`` (VmallocUsed / 4 KiB)."""
        return self._vm.nr_vmalloc_pages if self._vm is not None else 0

    def dmesg(self) -> str:
        return self.log.dmesg()

    def _check_cpu(self, cpu: int) -> None:
        if not 0 <= cpu < self.machine.cpus_online:
            raise ValueError(f"cpu {cpu} is not online (0..{self.machine.cpus_online - 1})")

    def __repr__(self) -> str:
        m = self.machine
        return (
            f"<Kernel {self.profile.name} {m.arch} {m.paging_levels}-level "
            f"{m.cpus_online} CPUs, {self.vmap_space.nr_busy} busy areas>"
        )


# Kernel names starting with "__" (a class body would mangle them).
setattr(Kernel, "__vmalloc", Kernel._k_vmalloc)
setattr(Kernel, "__vmalloc_node", Kernel._k_vmalloc_node)
setattr(Kernel, "__vmalloc_node_range", Kernel._k_vmalloc_node_range)
setattr(Kernel, "__get_vm_area_caller", Kernel._k_get_vm_area_caller)
