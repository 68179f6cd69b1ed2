"""pyvmalloc's benchmark: one command, a table, and a JSON record.

    python bench/run.py            # full run (a few minutes per implementation)
    python bench/run.py --quick    # about a minute per implementation
    python bench/run.py --impl accelerated   # only one of the two

Every measure runs twice, in two fresh processes: once with the pure-Python reference
(``PYVMALLOC_PURE=1``) and once with the compiled accelerator (when it is built); the
table shows both and their ratio. Times are CPU time of this process
(``time.process_time``), not wall clock: the machine may be shared, and CPU time is far
less disturbed by other load. Each figure is the median of several runs. Results go to
``bench/results/<date>-<quick|full>.json`` with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
CAPTURE = ROOT / "src" / "pyvmalloc" / "data" / "captures" / "default"


def median_of(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def run(quick: bool) -> dict[str, Any]:
    import bench_parse
    import bench_phys
    import bench_vmap

    runs = 3
    res: dict[str, Any] = {}
    lives = (1_000, 10_000, 100_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
    pairs = 20_000 if quick else 50_000
    alloc: dict[str, float] = {}
    for live in lives:
        alloc[str(live)] = median_of(
            lambda live=live: bench_vmap.bench_alloc_free_pairs(live, pairs),
            runs if live < 1_000_000 else 1,
        )
    res["vmap_alloc_free_pairs_per_s"] = alloc
    res["vmap_growth_ratio"] = alloc[str(lives[0])] / alloc[str(lives[-1])]
    res["vmap_alloc_free_pairs_per_s_54_10k"] = median_of(
        lambda: bench_vmap.bench_alloc_free_pairs(10_000, pairs, profile="5.4"), runs
    )
    res["vmap_bytes_per_live_area"] = bench_vmap.bytes_per_live_area(20_000 if quick else 100_000)

    res["phys_order0_pairs_per_s"] = median_of(lambda: bench_phys.bench_order0(100_000), runs)
    res["phys_map_unmap_1m_pairs_per_s"] = median_of(
        lambda: bench_phys.bench_map_unmap_1m(2_000), runs
    )
    res["phys_64g"] = bench_phys.bench_64g()

    trace = big_trace(50 if quick else 200)
    res["parse_lines_per_s"] = median_of(lambda: bench_parse.bench_parse(trace), runs)
    res["replay_events_per_s"] = median_of(bench_replay, runs)
    res["replay_end_to_end_events_per_s"] = median_of(bench_replay_end_to_end, runs)
    try:
        import bench_vmalloc
    except ImportError:
        res["vmalloc"] = "not available"
    else:
        res["vmalloc_4k_pairs_per_s"] = median_of(
            lambda: bench_vmalloc.bench_vmalloc_4k(5_000), runs
        )
        res["vmalloc_1m_pairs_per_s"] = median_of(lambda: bench_vmalloc.bench_vmalloc_1m(500), runs)
        res["vmalloc_long_busy_list_us_per_loop"] = median_of(
            lambda: bench_vmalloc.bench_long_busy_list(2_000 if quick else 20_000), runs
        )
    import bench_board

    res["board_whatif_30k_lines_s"] = median_of(lambda: bench_board.bench_board_whatif(), runs)
    res.update(run_test_vmalloc_sections(quick))
    return res


def run_test_vmalloc_sections(quick: bool) -> dict[str, Any]:
    """lib/test_vmalloc.c in the model (bench/bench_test_vmalloc.py); one run each."""
    try:
        import bench_test_vmalloc as btv
    except ImportError:
        return {"test_vmalloc": "not available"}
    res: dict[str, Any] = {}
    loops = 2_000 if quick else 20_000
    res["test_vmalloc_loops"] = loops
    res["test_vmalloc_6.18_us_per_loop"] = {
        name: v["us_per_loop"] for name, v in btv.bench_cases(loops).items()
    }
    prof = btv.bench_profiles(loops)
    for name in ("4.19", "5.4", "6.18"):
        res[f"test_vmalloc_profile_{name}"] = prof.pop(name)
    res["test_vmalloc_profile_ratios"] = prof
    if quick:
        # Two short runs (1 and 10,000 loops per test) fitted as setup + per-loop cost.
        ex = btv.extrapolate_performance_mode(1, 10_000)
        res["test_vmalloc_performance_mode_100k_s (extrapolated from 1 and 10k loops)"] = ex[
            "extrapolated_s_at_100000"
        ]
        res["test_vmalloc_performance_mode_10k_s (measured)"] = ex["measured_s_at_10000"]
    else:
        res["test_vmalloc_performance_mode_100k_s"] = btv.bench_performance_mode(100_000)
    return res


def big_trace(copies: int) -> Path:
    """A large real trace: the bundled capture's event lines repeated ``copies`` times."""
    import tempfile

    lines = [
        ln
        for ln in (CAPTURE / "trace").read_text().splitlines(keepends=True)
        if not ln.startswith("#")
    ]
    path = Path(tempfile.gettempdir()) / f"pyvmalloc-bench-trace-{copies}.txt"
    path.write_text("".join(lines * copies))
    return path


