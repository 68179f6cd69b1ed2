"""The ``pyvmalloc`` command line (also ``python -m pyvmalloc``).

Without a subcommand it runs the main job on the bundled default (``main``).

Subcommands:

* ``main``      — replay the bundled real capture, compare kernels, tour the API;
* ``demo``      — a seeded synthetic allocation workload, then the allocator's state;
* ``replay``    — replay a real kernel trace from a vmallocinfo snapshot;
* ``compare``   — replay one trace under several kernel profiles, side by side;
* ``capture``   — record a real kernel's vmalloc events (root, tracefs);
* ``kstate``    — read the kernel's free tree, vmap nodes and pools (root, BPF);
* ``report``    — list a capture's events, like ``trace-cmd report``;
* ``kmem``      — crash's ``kmem -v`` and ``kmem ADDR`` on a model state;
* ``whatif``    — a capture's requests on another machine or kernel: failures, fragmentation;
* ``sweep``     — the what-if over a grid of vmalloc=, CPUs and profiles, on dask;
* ``explain``   — the call tree of one API call, like the seeds' "Code Flow";
* ``walk``      — the page-table walk of an address;
* ``tour``      — a seeded workload of the whole API, then the /proc views;
* ``test-vmalloc`` — lib/test_vmalloc.c's cases and test_vmalloc.sh's modes;
* ``profiles``  — list the kernel profiles and what differs between them;
* ``completion`` — a bash, zsh or tcsh completion script generated from this parser.

Conventions: piped output is never wrapped and carries no ANSI codes; ``--json OUT``
on every command that prints a table or a report (``main`` included), and ``--json -``
writes JSON (addresses as ``"0x..."`` strings) to stdout; errors are one line on stderr
with exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyvmalloc.errors import InputError

__all__ = ["build_parser", "default_capture", "main", "profile_field_docs", "version_text"]


def version_text() -> str:
    """What ``pyvmalloc --version`` prints: version, accelerator, Python."""
    from pyvmalloc import __version__, accelerator

    py = ".".join(map(str, sys.version_info[:3]))
    return f"pyvmalloc {__version__} ({accelerator()}; Python {py})"


def profile_field_docs() -> dict[str, str]:
    """Each :class:`~pyvmalloc.config.KernelProfile` field's ``#:`` documentation."""
    from pyvmalloc.config import KernelProfile

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(KernelProfile).splitlines():
        s = line.strip()
        if s.startswith("#:"):
            pending.append(s[2:].strip())
            continue
        m = re.match(r"(\w+)\s*:", s)
        if m and pending:
            docs[m.group(1)] = " ".join(pending).replace("``", "")
        pending = []
    return docs


