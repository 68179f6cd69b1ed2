"""Parameter sweeps of the what-if on a Dask cluster (``pyvmalloc sweep``).

A sweep replays one or more captures on every point of a grid — ``vmalloc=`` sizes,
CPU counts, kernel profiles — and tabulates failures, peak use, the largest free block
and fragmentation. Each grid point is one task: :func:`run_point`, a plain function of
a picklable :class:`SweepPoint` (the capture's path and the configuration), so any
``dask.distributed`` worker that has pyvmalloc installed can run it. The results do not
depend on where or in which order the points run: :func:`run_point` is deterministic,
and :func:`sweep` returns the points in grid order, identical to running them one by one
(:func:`run_serial`).

By default the tasks run on a ``LocalCluster`` bound to the loopback interface;
``scheduler="tcp://HOST:PORT"`` sends them to an existing cluster.

>>> pts = grid(["cap"], vmallocs=[64 << 20, 128 << 20], cpus=[1, 2], profiles=["6.18"], arch="arm")
>>> len(pts), pts[0].cpus, pts[1].cpus, pts[2].vmalloc >> 20
(4, 1, 2, 128)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pyvmalloc.config import Machine, get_profile, parse_size

__all__ = ["SweepPoint", "grid", "register_cli", "run_point", "run_serial", "sweep"]

MiB = 1 << 20


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: a capture and the target configuration (picklable)."""

    capture: str
    profile: str
    arch: str = "x86_64"
    cpus: int = 0  # 0: the capture's own CPU count
    vmalloc: int = 0  # vmalloc= bytes (i386/arm); 0: the kernel's default
    ram: int = 4 << 30
    paging_levels: int = 4
    #: Further :class:`Machine` fields (arm/arm64 options), as sorted (name, value) pairs.
    options: tuple[tuple[str, Any], ...] = field(default=())

    def machine(self, cpus: int) -> Machine:
        """The target machine of this point (``cpus`` resolves the 0 default)."""
        return Machine(
            arch=self.arch,  # type: ignore[arg-type]
            paging_levels=self.paging_levels if self.arch == "x86_64" else 4,
            cpus_online=cpus,
            ram=self.ram,
            vmalloc_reserve=self.vmalloc,
            kernel_release=get_profile(self.profile).name,
            **dict(self.options),
        )


def grid(
    captures: Sequence[str | os.PathLike[str]],
    *,
    vmallocs: Sequence[int] = (0,),
    cpus: Sequence[int] = (0,),
    profiles: Sequence[str] = ("6.18",),
    arch: str = "x86_64",
    ram: int = 4 << 30,
    paging_levels: int = 4,
    options: dict[str, Any] | None = None,
) -> list[SweepPoint]:
    """Every combination, in a fixed order: capture, profile, vmalloc=, CPUs."""
    opts = tuple(sorted((options or {}).items()))
    return [
        SweepPoint(os.fspath(c), p, arch, n, v, ram, paging_levels, opts)
        for c in captures
        for p in profiles
        for v in vmallocs
        for n in cpus
    ]


def run_point(point: SweepPoint) -> dict[str, Any]:
    """Replay ``point.capture`` on the point's machine: the point's result row.

    Addresses are ``"0x..."`` strings so the row is the same in JSON.
    """
    from pyvmalloc.report.whatif import whatif
    from pyvmalloc.trace.replay import load_capture

    trace, snap, meta = load_capture(point.capture)
    cpus = point.cpus or len(meta.get("cpus_possible", [])) or 2
    machine = point.machine(cpus)
    res = whatif(trace, snap, profile=point.profile, machine=machine)
    samples = [f for _, f in res.samples]
    last = samples[-1] if samples else None
    return {
        "capture": point.capture,
        "profile": res.profile,
        "arch": point.arch,
        "cpus": cpus,
        "vmalloc": point.vmalloc,
        "ram": point.ram,
        "vmalloc_start": f"{machine.vmalloc_start:#x}",
        "vmalloc_end": f"{machine.vmalloc_end:#x}",
        "vmalloc_size": res.vmalloc_size,
        "requests": res.requests,
        "failures": res.failures,
        "failed_bytes": res.failed_bytes,
        "first_failure_line": res.first_failure_line,
        "snapshot_failures": res.snapshot_failures,
        "peak_busy_bytes": res.peak_busy_bytes,
        "peak_used_bytes": res.peak_used_bytes,
        "largest_free_end": last.largest_free if last else 0,
        "largest_free_min": min((f.largest_free for f in samples), default=0),
        "external_end": last.external if last else 0.0,
        "external_worst": max((f.external for f in samples), default=0.0),
    }


