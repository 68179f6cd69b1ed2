"""GFP ("get free pages") flags with the kernel's names and v6.18 values.

Values follow ``include/linux/gfp_types.h`` for a config without
``CONFIG_KASAN_HW_TAGS`` and without ``CONFIG_LOCKDEP`` (so ``__GFP_SKIP_ZERO``,
``__GFP_SKIP_KASAN`` and ``__GFP_NOLOCKDEP`` are 0). Since v6.18 ``GFP_NOWAIT``
includes ``__GFP_NOWARN``.

Two spellings are provided:

* module-level constants with the kernel's exact names (``GFP_KERNEL``,
  ``__GFP_HIGHMEM`` ...), handy at module level and in tests;
* :class:`Gfp`, an :class:`enum.IntFlag` without the leading underscores
  (``Gfp.HIGHMEM``, ``Gfp.KERNEL``). Use it *inside class bodies*: Python mangles
  ``__GFP_X`` written inside a class into ``_Class__GFP_X``.

:func:`format_gfp` renders a mask as the kernel's ``%pGg`` does:

>>> format_gfp(GFP_KERNEL | __GFP_HIGHMEM | __GFP_NOWARN)
'GFP_KERNEL|__GFP_HIGHMEM|__GFP_NOWARN'
>>> format_gfp(GFP_ATOMIC | __GFP_NOWARN)
'GFP_ATOMIC|__GFP_NOWARN'
>>> hex(GFP_KERNEL), format_gfp(0x200)
('0xcc0', '0x200')
"""

from __future__ import annotations

import enum

__all__ = [
    "GFP_ATOMIC",
    "GFP_DMA",
    "GFP_DMA32",
    "GFP_HIGHUSER",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_KERNEL",
    "GFP_KERNEL_ACCOUNT",
    "GFP_NOFS",
    "GFP_NOIO",
    "GFP_NOWAIT",
    "GFP_PGTABLE_KERNEL",
    "GFP_RECLAIM_MASK",
    "GFP_TRANSHUGE",
    "GFP_TRANSHUGE_LIGHT",
    "GFP_USER",
    "GFP_ZONEMASK",
    "Gfp",
    "format_gfp",
    "warn_alloc_text",
]

# --- the bits (include/linux/gfp_types.h) -------------------------------------------
__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
# 0x200 is unused
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000
__GFP_ZEROTAGS = 0x800000
__GFP_SKIP_ZERO = 0  # CONFIG_KASAN_HW_TAGS=n
__GFP_SKIP_KASAN = 0  # CONFIG_KASAN_HW_TAGS=n
__GFP_NOLOCKDEP = 0  # CONFIG_LOCKDEP=n

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_ZONEMASK = __GFP_DMA | __GFP_HIGHMEM | __GFP_DMA32 | __GFP_MOVABLE

# --- the combinations -----------------------------------------------------------------
GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM | __GFP_NOWARN
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE | __GFP_SKIP_KASAN
GFP_TRANSHUGE_LIGHT = (
    GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NOWARN
) & ~__GFP_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | __GFP_DIRECT_RECLAIM

#: mm/internal.h: the flags a nested allocation inherits (vmalloc's page array and
#: pages use ``gfp & GFP_RECLAIM_MASK``).
GFP_RECLAIM_MASK = (
    __GFP_RECLAIM
    | __GFP_HIGH
    | __GFP_IO
    | __GFP_FS
    | __GFP_NOWARN
    | __GFP_RETRY_MAYFAIL
    | __GFP_NOFAIL
    | __GFP_NORETRY
    | __GFP_MEMALLOC
    | __GFP_NOMEMALLOC
    | __GFP_NOLOCKDEP
)
#: include/asm-generic/pgalloc.h: kernel page-table pages are zeroed GFP_KERNEL pages.
GFP_PGTABLE_KERNEL = GFP_KERNEL | __GFP_ZERO


class Gfp(enum.IntFlag):
    """The GFP bits and common masks as an :class:`enum.IntFlag` (no leading ``__``).

    (Written with literal values: ``__GFP_X`` inside a class body would be mangled.)
    """

    DMA = 0x01
    HIGHMEM = 0x02
    DMA32 = 0x04
    MOVABLE = 0x08
    RECLAIMABLE = 0x10
    HIGH = 0x20
    IO = 0x40
    FS = 0x80
    ZERO = 0x100
    DIRECT_RECLAIM = 0x400
    KSWAPD_RECLAIM = 0x800
    WRITE = 0x1000
    NOWARN = 0x2000
    RETRY_MAYFAIL = 0x4000
    NOFAIL = 0x8000
    NORETRY = 0x10000
    MEMALLOC = 0x20000
    COMP = 0x40000
    NOMEMALLOC = 0x80000
    HARDWALL = 0x100000
    THISNODE = 0x200000
    ACCOUNT = 0x400000
    ZEROTAGS = 0x800000
    # composite masks (aliases)
    RECLAIM = DIRECT_RECLAIM | KSWAPD_RECLAIM
    ATOMIC = HIGH | KSWAPD_RECLAIM
    KERNEL = RECLAIM | IO | FS
    KERNEL_ACCOUNT = KERNEL | ACCOUNT
    NOWAIT = KSWAPD_RECLAIM | NOWARN
    NOIO = RECLAIM
    NOFS = RECLAIM | IO
    USER = RECLAIM | IO | FS | HARDWALL
    HIGHUSER = USER | HIGHMEM
    HIGHUSER_MOVABLE = HIGHUSER | MOVABLE
    TRANSHUGE_LIGHT = (HIGHUSER_MOVABLE | COMP | NOMEMALLOC | NOWARN) & ~RECLAIM
    TRANSHUGE = TRANSHUGE_LIGHT | DIRECT_RECLAIM
    RECLAIM_MASK = (
        RECLAIM | HIGH | IO | FS | NOWARN | RETRY_MAYFAIL | NOFAIL | NORETRY | MEMALLOC | NOMEMALLOC
    )
    PGTABLE_KERNEL = KERNEL | ZERO


