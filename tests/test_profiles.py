"""Profiles are data: a new kernel is a ``dataclasses.replace`` of a known one.

The "6.12" profile below is built the way a user would add a kernel, from what the
profile fields document: 6.12 is after the vmap nodes (v6.9), VMAP_RAM (v6.3),
vrealloc (v6.12) and huge vmalloc, but before ``vm_struct.requested_size`` (v6.15,
so ``sizeof(struct vm_struct)`` is still 64: kmalloc-64), the errno returns and the
node walk of v6.16, and the xfail / ``run_test_mask=7`` test_vmalloc of v6.17.
"""

from __future__ import annotations

import dataclasses

from pyvmalloc import Kernel
from pyvmalloc.config import INT_MAX, PROFILES, KernelProfile
from pyvmalloc.workloads.test_vmalloc import mode_params, run_test_vmalloc_full

START = 0xFFFFC90000000000
PAGE = 4096

P612: KernelProfile = dataclasses.replace(
    PROFILES["6.18"],
    name="6.12",
    errno_errors=False,
    node_lookup_step=1,
    decay_keeps_small_classes=False,
    sizeof_vm_struct=64,
    vm_requested_size=False,
    test_vmalloc=dataclasses.replace(
        PROFILES["6.18"].test_vmalloc,
        name="6.12",
        xfail=frozenset(),
        run_test_mask=INT_MAX,
        xfailed_column=False,
    ),
)


def test_replace_profile_vmalloc_vfree_vmallocinfo() -> None:
    k = Kernel(profile=P612, cpus=2)
    assert k.profile is P612 and k.profile.name == "6.12"
    a = k.vmalloc(20000, caller="t+0x0/0x1")
    # An empty 6.x space: the lowest fit is VMALLOC_START; 5 pages + the guard page.
    assert a == START
    vm = k.find_vm_area(a)
    assert vm is not None
    assert k.slab.ksize(vm.kaddr) == 64  # kmalloc-64, as in 5.4 (6.18: kmalloc-96)
    assert vm.requested_size == 6 * PAGE  # no requested_size field: the area size
    assert k.vmallocinfo() == (
        "0xffffc90000000000-0xffffc90000006000   24576 t+0x0/0x1 pages=5 vmalloc N0=5\n"
    )
    k.vfree(a)
    assert k.vmallocinfo() == ("0xffffc90000000000-0xffffc90000006000   24576 unpurged vm_area\n")
    assert k.meminfo().splitlines()[1] == "VmallocUsed:           0 kB"
    k.check()


def test_replace_profile_differs_from_6_18_only_where_told() -> None:
    k18 = Kernel(profile="6.18", cpus=2)
    a = k18.vmalloc(20000)
    vm = k18.find_vm_area(a)
    assert vm is not None
    assert k18.slab.ksize(vm.kaddr) == 96 and vm.requested_size == 20000
    changed = {
        f.name
        for f in dataclasses.fields(KernelProfile)
        if getattr(P612, f.name) != getattr(PROFILES["6.18"], f.name)
    }
    assert changed == {
        "name",
        "errno_errors",
        "node_lookup_step",
        "decay_keeps_small_classes",
        "sizeof_vm_struct",
        "vm_requested_size",
        "test_vmalloc",
    }


def test_replace_profile_runs_test_vmalloc_smoke() -> None:
    k = Kernel(profile=P612, cpus=2)
    cases = P612.test_vmalloc.cases
    mask = 0
    for name in ("fix_size_alloc_test", "align_shift_alloc_test", "vm_map_ram_test"):
        mask |= 1 << cases.index(name)
    params = mode_params(
        "smoke", P612, 2, ["test_loop_count=20", "test_repeat_count=2", f"run_test_mask={mask}"]
    )
    assert params.era == "6.12" and params.nr_threads == 0
    r = run_test_vmalloc_full(k, params, seed=1)
    by_name = {s.name: s for s in r.summaries}
    assert set(by_name) == {"fix_size_alloc_test", "align_shift_alloc_test", "vm_map_ram_test"}
    # Without 6.17's xfail mark the 2^46 alignment failure counts as a failure.
    assert (by_name["align_shift_alloc_test"].passed, by_name["align_shift_alloc_test"].failed) == (
        0,
        2,
    )
    assert r.align_shift_failed_at == 46
    assert by_name["fix_size_alloc_test"].passed == 2
    assert by_name["vm_map_ram_test"].passed == 2
    assert all(" xfailed: " not in line for line in r.lines)  # no 6.17 column
    assert r.lines[-1].startswith("All test took worker0=")
    k.reclaim_and_purge_vmap_areas()
    k.run_deferred_work()
    k.check()
    assert k.vmap_space.nr_busy == 0 and k.nr_vmalloc_pages == 0
