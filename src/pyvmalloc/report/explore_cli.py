"""``pyvmalloc explore``: the command line of the explorer.

The data come from :mod:`pyvmalloc.report.explore`, the page from
:mod:`pyvmalloc.report.explore_html`, the static map from
:mod:`pyvmalloc.report.explore_png`.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyvmalloc.report.explore import build_replay_data, build_tour_data

__all__ = ["register_cli"]


def _cmd_explore(args: argparse.Namespace) -> int:
    import time

    from pyvmalloc.config import get_profile

    get_profile(args.profile)  # a clear error for an unknown profile
    policy = args.policy  # '' is refused as an unknown policy, not taken as none
    if (args.tour, args.capture is not None, args.call is not None).count(True) != 1:
        raise ValueError("explore: give a CAPTURE directory, --tour or --call (one of them)")
    if args.before is not None and args.call is None:
        raise ValueError("explore: --before sets up a --call; give --call too")
    if args.ops < 1:
        raise ValueError(f"explore: --ops must be at least 1, not {args.ops}")
    if args.output is None and args.png is None:
        raise ValueError("explore: nothing to write (give -o FILE.html and/or --png FILE.png)")
    # Outputs are checked before the replay, not after it (as whatif --plot is).
    from pyvmalloc.cli_output import check_writable

    check_writable(args.output, "-o")
    if args.png is not None:
        check_writable(args.png, "--png")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--png needs matplotlib: pip install 'pyvmalloc[plot]'") from None
    t0 = time.perf_counter()
    if args.call is not None:
        from pyvmalloc.explain import parse_calls

        before = [t for t in (args.before or "").split(";") if t.strip()]
        if len(parse_calls(args.call)) != 1:
            raise ValueError("explore --call takes exactly one call (use --before for the setup)")
        data = build_tour_data(
            profile=args.profile,
            cpus=2 if args.cpus is None else args.cpus,
            policy=policy,
            calls=[t.strip() for t in before] + [args.call.strip()],
        )
    elif args.tour:
        data = build_tour_data(
            profile=args.profile,
            cpus=2 if args.cpus is None else args.cpus,
            ops=args.ops,
            seed=args.seed,
            policy=policy,
        )
    else:
        data = build_replay_data(args.capture, profile=args.profile, cpus=args.cpus, policy=policy)
    if args.output is not None:
        from pyvmalloc.report.explore_html import write_html

        size = write_html(data, args.output)
        print(f"wrote {args.output} ({size / 1e6:.1f} MB, {len(data['events'])} events)")
    if args.png is not None:
        from pyvmalloc.report.explore_png import write_png

        write_png(data, args.png)
        print(f"wrote {args.png}")
    if data.get("replay"):
        print(data["replay"]["headline"])
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``pyvmalloc explore``."""
    from pyvmalloc.cli_output import add_profile_argument

    p = subparsers.add_parser(
        "explore", help="write a self-contained HTML explorer of a replay or an API tour"
    )
    p.add_argument("capture", nargs="?", metavar="CAPTURE", help="a capture directory")
    p.add_argument("--tour", action="store_true", help="explore a seeded API tour instead")
    p.add_argument("--call", help='explore one API call, as explain does: "vmalloc(20000)"')
    p.add_argument("--before", help='setup calls for --call, e.g. "vmalloc(8192); vfree(_)"')
    p.add_argument("-o", "--output", metavar="FILE.html", help="the page to write")
    p.add_argument("--png", metavar="FILE.png", help="also draw the final address-space map")
    add_profile_argument(p)
    p.add_argument(
        "--policy",
        metavar="NAME|MODULE:CLASS",
        help="a placement policy instead of the profile's (e.g. best-fit; see docs/policy.md)",
    )
    p.add_argument("--cpus", type=int, default=None, help="CPUs (default: capture's, or 2)")
    p.add_argument("--ops", type=int, default=160, help="API calls in the --tour (default 160)")
    p.add_argument("--seed", type=int, default=1, help="seed of the --tour (default 1)")
    p.set_defaults(func=_cmd_explore)
