"""A static address-space map (PNG) from the explorer's data, for reports and READMEs.

The busiest stretch of the vmap space is wrapped into rows, lowest address top left,
like the page's map: busy areas, their guard pages, free blocks, lazily freed and
pooled areas, each in its colour, with a legend, the row start addresses in hex, and
the scale (bytes per row and a scale bar). Needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyvmalloc.report.explore import state_at

__all__ = ["write_png"]

#: Kinds in drawing order: colour, legend label.
KINDS = {
    "f": ("#cfe8cf", "free block (free_vmap_area_root)"),
    "u": ("#d62728", "being purged"),
    "l": ("#f0a030", "lazily freed (vmap_node purge_list)"),
    "p": ("#9b59b6", "pooled (vmap_node pool[i])"),
    "b": ("#3b6fb6", "busy vmap_area"),
    "g": ("#0b2447", "guard page"),
}
ROWS = 8


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    raise AssertionError  # pragma: no cover


def busiest_stretch(records: list[list[Any]]) -> tuple[int, int]:
    """Pages ``[lo, hi)`` of the largest group of areas (gaps over 1/4 of the hull split)."""
    rs = sorted((r for r in records if r[0] != "f"), key=lambda r: r[1])
    if not rs:
        return 0, 1024
    hull = rs[-1][2] - rs[0][1]
    groups: list[list[int]] = []
    cur = [rs[0][1], rs[0][2], 1]
    for r in rs[1:]:
        if r[1] - cur[1] > hull / 4:
            groups.append(cur)
            cur = [r[1], r[2], 0]
        cur[1] = max(cur[1], r[2])
        cur[2] += 1
    groups.append(cur)
    best = max(groups, key=lambda g: g[2])
    return best[0], best[1]


def write_png(data: dict[str, Any], path: str | Path, *, index: int | None = None) -> None:
    """Draw the state after event ``index`` (default: the last) as a PNG map."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ValueError("--png needs matplotlib: pip install 'pyvmalloc[plot]'") from None
    n = len(data["events"])
    idx = n - 1 if index is None else index
    records = list(state_at(data, idx).values())
    meta = data["meta"]
    vs = int(meta["vmalloc_start"], 16)
    lo, hi = busiest_stretch(records)
    row_pages = max(1, -(-(hi - lo) // ROWS))
    fig, ax = plt.subplots(figsize=(13, 6.2), dpi=110)
    bars: dict[str, list[list[tuple[float, float]]]] = {k: [[] for _ in range(ROWS)] for k in KINDS}
    for r in records:
        kind = r[0]
        s, e = max(r[1], lo), min(r[2], lo + ROWS * row_pages)
        if e <= s:
            continue
        pieces = [(s, e, kind)]
        if kind == "b" and r[8] and lo <= r[2] - 1 < lo + ROWS * row_pages:
            pieces = [(s, max(s, r[2] - 1), "b"), (r[2] - 1, r[2], "g")]
        for a, b, kd in pieces:
            while a < b:
                row = (a - lo) // row_pages
                end = min(b, lo + (row + 1) * row_pages)
                x0 = (a - lo - row * row_pages) * 4096 / 2**20
                bars[kd][row].append((x0, max((end - a) * 4096 / 2**20, 1e-9)))
                a = end
    for kind, (colour, _label) in KINDS.items():
        for row in range(ROWS):
            if bars[kind][row]:
                ax.broken_barh(bars[kind][row], (ROWS - 1 - row + 0.15, 0.7), facecolors=colour)
    ax.set_ylim(0, ROWS)
    ax.set_xlim(0, row_pages * 4096 / 2**20)
    ax.set_yticks([ROWS - 1 - r + 0.5 for r in range(ROWS)])
    ax.set_yticklabels(
        [f"{vs + (lo + r * row_pages) * 4096:#x}" for r in range(ROWS)], fontfamily="monospace"
    )
    ax.set_xlabel(f"offset in the row (MiB); each row is {_human(row_pages * 4096)}")
    busy = sum(1 for r in records if r[0] == "b")
    free = sum(1 for r in records if r[0] == "f")
    title = data.get("title", "pyvmalloc")
    rep = data.get("replay")
    sub = f"{rep['headline']} · " if rep else ""
    ax.set_title(
        f"{title}\n{sub}after event {idx + 1} of {n}: {busy} busy areas, {free} free blocks "
        f"(kernel {meta['profile']}, {meta['nr_nodes']} vmap_node(s))",
        fontsize=10,
    )
    labels = dict(KINDS)
    if not meta.get("has_tree", True):  # 4.19: free space is the gaps between areas
        labels["f"] = (KINDS["f"][0], "free (a gap of vmap_area_list)")
    if meta["nr_nodes"] <= 1:
        labels = {k: (c, lab.replace("vmap_node ", "")) for k, (c, lab) in labels.items()}
    handles = [Patch(facecolor=c, edgecolor="#0003", label=lab) for c, lab in labels.values()]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    from pyvmalloc.cli_output import save_figure

    save_figure(fig, path)
    plt.close(fig)
