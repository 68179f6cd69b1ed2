"""What-if replay: a captured workload on another machine or kernel.

A real capture records which sizes, alignments and ranges a kernel asked for, and when
it freed them. ``pyvmalloc whatif`` replays those *requests* — not the addresses — on a
different configuration: a 32-bit board with a small ``vmalloc=`` area, another number
of CPUs, 5-level paging, or another kernel profile. It reports what would fail and how
fragmented the vmalloc space becomes, before it happens on the real machine.

Mapping:

* requests for the capture's full vmalloc range go to the target's full vmalloc range
  (so 6.x pools apply); requests for other ranges (modules, execmem) go to the
  target's module range, or the vmalloc range where modules live inside it (i386);
* the snapshot's busy areas are allocated first, in address order, with their sizes;
  its lazily freed areas are allocated and freed at once;
* each freed kernel address is looked up in a map from kernel addresses to the
  model's areas;
* purges: 6.x targets purge where the trace did; older profiles follow their own lazy
  threshold.

>>> from pyvmalloc.report.whatif import Fragmentation
>>> Fragmentation(free_bytes=3 << 20, largest_free=1 << 20, free_blocks=3).external
0.6666666666666667
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from pyvmalloc.config import PAGE_SIZE, Machine, get_profile, parse_size
from pyvmalloc.trace.events import (
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    TraceEvent,
)
from pyvmalloc.trace.harness import Fragmentation, TraceHarness, fragmentation
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.snapshot import VmallocInfo, parse_vmallocinfo
from pyvmalloc.vmap.area import VmapArea, is_err
from pyvmalloc.vmap.space import VmapSpace

__all__ = ["Fragmentation", "WhatIfResult", "fragmentation", "plot", "register_cli", "whatif"]


@dataclass
class WhatIfResult:
    """Outcome of one what-if replay."""

    target: str
    profile: str
    vmalloc_size: int
    requests: int = 0
    failures: int = 0
    first_failure_line: int | None = None
    failed_bytes: int = 0
    snapshot_failures: int = 0
    peak_busy_bytes: int = 0
    peak_used_bytes: int = 0
    #: (trace line, fragmentation) samples over the replay.
    samples: list[tuple[int, Fragmentation]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = [
            {"line": line, **asdict(f), "external": f.external} for line, f in self.samples
        ]
        return d


def _target_range(
    space: VmapSpace, machine: Machine, src_start: int, src_end: int, vstart: int, vend: int
) -> tuple[int, int]:
    if vstart == src_start and vend == src_end:
        return space.vmalloc_start, space.vmalloc_end
    if machine.modules_vaddr != machine.vmalloc_start:  # a modules area of its own
        return machine.modules_vaddr, machine.modules_end
    return space.vmalloc_start, space.vmalloc_end


class _WhatIf:
    """The what-if :class:`~pyvmalloc.trace.harness.TraceDriver`: the model places
    every request itself; kernel addresses only identify what a free frees."""

    def __init__(
        self, harness: TraceHarness, res: WhatIfResult, source: Machine, samples: int
    ) -> None:
        self.h = harness
        self.res = res
        self.src_start, self.src_end = source.vmalloc_start, source.vmalloc_end
        self.live: dict[int, VmapArea] = {}
        self.samples = samples
        self.every = 1
        self.last = 0

    def place(self, size: int, align: int, vstart: int, vend: int, cpu: int) -> VmapArea | None:
        h = self.h
        lo, hi = _target_range(h.space, h.machine, self.src_start, self.src_end, vstart, vend)
        va = h.space.alloc_vmap_area(size, align, lo, hi, cpu=cpu % h.cpus, gfp_nowarn=True)
        return None if is_err(va) else va  # type: ignore[return-value]

    def seed(self, info: VmallocInfo) -> None:
        """The snapshot's busy areas by size, in address order; lazy ones freed at once."""
        res, space = self.res, self.h.space
        s0, s1 = self.src_start, self.src_end
        for e in sorted(info.busy, key=lambda e: e.start):
            inside = s0 <= e.start < s1
            va = self.place(e.size, PAGE_SIZE, s0 if inside else 0, s1 if inside else 0, 0)
            if va is None:
                res.snapshot_failures += 1
            else:
                self.live[e.start] = va
        for e in info.unpurged:
            va = self.place(e.size, PAGE_SIZE, s0, s1, 0)
            if va is not None:
                space.free_vmap_area_noflush(space.find_unlink_vmap_area(va.va_start))  # type: ignore[arg-type]
        if res.snapshot_failures:
            res.warnings.append(
                f"{res.snapshot_failures} areas of the snapshot itself do not fit the target"
            )

    def prepare(self, events: Sequence[TraceEvent]) -> None:
        self.every = max(1, len(events) // max(1, self.samples))
        self.last = len(events) - 1

    def before(self, index: int, ev: TraceEvent) -> None:
        pass

    def alloc(self, ev: AllocVmapArea) -> None:
        if ev.failed:
            return
        res = self.res
        res.requests += 1
        va = self.place(ev.size, ev.align, ev.vstart, ev.vend, ev.cpu)
        if va is None:
            res.failures += 1
            res.failed_bytes += ev.size
            if res.first_failure_line is None:
                res.first_failure_line = ev.line
        else:
            self.live[ev.addr] = va

    def free(self, ev: FreeVmapAreaNoflush) -> None:
        va = self.live.pop(ev.va_start, None)
        if va is not None:
            space = self.h.space
            found = space.find_unlink_vmap_area(va.va_start)
            if found is not None:
                space.free_vmap_area_noflush(found, cpu=ev.cpu % self.h.cpus)

    def purge(self, ev: PurgeVmapAreaLazy) -> None:
        if self.h.trace_driven:
            self.h.purge(None, False)

    def observe(self, index: int, ev: TraceEvent, h: TraceHarness) -> None:
        if not h.trace_driven:
            h.kernel.workqueue.run_pending()
        if index % self.every == 0 or index == self.last:
            f = fragmentation(h.space)
            res = self.res
            res.samples.append((ev.line, f))
            res.peak_busy_bytes = max(res.peak_busy_bytes, f.busy_bytes)
            res.peak_used_bytes = max(res.peak_used_bytes, f.busy_bytes + f.lazy_bytes)


def whatif(
    trace: str | os.PathLike[str],
    snapshot: str | os.PathLike[str] | VmallocInfo,
    *,
    profile: str = "6.18",
    machine: Machine | None = None,
    source: Machine | None = None,
    samples: int = 50,
    placement: Any = None,
    pools: Any = None,
) -> WhatIfResult:
    """Replay the capture's requests on ``machine`` under ``profile``."""
    prof = get_profile(profile)
    machine = machine or Machine()
    h = TraceHarness(prof, machine=machine, placement=placement, pools=pools)
    info = snapshot if isinstance(snapshot, VmallocInfo) else parse_vmallocinfo(snapshot)
    parsed = parse_trace(trace)
    res = WhatIfResult(
        target=f"{machine.arch} {machine.paging_levels}-level, {machine.cpus_online} CPUs, "
        f"{machine.ram >> 20} MiB RAM",
        profile=prof.name,
        vmalloc_size=machine.vmalloc_end - machine.vmalloc_start,
    )
    driver = _WhatIf(h, res, source or Machine(), samples)
    driver.seed(info)
    end = parsed.marker("snapshot-end")
    events = [e for e in parsed.events if end is None or e.line > end.line]
    h.drive(driver, events, observer=driver.observe)
    if not res.samples:  # no event after the snapshot: the seeded state is the only one
        f = fragmentation(h.space)
        res.samples.append((end.line if end is not None else 0, f))
        res.peak_busy_bytes = f.busy_bytes
        res.peak_used_bytes = f.busy_bytes + f.lazy_bytes
    h.kernel.check()
    return res


def plot(res: WhatIfResult, path: str | os.PathLike[str]) -> None:
    """Draw the fragmentation samples over the trace into a PNG (needs matplotlib).

    Two panels against the trace line: used and largest free space in MiB, and the
    number of free blocks with the external fragmentation.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("plots need matplotlib: pip install 'pyvmalloc[plot]'") from e
    lines = [line for line, _ in res.samples]
    mib = float(1 << 20)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(lines, [f.busy_bytes / mib for _, f in res.samples], label="busy")
    top.plot(
        lines,
        [(f.busy_bytes + f.lazy_bytes) / mib for _, f in res.samples],
        label="busy + lazily freed",
    )
    top.plot(lines, [f.largest_free / mib for _, f in res.samples], label="largest free block")
    top.set_ylabel("MiB")
    top.legend(loc="best")
    top.set_title(
        f"kernel {res.profile} on {res.target}: {res.failures} of {res.requests} requests fail"
    )
    bottom.plot(
        lines, [f.free_blocks for _, f in res.samples], color="tab:gray", label="free blocks"
    )
    bottom.set_ylabel("free blocks")
    bottom.set_xlabel("trace line")
    frag = bottom.twinx()
    frag.plot(
        lines, [f.external for _, f in res.samples], color="tab:red", label="external fragmentation"
    )
    frag.set_ylabel("external fragmentation")
    frag.set_ylim(0, 1)
    handles = bottom.get_legend_handles_labels()[0] + frag.get_legend_handles_labels()[0]
    bottom.legend(handles, [str(h.get_label()) for h in handles], loc="upper left")
    fig.tight_layout()
    from pyvmalloc.cli_output import save_figure

    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _print(res: WhatIfResult) -> None:
    from rich.table import Table

    from pyvmalloc.cli_output import console
    from pyvmalloc.config import format_size

    c = console()
    c.print(
        f"[bold]what if[/]: kernel {res.profile} on {res.target}, vmalloc space "
        f"{format_size(res.vmalloc_size)}"
    )
    t = Table(show_header=False)
    rows = [
        ("requests replayed", f"{res.requests}"),
        ("requests that would fail", f"{res.failures} ({format_size(res.failed_bytes)})"),
        ("first failure at trace line", str(res.first_failure_line or "-")),
        ("snapshot areas that do not fit", str(res.snapshot_failures)),
        ("peak busy", format_size(res.peak_busy_bytes)),
        ("peak busy + lazily freed", format_size(res.peak_used_bytes)),
    ]
    if res.samples:
        last = res.samples[-1][1]
        worst = max((f.external for _, f in res.samples), default=0.0)
        rows += [
            ("free blocks at the end", str(last.free_blocks)),
            ("largest free block at the end", format_size(last.largest_free)),
            ("external fragmentation, end / worst", f"{last.external:.3f} / {worst:.3f}"),
        ]
    for k, v in rows:
        t.add_row(k, v)
    c.print(t, markup=False)
    for w in res.warnings:
        c.print(f"[yellow]{escape(w)}")


def _check_plot_output(path: str) -> None:
    """Fail before the replay when the plot cannot be drawn or written."""
    from pyvmalloc.cli_output import check_writable

    check_writable(path, "--plot")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'pyvmalloc[plot]'") from None


def _machine_from_args(args: argparse.Namespace, src_cpus: int) -> Machine:
    """The target machine, refusing combinations the kernel would not run."""
    from pyvmalloc.report import board

    ram = parse_size(args.ram)
    given = [opt for opt, on in (("--vmsplit", args.vmsplit != "3G"), ("--lpae", args.lpae),
             ("--no-highmem", args.no_highmem), ("--thumb2", args.thumb2),
             ("--no-module-plts", args.no_module_plts), ("--phys-offset", args.phys_offset != "0"))
             if on]  # fmt: skip
    if given and args.arch != "arm":
        what = "an option" if len(given) == 1 else "options"
        raise ValueError(f"{', '.join(given)}: {what} of 32-bit arm, not {args.arch} (--arch arm)")
    if args.va_bits != 48 and args.arch != "arm64":
        raise ValueError(f"--va-bits is arm64's CONFIG_ARM64_VA_BITS, not {args.arch}'s")
    if args.arch == "i386":
        if args.paging_levels not in (2, 4):  # 4: the option's default, ignored for i386
            raise ValueError("--paging-levels: i386 (non-PAE) has 2-level paging")
        if ram > 4 << 30:
            raise ValueError(
                f"--ram {args.ram}: a non-PAE i386 kernel uses at most 4 GiB (it prints "
                "'Warning only 4GB will be used' and ignores the rest); give --ram 4G or less"
            )
    elif args.arch == "x86_64":
        if args.vmalloc:
            raise ValueError("--vmalloc is the 32-bit vmalloc= boot option; x86_64's is fixed")
        if args.paging_levels not in (4, 5):
            raise ValueError(f"--paging-levels {args.paging_levels}: x86_64 has 4 or 5")
    return board.machine_from_args(args, cpus=args.cpus or src_cpus)


def _cmd_whatif(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable, write_json
    from pyvmalloc.report import board
    from pyvmalloc.trace.replay import load_capture

    check_writable(args.json, "--json")
    if args.plot is not None:
        _check_plot_output(args.plot)
    if args.capture is None:
        return board.cmd_board_whatif(args)
    if args.dmesg:
        raise ValueError("--dmesg goes with --from-vmallocinfo and no capture (a board what-if)")
    for opt, value in (("--board-vmalloc", args.board_vmalloc), ("--board-ram", args.board_ram)):
        if value is not None:
            raise ValueError(f"{opt} describes the board of a board what-if (no capture)")
    if not Path(args.capture).is_dir():
        raise ValueError(f"{args.capture}: not a capture directory (pyvmalloc capture)")
    if args.samples < 1:
        raise ValueError("--samples must be at least 1")
    trace, snap, meta = load_capture(args.capture)
    if args.from_vmallocinfo:
        snap = args.from_vmallocinfo
    src_cpus = len(meta.get("cpus_possible", [])) or 2
    machine = _machine_from_args(args, src_cpus)
    res = whatif(trace, snap, profile=args.profile, machine=machine, samples=args.samples)
    if args.json:
        write_json(res.as_json(), args.json)
    if args.json != "-":
        _print(res)
    if args.plot is not None:
        plot(res, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def register_cli(sub: Any) -> None:
    """Add the ``whatif`` subcommand."""
    from pyvmalloc.cli_output import add_json_argument, add_profile_argument

    p = sub.add_parser(
        "whatif",
        help="replay a capture's requests on another machine or kernel: failures, fragmentation",
    )
    p.add_argument(
        "capture",
        nargs="?",
        help="a capture directory (pyvmalloc capture); omit for a board what-if",
    )
    add_profile_argument(p, what="kernel profile of the target")
    p.add_argument(
        "--arch",
        default="x86_64",
        choices=["x86_64", "i386", "arm", "arm64"],
        help="target architecture (default x86_64; i386 is non-PAE with HIGHMEM)",
    )
    p.add_argument("--paging-levels", type=int, default=4, help="x86_64: 4 or 5 (default 4)")
    p.add_argument("--cpus", type=int, default=0, help="target CPUs (default: the capture's)")
    p.add_argument("--ram", default="4G", help="target RAM, e.g. 512M, 4G (default 4G)")
    p.add_argument("--vmalloc", help="i386/arm: the vmalloc= boot option, e.g. 64M")
    from pyvmalloc.report.board import add_board_options

    add_board_options(p)
    p.add_argument(
        "--samples", type=int, default=50, help="fragmentation samples over the trace (default 50)"
    )
    add_json_argument(p, "the result (with samples)")
    p.add_argument("--plot", metavar="PNG", help="draw fragmentation over time (needs matplotlib)")
    p.set_defaults(func=_cmd_whatif)
