"""The 64 GiB machine: columns stay compact and the build is fast."""

import time

from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog


def test_64g_machine_is_compact_and_fast():
    t = time.perf_counter()
    pm = PhysicalMemory(Machine(ram="64G"), PROFILES["6.18"], KernelLog())
    build = time.perf_counter() - t
    assert build < 5.0
    assert pm.column_bytes / pm.max_pfn < 20  # 12 bytes per page measured by nbytes
    assert pm.column_bytes < 256 << 20
    assert pm.zones[2].nr_free[10] == 15360
    p = pm.alloc_pages(GFP_KERNEL, 10)
    assert p == 0x100000
    pm.free_pages(p, 10)
    assert pm.zones[2].free_list(10)[0] == 0x100000