#: ``__def_gfpflag_names`` (include/trace/events/mmflags.h): the order matters — the
#: first matching mask wins and its bits are removed before the next one is tried.
GFPFLAG_NAMES: tuple[tuple[int, str], ...] = (
    (GFP_TRANSHUGE, "GFP_TRANSHUGE"),
    (GFP_TRANSHUGE_LIGHT, "GFP_TRANSHUGE_LIGHT"),
    (GFP_HIGHUSER_MOVABLE, "GFP_HIGHUSER_MOVABLE"),
    (GFP_HIGHUSER, "GFP_HIGHUSER"),
    (GFP_USER, "GFP_USER"),
    (GFP_KERNEL_ACCOUNT, "GFP_KERNEL_ACCOUNT"),
    (GFP_KERNEL, "GFP_KERNEL"),
    (GFP_NOFS, "GFP_NOFS"),
    (GFP_ATOMIC, "GFP_ATOMIC"),
    (GFP_NOIO, "GFP_NOIO"),
    (GFP_NOWAIT, "GFP_NOWAIT"),
    (GFP_DMA, "GFP_DMA"),
    (GFP_DMA32, "GFP_DMA32"),
    (__GFP_RECLAIM, "__GFP_RECLAIM"),
    (__GFP_DMA, "__GFP_DMA"),
    (__GFP_HIGHMEM, "__GFP_HIGHMEM"),
    (__GFP_DMA32, "__GFP_DMA32"),
    (__GFP_MOVABLE, "__GFP_MOVABLE"),
    (__GFP_RECLAIMABLE, "__GFP_RECLAIMABLE"),
    (__GFP_HIGH, "__GFP_HIGH"),
    (__GFP_IO, "__GFP_IO"),
    (__GFP_FS, "__GFP_FS"),
    (__GFP_ZERO, "__GFP_ZERO"),
    (__GFP_DIRECT_RECLAIM, "__GFP_DIRECT_RECLAIM"),
    (__GFP_KSWAPD_RECLAIM, "__GFP_KSWAPD_RECLAIM"),
    (__GFP_WRITE, "__GFP_WRITE"),
    (__GFP_NOWARN, "__GFP_NOWARN"),
    (__GFP_RETRY_MAYFAIL, "__GFP_RETRY_MAYFAIL"),
    (__GFP_NOFAIL, "__GFP_NOFAIL"),
    (__GFP_NORETRY, "__GFP_NORETRY"),
    (__GFP_MEMALLOC, "__GFP_MEMALLOC"),
    (__GFP_COMP, "__GFP_COMP"),
    (__GFP_NOMEMALLOC, "__GFP_NOMEMALLOC"),
    (__GFP_HARDWALL, "__GFP_HARDWALL"),
    (__GFP_THISNODE, "__GFP_THISNODE"),
    (__GFP_ACCOUNT, "__GFP_ACCOUNT"),
    (__GFP_ZEROTAGS, "__GFP_ZEROTAGS"),
)


def format_gfp(mask: int) -> str:
    """``%pGg``: names joined by ``|``, first match wins; leftover bits as ``%#lx``.

    A zero mask prints nothing (``format_flags`` loops while ``flags`` is non-zero).
    """
    mask = int(mask)
    parts: list[str] = []
    for value, name in GFPFLAG_NAMES:
        if not mask:
            break
        if value and (mask & value) == value:
            parts.append(name)
            mask &= ~value
    if mask:
        parts.append(f"{mask:#x}")
    return "|".join(parts)


def _nodelist(nodes: int) -> str:
    """``%*pbl`` of nodes 0..nodes-1 ("0", "0-1")."""
    return "0" if nodes <= 1 else f"0-{nodes - 1}"


def warn_alloc_text(gfp: int, message: str, *, comm: str = "swapper/0", nr_nodes: int = 1) -> str:
    """The first line ``warn_alloc()`` prints (mm/page_alloc.c).

    ``pr_warn("%s: %pV, mode:%#x(%pGg), nodemask=%*pbl", comm, fmt, gfp, &gfp, nodemask)``
    followed by the cpuset part (``cpuset_print_current_mems_allowed``,
    CONFIG_CPUSETS=y, root cpuset). A NULL nodemask prints ``(null)``.

    >>> warn_alloc_text(GFP_KERNEL, "page allocation failure: order:10")
    'swapper/0: page allocation failure: order:10, mode:0xcc0(GFP_KERNEL), nodemask=(null),cpuset=/,mems_allowed=0'
    """
    return (
        f"{comm}: {message}, mode:{gfp:#x}({format_gfp(gfp)}), nodemask=(null)"
        f",cpuset=/,mems_allowed={_nodelist(nr_nodes)}"
    )
