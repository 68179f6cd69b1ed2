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
>>> k.vmap.vmap_lazy_nr
2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pyvmalloc.config import KernelProfile, Machine, get_profile
from pyvmalloc.printk import KernelLog
from pyvmalloc.trace.events import TraceEvent
from pyvmalloc.vmap.area import NUMA_NO_NODE, VaState, VmapArea, VmapSpace, is_err

__all__ = ["Kernel", "Work", "WorkQueue", "is_err"]


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
        arch: Literal["x86_64", "i386"] = "x86_64",
        nr_cpus: int = 256,
        strict: bool = False,
        deferred_work: Literal["auto", "manual"] = "auto",
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
        space_class = VmapSpace
        if self.profile.allocator == "list":
            from pyvmalloc.vmap.list419 import ListVmapSpace

            space_class = ListVmapSpace
        self.vmap = space_class(
            machine,
            self.profile,
            self.log,
            clock=self._clock,
            schedule_work=self.workqueue.schedule_work,
        )

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
        va = self.vmap.alloc_vmap_area(
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
        return self.vmap.find_vmap_area(addr)

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
        found = self.vmap.find_unlink_vmap_area(addr)
        if found is None:
            self.log.WARN(f"find_unlink_vmap_area: no busy vmap_area at {addr:#x}")
            return
        self.vmap.free_vmap_area_noflush(found, cpu=cpu)
        self._after_call()

    def free_vmap_area(self, va: VmapArea) -> None:
        """``free_vmap_area``: immediate (non-lazy) free, as error paths do."""
        self.vmap.free_vmap_area(va)

    def purge_vmap_area_lazy(self) -> bool:
        """Purge lazily freed areas now; True if any were purged.

        5.4: ``purge_vmap_area_lazy()``. 6.18: what the ``drain_vmap_work`` worker runs,
        ``__purge_vmap_area_lazy(ULONG_MAX, 0, false)`` (pools decay by 25 %).
        """
        done = self.vmap.purge_vmap_area_lazy()
        self._after_call()
        return done

    def reclaim_and_purge_vmap_areas(self) -> bool:
        """The allocation-failure purge (6.x: pools fully decayed, none refilled)."""
        return self.vmap.reclaim_and_purge_vmap_areas()

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
        return self.vmap.vmap_node_shrink_scan() if mode & 2 else 0

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
            "alloc_vmap_area": self.vmap.tp_alloc,
            "free_vmap_area_noflush": self.vmap.tp_free,
            "purge_vmap_area_lazy": self.vmap.tp_purge,
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
        for lst in (self.vmap.tp_alloc, self.vmap.tp_free, self.vmap.tp_purge):
            while fn in lst:
                lst.remove(fn)

    # --- whole-model checks -----------------------------------------------------------
    def check(self) -> None:
        """Run every invariant of every layer; raise on the first broken one."""
        self.vmap.check()

    def dmesg(self) -> str:
        return self.log.dmesg()

    def _check_cpu(self, cpu: int) -> None:
        if not 0 <= cpu < self.machine.cpus_online:
            raise ValueError(f"cpu {cpu} is not online (0..{self.machine.cpus_online - 1})")

    def __repr__(self) -> str:
        m = self.machine
        return (
            f"<Kernel {self.profile.name} {m.arch} {m.paging_levels}-level "
            f"{m.cpus_online} CPUs, {self.vmap.nr_busy} busy areas>"
        )

