"""The ``pyvmalloc`` command line.

Without a subcommand it runs the main job on the bundled default (``main``).

Subcommands:

* ``main``      — replay the bundled real capture, compare kernels, tour the API;
* ``demo``      — the main job: a seeded allocation workload, then the allocator's state;
* ``replay``    — replay a real kernel trace from a vmallocinfo snapshot;
* ``compare``   — replay one trace under several kernel profiles, side by side;
* ``capture``   — record a real kernel's vmalloc events (root, tracefs);
* ``whatif``    — a capture's requests on another machine or kernel: failures, fragmentation;
* ``explain``   — the call tree of one API call, like the seeds' "Code Flow";
* ``walk``      — the page-table walk of an address;
* ``tour``      — a seeded workload of the whole API, then the /proc views;
* ``test-vmalloc`` — lib/test_vmalloc.c's cases and test_vmalloc.sh's modes;
* ``profiles``  — list the kernel profiles and what differs between them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _cmd_profiles(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from rich.console import Console
    from rich.table import Table

    from pyvmalloc.config import PROFILES

    table = Table(title="kernel profiles")
    table.add_column("rule")
    for name in PROFILES:
        table.add_column(name)
    for f in fields(next(iter(PROFILES.values()))):
        if f.name == "name":
            continue
        table.add_row(f.name, *(str(getattr(p, f.name)) for p in PROFILES.values()))
    Console().print(table)
    return 0


def default_capture() -> Path:
    """The real capture bundled with the package (Linux 6.18, 2 CPUs)."""
    return Path(__file__).parent / "data" / "captures" / "default"


def _cmd_main(args: argparse.Namespace) -> int:
    """The main job: replay the bundled capture, compare kernels, tour the API."""
    from rich.console import Console

    from pyvmalloc.cli_vmalloc import run_tour
    from pyvmalloc.trace.replay import compare, load_capture, print_result, replay

    console = Console()
    cap = default_capture()
    trace, snap, meta = load_capture(cap)
    console.rule("1. replaying a real Linux 6.18 capture through the model")
    console.print(
        f"capture: {cap} ({meta.get('kernel_release', '?')}, "
        f"{len(meta.get('cpus_possible', [])) or '?'} CPUs)"
    )
    print_result(replay(trace, snap, profile="6.18", meta=meta), 3)
    console.rule("2. the same trace under three kernels")
    compare(trace, snap, ["4.19", "5.4", "6.18"], cpus=None, meta=meta)
    console.rule("3. a tour of the vmalloc API on a default machine")
    run_tour("6.18", 2, args.ops, 1, "4G")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pyvmalloc.workloads.demo import run_demo

    return run_demo(profile=args.profile, cpus=args.cpus, ops=args.ops, seed=args.seed)


def version_text() -> str:
    """``pyvmalloc --version``: the package version and which hot-path code runs."""
    from importlib.metadata import PackageNotFoundError, version

    from pyvmalloc import _accel

    try:
        v = version("pyvmalloc")
    except PackageNotFoundError:
        v = "(not installed)"
    return f"pyvmalloc {v}, {_accel.DESCRIPTION}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyvmalloc",
        description="An executable model of the Linux kernel's vmalloc subsystem.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.set_defaults(func=_cmd_main, ops=5000)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser(
        "main", help="the main job: replay the bundled capture, compare kernels, tour the API"
    )
    p.add_argument("--ops", type=int, default=5000, help="operations in the API tour")
    p.set_defaults(func=_cmd_main)

    p = sub.add_parser("demo", help="run a seeded allocation workload and show the allocator")
    p.add_argument("--profile", default="6.18", help="kernel profile: 4.19, 5.4 or 6.18")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--ops", type=int, default=20000, help="number of alloc/free operations")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("profiles", help="list the kernel profiles and their rules")
    p.set_defaults(func=_cmd_profiles)

    from pyvmalloc.trace.capture import register_cli as register_capture
    from pyvmalloc.trace.replay import register_cli as register_replay

    register_replay(sub)
    register_capture(sub)

    from pyvmalloc.report.whatif import register_cli as register_whatif

    register_whatif(sub)

    from pyvmalloc.cli_vmalloc import register_cli as register_vmalloc

    register_vmalloc(sub)

    from pyvmalloc.workloads.test_vmalloc import register_cli as register_test_vmalloc

    register_test_vmalloc(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except BrokenPipeError:
        return 0
    except (ValueError, OSError) as e:
        print(f"pyvmalloc: error: {e}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