def _cmd_profiles(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from rich.table import Table

    from pyvmalloc.cli_output import check_writable, console, write_json
    from pyvmalloc.config import PROFILES

    check_writable(args.json, "--json")
    docs = profile_field_docs()
    profiles = list(PROFILES.values())
    rows = []
    for f in fields(profiles[0]):
        if f.name == "name":
            continue
        values = [getattr(p, f.name) for p in profiles]
        differs = len({repr(v) for v in values}) > 1
        if differs or args.all:
            rows.append((f.name, values, differs, docs.get(f.name, "")))
    if args.json is not None:
        write_json(
            [
                {"rule": n, "values": dict(zip(PROFILES, v, strict=True)), "differs": d, "doc": doc}
                for n, v, d, doc in rows
            ],
            args.json,
        )
        if args.json == "-":
            return 0
    c = console()
    what = "every rule" if args.all else "the rules that differ"
    table = Table(title=f"kernel profiles: {what}")
    table.add_column("rule", no_wrap=True)
    for name in PROFILES:
        table.add_column(name)
    table.add_column("what it is")
    for name, values, _differs, doc in rows:
        table.add_row(name, *(str(v) for v in values), doc, style=None)
    c.print(table, markup=False)
    if not args.all:
        c.print("(--all: also the rules all profiles share)", markup=False)
    return 0


def default_capture() -> Path:
    """The real capture bundled with the package (Linux 6.18, 2 CPUs)."""
    return Path(__file__).parent / "data" / "captures" / "default"


def _cmd_main(args: argparse.Namespace) -> int:
    """The main job: replay the bundled capture, compare kernels, tour the API."""
    import io

    if args.ops < 0:
        raise ValueError(f"--ops {args.ops}: must not be negative")

    from rich.console import Console

    from pyvmalloc.cli_output import check_writable, console, rule, write_json
    from pyvmalloc.cli_vmalloc import run_tour
    from pyvmalloc.trace.replay import compare, load_capture, print_result, replay

    json_out: str | None = getattr(args, "json", None)
    check_writable(json_out, "--json")
    quiet = json_out == "-"  # the JSON replaces the report on stdout
    c = Console(file=io.StringIO()) if quiet else console()
    cap = default_capture()
    trace, snap, meta = load_capture(cap)
    rule(c, "1. replaying a real Linux 6.18 capture through the model")
    c.print(
        f"capture: {cap} ({meta.get('kernel_release', '?')}, "
        f"{len(meta.get('cpus_possible', [])) or '?'} CPUs)",
        markup=False,
    )
    end = cap / "vmallocinfo.end"
    res = replay(trace, snap, profile="6.18", meta=meta, end_snapshot=end if end.exists() else None)
    if not quiet:
        print_result(res, 3)
    rule(c, "2. the same trace under three kernels")
    rows = compare(trace, snap, ["4.19", "5.4", "6.18"], cpus=None, meta=meta, show=not quiet)
    rule(c, "3. a tour of the vmalloc API on a default machine")
    stats = run_tour("6.18", 2, args.ops, 1, "4G", out=c, progress=not quiet)
    if json_out:
        write_json(
            {
                "capture": str(cap),
                "replay": res.as_json(),
                "compare": [r.as_json() for r in rows],
                "tour": stats,
            },
            json_out,
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pyvmalloc.workloads.demo import run_demo

    if args.ops < 0:
        raise ValueError(f"--ops {args.ops}: must not be negative")
    return run_demo(
        profile=args.profile, cpus=args.cpus, ops=args.ops, seed=args.seed, json_out=args.json
    )


def _cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pyvmalloc.cli_output import add_json_argument, add_profile_argument

    parser = argparse.ArgumentParser(
        prog="pyvmalloc",
        description="An executable model of the Linux kernel's vmalloc subsystem. "
        "Without a command: the main job on the bundled capture.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.set_defaults(func=_cmd_main, ops=5000)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "main", help="the main job: replay the bundled capture, compare kernels, tour the API"
    )
    p.add_argument(
        "--ops", type=int, default=5000, help="operations in the API tour (default 5000)"
    )
    add_json_argument(p, "the replay, the comparison and the tour's statistics")
    p.set_defaults(func=_cmd_main)

    p = sub.add_parser("demo", help="run a seeded allocation workload and show the allocator")
    add_profile_argument(p)
    p.add_argument("--cpus", type=int, default=2, help="online CPUs (default 2)")
    p.add_argument(
        "--ops", type=int, default=20000, help="number of alloc/free operations (default 20000)"
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the workload (default 1)")
    add_json_argument(p, "the allocator's tables")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "profiles", help="the kernel profiles: every rule that differs, and what it is"
    )
    p.add_argument("--all", action="store_true", help="also list the rules all profiles share")
    add_json_argument(p, "the rules")
    p.set_defaults(func=_cmd_profiles)

    from pyvmalloc.trace.capture import register_cli as register_capture
    from pyvmalloc.trace.replay import register_cli as register_replay

    register_replay(sub)
    register_capture(sub)

    from pyvmalloc.trace.kread import register_cli as register_kstate

    register_kstate(sub)

    from pyvmalloc.trace.report import register_cli as register_report

    register_report(sub)

    from pyvmalloc.cli_kmem import register_cli as register_kmem

    register_kmem(sub)

    from pyvmalloc.report.whatif import register_cli as register_whatif

    register_whatif(sub)

    from pyvmalloc.report.explore_cli import register_cli as register_explore

    register_explore(sub)

    from pyvmalloc.report.sweep import register_cli as register_sweep

    register_sweep(sub)

    from pyvmalloc.cli_vmalloc import register_cli as register_vmalloc

    register_vmalloc(sub)

    from pyvmalloc.workloads.test_vmalloc import register_cli as register_test_vmalloc

    register_test_vmalloc(sub)

    p = sub.add_parser(
        "completion",
        help='print a shell completion script (bash: eval "$(pyvmalloc completion bash)")',
    )
    p.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell to complete for")
    p.set_defaults(func=_cmd_completion)
    # `pyvmalloc CMD --help` opens with what the command does, as the list says it.
    for action in sub._choices_actions:
        cmd = sub.choices[action.dest]
        if cmd.description is None and action.help:
            cmd.description = action.help[0].upper() + action.help[1:] + "."
        for opt in cmd._actions:  # every integer option reads ASCII digits only
            if opt.type is int:
                opt.type = ascii_int
    parser.set_defaults(_subparsers=sub.choices)
    return parser


_ASCII_INT = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)


def ascii_int(text: str) -> int:
    """An integer option: ASCII digits with an optional sign. ``int()`` also takes
    ``٣``, ``1_000`` and surrounding spaces, which no shell user means as a number."""
    if not _ASCII_INT.fullmatch(text):
        raise ValueError(text)
    return int(text)


ascii_int.__name__ = "int"  # argparse says "invalid int value: '٣'"


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a command that takes ``key=value`` words gets them anywhere."""
    args, extra = parser.parse_known_args(argv)
    dest = getattr(args, "extra_words", None)
    if extra and dest is not None and all("=" in w and not w.startswith("-") for w in extra):
        getattr(args, dest).extend(extra)
        extra = []
    if extra:
        subparsers: dict[str, Any] = getattr(args, "_subparsers", {})
        target = subparsers.get(args.command or "", parser)
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = _parse(parser, argv)
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's exit-time
        # flush of stdout from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except InputError as e:  # PATH:LINE: what is wrong in a user's file
        print(f"pyvmalloc: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # a model too big for this host (says what fits)
        print(f"pyvmalloc: error: {str(e) or 'out of host memory'}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else e
        print(f"pyvmalloc: error: {msg}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