def run_serial(points: Iterable[SweepPoint]) -> list[dict[str, Any]]:
    """Run the points one by one in this process (the reference for :func:`sweep`)."""
    return [run_point(p) for p in points]


def sweep(
    points: Sequence[SweepPoint],
    *,
    scheduler: str | None = None,
    client: Any = None,
    workers: int | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every point as a task on a dask.distributed cluster; rows in grid order.

    ``client``: an existing ``distributed.Client``; otherwise ``scheduler`` (an
    address) or a new loopback ``LocalCluster`` with ``workers`` processes.
    ``on_done(done, total)`` is called as tasks finish (the progress bar).
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("sweeps need dask.distributed: pip install 'pyvmalloc[cluster]'") from e
    if not points:
        return []
    own: list[Any] = []
    try:
        if client is None:
            if scheduler:
                try:
                    client = Client(scheduler, timeout=10)  # type: ignore[no-untyped-call]
                except (OSError, TimeoutError) as e:  # no scheduler there
                    raise ValueError(f"--scheduler {scheduler}: cannot connect ({e})") from None
            else:
                # never more processes than tasks (a huge --workers is not a fork bomb)
                n = min(workers or os.cpu_count() or 1, len(points))
                cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=n,
                    threads_per_worker=1,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=50,  # a failed task is re-raised here, once
                )
                own.append(cluster)
                client = Client(cluster)  # type: ignore[no-untyped-call]
            own.insert(0, client)
        futures = client.map(run_point, list(points), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        rows: list[dict[str, Any] | None] = [None] * len(points)
        finished = as_completed(futures)  # type: ignore[no-untyped-call]
        for done, fut in enumerate(finished, 1):
            rows[index[fut.key]] = fut.result()
            if on_done:
                on_done(done, len(points))
        return [r for r in rows if r is not None]
    finally:
        for obj in own:
            obj.close()


def print_table(rows: list[dict[str, Any]], *, stderr: bool = False) -> None:
    """The results as a table (on stderr when stdout carries the JSON)."""
    from rich.table import Table

    t = Table(
        title="sweep",
        caption="failed: requests that fail / all; peak: busy + lazily freed; free end/min: the "
        "largest free block at the end / its smallest; frag: external fragmentation end/worst",
    )
    t.add_column("capture", no_wrap=True)
    for col in ("kern", "cpus", "vmalloc=", "range", "failed", "peak", "free end/min", "frag"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        t.add_row(
            Path(r["capture"]).name,
            r["profile"],
            str(r["cpus"]),
            f"{r['vmalloc'] >> 20}M" if r["vmalloc"] else "default",
            f"{r['vmalloc_size'] / MiB:,.0f}M",
            f"{r['failures']}/{r['requests']}",
            f"{r['peak_used_bytes'] / MiB:,.1f}M",
            f"{r['largest_free_end'] / MiB:,.1f}M/{r['largest_free_min'] / MiB:,.1f}M",
            f"{r['external_end']:.2f}/{r['external_worst']:.2f}",
        )
    from pyvmalloc.cli_output import console

    console(stderr=stderr).print(t)


def plot(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Failures and the smallest largest-free-block against vmalloc= (or CPUs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("plots need matplotlib: pip install 'pyvmalloc[plot]'") from e
    by_vmalloc = len({r["vmalloc"] for r in rows}) > 1
    xkey = "vmalloc_size" if by_vmalloc else "cpus"
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        other = f"{r['cpus']} CPUs" if by_vmalloc else f"vmalloc={r['vmalloc'] >> 20}M"
        series.setdefault(f"{Path(r['capture']).name} {r['profile']} {other}", []).append(r)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: r[xkey])
        xs = [r[xkey] / MiB if by_vmalloc else r[xkey] for r in rs]
        top.plot(xs, [r["failures"] for r in rs], marker="o", label=label)
        bottom.plot(xs, [r["largest_free_min"] / MiB for r in rs], marker="o", label=label)
    top.set_ylabel("failed requests")
    top.legend(loc="best", fontsize="small")
    bottom.set_ylabel("smallest largest free block (MiB)")
    bottom.set_xlabel("vmalloc range (MiB)" if by_vmalloc else "CPUs")
    fig.tight_layout()
    from pyvmalloc.cli_output import save_figure

    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _sizes(text: str) -> list[int]:
    return [parse_size(t) for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    words = [t.strip() for t in text.split(",") if t.strip()]
    if not all(w.isascii() and w.isdigit() and int(w) > 0 for w in words):  # (int() takes '١')
        raise ValueError(f"not a list of whole numbers >= 1: {text!r}")
    return [int(w) for w in words]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable
    from pyvmalloc.trace.parse import parse_trace
    from pyvmalloc.trace.replay import load_capture
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    if args.workers < 0:
        raise ValueError(
            f"--workers {args.workers}: must be at least 1 (0, the default: one per CPU)"
        )
    check_writable(args.json, "--json")
    check_writable(args.plot, "--plot")
    for cap in args.capture:
        # a clear error (the file and line) before any task is sent, not a worker's
        trace, snap, _meta = load_capture(cap)
        parse_vmallocinfo(snap)
        parse_trace(trace)  # as run_point's whatif reads them
    profiles = [get_profile(p).name for p in args.profile.split(",") if p.strip()]
    if not profiles:
        raise ValueError(f"--profile {args.profile!r}: no profile given")
    for opt in ("vmalloc", "cpus"):
        text = getattr(args, opt)
        if text is not None and not [t for t in text.split(",") if t.strip()]:
            raise ValueError(f"--{opt} {text!r}: no value given")
    options: dict[str, Any] = {}
    if args.arch == "arm":
        options = {
            "vmsplit": args.vmsplit,
            "lpae": args.lpae,
            "highmem": not args.no_highmem,
            "module_plts": not args.no_module_plts,
        }
    elif args.arch == "arm64":
        options = {"va_bits": args.va_bits}
    points = grid(
        args.capture,
        vmallocs=_sizes(args.vmalloc) if args.vmalloc else [0],
        cpus=_ints(args.cpus) if args.cpus else [0],
        profiles=profiles,
        arch=args.arch,
        ram=parse_size(args.ram),
        paging_levels=args.paging_levels,
        options=options,
    )
    for p in {replace(p, capture="", cpus=p.cpus or 1) for p in points}:
        p.machine(p.cpus)  # validate every configuration up front (e.g. vmalloc= on x86_64)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"{len(points)} grid points", total=len(points))
        rows = sweep(
            points,
            scheduler=args.scheduler,
            workers=args.workers or None,
            on_done=lambda done, _total: bar.update(task, completed=done),
        )
    print_table(rows, stderr=args.json == "-")
    if args.json:
        from pyvmalloc.cli_output import jsonable

        text = json.dumps(
            jsonable({"grid": [asdict(p) for p in points], "results": rows}), indent=1
        )
        if args.json == "-":
            print(text)
        else:
            from pyvmalloc.cli_output import write_output

            write_output(args.json, text)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def register_cli(sub: Any) -> None:
    """Add the ``sweep`` subcommand."""
    p = sub.add_parser(
        "sweep",
        help="what-if over a grid (vmalloc=, CPUs, profiles), each point a task on dask",
    )
    p.add_argument("capture", nargs="+", help="capture directories (pyvmalloc capture)")
    p.add_argument("--vmalloc", help="vmalloc= sizes, e.g. 64M,128M,240M (i386/arm)")
    p.add_argument("--cpus", help="CPU counts, e.g. 1,2,4 (default: each capture's)")
    from pyvmalloc.config import PROFILES

    p.add_argument(
        "--profile",
        default="6.18",
        help=f"comma-separated kernel profiles of {', '.join(PROFILES)} (default 6.18)",
    )
    p.add_argument(
        "--arch",
        default="x86_64",
        choices=["x86_64", "i386", "arm", "arm64"],
        help="target architecture (default x86_64)",
    )
    p.add_argument("--paging-levels", type=int, default=4, help="x86_64: 4 or 5 (default 4)")
    p.add_argument("--ram", default="4G", help="target RAM, e.g. 1G (default 4G)")
    p.add_argument(
        "--vmsplit", default="3G", help="arm: CONFIG_VMSPLIT_ 3G, 3G_OPT, 2G or 1G (default 3G)"
    )
    p.add_argument("--lpae", action="store_true", help="arm: CONFIG_ARM_LPAE")
    p.add_argument("--no-highmem", action="store_true", help="arm: CONFIG_HIGHMEM off")
    p.add_argument("--no-module-plts", action="store_true", help="arm: CONFIG_ARM_MODULE_PLTS off")
    p.add_argument(
        "--va-bits", type=int, default=48, help="arm64: CONFIG_ARM64_VA_BITS (default 48)"
    )
    p.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="a running dask scheduler (default: local)"
    )
    p.add_argument("--workers", type=int, default=0, help="local cluster processes")
    p.add_argument("--json", metavar="FILE|-", help="write {grid, results} as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="PNG", help="failures and free space over the grid")
    p.set_defaults(func=_cmd_sweep)
