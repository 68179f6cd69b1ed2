"""Machine memory layout: e820-like map, zones, NUMA, i386 highmem."""

import pytest

from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog


def mk(**kw):
    return PhysicalMemory(Machine(**kw), PROFILES["6.18"], KernelLog())


def zones(pm):
    return {(z.nid, z.name): z for z in pm.zones}


def test_default_x86_64_zones():
    pm = mk()
    z = zones(pm)
    assert list(z) == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    dma = z[0, "DMA"]
    # the kernel's familiar /proc/zoneinfo numbers for ZONE_DMA
    assert (dma.start_pfn, dma.spanned, dma.present, dma.managed) == (1, 4095, 3998, 3840)
    dma32 = z[0, "DMA32"]
    assert (dma32.start_pfn, dma32.end_pfn) == (0x1000, 0x100000)
    assert dma32.present == 0xC0000 - 0x1000  # PCI hole 3..4 GiB
    assert dma32.managed == dma32.present - 8192  # 32 MiB kernel image at 16 MiB
    normal = z[0, "Normal"]
    assert (normal.start_pfn, normal.end_pfn) == (0x100000, 0x140000)
    # 32 sections of 128 MiB with RAM -> 32 x 2 MiB of struct pages at the top
    assert normal.managed == 0x40000 - 32 * 512
    assert pm.totalram_pages == 3840 + dma32.managed + normal.managed


def test_small_machine_has_no_normal_zone():
    pm = mk(ram="2G")
    assert [z.name for z in pm.zones] == ["DMA", "DMA32"]


def test_numa_split():
    pm = mk(ram="8G", numa_nodes=2)
    z = zones(pm)
    assert (0, "DMA") in z and (1, "Normal") in z
    n0 = sum(x.present for x in pm.zones if x.nid == 0)
    n1 = sum(x.present for x in pm.zones if x.nid == 1)
    assert abs(n0 - n1) <= 1024
    assert pm.page_to_nid(z[1, "Normal"].start_pfn) == 1
    assert pm.page_to_nid(0x2000) == 0


def test_i386_layout_and_highmem():
    m = Machine(arch="i386", ram="2G")
    lay = m.layout
    assert lay["VMALLOC_END"] == 0xFF3FE000  # PKMAP_BASE - 2 pages
    assert lay["PKMAP_BASE"] == 0xFF400000
    assert lay["MAXMEM"] == 0xFF3FE000 - 0xC0000000 - (128 << 20)
    assert lay["CLASSIC_MAXMEM"] == 896 << 20
    assert lay["LOWMEM_BYTES"] == lay["MAXMEM"]
    assert m.vmalloc_start == 0xC0000000 + lay["MAXMEM"] + (8 << 20)
    pm = PhysicalMemory(m, PROFILES["6.18"], KernelLog())
    z = zones(pm)
    assert list(z) == [(0, "DMA"), (0, "Normal"), (0, "HighMem")]
    assert z[0, "Normal"].end_pfn == lay["MAXMEM"] >> 12
    assert z[0, "HighMem"].end_pfn == (2 << 30) >> 12
    with pytest.raises(ValueError):
        pm.page_address(z[0, "HighMem"].start_pfn)
    assert pm.page_address(0x1000) == 0xC1000000


def test_i386_vmalloc_option_and_small_ram():
    m = Machine(arch="i386", ram="512M", vmalloc_reserve="256M")
    assert m.layout["VMALLOC_RESERVE"] == (256 + 8) << 20
    assert m.layout["LOWMEM_BYTES"] == 512 << 20  # all RAM is lowmem
    assert m.vmalloc_start == 0xC0000000 + (512 << 20) + (8 << 20)
    pm = PhysicalMemory(m, PROFILES["6.18"], KernelLog())
    assert [z.name for z in pm.zones] == ["DMA", "Normal"]


def test_watermarks_and_min_free_kbytes():
    pm = mk(ram="64M")
    dma, dma32 = pm.zones
    # lowmem = 3840 + 9728 pages = 54272 kB -> int_sqrt(54272 * 16) = 931
    assert pm.min_free_kbytes == 931
    # pages_min = 232, shared by managed pages; low/high add max(min/4, managed/1000)
    assert dma.wmark[:3] == [65, 81, 97]
    assert dma32.wmark[:3] == [166, 207, 248]
    assert dma.lowmem_reserve == [0, 9728 // 256, 9728 // 256, 9728 // 256]
    assert dma32.lowmem_reserve == [0, 0, 0, 0]
