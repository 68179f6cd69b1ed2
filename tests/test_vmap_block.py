"""vm_map_ram and per-CPU vmap blocks."""

from __future__ import annotations

import pytest

from pyvmalloc.kernel import Kernel

BLOCK = 4 << 20
PAGE = 4096


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_bump_allocation_and_recycle(profile: str) -> None:
    k = Kernel(profile)
    pages = k.alloc_pages(3)
    a = k.vm_map_ram(pages[:1])
    b = k.vm_map_ram(pages[:3])  # order 2: 4 pages
    c = k.vm_map_ram(pages[:1])
    assert a % BLOCK == 0 and b == a + PAGE and c == b + 4 * PAGE
    k.write(b + 2 * PAGE, b"zz")
    assert k.phys.read(pages[2], 0, 2) == b"zz"
    d = k.vm_map_ram(pages[:1], cpu=1)  # another CPU: its own block
    assert d == a + BLOCK
    for addr, n, cpu in ((a, 1, 0), (b, 3, 0), (c, 1, 0), (d, 1, 1)):
        k.vm_unmap_ram(addr, n, cpu=cpu)
    k.check()
    blocks = k.vm.blocks
    assert len(blocks.index) == 2  # freed space is not reused, blocks stay
    k.vmap_space.reclaim_and_purge_vmap_areas()  # forced purge of fragmented blocks
    assert len(blocks.index) == 0
    k.free_pages(pages)
    k.check()


def test_large_vm_map_ram() -> None:
    k = Kernel()
    pages = k.alloc_pages(65)
    a = k.vm_map_ram(pages)
    assert (
        k.vmallocinfo().splitlines()[0] == f"0x{a:016x}-0x{a + 65 * PAGE:016x}  266240 vm_map_ram"
    )
    k.vm_unmap_ram(a, 65)
    assert k.vmallocinfo().splitlines()[0].endswith("266240 unpurged vm_area")
    k.free_pages(pages)
    k.check()


def test_full_block_is_freed() -> None:
    k = Kernel()
    pages = k.alloc_pages(64)
    addrs = [k.vm_map_ram(pages) for _ in range(16)]  # 16 x 64 pages = one block
    assert len(k.vm.blocks.index) == 1 and not k.vm.blocks.vbq[0]
    for a in addrs:
        k.vm_unmap_ram(a, 64)
    assert len(k.vm.blocks.index) == 0 and len(k.vmap_space.lazy) == 1
    k.free_pages(pages)
    k.check()
