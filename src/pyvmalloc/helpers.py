"""drgn-style helpers over a model :class:`~pyvmalloc.kernel.Kernel`.

drgn's ``drgn.helpers.linux.mm`` walks a live kernel with ``for_each_vmap_area(prog)``,
``find_vmap_area(prog, addr)`` and ``vmalloc_to_page(prog, addr)``; these take a model
kernel instead, so a script written against one reads the other:

>>> from pyvmalloc import Kernel
>>> from pyvmalloc.helpers import find_vmap_area, for_each_vmap_area, vmalloc_to_page
>>> k = Kernel("6.18", cpus=2)
>>> p = k.vmalloc(8192)
>>> [hex(va.va_start) for va in for_each_vmap_area(k)]
['0xffffc90000000000']
>>> find_vmap_area(k, p + 4096).size   # two pages and the guard page
12288
>>> page = vmalloc_to_page(k, p)
>>> page.zone, page.refcount, hex(page.area.addr)
('Normal', 1, '0xffffc90000000000')
>>> vmalloc_to_page(k, p + 8192) is None   # the guard page is never mapped
True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pyvmalloc.config import PAGE_SHIFT
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.vmalloc import Vmalloc, VmStruct
from pyvmalloc.vmap.area import VmapArea
from pyvmalloc.vmap.space import VmapSpace


class Kernel(Protocol):
    """What the helpers read of a model (a :class:`pyvmalloc.kernel.Kernel`)."""

    @property
    def vmap_space(self) -> VmapSpace: ...
    @property
    def vm(self) -> Vmalloc: ...
    @property
    def phys(self) -> PhysicalMemory: ...


__all__ = [
    "Page",
    "find_vmap_area",
    "for_each_vm_area",
    "for_each_vmap_area",
    "vmalloc_to_page",
    "vmalloc_to_pfn",
]


class Page(int):
    """The model's ``struct page`` of one physical page, as ``vmalloc_to_page`` finds it.

    It *is* the page frame number (an ``int``: ``page << PAGE_SHIFT``, ``page == pfn``
    and array indexing work as with the pfns the layers use), with the page's fields
    attached: ``node``, ``zone``, ``flags`` (the page-flag names the model keeps),
    ``refcount`` (``page_ref_count(page)``), ``area`` (the ``vm_struct`` whose mapping
    led here) and ``vmap_area`` (its ``struct vmap_area``; None for mappings without).
    """

    node: int
    zone: str
    flags: tuple[str, ...]
    refcount: int
    area: VmStruct | None
    vmap_area: VmapArea | None

    def __new__(
        cls,
        pfn: int,
        node: int,
        zone: str,
        flags: tuple[str, ...],
        refcount: int,
        area: VmStruct | None = None,
        vmap_area: VmapArea | None = None,
    ) -> Page:
        page = super().__new__(cls, pfn)
        page.node = node
        page.zone = zone
        page.flags = flags
        page.refcount = refcount
        page.area = area
        page.vmap_area = vmap_area
        return page

    @property
    def pfn(self) -> int:
        """``page_to_pfn(page)``."""
        return int(self)

    @property
    def phys_addr(self) -> int:
        """``page_to_phys(page)``."""
        return int(self) << PAGE_SHIFT

    def __repr__(self) -> str:
        where = ""
        if self.vmap_area is not None:
            where = f" mapped by {self.vmap_area.va_start:#x}-{self.vmap_area.va_end:#x}"
        flags = "|".join(self.flags) or "0"
        return (
            f"<page pfn {self.pfn:#x} phys {self.phys_addr:#x} node {self.node} "
            f"{self.zone} refcount {self.refcount} flags {flags}{where}>"
        )


def for_each_vmap_area(k: Kernel) -> Iterator[VmapArea]:
    """Every busy ``struct vmap_area``, in the kernel's order (node by node, ascending).

    Lazily freed and pooled areas are not busy: the kernel's busy trees no longer hold
    them, and neither does this iterator (see ``pyvmalloc kmem`` for those).
    """
    return k.vmap_space.busy_areas()


def for_each_vm_area(k: Kernel) -> Iterator[VmStruct]:
    """Every ``struct vm_struct``: ``va->vm`` of each busy area that has one.

    ``vm_map_ram`` areas have none (their vmap_area carries ``VMAP_RAM``), as in the
    kernel.
    """
    for va in k.vmap_space.busy_areas():
        if va.vm is not None:
            yield va.vm


def find_vmap_area(k: Kernel, addr: int) -> VmapArea | None:
    """``find_vmap_area(addr)``: the busy area whose ``[va_start, va_end)`` holds ``addr``."""
    return k.vmap_space.find_vmap_area(addr)


def vmalloc_to_pfn(k: Kernel, addr: int) -> int:
    """``vmalloc_to_pfn(addr)``: the page frame mapped at ``addr``; 0 when none is."""
    return k.vm.vmalloc_to_pfn(addr)


def vmalloc_to_page(k: Kernel, addr: int) -> Page | None:
    """``vmalloc_to_page(addr)``: the page mapped at ``addr`` (``None`` for NULL).

    Walks the model's page tables like the kernel does; then reads the page's columns
    (node, zone, flags, refcount) and finds the area whose mapping it is.
    """
    pfn = k.vm.vmalloc_to_page(addr)  # the vmalloc layer's page-table lookup: a pfn
    if pfn is None:
        return None
    phys = k.phys
    if not phys.pfn_valid(pfn):
        # vmap_pfn/ioremap can map frames the page allocator does not own (no page).
        return Page(pfn, -1, "none", ("no struct page",), 0, k.vm.find_vm_area(addr))
    va = k.vmap_space.find_vmap_area(addr)
    return Page(
        pfn=pfn,
        node=phys.page_to_nid(pfn),
        zone=phys.page_zone(pfn).name,
        flags=tuple(phys.page_flags(pfn)),
        refcount=int(phys.refcount[pfn]),
        area=va.vm if va is not None else None,
        vmap_area=va,
    )
