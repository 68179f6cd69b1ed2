"""The trace harness: seeding a model from a real snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvmalloc.trace.harness import TraceHarness
from pyvmalloc.trace.snapshot import parse_vmallocinfo

CAPTURES = Path(__file__).resolve().parent.parent / "data" / "captures"


@pytest.mark.parametrize("name", ["mixed-spread", "everything-concurrent", "small-spread-nodrop"])
def test_a_seeded_model_prints_the_kernels_vmallocinfo(name):
    # The kernel's own /proc/vmallocinfo is the oracle: a model seeded from it holds
    # every busy area with its vm_struct (caller, pages=, phys=, flag words, vpages,
    # N<node>=) and every lazily freed area on its node, so it prints the file again,
    # line for line, in the kernel's order.
    path = CAPTURES / name / "vmallocinfo"
    h = TraceHarness("6.18", cpus=2)
    h.seed_snapshot(parse_vmallocinfo(path))
    assert h.kernel.vmallocinfo() == path.read_text()
    h.kernel.check()