def bench_replay() -> float:
    """Replay throughput (events/s) of the replay loop over every bundled capture: the
    model seeded from the snapshot beforehand, parsing excluded, pool inference on where
    the capture was taken without drop_caches (as ``pyvmalloc replay`` runs it)."""
    from pyvmalloc.trace.parse import parse_trace
    from pyvmalloc.trace.replay import Replayer, _events_after_snapshot, load_capture
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    events = 0
    seconds = 0.0
    for cap in sorted((ROOT / "tests" / "data" / "captures").iterdir()):
        if not cap.is_dir():
            continue
        trace, snap, meta = load_capture(cap)
        info = parse_vmallocinfo(snap)
        parsed = parse_trace(trace)
        rp = Replayer(info, profile="6.18", cpus=2)
        rp._infer_pools = meta.get("drop_caches") is False and rp.trace_driven
        evs = _events_after_snapshot(parsed, rp.result)
        t0 = time.process_time()
        rp.run(evs)
        seconds += time.process_time() - t0
        events += len(evs)
    return events / seconds


def bench_replay_end_to_end() -> float:
    """Events/s of ``pyvmalloc replay DIR`` as a whole over every bundled capture and
    kstate capture: reading the snapshot, seeding (from kstate.json where there is one),
    the replay and the end comparison; only parsing the trace is taken off."""
    from pyvmalloc.trace.capturedir import nr_cpus
    from pyvmalloc.trace.parse import parse_trace
    from pyvmalloc.trace.replay import load_capture, replay_capture

    events = 0
    seconds = 0.0
    roots = (ROOT / "tests" / "data" / "captures", ROOT / "tests" / "data" / "kstate")
    for cap in sorted(d for r in roots for d in r.iterdir() if (d / "meta.json").exists()):
        trace, _, meta = load_capture(cap)
        t0 = time.process_time()
        parse_trace(trace, cpus=nr_cpus(meta))
        t1 = time.process_time()
        res = replay_capture(cap)
        t2 = time.process_time()
        seconds += (t2 - t1) - (t1 - t0)
        events += res.events
    return events / seconds


TARGETS = {
    "vmap_alloc_free_pairs_per_s/10000": ">= 600,000 (aim 1,000,000)",
    "vmap_growth_ratio": "<= 1.5",
    "vmap_bytes_per_live_area": "<= 200",
    "phys_order0_pairs_per_s": ">= 300,000",
    "phys_map_unmap_1m_pairs_per_s": ">= 2,000",
    "64 GiB machine/bytes_per_page": "<= 16",
    "parse_lines_per_s": ">= 1,000,000",
    "replay_events_per_s": ">= 500,000 (aim 1,000,000)",
    "vmalloc_4k_pairs_per_s": ">= 150,000 (aim 200,000)",
    "vmalloc_1m_pairs_per_s": ">= 20,000",
    "board_whatif_30k_lines_s": "< 1",
    "test_vmalloc_performance_mode_100k_s": "< 120",
    "test_vmalloc_performance_mode_100k_s (extrapolated from 1 and 10k loops)": "< 120",
    "test_vmalloc_profile_ratios/ratio_4.19_over_5.4/long_busy_list_us_per_loop": "> 1 (kernel: 3-7x)",
}


