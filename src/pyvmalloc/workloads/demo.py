"""The main job's seeded workload: mixed allocations on several CPUs, then a report.

The mix resembles what a real 6.x kernel's vmap allocator sees: vmalloc'ed buffers of
1..64 pages (+ guard), large buffers, 16 KiB thread stacks aligned to 16 KiB, module
range allocations, frees from any CPU, and the lazy purges they trigger.
"""

from __future__ import annotations

import random

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.kernel import Kernel
from pyvmalloc.rbtree import rb_inorder
from pyvmalloc.vmap.area import FitType, VmapArea, is_err

__all__ = ["run_demo", "seeded_workload"]

MODULES = (0xFFFFFFFFC0000000, 0xFFFFFFFFFF000000)


def seeded_workload(k: Kernel, ops: int, seed: int, progress: Progress | None = None) -> None:
    """Run ``ops`` seeded alloc/free operations on ``k`` (deterministic for a seed)."""
    rng = random.Random(seed)
    live: list[VmapArea] = []
    cpus = k.machine.cpus_online
    task = progress.add_task("workload", total=ops) if progress else None
    for i in range(ops):
        cpu = rng.randrange(cpus)
        va: VmapArea | int
        if live and (rng.random() < 0.48 or len(live) > 4000):
            k.free_vmap_area_noflush(live.pop(rng.randrange(len(live))), cpu=rng.randrange(cpus))
        else:
            kind = rng.random()
            if kind < 0.70:  # vmalloc(n pages) + guard
                va = k.alloc_vmap_area((rng.randint(1, 64) + 1) * PAGE_SIZE, 1, cpu=cpu)
            elif kind < 0.85:  # thread stack: THREAD_SIZE + guard, THREAD_ALIGN
                va = k.alloc_vmap_area(5 * PAGE_SIZE, 4 * PAGE_SIZE, cpu=cpu)
            elif kind < 0.95:  # a large buffer
                va = k.alloc_vmap_area((rng.randint(257, 2048) + 1) * PAGE_SIZE, 1, cpu=cpu)
            else:  # module / execmem
                va = k.alloc_vmap_area(
                    (rng.randint(1, 128) + 1) * PAGE_SIZE, PAGE_SIZE, *MODULES, cpu=cpu
                )
            if not is_err(va):
                assert isinstance(va, VmapArea)
                live.append(va)
        if progress is not None and task is not None and i % 1000 == 0:
            progress.update(task, completed=i)
    if progress is not None and task is not None:
        progress.update(task, completed=ops)


def allocator_report(k: Kernel) -> list[Table]:
    """Tables describing the allocator's state and statistics."""
    v = k.vmap_space
    st = v.stats
    in_range = v.range_sizes(v.free_areas())
    largest = max(in_range, default=0)
    t = Table(title=f"vmap allocator — kernel {k.profile.name}, {k.machine.cpus_online} CPUs")
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [
        ("allocations", st.allocs),
        ("  from pools", st.pool_hits),
        ("  failed", st.alloc_failures),
        *((f"  {FitType.NAMES[i]}", st.fits[i]) for i in range(1, 5)),
        ("lazy frees", st.lazy_frees),
        ("purges", st.purges),
        ("  areas purged", st.purged_areas),
        ("  areas decayed from pools", st.decayed_areas),
        ("busy areas", v.nr_busy),
        ("free blocks (whole address space)", v.nr_free),
        ("free blocks in the vmalloc range", len(in_range)),
        ("largest free block in range (MiB)", f"{largest / (1 << 20):,.1f}"),
        ("lazily freed pages (vmap_lazy_nr)", v.vmap_lazy_nr),
        ("lazy_max_pages()", v.lazy_max_pages),
        ("pooled areas", v.vmap_node_shrink_count()),
    ]
    for name, value in rows:
        t.add_row(name, str(value))
    nodes = Table(title="vmap nodes")
    for col in ("node", "busy areas", "lazy areas", "pooled areas", "pool classes used"):
        nodes.add_column(col, justify="right")
    lazy_per_node = [0] * len(v.nodes)
    for va in v.lazy:
        lazy_per_node[v.lazy_node_of(va)] += 1
    for vn in v.nodes:
        busy = sum(1 for _ in rb_inorder(vn.busy))
        nodes.add_row(
            str(vn.id),
            str(busy),
            str(lazy_per_node[vn.id]),
            str(vn.pool_len()),
            str(sum(1 for p in vn.pools.values() if p)),
        )
    return [t, nodes]


def run_demo(
    profile: str = "6.18",
    cpus: int = 2,
    ops: int = 20000,
    seed: int = 1,
    json_out: str | None = None,
) -> int:
    """The demo; ``json_out`` (a path, or ``-`` for stdout instead of the report) gets
    the report's tables as JSON."""
    import io

    from pyvmalloc.cli_output import check_writable, table_json, write_json
    from pyvmalloc.cli_output import console as make_console

    check_writable(json_out, "--json")
    console = make_console() if json_out != "-" else Console(file=io.StringIO())
    k = Kernel(profile, cpus=cpus)
    trace_lines: list[str] = []
    if k.profile.has_tracepoints:
        k.trace_subscribe("all", lambda e: trace_lines.append(str(e)))
    with Progress(console=console, transient=True) as progress:
        seeded_workload(k, ops, seed, progress)
    k.check()
    tables = allocator_report(k)
    if json_out:
        write_json({"allocator": table_json(tables[0]), "nodes": table_json(tables[1])}, json_out)
    for table in tables:
        console.print(table, markup=False)
    if trace_lines:
        console.print(f"[bold]last tracepoints[/] ({len(trace_lines)} events in all):")
        for line in trace_lines[-5:]:
            console.print(line, markup=False, highlight=False)
    if k.log.lines:
        console.print(f"[bold]dmesg[/] ({len(k.log.lines)} lines), last:")
        for logline in k.log.lines[-3:]:
            console.print(str(logline), markup=False, highlight=False)
    console.print("check(): all invariants hold")
    return 0
