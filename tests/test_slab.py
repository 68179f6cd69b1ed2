"""The kmalloc model: size classes, large kmalloc, accounting."""

from __future__ import annotations

import pytest

from pyvmalloc.kernel import Kernel
from pyvmalloc.slab import KMALLOC_MAX_CACHE_SIZE, get_order, kmalloc_index_size


@pytest.mark.parametrize(
    ("size", "cls"),
    [(1, 8), (8, 8), (9, 16), (64, 64), (65, 96), (96, 96), (97, 128), (129, 192),
     (193, 256), (4097, 8192), (8192, 8192), (8193, 0)],
)  # fmt: skip
def test_size_classes(size: int, cls: int) -> None:
    assert kmalloc_index_size(size) == cls


def test_constants() -> None:
    assert KMALLOC_MAX_CACHE_SIZE == 8192
    assert get_order(4096) == 0 and get_order(4097) == 1 and get_order(1 << 20) == 8


def test_kmalloc_accounting_and_reuse() -> None:
    k = Kernel()
    a = k.kmalloc(72)
    b = k.kmalloc(72)
    assert b - a == 96 and k.slab.slab_bytes == 192
    k.kfree(a)
    c = k.kmalloc(80)
    assert c == a  # lowest free index reused
    big = k.kmalloc(20000)
    assert k.slab.ksize(big) == 32768 and k.slab.large_pages == 8
    k.write(big + 100, b"hi")
    assert k.read(big + 100, 2) == b"hi"
    for x in (b, c, big):
        k.kfree(x)
    assert k.slab.slab_bytes == 0 and k.slab.slab_pages == 0
    k.check()
    k.kfree(a + 1)
    assert "kfree: invalid object" in k.log.lines[-1].text
    assert k.kmalloc(0) == 16  # ZERO_SIZE_PTR
    assert "kmalloc-96" in k.slab.slabinfo()


def test_object_order_fresh_lowest_first_then_lifo() -> None:
    # SLUB without freelist randomisation: a new slab hands out its objects in address
    # order; a freed object is the next one handed out (LIFO).
    k = Kernel()
    s = k.slab
    a = [s.kmalloc(200, 0xCC0) for _ in range(5)]  # kmalloc-256: 16 per 4 KiB slab
    assert a[0] & 0xFFF == 0
    assert [x - a[0] for x in a] == [0, 256, 512, 768, 1024]
    s.kfree(a[3])
    s.kfree(a[1])
    assert s.kmalloc(200, 0xCC0) == a[1]
    assert s.kmalloc(200, 0xCC0) == a[3]
    assert s.kmalloc(200, 0xCC0) == a[4] + 256  # then the never-used ones again
    s.check()


def test_kfree_of_a_slab_tail_is_not_an_object() -> None:
    # kmalloc-96: 42 objects fill 4032 bytes of the page; 4032.. is no object.
    k = Kernel()
    s = k.slab
    a = s.kmalloc(96, 0xCC0)
    assert a & 0xFFF == 0  # the first object of a new slab
    assert s.kfree(a + 42 * 96) is False
    assert s.kfree(a + 96) is False  # a free object: a double free
    assert s.kfree(a) is True
    s.check()
