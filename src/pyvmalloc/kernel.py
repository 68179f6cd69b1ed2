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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, ParamSpec, TypeVar, overload

import pyvmalloc.helpers as helpers
from pyvmalloc.args import host_budget, integer, uint, ulong
from pyvmalloc.config import NUMA_NO_NODE, Arch, KernelProfile, Machine, get_profile
from pyvmalloc.errors import InvariantError
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.names import install_kernel_names
from pyvmalloc.policies import MECHANISMS, mechanism_of, placement_policy, pool_policy
from pyvmalloc.printk import KernelLog
from pyvmalloc.vmap.area import VMAP_FLAGS_MASK, VaState, VmapArea, is_err
from pyvmalloc.vmap.pcpu import pcpu_free_vm_areas, pcpu_get_vm_areas
from pyvmalloc.vmap.placement import PlacementPolicy
from pyvmalloc.vmap.pools import PoolPolicy
from pyvmalloc.vmap.space import VmapSpace
from pyvmalloc.vmap.tracepoints import TraceEvent

if TYPE_CHECKING:
    from pyvmalloc.pgtable import PageTables
    from pyvmalloc.phys import PhysicalMemory
    from pyvmalloc.slab import SlabAllocator
    from pyvmalloc.vmalloc import Vmalloc, VmStruct

