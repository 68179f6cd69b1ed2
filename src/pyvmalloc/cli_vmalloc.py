"""``pyvmalloc explain``, ``walk`` and ``tour``: the vmalloc layer on the command line.

* ``explain "vmalloc(20000)"`` — run one API call on a fresh model and draw its call
  tree (the seeds' "Code Flow" diagram) with the state it changed;
  ``--before "vmalloc(8192); vmalloc(4096)"`` prepares the model first.
* ``walk ADDR`` — the page-table walk of an address after an optional ``--before``
  setup (``_`` is the last result, ``_N`` the N-th).
* ``tour`` — a seeded workload of mixed API calls, then vmallocinfo, meminfo,
  buddyinfo, statistics and the whole-model check.

Calls are parsed with :mod:`ast` (never ``eval``): only the API family with integer
or string literals, and keywords such as ``cpu=`` and ``caller=``.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from typing import Any

__all__ = ["parse_address", "prepare", "register_cli", "run_tour"]

#: Where the tour's ioremaps point: a PCI MMIO window below 4 GiB.
_MMIO_BASE = 0xFE000000


def _kernel(args: argparse.Namespace) -> Any:
    from pyvmalloc.kernel import Kernel

    return Kernel(
        profile=args.profile,
        cpus=args.cpus,
        ram=args.ram,
        paging_levels=getattr(args, "paging_levels", 4),
    )


def prepare(k: Any, before: str | None) -> list[int]:
    """Run the ``--before`` calls on ``k``; their results, for ``_`` and ``_N``."""
    from pyvmalloc.explain import parse_calls, run_call

    results: list[int] = []
    if before:
        for call in parse_calls(before):
            run_call(k, call, results)
    return results


def _cmd_explain(args: argparse.Namespace) -> int:
    import ast

    from pyvmalloc.cli_output import check_writable
    from pyvmalloc.explain import parse_calls, record, run_call

    check_writable(args.json, "--json")
    k = _kernel(args)
    results = prepare(k, args.before)
    calls = parse_calls(args.call)
    if len(calls) != 1:
        raise ValueError("explain takes exactly one call (use --before for the setup)")
    call = calls[0]
    rec = record(k, lambda: run_call(k, call, results), label=ast.unparse(call))
    if args.json is not None:
        from pyvmalloc.cli_output import write_json

        write_json(_recording_json(rec), args.json)
        if args.json == "-":
            return 0
    print(f"# kernel {k.profile.name}, {k.machine.cpus_online} CPUs, {k.machine.ram >> 20} MiB")
    print(rec.render())
    new = [
        line.text + (f"\n  pyvmalloc: {line.why}" if line.why else "") for line in k.log.lines[-5:]
    ]
    if new:
        print("\ndmesg (last lines):")
        for t in new:
            print(f"  {t}")
    return 0


def _node_json(node: Any) -> dict[str, Any]:
    from pyvmalloc.explain import _fmt

    return {
        "name": node.name,
        "args": {n: _fmt(n, v) for n, v in node.args},
        "ret": _fmt("addr", node.ret) if node.ret is not None else None,
        "pages": node.pages,
        "ptes": node.ptes,
        "note": node.note,
        "children": [_node_json(c) for c in node.children],
    }


def _recording_json(rec: Any) -> dict[str, Any]:
    """An ``explain`` call tree as JSON: the calls (arguments as the tree shows them)
    and the state before and after."""
    return {"call": _node_json(rec.root), "before": rec.before, "after": rec.after}


def _cmd_walk(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable

    check_writable(args.json, "--json")
    k = _kernel(args)
    results = prepare(k, args.before)
    addr = parse_address(args.addr, results)
    if args.json is not None:
        from dataclasses import asdict

        from pyvmalloc.cli_output import write_json

        w = k.pgtables.walk(addr)
        write_json({**asdict(w), "present": w.present}, args.json)
        if args.json == "-":
            return 0
    print(k.walk(addr))
    return 0


#: ``123`` (decimal), ``0x7b`` or ``7b`` (hex, as crash takes it).
_ADDRESS_RE = re.compile(r"(0|[1-9][0-9]*)|(?:0[xX])?([0-9a-fA-F]+)", re.ASCII)


def parse_address(text: str, results: list[int]) -> int:
    """An address argument: ``0x...``, decimal, bare hex (as crash takes it), or ``_`` /
    ``_N`` for the last / N-th (1-based) ``--before`` result."""
    if text.startswith("_"):
        n = len(results)
        if text == "_":
            if not results:
                raise ValueError("_ is the last --before result, but there is no --before")
            return results[-1]
        if text[1:].isdigit() and 1 <= int(text[1:]) <= n:
            return results[int(text[1:]) - 1]
        have = f"_1.._{n}" if n else "none (no --before)"
        raise ValueError(f"{text}: there is no such --before result (results: {have})")
    # ASCII digits only, no sign, spaces or '_' (int() takes all of those)
    m = _ADDRESS_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text[:40]!r} is not an address (0x..., or _N)")
    digits = m.group(1) or m.group(2)
    value = int(digits, 10 if m.group(1) else 16) if len(digits) <= 40 else 1 << 64
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{text}: an address is 0..2^64-1")
    return value


def run_tour(
    profile: str = "6.18",
    cpus: int = 2,
    ops: int = 3000,
    seed: int = 1,
    ram: str = "4G",
    progress: bool = True,
    out: Any = None,
    full_vmallocinfo: bool = False,
) -> dict[str, Any]:
    """The tour workload; returns its statistics (also printed with rich).

    ``full_vmallocinfo`` prints every /proc/vmallocinfo line, not the first and last 5.
    """
    from rich.progress import Progress
    from rich.table import Table

    from pyvmalloc.cli_output import console as make_console
    from pyvmalloc.kernel import Kernel
    from pyvmalloc.vmalloc import VM_MAP

    console = out or make_console()
    k = Kernel(profile=profile, cpus=cpus, ram=ram)
    rng = random.Random(seed)
    live: list[tuple[str, int, Any]] = []
    counts: dict[str, int] = {}
    callers = [
        "htab_map_alloc+0x2e4/0x5a0",
        "kernel_clone+0x94/0x3e0",
        "alloc_large_system_hash+0x1b5/0x2c0",
        None,
    ]
    has_vmalloc_huge = k.profile.huge_vmalloc
    t0 = time.perf_counter()

    def step() -> None:
        r = rng.random()
        cpu = rng.randrange(cpus)
        caller = rng.choice(callers)
        if live and r < 0.42:
            kind, addr, extra = live.pop(rng.randrange(len(live)))
            if kind == "vmap":
                k.vunmap(addr, cpu=cpu)
                k.free_pages(extra)
            elif kind == "ram":
                k.vm_unmap_ram(addr, len(extra), cpu=cpu)
                k.free_pages(extra)
            elif kind == "io":
                k.iounmap(addr, cpu=cpu)
            elif kind == "kv":
                k.kvfree(addr, cpu=cpu)
            else:
                k.vfree(addr, cpu=cpu, in_interrupt=rng.random() < 0.05)
            counts["free"] = counts.get("free", 0) + 1
            return
        if r < 0.70:
            size = rng.choice([4096, 8192, 16384, 20000, 65536, rng.randrange(1, 1 << 20)])
            addr = k.vmalloc(size, cpu=cpu, caller=caller)
            kind = "vmalloc"
        elif r < 0.76:
            addr = k.vzalloc(rng.randrange(1, 300000), cpu=cpu, caller=caller)
            kind = "vmalloc"
        elif r < 0.80:
            addr = getattr(k, "__vmalloc_node_range")(
                16384, 16384, cpu=cpu, caller="kernel_clone+0x94/0x3e0"
            )
            kind = "vmalloc"
        elif r < 0.84:
            pages = k.alloc_pages(rng.randrange(1, 9))
            addr = k.vm.vmap(pages, flags=VM_MAP, cpu=cpu, caller=caller)
            if not addr:
                k.free_pages(pages)
                return
            live.append(("vmap", addr, pages))
            counts["vmap"] = counts.get("vmap", 0) + 1
            return
        elif r < 0.88:
            pages = k.alloc_pages(rng.choice([1, 2, 3, 8, 70]))
            addr = k.vm_map_ram(pages, cpu=cpu)
            if not addr:
                k.free_pages(pages)
                return
            live.append(("ram", addr, pages))
            counts["vm_map_ram"] = counts.get("vm_map_ram", 0) + 1
            return
        elif r < 0.90:
            addr = k.ioremap(
                _MMIO_BASE + rng.randrange(0, 1 << 20),
                rng.randrange(1, 40000),
                cpu=cpu,
                caller="pci_iomap_range+0x60/0x90",
            )
            kind = "io"
        elif r < 0.96:
            addr = k.kvmalloc(rng.choice([100, 5000, 70000, 3 << 20]), cpu=cpu, caller=caller)
            kind = "kv"
        elif has_vmalloc_huge:
            addr = k.vmalloc_huge(rng.choice([2 << 20, 3 << 20]), cpu=cpu, caller=caller)
            kind = "vmalloc"
        else:
            addr = k.vmalloc_user(rng.randrange(1, 100000), cpu=cpu, caller=caller)
            kind = "vmalloc"
        counts[kind] = counts.get(kind, 0) + 1
        if addr:
            if kind == "vmalloc" and rng.random() < 0.3:
                k.write(addr, b"tour")
            live.append((kind, addr, None))

    if progress and ops >= 2000 and console.is_terminal:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("running the tour workload", total=ops)
            for i in range(ops):
                step()
                if i % 100 == 0:
                    bar.update(task, completed=i)
    else:
        for _ in range(ops):
            step()
    elapsed = time.perf_counter() - t0
    k.check()
    info = k.vmallocinfo().splitlines()
    if full_vmallocinfo or len(info) <= 10:
        console.print(f"[bold]/proc/vmallocinfo[/bold] ({len(info)} lines):")
        for line in info:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(
            f"[bold]/proc/vmallocinfo[/bold] ({len(info)} lines, first and last 5; "
            "--full-vmallocinfo for all):"
        )
        for line in info[:5]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        console.print("...")
        for line in info[-5:]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print("\n[bold]/proc/meminfo[/bold] (vmalloc lines):")
    console.print(k.meminfo().rstrip(), highlight=False, markup=False, soft_wrap=True)
    console.print("\n[bold]/proc/buddyinfo[/bold]:")
    console.print(k.buddyinfo().rstrip(), highlight=False, markup=False, soft_wrap=True)
    stats = {
        "profile": k.profile.name,
        "operations": ops,
        "seconds": round(elapsed, 3),
        "ops/s": round(ops / elapsed) if elapsed else 0,
        "live areas": k.vmap_space.nr_busy,
        "lazily freed": len(k.vmap_space.lazy),
        "nr_vmalloc_pages": k.nr_vmalloc_pages,
        "page-table pages added": k.pgtable_pages_added(),
        "slab bytes": k.slab.slab_bytes,
        "purges": k.vmap_space.stats.purges,
        "pool hits": k.vmap_space.stats.pool_hits,
        "warnings": len(k.log.lines),
        **{f"calls: {n}": c for n, c in sorted(counts.items())},
    }
    table = Table(title="statistics")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, v in stats.items():
        table.add_row(key, str(v))
    console.print(table, markup=False)
    k.check()
    console.print("check(): all invariants hold")
    return stats


def _cmd_tour(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable, write_json

    check_writable(args.json, "--json")
    if args.ops < 0:
        raise ValueError(f"--ops {args.ops}: must not be negative")
    if args.json == "-":
        import io

        from rich.console import Console

        stats = run_tour(
            args.profile, args.cpus, args.ops, args.seed, args.ram, out=Console(file=io.StringIO())
        )
    else:
        stats = run_tour(
            args.profile,
            args.cpus,
            args.ops,
            args.seed,
            args.ram,
            full_vmallocinfo=args.full_vmallocinfo,
        )
    if args.json:
        write_json(stats, args.json)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``explain``, ``walk`` and ``tour`` to the ``pyvmalloc`` command."""

    from pyvmalloc.cli_output import add_json_argument, add_profile_argument

    def common(p: argparse.ArgumentParser) -> None:
        add_profile_argument(p)
        p.add_argument("--cpus", type=int, default=2, help="online CPUs (default 2)")
        p.add_argument("--ram", default="4G", help="machine RAM, e.g. 64M, 4G (default 4G)")

    def paging(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--paging-levels",
            type=int,
            choices=(4, 5),
            default=4,
            help="x86_64 page-table levels: 4, or 5 (LA57: the P4D level is real, "
            "VMALLOC_START 0xffa0000000000000; default 4)",
        )

    p = subparsers.add_parser("explain", help="draw the call tree of one vmalloc API call")
    p.add_argument(
        "call",
        help='e.g. "vmalloc(20000)", "__vmalloc(8192, GFP_KERNEL | __GFP_ZERO)" or "vfree(_)"',
    )
    p.add_argument("--before", help='setup calls, e.g. "vmalloc(8192); vmalloc(4096)"')
    add_json_argument(p, "the call tree and state changes")
    common(p)
    paging(p)
    p.set_defaults(func=_cmd_explain)

    p = subparsers.add_parser("walk", help="page-table walk of an address")
    p.add_argument("addr", help="address (0x...), or _ / _N for a --before result")
    p.add_argument("--before", help='setup calls, e.g. "vmalloc(8192)"')
    add_json_argument(p, "the walk (every level's entry)")
    common(p)
    paging(p)
    p.set_defaults(func=_cmd_walk)

    p = subparsers.add_parser("tour", help="a seeded mixed vmalloc workload, then /proc views")
    p.add_argument("--ops", type=int, default=5000, help="API calls to make (default 5000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the workload (default 1)")
    p.add_argument(
        "--full-vmallocinfo",
        action="store_true",
        help="print every /proc/vmallocinfo line (default: the first and last 5)",
    )
    add_json_argument(p, "the statistics")
    common(p)
    p.set_defaults(func=_cmd_tour)
