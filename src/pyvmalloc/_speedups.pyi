# Type stub for the optional C accelerator (src/pyvmalloc/_speedups.c).
from typing import Any

def init_rbtree(node_type: type, root_type: type, /) -> None: ...
def init_vmap_area(va_type: type, free_augment: Any, free: int, detached: int, /) -> None: ...
def init_lowest_match(reference: Any, /) -> None: ...
def rb_insert_color(node: Any, root: Any, /) -> None: ...
def rb_insert_augmented(node: Any, root: Any, augment: Any, /) -> None: ...
def rb_erase(node: Any, root: Any, /) -> None: ...
def rb_erase_augmented(node: Any, root: Any, augment: Any, /) -> None: ...
def propagate(node: Any, stop: Any, /) -> None: ...
def busy_find(root: Any, addr: int, /) -> Any: ...
def busy_insert(root: Any, va: Any, /) -> Any: ...
def busy_unlink(root: Any, addr: int, /) -> Any: ...
def find_va_links(start: Any, va_start: int, va_end: int, /) -> Any: ...
def find_vmap_lowest_match(
    tree: Any, size: int, align: int, vstart: int, adjust: bool, shift: bool, /
) -> Any: ...
def merge_or_add(root: Any, va: Any, each_step: bool, /) -> tuple[Any, Any]: ...
def va_clip(root: Any, va: Any, nva: int, size: int, fits: list[int], /) -> Any: ...

# speedvm: page allocator, page tables, trace parser
def phys_prep_bulk(
    flags: Any,
    order: Any,
    refcount: Any,
    owner: Any,
    pfns: list[int],
    clear: int,
    set: int,
    owner_val: int,
    /,
) -> bool: ...
def phys_free_bulk_mark(
    flags: Any,
    order: Any,
    refcount: Any,
    owner: Any,
    zone: Any,
    pfns: list[int],
    alloc: int,
    pgtable: int,
    pcp: int,
    owner_none: int,
    /,
) -> int: ...
def deque_popleft_into(dq: Any, n: int, out: list[int], /) -> int: ...
def pte_fill(table: Any, idx: int, pfns: Any, j: int, k: int, protval: int, /) -> int: ...
def init_trace_events(alloc: type, free: type, purge: type, /) -> None: ...
def parse_tracefs(
    text: str, pos: int, lineno: int, cpus: int, out: list[Any], tasks: dict[str, str], /
) -> tuple[int, int]: ...

# whole vmalloc/vfree (helper vmallocc)
def init_vmalloc_whole(
    vmstruct: type,
    vmaparea: type,
    np_array: Any,
    np_int64: Any,
    np_empty: Any,
    space_globals: dict[str, Any],
    /,
) -> None: ...
def vmalloc_node_range(
    vm: Any, size: int, gfp: int, cpu: int, caller: str | None, /
) -> int | None: ...
def vfree(vm: Any, addr: int, cpu: int, /) -> bool | None: ...

# replay batch (helper replayc)

# bulk pages and multi-page vmalloc (helper bulkc)
def init_bulk_pages(
    phys_type: type,
    zone_type: type,
    deque_type: type,
    names: tuple[str, ...],
    originals: tuple[Any, ...],
    pg_buddy: int,
    pg_pcp: int,
    pg_alloc: int,
    pg_pgtable: int,
    owner_none: int,
    gfp_zero: int,
    /,
) -> None: ...
def phys_alloc_pages_bulk(
    phys: Any, gfp: int, nid: int, nr: int, out_list: list[int], /
) -> int | None: ...
def phys_free_pages_bulk(phys: Any, pfns: list[int], /) -> bool | None: ...
def init_bulk_ptes(
    pgt_type: type, names: tuple[str, ...], originals: tuple[Any, ...], /
) -> None: ...
def pte_map_cached(pgt: Any, addr: int, pages: Any, prot: int, /) -> bool | None: ...
def pte_clear_cached(pgt: Any, addr: int, size: int, /) -> bool | None: ...

# test-vmalloc harness (helper tvharness)
def tv_loops(
    h: tuple[Any, ...],
    n: int,
    sizes: tuple[int, ...],
    pages: tuple[int, ...],
    data: tuple[int, ...],
    /,
) -> tuple[int, int, tuple[int, ...]]: ...
