"""Physical memory: machine layout, zones and the buddy page allocator.

See :mod:`pyvmalloc.phys.buddy` for what follows the kernel and what is simplified,
and :mod:`pyvmalloc.phys.layout` for the e820-like boot map.
"""

from pyvmalloc.phys.buddy import (
    NUMA_NO_NODE,
    OWNER_KERNEL,
    OWNER_MEMMAP,
    OWNER_NONE,
    OWNER_PGTABLE,
    PG_ALLOC,
    PG_BUDDY,
    PG_HOLE,
    PG_PCP,
    PG_PGTABLE,
    PG_RESERVED,
    InvariantError,
    PhysicalMemory,
    Zone,
)
from pyvmalloc.phys.layout import MemoryLayout, build_layout

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
    "MemoryLayout",
    "PhysicalMemory",
    "Zone",
    "build_layout",
]
