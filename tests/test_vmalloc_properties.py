"""Randomized whole-API sequences with Kernel.check() after every step."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvmalloc.kernel import Kernel
from pyvmalloc.vmalloc import VM_MAP

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["vmalloc", "vzalloc", "huge", "vmap", "ram", "io", "kv", "free", "free_irq", "purge"]
        ),
        st.integers(1, 3 << 20),
        st.integers(0, 1),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(profile=st.sampled_from(["5.4", "6.18"]), ops=OPS)
def test_random_api_sequences(profile: str, ops: list[tuple[str, int, int]]) -> None:
    k = Kernel(profile, ram="256M")
    live: list[tuple[str, int, list[int]]] = []
    for op, n, cpu in ops:
        if op == "vmalloc":
            a = k.vmalloc(n, cpu=cpu)
            if a:
                live.append(("v", a, []))
        elif op == "vzalloc":
            a = k.vzalloc(n % 70000 + 1, cpu=cpu)
            if a:
                assert k.read(a, 8) == bytes(8)
                live.append(("v", a, []))
        elif op == "huge" and profile == "6.18":
            a = k.vmalloc_huge(n, cpu=cpu)
            if a:
                live.append(("v", a, []))
        elif op == "vmap":
            pages = k.alloc_pages(n % 8 + 1)
            a = k.vmap(pages, flags=VM_MAP, cpu=cpu)
            live.append(("m", a, pages))
        elif op == "ram":
            pages = k.alloc_pages(n % 80 + 1)
            a = k.vm_map_ram(pages, cpu=cpu)
            live.append(("r", a, pages))
        elif op == "io":
            a = k.ioremap(0xFE000000 + n, n % 50000 + 1, cpu=cpu)
            live.append(("i", a, []))
        elif op == "kv":
            a = k.kvmalloc(n, cpu=cpu)
            if a:
                live.append(("k", a, []))
        elif op in ("free", "free_irq") and live:
            kind, a, pages = live.pop(n % len(live))
            if kind == "v":
                k.vfree(a, cpu=cpu, in_interrupt=op == "free_irq")
            elif kind == "m":
                k.vunmap(a, cpu=cpu)
                k.free_pages(pages)
            elif kind == "r":
                k.vm_unmap_ram(a, len(pages), cpu=cpu)
                k.free_pages(pages)
            elif kind == "i":
                k.iounmap(a, cpu=cpu)
            else:
                k.kvfree(a, cpu=cpu)
        elif op == "purge":
            k.vm_unmap_aliases(cpu=cpu)
        k.check()
    for kind, a, pages in live:
        if kind == "v":
            k.vfree(a)
        elif kind == "m":
            k.vunmap(a)
            k.free_pages(pages)
        elif kind == "r":
            k.vm_unmap_ram(a, len(pages))
            k.free_pages(pages)
        elif kind == "i":
            k.iounmap(a)
        else:
            k.kvfree(a)
    k.vm_unmap_aliases()
    k.check()
    assert k.nr_vmalloc_pages == 0 and k.slab.slab_bytes == 0
    assert k.phys_pages_used() == k.pgtable_pages_added()
    assert not [line for line in k.log.lines if line.level in ("WARN", "BUG")]
