"""GFP flag values (include/linux/gfp_types.h, v6.18) and the %pGg formatter."""

from pyvmalloc import gfp
from pyvmalloc.gfp import (
    GFP_ATOMIC,
    GFP_DMA32,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_NOWAIT,
    GFP_PGTABLE_KERNEL,
    GFP_RECLAIM_MASK,
    GFP_TRANSHUGE,
    Gfp,
    format_gfp,
    warn_alloc_text,
)

__GFP_HIGHMEM = gfp.__GFP_HIGHMEM
__GFP_NOWARN = gfp.__GFP_NOWARN
__GFP_ZERO = gfp.__GFP_ZERO
__GFP_NOFAIL = gfp.__GFP_NOFAIL
__GFP_DMA = gfp.__GFP_DMA


def test_bit_values():
    assert (gfp.__GFP_DMA, gfp.__GFP_HIGHMEM, gfp.__GFP_DMA32, gfp.__GFP_MOVABLE) == (1, 2, 4, 8)
    assert gfp.__GFP_ZERO == 0x100
    assert gfp.__GFP_DIRECT_RECLAIM == 0x400 and gfp.__GFP_KSWAPD_RECLAIM == 0x800
    assert gfp.__GFP_NOWARN == 0x2000
    assert gfp.__GFP_RETRY_MAYFAIL == 0x4000
    assert gfp.__GFP_NOFAIL == 0x8000
    assert gfp.__GFP_NORETRY == 0x10000
    assert gfp.__GFP_ACCOUNT == 0x400000


def test_combinations():
    assert GFP_KERNEL == 0xCC0
    assert GFP_ATOMIC == 0x820
    assert GFP_NOWAIT == 0x2800  # includes __GFP_NOWARN since v6.18
    assert GFP_DMA32 == 0x4
    assert GFP_PGTABLE_KERNEL == 0xDC0
    assert GFP_HIGHUSER_MOVABLE == 0x100CCA
    assert GFP_RECLAIM_MASK & __GFP_ZERO == 0
    assert GFP_RECLAIM_MASK & __GFP_NOFAIL


def test_intflag_matches_constants():
    assert Gfp.KERNEL == GFP_KERNEL
    assert Gfp.ATOMIC == GFP_ATOMIC
    assert Gfp.TRANSHUGE == GFP_TRANSHUGE
    assert Gfp.HIGHMEM == __GFP_HIGHMEM


def test_format_gfp_like_pGg():
    assert format_gfp(GFP_KERNEL) == "GFP_KERNEL"
    assert format_gfp(GFP_KERNEL | __GFP_HIGHMEM | __GFP_NOWARN) == (
        "GFP_KERNEL|__GFP_HIGHMEM|__GFP_NOWARN"
    )
    # vmalloc's page gfp: (GFP_KERNEL & GFP_RECLAIM_MASK) | __GFP_ZERO | __GFP_HIGHMEM | NOWARN
    assert format_gfp(GFP_KERNEL | __GFP_ZERO | __GFP_HIGHMEM | __GFP_NOWARN) == (
        "GFP_KERNEL|__GFP_HIGHMEM|__GFP_ZERO|__GFP_NOWARN"
    )
    assert format_gfp(GFP_ATOMIC | __GFP_NOWARN) == "GFP_ATOMIC|__GFP_NOWARN"
    assert format_gfp(GFP_NOWAIT) == "GFP_NOWAIT"
    assert format_gfp(GFP_HIGHUSER_MOVABLE) == "GFP_HIGHUSER_MOVABLE"
    assert format_gfp(__GFP_DMA) == "GFP_DMA"
    # GFP_NOIO == __GFP_RECLAIM and comes first in the table
    assert format_gfp(gfp.__GFP_RECLAIM) == "GFP_NOIO"
    assert format_gfp(gfp.__GFP_DIRECT_RECLAIM) == "__GFP_DIRECT_RECLAIM"
    assert format_gfp(0x200) == "0x200"  # unused bit left over
    assert format_gfp(GFP_KERNEL | 0x200) == "GFP_KERNEL|0x200"
    assert format_gfp(0) == ""


def test_warn_alloc_text():
    assert warn_alloc_text(GFP_KERNEL | __GFP_HIGHMEM, "page allocation failure: order:3") == (
        "swapper/0: page allocation failure: order:3, mode:0xcc2(GFP_KERNEL|__GFP_HIGHMEM), "
        "nodemask=(null),cpuset=/,mems_allowed=0"
    )
    assert warn_alloc_text(GFP_KERNEL, "x", comm="insmod", nr_nodes=2).endswith("mems_allowed=0-1")
