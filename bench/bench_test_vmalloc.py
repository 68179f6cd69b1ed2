"""test_vmalloc benchmarks: the kernel's own vmalloc test module, run in the model.

* :func:`bench_cases` — every case of the 6.18 module under the ``performance``
  mode's settings (one worker, sequential order, one model) at a fixed loop count:
  Python wall µs per loop (per call for ``align_shift_alloc_test``, per object for
  ``pcpu_alloc_test``, whose loop counts are fixed by the test).
* :func:`bench_profiles` — 4.19 / 5.4 / 6.18 side by side on ``fix_size_alloc_test``
  and ``long_busy_list_alloc_test``, run the way ``test_vmalloc.sh performance``
  runs them: sequentially in one model (``full_fit_alloc_test`` in between), so the
  fragmentation earlier cases leave behind is there; plus 4.19's list nodes visited
  per allocation.
* :func:`bench_harness` — the three performance cases with the compiled harness
  (``_speedups.tv_loops``) and with the Python worker loop, µs per loop, on one model
  each (both use the compiled vmalloc/vfree when the accelerator is in use).
* :func:`bench_performance_mode` — the whole ``test_vmalloc.sh performance`` on 6.18
  (``sequential_test_order=1 test_repeat_count=3``, default mask 7) at ``loops`` per
  test, wall seconds; :func:`extrapolate_performance_mode` fits two smaller runs.

    python bench/bench_test_vmalloc.py [--quick]
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import replace
from typing import Any

from pyvmalloc.kernel import Kernel
from pyvmalloc.workloads import test_vmalloc as tv
from pyvmalloc.workloads.test_vmalloc import (
    CASES,
    TestVmallocParams,
    mode_params,
    run_test_vmalloc_full,
)

#: Units in which each case's "loops" are counted when test_loop_count does not apply.
FIXED_LOOPS = {"align_shift_alloc_test": 64, "pcpu_alloc_test": 35000}


def _run_case(k: Kernel, base: TestVmallocParams, index: int, seed: int = 1) -> tuple[float, Any]:
    p = replace(base, run_test_mask=1 << index)
    gc.disable()
    try:
        t0 = time.process_time()
        r = run_test_vmalloc_full(k, p, seed)
        dt = time.process_time() - t0
    finally:
        gc.enable()
    return dt, r


def bench_cases(loops: int, profile: str = "6.18", cpus: int = 2) -> dict[str, dict[str, float]]:
    """Each case once (repeat 1), sequentially in one model: wall µs per loop."""
    k = Kernel(profile, cpus=cpus)
    base = mode_params("performance", profile, cpus, [f"test_loop_count={loops}"])
    base.test_repeat_count = 1
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(CASES[base.era]):
        dt, r = _run_case(k, base, i)
        n = FIXED_LOOPS.get(name, loops)
        s = r.summaries[0]
        out[name] = {
            "us_per_loop": dt / n * 1e6,
            "wall_s": dt,
            "model_avg_usec": s.avg_usec,
            "ok": float(s.failed == 0),
        }
    k.purge_vmap_area_lazy()
    k.check()
    return out


def bench_profiles(loops: int, cpus: int = 2) -> dict[str, Any]:
    """4.19 vs 5.4 vs 6.18 on fix_size and long_busy_list, sequential in one model."""
    res: dict[str, Any] = {}
    for profile in ("4.19", "5.4", "6.18"):
        k = Kernel(profile, cpus=cpus)
        base = mode_params("performance", profile, cpus, [f"test_loop_count={loops}"])
        base.test_repeat_count = 1
        row: dict[str, float] = {}
        for i, name in enumerate(CASES[base.era][:3]):
            v = k.vmap_space
            w0 = getattr(v, "walk_steps", 0)
            a0 = v.stats.allocs
            dt, r = _run_case(k, base, i)
            allocs = v.stats.allocs - a0
            short = name.replace("_alloc_test", "")
            row[f"{short}_us_per_loop"] = dt / loops * 1e6
            row[f"{short}_model_usec"] = r.summaries[0].avg_usec
            if profile == "4.19":
                row[f"{short}_walk_per_alloc"] = (getattr(v, "walk_steps", 0) - w0) / allocs
        # long_busy_list alone on a fresh model: no holes left by earlier cases.
        k2 = Kernel(profile, cpus=cpus)
        w0 = getattr(k2.vmap_space, "walk_steps", 0)
        dt, r = _run_case(k2, base, 2)
        row["long_busy_list_fresh_us_per_loop"] = dt / loops * 1e6
        if profile == "4.19":
            row["long_busy_list_fresh_walk_per_alloc"] = (
                getattr(k2.vmap_space, "walk_steps", 0) - w0
            ) / k2.vmap_space.stats.allocs
        res[profile] = row
    for key in ("fix_size_us_per_loop", "long_busy_list_us_per_loop", "long_busy_list_model_usec"):
        res[f"ratio_4.19_over_5.4/{key}"] = res["4.19"][key] / res["5.4"][key]
    res["ratio_4.19_over_5.4/long_busy_list_fresh_us_per_loop"] = (
        res["4.19"]["long_busy_list_fresh_us_per_loop"]
        / res["5.4"]["long_busy_list_fresh_us_per_loop"]
    )
    return res


def bench_harness(loops: int, profile: str = "6.18", cpus: int = 2) -> dict[str, dict[str, float]]:
    """fix_size, full_fit, long_busy_list (repeat 1, in order on one model): CPU µs per
    loop with the compiled harness and with the Python worker loop (``_c_loops`` None)."""
    out: dict[str, dict[str, float]] = {}
    compiled = tv._c_loops
    for label, fn in (("compiled", compiled), ("python", None)):
        k = Kernel(profile, cpus=cpus)
        base = mode_params("performance", profile, cpus, [f"test_loop_count={loops}"])
        base.test_repeat_count = 1
        tv._c_loops = fn
        try:
            for i, name in enumerate(CASES[base.era][:3]):
                dt, _ = _run_case(k, base, i)
                out.setdefault(name, {})[f"{label}_us_per_loop"] = dt / loops * 1e6
        finally:
            tv._c_loops = compiled
    return out


def bench_performance_mode(loops: int, profile: str = "6.18", cpus: int = 2) -> float:
    """Wall seconds of ``test_vmalloc.sh performance test_loop_count=<loops>``."""
    k = Kernel(profile, cpus=cpus)
    p = mode_params("performance", profile, cpus, [f"test_loop_count={loops}"])
    gc.disable()
    try:
        t0 = time.process_time()
        r = run_test_vmalloc_full(k, p, 1)
        dt = time.process_time() - t0
    finally:
        gc.enable()
    if not r.ok:
        raise AssertionError("performance mode: a test failed\n" + "\n".join(r.lines))
    return dt


def extrapolate_performance_mode(small: int, large: int, target: int = 100_000) -> dict[str, float]:
    """Time two loop counts, fit ``a + b * loops``, predict ``target``."""
    t1 = bench_performance_mode(small)
    t2 = bench_performance_mode(large)
    b = (t2 - t1) / (large - small)
    a = t1 - b * small
    return {
        f"measured_s_at_{small}": t1,
        f"measured_s_at_{large}": t2,
        "setup_s": a,
        "per_loop_us": b * 1e6,
        f"extrapolated_s_at_{target}": a + b * target,
    }


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    loops = 2_000 if quick else 20_000
    for name, v in bench_cases(loops).items():
        print(f"{name:32} {v['us_per_loop']:9.1f} us/loop  model avg {v['model_avg_usec']} usec")
    if tv._c_loops is not None:
        for name, v in bench_harness(loops).items():
            print(f"{name:32} harness: compiled {v['compiled_us_per_loop']:6.1f} us/loop, "
                  f"python {v['python_us_per_loop']:6.1f}")  # fmt: skip
    for key, val in bench_profiles(loops).items():
        print(key, val)
    if quick:
        print(extrapolate_performance_mode(2_000, 10_000))
    else:
        print("performance mode at 100,000 loops:", bench_performance_mode(100_000), "s")
