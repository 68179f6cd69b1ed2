"""Per-capture replay table: agreement, known agreement, mismatch causes.

    python bench/replay_table.py [CAPTURES_DIR ...] [--json OUT] [--causes N] [--no-kstate]

Each capture directory under CAPTURES_DIR (default tests/data/captures) is replayed as
``pyvmalloc replay`` does (end snapshot included; seeded from kstate.json when the capture
has one, unless ``--no-kstate``); one row per capture, then the totals
for drained captures, captures without drop_caches and BPF-map ones. ``--causes N``
lists each capture's N costliest causes. CPU time, not wall time, gives the speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from pyvmalloc.trace.replay import replay_capture

#: The drained BPF-map (and BPF-program) captures: the "BPF-map" row of docs/replay.md.
BPF_MAP = {
    "churn-any",
    "churn-cpu0",
    "churn-cpu1",
    "longlived-any",
    "mixed-spread",
    "mixed-cpu1-paced",
    "bpfprog",
}


def row(cap: Path, *, use_kstate: bool = True) -> dict[str, object]:
    t0 = time.process_time()
    res = replay_capture(cap, use_kstate=use_kstate)
    cpu = time.process_time() - t0
    causes = Counter(m.cause_class for m in res.mismatches)
    worst = sorted(res.causes, key=lambda c: -int(c["mismatches"]))
    return {
        "name": cap.name,
        "seed": res.seed,
        "drop": res.drop_caches is not False,
        "allocs": res.allocs_compared,
        "matched": res.allocs_matched,
        "agreement": res.agreement,
        "known": res.agreement_known,
        "classes": dict(causes),
        "worst": [(c["mismatches"], c["class"], c["fact"]) for c in worst],
        "events": res.events,
        "cpu": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("dirs", nargs="*", default=["tests/data/captures"])
    p.add_argument("--json")
    p.add_argument("--causes", type=int, default=0)
    p.add_argument(
        "--no-kstate", action="store_true", help="ignore kstate.json (as `replay --no-kstate`)"
    )
    a = p.parse_args(argv)
    caps = sorted(d for base in a.dirs for d in Path(base).iterdir() if (d / "meta.json").exists())
    rows = []
    for c in caps:
        try:
            rows.append(row(c, use_kstate=not a.no_kstate))
        except Exception as e:  # a capture this version cannot read: say so, go on
            print(f"{c.name:24} error: {e}", file=sys.stderr)
    print(
        f"{'capture':24} {'seed':8} {'drop':4} {'allocs':>6} {'agree':>8} {'known':>8} {'max':>4}  causes"
    )
    for r in rows:
        worst = r["worst"]
        top = worst[0][0] if worst else 0  # type: ignore[index]
        cls = ", ".join(f"{k} {v}" for k, v in r["classes"].items())  # type: ignore[attr-defined]
        print(
            f"{r['name']:24} {r['seed']:8} {'y' if r['drop'] else 'n':4} {r['allocs']:6} "
            f"{100 * r['agreement']:7.2f}% {100 * r['known']:7.2f}% {top:4}  {cls}"
        )
        for n, k, fact in worst[: a.causes]:  # type: ignore[index]
            print(f"{'':30} {n:4} {k}: {fact}")
    groups = {
        "drained": [r for r in rows if r["drop"]],
        "no drop": [r for r in rows if not r["drop"]],
        "BPF-map": [r for r in rows if r["name"] in BPF_MAP],
    }
    for name, rs in groups.items():
        n = sum(int(r["allocs"]) for r in rs)  # type: ignore[call-overload]
        m = sum(int(r["matched"]) for r in rs)  # type: ignore[call-overload]
        if n:
            print(f"{name:33} {len(rs):4} {n:6} {100 * m / n:7.2f}%")
    ev = sum(int(r["events"]) for r in rows)  # type: ignore[call-overload]
    cpu = sum(float(r["cpu"]) for r in rows)  # type: ignore[arg-type]
    print(f"replay speed: {ev / cpu:,.0f} events/s CPU (incl. parsing), {ev} events")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