def flatten(res: dict[str, Any]) -> dict[str, Any]:
    """Nested result dicts as ``a/b/c`` keys (the table's rows)."""
    out: dict[str, Any] = {}
    for key, value in res.items():
        if isinstance(value, dict):
            name = "64 GiB machine" if key == "phys_64g" else key
            for k2, v2 in value.items():
                if isinstance(v2, dict):
                    for k3, v3 in v2.items():
                        out[f"{name}/{k2}/{k3}"] = v3
                else:
                    out[f"{name}/{k2}"] = v2
        else:
            out[key] = value
    return out


def speedup(key: str, ref: Any, acc: Any) -> str:
    """accelerated over reference, as a speed-up (> 1 is faster); "" for non-timings."""
    if not isinstance(ref, int | float) or not isinstance(acc, int | float) or not ref or not acc:
        return ""
    last = key.rsplit("/", 1)[-1]
    if "_per_s" in key:  # a rate: higher is better
        return f"{acc / ref:.2f}x"
    timing = "us_per_loop" in key or last.endswith(("_s", "seconds")) or "_s (" in last
    if not timing or key.startswith("test_vmalloc_profile_ratios"):
        return ""  # counts, sizes, model outputs, ratios
    return f"{ref / acc:.2f}x"


def print_table(runs: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="pyvmalloc benchmark (CPU time, medians)")
    t.add_column("measure", overflow="fold")
    names = list(runs)
    for name in names:
        t.add_column(name, justify="right")
    both = "reference" in runs and "accelerated" in runs
    if both:
        t.add_column("accel / ref", justify="right")
    t.add_column("target", justify="right")

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
        return "" if v is None else str(v)

    flat = {n: flatten(r) for n, r in runs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    for key in keys:
        row = [key] + [fmt(flat[n].get(key)) for n in names]
        if both:
            row.append(speedup(key, flat["reference"].get(key), flat["accelerated"].get(key)))
        row.append(TARGETS.get(key, ""))
        t.add_row(*row)
    Console().print(t)


def implementation() -> str:
    """Which hot-path code the imported pyvmalloc runs (older trees had only Python)."""
    try:
        from pyvmalloc import _accel
    except ImportError:
        return "pure Python (a tree without the accelerator)"
    return _accel.DESCRIPTION


def run_child(quick: bool, pure: bool) -> dict[str, Any]:
    """One implementation's run in a fresh process (the choice is made at import)."""
    env = dict(os.environ)
    env.pop("PYVMALLOC_PURE", None)
    if pure:
        env["PYVMALLOC_PURE"] = "1"
    # CPU time counts every thread of the process: OpenBLAS's idle workers spin and
    # would be charged to the model (about 6 % measured with perf). The model uses no BLAS.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a smaller run")
    p.add_argument(
        "--impl",
        choices=("both", "reference", "accelerated"),
        default="both",
        help="which implementation(s) to measure (default both, side by side)",
    )
    p.add_argument("--out", help="JSON output path (default bench/results/...)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        t0 = time.perf_counter()
        res = run(args.quick)
        res["total_seconds"] = time.perf_counter() - t0
        res["implementation"] = implementation()
        print(json.dumps(res))
        return 0

    runs: dict[str, dict[str, Any]] = {}
    if args.impl in ("both", "reference"):
        runs["reference"] = run_child(args.quick, pure=True)
    if args.impl in ("both", "accelerated"):
        acc = run_child(args.quick, pure=False)
        if "accelerated" not in acc.get("implementation", ""):
            print(f"note: no accelerator in this install ({acc.get('implementation')})")
        runs["accelerated"] = acc
    print_table(runs)
    out = (
        Path(args.out)
        if args.out
        else HERE
        / "results"
        / (time.strftime("%Y-%m-%d") + ("-quick" if args.quick else "-full") + ".json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "timer": "time.process_time",
                "results": runs,
                "build": implementation(),
            },
            indent=1,
        )
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
