"""Render the explorer's data (:mod:`pyvmalloc.report.explore`) as one HTML file.

The page is self-contained: the CSS and JavaScript under ``report/assets`` and the
data (as JSON) are inlined, nothing is fetched, and it works from ``file://``. Why
plain canvas and a few hundred lines of JavaScript rather than a charting library is
in docs/design.md ("The explorer's page").
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["render_html", "write_html"]


def _asset(name: str) -> str:
    return (resources.files("pyvmalloc.report") / "assets" / name).read_text(encoding="utf-8")


def _json_for_script(data: dict[str, Any]) -> str:
    """JSON that cannot end its ``<script>`` element early."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_LEGEND = (
    ("#3b6fb6", "busy vmap_area"),
    ("#0b2447", "guard page"),
    ("#cfe8cf", "free block"),
    ("#f0a030", "lazily freed (purge_list)"),
    ("#9b59b6", "pooled (vmap_node pool[i])"),
    ("#d62728", "being purged"),
)


def _counts_table(data: dict[str, Any]) -> str:
    rep = data.get("replay")
    if not rep:
        return ""
    c = rep["counts"]
    rows = [
        ("allocations compared / agree", f"{c['allocs_compared']} / {c['allocs_matched']}"),
        ("events replayed", c["events"]),
        ("events before the snapshot (skipped)", c["skipped_before_snapshot"]),
        ("snapshot: busy / lazily freed areas", f"{c['snapshot_busy']} / {c['snapshot_lazy']}"),
        ("frees (unknown address)", f"{c['frees']} ({c['frees_unknown']})"),
        ("purges", c["purges"]),
        ("failures kernel / model", f"{c['kernel_failures']} / {c['model_failures']}"),
        ("frees whose nr_lazy differs", c["lazy_drift"]),
        ("free blocks in the vmalloc range at the end", c["end_free_blocks_in_range"]),
    ]
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td id='count-{i}'>{html.escape(str(v))}</td></tr>"
        for i, (k, v) in enumerate(rows)
    )
    return f"<table id='counts'>{body}</table>"


def render_html(data: dict[str, Any]) -> str:
    """The whole page as a string."""
    title = html.escape(data.get("title", "pyvmalloc explorer"))
    rep = data.get("replay")
    headline = html.escape(rep["headline"]) if rep else ""
    if rep:
        # The percentage in bold, as `replay` prints it.
        head, sep, tail = headline.rpartition("(")
        if sep:
            headline = f"{head}(<b>{tail[:-1]}</b>)"
    meta = data["meta"]
    sub = (
        f"kernel {html.escape(meta['profile'])}, {meta['cpus']} CPUs, {meta['nr_nodes']} "
        f"vmap_node{'s' if meta['nr_nodes'] != 1 else ''}, vmalloc range "
        f"{meta['vmalloc_start']}-{meta['vmalloc_end']}, {len(data['events'])} events"
    )
    legend = "".join(f'<span style="--c:{c}">{html.escape(t)}</span>' for c, t in _LEGEND)
    if meta["nr_nodes"] > 1:
        legend += '<span style="--c:#1b9e77">vmap_node 0</span><span style="--c:#d95f02">vmap_node 1</span>'
    calls = (
        "<section><h2>the call tree of this API call (Code Flow)</h2>"
        "<div class='toolbar'><button id='step-prev'>◀ step</button>"
        "<button id='step-next'>step ▶</button><button id='step-all'>whole call</button>"
        "<span id='call-step'></span></div>"
        "<div id='calls' class='calltree'></div></section>"
        if data.get("calls")
        else ""
    )
    replay_sections = (
        "<section><h2>the replay, as <code>pyvmalloc replay</code> prints it</h2>"
        f"{_counts_table(data)}<details><summary>full text</summary>"
        "<pre id='replay-text'></pre></details></section>"
        if rep
        else "<pre id='replay-text' hidden></pre>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_asset("explore.css")}</style>
</head><body>
<header><h1>{title}</h1>
<div class="headline" id="headline">{headline}</div>
<div>{sub}</div></header>
<main>
<div>
<section><h2>the vmap space (wrapped into rows, lowest address top left)</h2>
<div class="toolbar"><button id="fit">busiest part</button><button id="whole">whole range</button>
<button id="zoom-sel">zoom to selection</button><span id="clusters"></span></div>
<div id="scale"></div>
<canvas id="map"></canvas>
<div class="legend">{legend}</div>
</section>
<section><h2>timeline</h2>
<canvas id="marks" title="red: purges; black: allocations that disagree with the kernel"></canvas>
<input type="range" id="slider" min="0" max="0" value="0">
<div class="toolbar"><button id="prev">◀ event</button><button id="next">event ▶</button>
<button id="prev-m">◀ disagreement</button><button id="next-m">disagreement ▶</button>
<button id="prev-p">◀ purge</button><button id="next-p">purge ▶</button>
<button id="prev-w">◀ alloc with descent</button><button id="next-w">alloc with descent ▶</button></div>
<pre id="event" class="mono"></pre>
<table><tr><th>busy</th><th>free blocks</th><th>lazily freed</th><th>pooled</th><th>guard pages</th>
<th>busy size</th><th>lazy</th></tr>
<tr><td id="stat-busy"></td><td id="stat-free"></td><td id="stat-lazy"></td><td id="stat-pooled"></td>
<td id="stat-guards"></td><td id="stat-used"></td><td id="stat-lazypages"></td></tr></table>
</section>
<section><h2>fragmentation over time (the vmalloc range)</h2><canvas id="chart"></canvas></section>
<section><h2>allocations that disagree with the kernel</h2>
<div class="scroll" id="mismatches"></div></section>
</div>
<div>
{calls}
{replay_sections}
<section><h2>selected area</h2><pre id="details" class="mono"></pre></section>
<section><h2>free tree (free_vmap_area_root) around the selected free block</h2>
<div id="tree"></div></section>
<section><h2>descent of this allocation (find_vmap_lowest_match)</h2><div id="walk"></div></section>
<section><h2>pools and purge lists</h2>
<div class="scroll" id="pools"></div><div id="lazylists" class="mono"></div>
<div>what the next full-range allocation of <input id="next-pages" type="number" min="1"
value="2"> pages (guard included) on each CPU would get:</div>
<pre id="next-result" class="mono"></pre></section>
</div>
</main>
<div id="tip"></div>
<script type="application/json" id="explore-data">{_json_for_script(data)}</script>
<script>{_asset("explore.js")}</script>
</body></html>
"""


def write_html(data: dict[str, Any], path: str | Path) -> int:
    """Write the page to ``path``; return its size in bytes."""
    text = render_html(data)
    from pyvmalloc.cli_output import write_output

    write_output(path, text)
    return len(text.encode("utf-8"))