__all__ = ["Kernel", "Work", "WorkQueue", "is_err"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _VmallocApi(Generic[_P, _R]):
    """A ``Kernel`` API function that is the vmalloc layer's function of that name.

    ``vmalloc = _VmallocApi(lambda vm: vm.vmalloc)``: on a model, ``k.vmalloc`` is
    ``k.vm.vmalloc`` (the bound method, cached on first use, so a call costs what a
    direct one does); on the class, ``Kernel.vmalloc`` is :meth:`Vmalloc.vmalloc`
    itself, so ``help()`` and ``inspect.signature`` show the kernel's signature and
    docstring, and mypy types every call. The getter is applied to the
    :class:`~pyvmalloc.vmalloc.Vmalloc` class or instance, so the layer is imported
    only when first used.
    """

    def __init__(self, get: Callable[[Vmalloc], Callable[_P, _R]]) -> None:
        self._get = get
        self._attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Callable[..., _R]: ...

    @overload
    def __get__(self, obj: Kernel, objtype: type | None = None) -> Callable[_P, _R]: ...

    def __get__(
        self, obj: Kernel | None, objtype: type | None = None
    ) -> Callable[_P, _R] | Callable[..., _R]:
        if obj is None:
            from pyvmalloc.vmalloc import Vmalloc

            fn: Callable[..., _R] = self._get(Vmalloc)  # type: ignore[arg-type]
            return fn
        bound = self._get(obj.vm)
        obj.__dict__[self._attr] = bound
        return bound


@dataclass
class Work:
    """A queued work item (``struct work_struct``): a name and the function to run."""

    name: str
    func: Callable[[], None]
    queued_at: int


@dataclass(repr=False)
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

    def __repr__(self) -> str:
        names = ", ".join(w.name for w in self.pending) or "nothing"
        mode = "auto" if self.auto else "manual"
        return f"<WorkQueue ({mode}): {names} pending, {self.ran} run>"

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
        if deferred_work not in ("auto", "manual"):
            raise ValueError(f"deferred_work must be 'auto' or 'manual', not {deferred_work!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, not {type(strict).__name__}")
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
        self._ulong_max = machine.ulong_max
        self._vmalloc_range = (machine.vmalloc_start, machine.vmalloc_end)
        self.log = KernelLog(strict=strict, release=self.profile.bug_lines)
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
        self._kptr_restrict = 1
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
        from pyvmalloc.vmalloc import describe_fault

        self._check_ram_fits()
        phys = PhysicalMemory(self.machine, self.profile, self.log)
        pgt = PageTables(
            self.machine,
            phys,
            self.log,
            fault_describer=lambda addr: describe_fault(self.machine, self.vmap_space, addr),
        )
        self._phys = phys
        self._pgtables = pgt
        self._slab = SlabAllocator(phys, self.machine.cpus_possible)
        self._used0 = self._phys_used_now()
        self._pgtable0 = phys.nr_pgtable_pages

    #: Host bytes the page allocator's per-page arrays take per modelled 4 KiB page
    #: (flags, refcount, order, zone, node, owner: ``PhysicalMemory.column_bytes``),
    #: plus slack for the free lists.
    HOST_BYTES_PER_PAGE = 20

    def _check_ram_fits(self) -> None:
        """Refuse a RAM size whose page arrays this host cannot hold, saying what fits
        (rather than a bare ``MemoryError``, or the OOM killer: numpy's zeroed arrays
        are allocated lazily)."""
        need = (self.machine.ram >> 12) * self.HOST_BYTES_PER_PAGE
        budget = host_budget()  # a quarter of the host's memory, the same every run
        if budget is not None and need > budget:
            from pyvmalloc.config import format_size

            fits = (budget // self.HOST_BYTES_PER_PAGE) << 12
            raise MemoryError(
                f"ram={format_size(self.machine.ram)} needs about {format_size(need)} of "
                f"host memory for the model's page arrays ({self.HOST_BYTES_PER_PAGE} bytes "
                f"per 4 KiB page); the model takes at most {format_size(budget)} (a quarter "
                f"of this host's memory), so at most about ram={format_size(fits)} fits"
            )

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

            self._vm = Vmalloc(
                self.machine,
                self.profile,
                self.log,
                self.vmap_space,
                self.phys,
                self.pgtables,
                self.slab,
                schedule_work=self.workqueue.schedule_work,
                after_call=self._after_call,
                in_interrupt=lambda: self.in_interrupt,
                pages_used=self.phys_pages_used,
                pgtable_pages_added=self.pgtable_pages_added,
            )
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
        """Run the body "in interrupt": vfree defers, allocation BUGs.

        ``in_interrupt`` lives here, in one place; the vmalloc layer asks for it.
        """
        saved = self.in_interrupt
        self.in_interrupt = True
        try:
            yield
        finally:
            self.in_interrupt = saved

    @property
    def kptr_restrict(self) -> int:
        """``/proc/sys/kernel/kptr_restrict`` for ``%pK`` in vmallocinfo (1: real
        addresses, as to CAP_SYSLOG; 2: zeros; 0's hashed pointers are not modelled)."""
        return self._kptr_restrict

    @kptr_restrict.setter
    def kptr_restrict(self, value: int) -> None:
        # proc_dointvec_minmax with 0..2: any other write is -EINVAL
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2:
            raise ValueError(f"kptr_restrict takes 0, 1 or 2 (the sysctl's range), not {value!r}")
        self._kptr_restrict = value

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

    def _purge_fragmented_blocks(self, cpu: int) -> None:
        """Before the allocation-failure purge: ``purge_fragmented_blocks_allcpus``."""
        if self._vm is not None:
            self._vm.blocks.purge_fragmented_blocks_allcpus(cpu)

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
        umax = self._ulong_max
        if size.__class__ is not int or not 0 <= size <= umax:
            size = ulong("size", size, self.machine.bits_per_long)
        if va_flags.__class__ is not int:
            va_flags = integer("va_flags", va_flags)
        if align.__class__ is not int or not 0 <= align <= umax:
            align = ulong("align", align, self.machine.bits_per_long)
        if vstart is None and vend is None:
            lo, hi = self._vmalloc_range
        else:
            bits = self.machine.bits_per_long
            lo = self._vmalloc_range[0] if vstart is None else ulong("vstart", vstart, bits)
            hi = self._vmalloc_range[1] if vend is None else ulong("vend", vend, bits)
            self.vmap_space.check_range(lo, hi)
        log = self.log
        log.depth += 1  # log.enter(), inlined
        try:
            va = self.vmap_space.alloc_vmap_area(
                size,
                align,
                lo,
                hi,
                cpu=cpu,
                gfp_nowarn=gfp_nowarn,
                va_flags=va_flags,
            )
            self._after_call()
        except BaseException:
            log.unwind()
            raise
        log.depth -= 1
        if log.pending or log.hung is not None:
            log.raise_held()
        return va

    def find_vmap_area(self, addr: int) -> VmapArea | None:
        """``find_vmap_area``: the busy area containing ``addr``."""
        return self.vmap_space.find_vmap_area(ulong("addr", addr, self.machine.bits_per_long))

    def for_each_vmap_area(self) -> Iterator[VmapArea]:
        """Every busy ``struct vmap_area``, in the kernel's order (drgn's helper)."""
        return helpers.for_each_vmap_area(self)

    def for_each_vm_area(self) -> Iterator[VmStruct]:
        """Every ``struct vm_struct`` of a busy area (drgn's ``for_each_vm_area``)."""
        return helpers.for_each_vm_area(self)

    def vmalloc_to_page(self, addr: int) -> helpers.Page | None:
        """``vmalloc_to_page(addr)``: the page mapped at ``addr``, or None (NULL).

        A :class:`~pyvmalloc.helpers.Page`: the pfn (an ``int``) with its node, zone,
        flags, refcount and the area that maps it, as drgn's helper returns it.
        """
        return helpers.vmalloc_to_page(self, addr)

    def free_vmap_area_noflush(self, va: VmapArea | int, cpu: int = 0) -> None:
        """Lazily free a busy area, given as the area or any address inside it.

        This is what ``remove_vm_area``/``vm_unmap_ram`` do: ``find_unlink_vmap_area``
        then ``free_vmap_area_noflush``. An address that is not busy (never
        allocated, or already freed) gets the kernel's warning and changes nothing.
        """
        self._check_cpu(cpu)
        addr = (
            va.va_start if isinstance(va, VmapArea) else ulong("va", va, self.machine.bits_per_long)
        )
        if isinstance(va, VmapArea) and va.state != VaState.BUSY:
            self.log.WARN(
                f"free_vmap_area_noflush: vmap_area {va.va_start:#x}-{va.va_end:#x} "
                f"is not busy (it is {VaState.NAMES[va.state]}): double free?"
            )
            return
        owned = self.vmap_space.find_vmap_area(addr)
        if owned is not None and self._vm_layer_owns(owned):
            # Only a bare area (alloc_vmap_area's) is this call's to free: one the
            # vmalloc layer owns would leave its vm_struct, PTEs and page accounting
            # behind, a model no later call or check() can make sense of.
            owner = "a vm_struct" if owned.vm is not None else "vm_map_ram pages"
            raise ValueError(
                f"free_vmap_area_noflush: {owned!r} holds {owner}; release it with the "
                "call that made it (vfree, vunmap, iounmap, free_vm_area, vm_unmap_ram)"
            )
        found = self.vmap_space.find_unlink_vmap_area(addr)
        if found is None:
            self.log.WARN(f"find_unlink_vmap_area: no busy vmap_area at {addr:#x}")
            return
        log = self.log
        log.depth += 1  # log.enter(), inlined
        try:
            self.vmap_space.free_vmap_area_noflush(found, cpu=cpu)
            self._after_call()
        except BaseException:
            log.unwind()
            raise
        log.depth -= 1
        if log.pending or log.hung is not None:
            log.raise_held()

    def _vm_layer_owns(self, va: VmapArea) -> bool:
        """True if ``va`` belongs to the vmalloc layer: it holds a vm_struct, or it is
        a vm_map_ram area (a vmap block, or a large one; 4.19/5.4 mark neither in
        ``va->flags``)."""
        if va.vm is not None or va.flags & VMAP_FLAGS_MASK:
            return True
        vm = self._vm
        if vm is None:  # the vmalloc layer was never built: nothing is its
            return False
        blocks = vm.blocks
        if blocks.large.get(va.va_start) is va:
            return True
        vb = blocks.index.get(blocks.addr_to_vb_idx(va.va_start))
        return vb is not None and vb.va is va

    def free_vmap_area(self, va: VmapArea) -> None:
        """``free_vmap_area``: immediate (non-lazy) free, as error paths do.

        A busy area of another model, or one the vmalloc layer owns, is refused
        before any change (the vmap layer refuses freed ones as the model's own).
        """
        self._check_own_bare_area("free_vmap_area", va)
        with self.log.api():
            self.vmap_space.free_vmap_area(va)

    def _check_own_bare_area(self, call: str, va: object) -> None:
        """Refuse a ``va`` that is not this model's busy (or freed) bare area."""
        if not isinstance(va, VmapArea):
            raise TypeError(f"{call}: expected a VmapArea, not {va!r}")
        if va.state == VaState.BUSY and self.vmap_space.find_vmap_area(va.va_start) is not va:
            raise ValueError(f"{call}: {va!r} is not a busy area of this model")
        if va.state == VaState.BUSY and self._vm_layer_owns(va):
            raise ValueError(
                f"{call}: {va!r} holds a vm_struct or vm_map_ram pages; release it with "
                "the call that made it (vfree, vunmap, iounmap, free_vm_area, vm_unmap_ram)"
            )

    def purge_vmap_area_lazy(self) -> bool:
        """Purge lazily freed areas now; True if any were purged.

        5.4: ``purge_vmap_area_lazy()``. 6.18: what the ``drain_vmap_work`` worker runs,
        ``__purge_vmap_area_lazy(ULONG_MAX, 0, false)`` (pools decay by 25 %).
        """
        with self.log.api():
            done = self.vmap_space.purge_vmap_area_lazy()
            self._after_call()
        return done

    def reclaim_and_purge_vmap_areas(self) -> bool:
        """The allocation-failure purge (6.x: pools fully decayed, none refilled)."""
        with self.log.api():
            return self.vmap_space.reclaim_and_purge_vmap_areas()

    def pcpu_get_vm_areas(
        self, offsets: list[int], sizes: list[int], align: int, cpu: int = 0
    ) -> list[VmapArea] | None:
        """``pcpu_get_vm_areas(offsets, sizes, nr_vms, align)``: congruent areas."""
        self._check_cpu(cpu)
        with self.log.api():
            vas = pcpu_get_vm_areas(self.vmap_space, offsets, sizes, align, cpu)
            self._after_call()
        return vas

    def pcpu_free_vm_areas(self, vas: list[VmapArea], cpu: int = 0) -> None:
        """``pcpu_free_vm_areas(vms, nr_vms)``: free them lazily.

        An area already freed gets the model's 'is not busy' WARN; one of another
        model, or one the vmalloc layer owns, is refused before any change.
        """
        self._check_cpu(cpu)
        vas = list(vas)
        for va in vas:
            if isinstance(va, VmapArea) and va.state != VaState.BUSY:
                continue  # freed already: the WARN below, per area
            self._check_own_bare_area("pcpu_free_vm_areas", va)
        with self.log.api():
            pcpu_free_vm_areas(self.vmap_space, vas, cpu)
            self._after_call()

    def run_deferred_work(self) -> int:
        """Run the pending work items (6.x lazy purge worker); return how many ran."""
        with self.log.api():
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
        fn = self._probe(fn)
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

    def _probe(self, fn: Callable[[TraceEvent], None]) -> Callable[[TraceEvent], None]:
        """``fn`` as a tracepoint probe: a probe cannot abort the traced operation,
        so an exception it raises is held and raised when the API call returns (the
        model stays consistent); later events of the same call skip it."""
        log = self.log

        def probe(event: TraceEvent) -> None:
            if log.probe_error is not None:
                return
            try:
                fn(event)
            except Exception as e:
                if not log.depth:
                    raise
                log.probe_error = e
                log.pending.append(f"trace subscriber {fn!r} raised {type(e).__name__}")

        probe.subscriber = fn  # type: ignore[attr-defined]
        return probe

    def trace_unsubscribe(self, fn: Callable[[TraceEvent], None]) -> None:
        for lst in (self.vmap_space.tp_alloc, self.vmap_space.tp_free, self.vmap_space.tp_purge):
            lst[:] = [p for p in lst if p is not fn and getattr(p, "subscriber", None) is not fn]

    # --- whole-model checks -----------------------------------------------------------
    def check(self, *, full: bool = True) -> None:
        """Run every invariant of every layer; raise on the first broken one.

        With the memory layers built this also runs the page allocator's,
        the page tables' and the slab's checks and the vmalloc accounting check
        (every page taken since boot is vmalloc'ed, slab, page-table or user-held).

        ``full=False`` runs only the O(1) checks (the API boundary is unwound, no
        leaked area, the page accounting balances, the allocator's counters are
        sane): cheap enough after every step of a long random sequence, with a full
        check every so many steps.
        """
        if not full:
            self._check_quick()
            return
        self._check_quick()
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

    def _check_quick(self) -> None:
        log = self.log
        if log.depth or log.pending or log.hung is not None:
            raise InvariantError(
                f"an API call did not unwind: depth {log.depth}, held {log.pending!r}"
            )
        space = self.vmap_space
        if space.nr_busy < 0 or space.vmap_lazy_nr < 0:
            raise InvariantError(
                f"vmap counters: {space.nr_busy} busy, vmap_lazy_nr {space.vmap_lazy_nr}"
            )
        vm = self._vm
        if vm is None:
            return
        if vm.leaked:
            vm.check()  # names the leaked area
        slab = self.slab
        expect = (
            vm.nr_vmalloc_pages
            + vm.put_pages
            + slab.slab_pages
            + slab.large_pages
            + self.pgtable_pages_added()
            + vm.external_pages
        )
        if self.phys_pages_used() != expect or vm.external_pages != len(vm.user_pfns):
            vm.check()  # the full accounting check says which term is off
            raise InvariantError(
                f"user pages: {vm.external_pages} counted, {len(vm.user_pfns)} held"
            )

    # --- vmalloc API (kernel names; cpu= is the CPU the call runs on) ---------------
    # Each is the vmalloc layer's function (pyvmalloc.vmalloc.Vmalloc), with its
    # signature and docstring; kernel names starting with "__" are spelled with one
    # "_" here and installed under the exact name below (install_kernel_names).
    vmalloc = _VmallocApi(lambda vm: vm.vmalloc)
    vzalloc = _VmallocApi(lambda vm: vm.vzalloc)
    vmalloc_node = _VmallocApi(lambda vm: vm.vmalloc_node)
    vzalloc_node = _VmallocApi(lambda vm: vm.vzalloc_node)
    vmalloc_user = _VmallocApi(lambda vm: vm.vmalloc_user)
    vmalloc_32 = _VmallocApi(lambda vm: vm.vmalloc_32)
    vmalloc_32_user = _VmallocApi(lambda vm: vm.vmalloc_32_user)
    vmalloc_huge = _VmallocApi(lambda vm: vm.vmalloc_huge)
    _vmalloc = _VmallocApi(lambda vm: vm._vmalloc)
    _vmalloc_node = _VmallocApi(lambda vm: vm.vmalloc_node_api)
    _vmalloc_node_range = _VmallocApi(lambda vm: vm.vmalloc_node_range_api)
    vfree = _VmallocApi(lambda vm: vm.vfree)
    vfree_atomic = _VmallocApi(lambda vm: vm.vfree_atomic)
    vunmap = _VmallocApi(lambda vm: vm.vunmap)
    vmap = _VmallocApi(lambda vm: vm.vmap)
    vmap_pfn = _VmallocApi(lambda vm: vm.vmap_pfn)
    ioremap = _VmallocApi(lambda vm: vm.ioremap)
    iounmap = _VmallocApi(lambda vm: vm.iounmap)
    vm_map_ram = _VmallocApi(lambda vm: vm.vm_map_ram)
    vm_unmap_ram = _VmallocApi(lambda vm: vm.vm_unmap_ram)
    vm_unmap_aliases = _VmallocApi(lambda vm: vm.vm_unmap_aliases)
    get_vm_area = _VmallocApi(lambda vm: vm.get_vm_area_api)
    get_vm_area_caller = _VmallocApi(lambda vm: vm.get_vm_area_caller_api)
    _get_vm_area_caller = _VmallocApi(lambda vm: vm.get_vm_area_caller_range_api)
    find_vm_area = _VmallocApi(lambda vm: vm.find_vm_area)
    remove_vm_area = _VmallocApi(lambda vm: vm.remove_vm_area_api)
    free_vm_area = _VmallocApi(lambda vm: vm.free_vm_area_api)
    vrealloc = _VmallocApi(lambda vm: vm.vrealloc)
    kvmalloc = _VmallocApi(lambda vm: vm.kvmalloc)
    kvmalloc_node = _VmallocApi(lambda vm: vm.kvmalloc_node)
    kvzalloc = _VmallocApi(lambda vm: vm.kvzalloc)
    kvfree = _VmallocApi(lambda vm: vm.kvfree)
    alloc_pages = _VmallocApi(lambda vm: vm.alloc_pages)
    free_pages = _VmallocApi(lambda vm: vm.free_pages)
    vmalloc_to_pfn = _VmallocApi(lambda vm: vm.vmalloc_to_pfn)
    vread = _VmallocApi(lambda vm: vm.vread)
    vwrite = _VmallocApi(lambda vm: vm.vwrite)

    def kmalloc(self, size: int, gfp: int = GFP_KERNEL) -> int:
        """``kmalloc(size, gfp)`` (direct-map address or 0); ``size`` is a ``size_t``."""
        size = ulong("size", size, self.machine.bits_per_long)
        gfp = uint("gfp", gfp)
        with self.log.api():
            return self.slab.kmalloc(size, gfp)

    def kfree(self, addr: int) -> None:
        """``kfree(addr)``."""
        addr = ulong("addr", addr, self.machine.bits_per_long)
        with self.log.api():
            if not self.slab.kfree(addr):
                self.log.WARN(f"kfree: invalid object {addr:#x}")

    def is_vmalloc_addr(self, addr: int) -> bool:
        """``is_vmalloc_addr(addr)``."""
        return self.VMALLOC_START <= addr < self.VMALLOC_END

    def read(self, addr: int, n: int) -> bytes:
        """A kernel load through the page tables; raises PageFault like the CPU."""
        bits = self.machine.bits_per_long
        return self.pgtables.read(ulong("addr", addr, bits), ulong("n", n, bits))

    def write(self, addr: int, data: bytes) -> None:
        """A kernel store through the page tables; raises PageFault like the CPU."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self.pgtables.write(ulong("addr", addr, self.machine.bits_per_long), data)

    def walk(self, addr: int) -> str:
        """The page-table walk of ``addr``, rendered."""
        return self.pgtables.render_walk(ulong("addr", addr, self.machine.bits_per_long))

    # --- /proc -------------------------------------------------------------------
    def vmallocinfo(self) -> str:
        """``/proc/vmallocinfo`` in this kernel version's format and order."""
        from pyvmalloc.procfs import vmallocinfo

        return vmallocinfo(
            self.profile,
            self.machine,
            self.vmap_space,
            self.phys,
            numa=self.config_numa,
            kptr_restrict=self.kptr_restrict,
        )

    def meminfo(self) -> str:
        """The ``Vmalloc*`` lines of ``/proc/meminfo``.

        A ``CONFIG_HIGHMEM`` kernel (i386, 32-bit arm unless ``highmem=False``) prints
        ``HighTotal``/``HighFree``/``LowTotal``/``LowFree`` first, in that order, as
        ``fs/proc/meminfo.c`` does (4.19 to 6.18): totals from the zones' managed pages,
        free counts from their buddy lists (``NR_FREE_PAGES``).
        """
        from pyvmalloc.procfs import meminfo

        used = self.nr_vmalloc_pages if self.profile.meminfo_vmalloc_used else 0
        lines = meminfo(self.machine, used)
        m = self.machine
        if m.arch not in ("i386", "arm") or not m.highmem:  # no CONFIG_HIGHMEM
            return lines
        phys = self.phys
        high = [z for z in phys.zones if z.idx == phys.highmem_idx]
        total_high = sum(z.managed for z in high)
        free_high = sum(z.free_pages for z in high)
        kb = self.machine.page_size >> 10
        rows = [
            ("HighTotal:      ", total_high),
            ("HighFree:       ", free_high),
            ("LowTotal:       ", phys.totalram_pages - total_high),
            ("LowFree:        ", phys.nr_free_pages() - free_high),
        ]
        return "".join(f"{name}{n * kb:8d} kB\n" for name, n in rows) + lines

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
        if cpu.__class__ is not int:
            integer("cpu", cpu)
        if not 0 <= cpu < self.machine.cpus_online:
            self.machine.check_cpu(cpu)  # raises the error

    def __repr__(self) -> str:
        m = self.machine
        return (
            f"<Kernel {self.profile.name} {m.arch} {m.paging_levels}-level "
            f"{m.cpus_online} CPUs, {self.vmap_space.nr_busy} busy areas>"
        )


# Kernel names starting with "__" (a class body would mangle them): the one rule.
install_kernel_names(
    Kernel, "__vmalloc", "__vmalloc_node", "__vmalloc_node_range", "__get_vm_area_caller"
)
