"""The vmalloc layer is built from the layers below it, without a Kernel."""

from __future__ import annotations

from collections.abc import Callable

from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.pgtable import PageFault, PageTables
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog
from pyvmalloc.procfs import meminfo, vmallocinfo
from pyvmalloc.slab import SlabAllocator
from pyvmalloc.vmalloc import Vmalloc, describe_fault
from pyvmalloc.vmap.placement import LowestMatch
from pyvmalloc.vmap.pools import NoPools
from pyvmalloc.vmap.space import VmapSpace

START = 0xFFFFC90000000000


def test_vmalloc_layer_standalone() -> None:
    m = Machine(ram="256M")
    profile = PROFILES["5.4"]
    log = KernelLog()
    space = VmapSpace(m, profile, log, placement=LowestMatch(), pools=NoPools())
    phys = PhysicalMemory(m, profile, log)
    pgt = PageTables(m, phys, log, fault_describer=lambda a: describe_fault(m, space, a))
    slab = SlabAllocator(phys, m.cpus_possible)
    work: list[tuple[str, Callable[[], None]]] = []
    irq = [False]
    vm = Vmalloc(
        m,
        profile,
        log,
        space,
        phys,
        pgt,
        slab,
        schedule_work=lambda name, fn: work.append((name, fn)),
        in_interrupt=lambda: irq[0],
    )
    a = vm.vmalloc(8192, cpu=1, caller="t+0x0/0x1")
    assert a == START  # empty space: the lowest fit
    assert vmallocinfo(profile, m, space, phys) == (
        "0xffffc90000000000-0xffffc90000003000   12288 t+0x0/0x1 pages=2 vmalloc N0=2\n"
    )
    assert meminfo(m, vm.nr_vmalloc_pages).splitlines()[1] == "VmallocUsed:           8 kB"
    # The guard page faults, and the page tables name the area (describe_fault).
    try:
        pgt.read(a + 8192, 1)
    except PageFault as e:
        assert "guard page of vmalloc area 0xffffc90000000000-0xffffc90000003000" in str(e)
    else:
        raise AssertionError("the guard page is mapped")
    # In interrupt context vfree defers to the work item of the calling CPU.
    irq[0] = True
    vm.vfree(a, cpu=1)
    assert [name for name, _ in work] == ["vfree_deferred/1"] and vm.deferred[1] == [a]
    irq[0] = False
    work.pop()[1]()
    assert vm.nr_vmalloc_pages == 0 and vm.find_vm_area(a) is None
    vm.check()
