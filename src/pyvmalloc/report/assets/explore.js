/* pyvmalloc explorer: the page's code. Plain DOM + canvas, no libraries, no network.
 *
 * The data (see pyvmalloc/report/explore.py) is the state after the first event plus a
 * reversible diff per later event; records are [kind, startPage, endPage, ...] with
 * pages counted from VMALLOC_START. The state is a Map; scrubbing applies diffs
 * forwards or backwards, so any event is reachable in time proportional to the
 * distance. Drawing walks per-kind arrays sorted by address and skips what is off
 * screen, and merges what falls in one pixel column.
 */
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('explore-data').textContent);
  const M = D.meta;
  const VS = BigInt(M.vmalloc_start);
  const NEV = D.events.length;
  const NODES = M.nr_nodes;
  const ZONE = M.zone_pages;
  const BASE_ZONE = Number((VS / BigInt(ZONE * 4096)) % BigInt(Math.max(1, NODES)));
  const STR = D.strings;
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  // ---- numbers as the kernel prints them ------------------------------------------
  const hexpg = (pg) => '0x' + (VS + BigInt(pg) * 4096n).toString(16);
  function human(pages) {
    const b = pages * 4096;
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = b, i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i || v !== Math.round(v) ? v.toFixed(v < 10 ? 2 : 1) : String(v)) + ' ' + u[i];
  }
  const KIND = { b: 'busy vmap_area', f: 'free block (free_vmap_area_root)', l: 'lazily freed (purge_list)',
    p: 'pooled (vmap_node pool)', u: 'being purged' };
  const COLOUR = { f: '#cfe8cf', b: '#3b6fb6', g: '#0b2447', l: '#f0a030', p: '#9b59b6', u: '#d62728' };
  const NODE_COLOURS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02', '#a6761d', '#666666'];
  const nodeColour = (n) => NODE_COLOURS[((n % 8) + 8) % 8];
  function vmFlags(r) {
    const f = r[5];
    const w = [];
    if (f & 0x1) w.push('ioremap');
    if (f & 0x1000) w.push('sparse');
    if (f & 0x2) w.push('vmalloc');
    if (f & 0x4) w.push('vmap');
    if (f & 0x8) w.push('user');
    if (f & 0x10) w.push('dma-coherent');
    if (!f && r.length > 9) w.push(STR[r[9]]);
    if (!f && r[6] & 0x1) w.push('vm_map_ram');
    return w.join(' ');
  }
  function describe(r) {
    const size = (r[2] - r[1]) * 4096;
    const lines = [`${KIND[r[0]]}`, `${hexpg(r[1])}-${hexpg(r[2])} ${size}  (${human(r[2] - r[1])})`];
    if (r[0] === 'b') {
      if (r[4]) lines.push('caller ' + STR[r[4]]);
      if (r[7]) lines.push('pages=' + r[7]);
      const fl = vmFlags(r);
      if (fl) lines.push('flags: ' + fl + (r[5] ? ` (vm_struct.flags=0x${r[5].toString(16)})` : ''));
      if (r[6] >> 8) lines.push(`va->flags=0x${r[6].toString(16)} (allocated on vmap_node[${(r[6] >> 8) - 1}])`);
      lines.push(`busy tree of vmap_node[${r[3]}]`);
      if (r[8]) lines.push(`guard page ${hexpg(r[2] - 1)}-${hexpg(r[2])}` + (r[8] === 2 ? ' (assumed: no vm_struct in a replay)' : ''));
      else lines.push('no guard page');
    } else if (r[0] === 'l' || r[0] === 'u') {
      lines.push(`vmap_node[${r[3]}] purge_list`);
    } else if (r[0] === 'p') {
      lines.push(`vmap_node[${r[3]}].pool[${r[4]}] (${r[4] + 1} pages)`);
    }
    return lines.join('\n');
  }

  // ---- the state and the timeline ---------------------------------------------------
  const S = new Map();
  const key = (r) => r[0] + r[1];
  D.init.forEach((r) => S.set(key(r), r));
  let cur = 0;
  let layers = null;
  function applyDiff(i, forward) {
    const d = D.diffs[i - 1];
    const add = d[0], rem = d[1];
    if (forward) {
      for (const r of rem) S.delete(key(r));
      for (const r of add) S.set(key(r), r);
    } else {
      for (const r of add) S.delete(key(r));
      for (const r of rem) S.set(key(r), r);
    }
  }
  function moveTo(i) {
    i = Math.max(0, Math.min(NEV - 1, i | 0));
    while (cur < i) { cur++; applyDiff(cur, true); }
    while (cur > i) { applyDiff(cur, false); cur--; }
    layers = null;
  }
  function getLayers() {
    if (layers) return layers;
    layers = { f: [], b: [], l: [], p: [], u: [] };
    for (const r of S.values()) layers[r[0]].push(r);
    for (const k in layers) layers[k].sort((a, b) => a[1] - b[1]);
    return layers;
  }
  function lowerBound(arr, pg) { // first record ending after pg
    let lo = 0, hi = arr.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (arr[m][2] <= pg) lo = m + 1; else hi = m; }
    return lo;
  }
  function at(pg) {
    const L = getLayers();
    for (const k of ['b', 'p', 'l', 'u', 'f']) {
      const a = L[k];
      const i = lowerBound(a, pg);
      if (i < a.length && a[i][1] <= pg) return a[i];
    }
    return null;
  }

  // ---- the map ------------------------------------------------------------------------
  const canvas = $('map');
  const ctx = canvas.getContext('2d');
  const ROWS = 6, ROW_H = 58, LANE = 30, NODE_LANE = 7, ZONE_LANE = 5, LABEL_W = 150;
  let v0 = 0, span = 1, selected = null;
  // The map's domain: the vmalloc range, and any area outside it (modules above).
  const DOM0 = D.extent[0], DOM1 = D.extent[1];
  // Where the areas are: groups separated by gaps wider than a quarter of their hull
  // (vmalloc grows up from VMALLOC_START, pcpu_get_vm_areas down from VMALLOC_END).
  function clusters() {
    const L = getLayers();
    const rs = L.b.concat(L.l, L.p, L.u).sort((a, b) => a[1] - b[1]);
    if (!rs.length) return [[0, 1024, 0]];
    const hull = rs[rs.length - 1][2] - rs[0][1];
    const out = [];
    let c = [rs[0][1], rs[0][2], 1];
    for (let i = 1; i < rs.length; i++) {
      if (rs[i][1] - c[1] > hull / 4) { out.push(c); c = [rs[i][1], rs[i][2], 0]; }
      c[1] = Math.max(c[1], rs[i][2]); c[2]++;
    }
    out.push(c);
    return out;
  }
  function fitUsed(which) {
    const cs = clusters();
    let c = cs[0];
    if (which === undefined) { for (const x of cs) if (x[2] > c[2]) c = x; } else c = cs[Math.min(which, cs.length - 1)];
    v0 = c[0]; span = Math.max(ROWS * 4, (c[1] - c[0]) * 1.03);
    clampView();
  }
  function clusterButtons() {
    const cs = clusters();
    $('clusters').innerHTML = cs.length > 1 ? cs.slice(0, 5).map((c, i) =>
      `<button data-c="${i}">${hexpg(c[0])}… (${c[2]} areas)</button>`).join('') : '';
  }
  $('clusters').addEventListener('click', (e) => { const b = e.target.closest('button'); if (b) { fitUsed(Number(b.dataset.c)); schedule(); } });
  function wholeRange() { v0 = DOM0; span = DOM1 - DOM0; }
  function clampView() {
    const dom = DOM1 - DOM0;
    span = Math.max(ROWS * 4, Math.min(span, dom));
    v0 = Math.max(DOM0 - span * 0.02, Math.min(v0, DOM1 - span * 0.98));
  }
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(ROWS * ROW_H * dpr);
    canvas.style.height = ROWS * ROW_H + 'px';
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function drawMap() {
    const W = canvas.clientWidth - LABEL_W;
    ctx.clearRect(0, 0, canvas.clientWidth, ROWS * ROW_H);
    const L = getLayers();
    const rowSpan = span / ROWS;
    const ppx = W / rowSpan; // pixels per page
    for (let row = 0; row < ROWS; row++) {
      const r0 = v0 + row * rowSpan, r1 = r0 + rowSpan;
      const y = row * ROW_H + 4;
      ctx.fillStyle = '#f2f2f2';
      ctx.fillRect(LABEL_W, y, W, LANE);
      ctx.fillStyle = '#333';
      ctx.font = '11px ui-monospace, monospace';
      ctx.fillText(r0 >= 0 ? hexpg(Math.floor(r0)) : '(below range)', 2, y + 12);
      ctx.fillStyle = '#777';
      ctx.fillText(NODES > 1 && ZONE * ppx >= 3 ? 'vmap_node / zone' : 'vmap_node', 2, y + LANE + 9);
      // 64 KiB node zones (addr_to_node_id) once they are wide enough to see.
      if (NODES > 1 && ZONE * ppx >= 3) {
        const z0 = Math.floor(Math.max(r0, 0) / ZONE), z1 = Math.ceil(r1 / ZONE);
        for (let z = z0; z < z1; z++) {
          const x = LABEL_W + (z * ZONE - r0) * ppx;
          ctx.fillStyle = nodeColour((z + BASE_ZONE) % NODES);
          ctx.globalAlpha = 0.55;
          const x0 = Math.max(LABEL_W, x), x1 = x + ZONE * ppx - 1;
          if (x1 > x0) ctx.fillRect(x0, y + LANE + NODE_LANE + 3, Math.max(1, x1 - x0), ZONE_LANE);
          ctx.globalAlpha = 1;
        }
      }
      for (const k of ['f', 'u', 'l', 'p', 'b']) {
        const arr = L[k];
        let i = lowerBound(arr, r0);
        let lastX = -1;
        for (; i < arr.length && arr[i][1] < r1; i++) {
          const r = arr[i];
          const a = Math.max(r[1], r0), b = Math.min(r[2], r1);
          let x = LABEL_W + (a - r0) * ppx;
          let w = (b - a) * ppx;
          if (w < 1) { if (Math.floor(x) === lastX) continue; w = 1; }
          lastX = Math.floor(x);
          ctx.fillStyle = COLOUR[k];
          ctx.fillRect(x, y, w, LANE);
          if (k === 'b') {
            if (r[8] && (r[2] - 1) >= r0 && ppx >= 2) { // the guard page
              const gx = LABEL_W + (r[2] - 1 - r0) * ppx;
              ctx.fillStyle = COLOUR.g;
              ctx.globalAlpha = r[8] === 2 ? 0.6 : 1;
              ctx.fillRect(gx, y, Math.max(1, ppx), LANE);
              ctx.globalAlpha = 1;
            }
            if (w > 3) { ctx.fillStyle = '#fff'; ctx.fillRect(x + w - 0.5, y, 0.5, LANE); }
          }
          if (k !== 'f') {
            ctx.fillStyle = nodeColour(r[3]);
            ctx.fillRect(x, y + LANE + 1, w, NODE_LANE);
          }
          if (k === 'p' && w > 3) { ctx.fillStyle = '#fff8'; ctx.fillRect(x + w - 1, y, 1, LANE); }
        }
      }
      if (M.range_pages >= r0 && M.range_pages < r1) { // VMALLOC_END
        const x = LABEL_W + (M.range_pages - r0) * ppx;
        ctx.fillStyle = '#000'; ctx.fillRect(x, y - 3, 1, LANE + 6);
        ctx.fillText('VMALLOC_END', Math.min(x + 3, canvas.clientWidth - 80), y + LANE + 16);
      }
      if (selected && selected[2] > r0 && selected[1] < r1) {
        const a = Math.max(selected[1], r0), b = Math.min(selected[2], r1);
        ctx.strokeStyle = '#ff0066'; ctx.lineWidth = 2;
        ctx.strokeRect(LABEL_W + (a - r0) * ppx - 1, y - 2, Math.max(2, (b - a) * ppx) + 2, LANE + 4);
      }
    }
    const pxPages = rowSpan / W;
    $('scale').textContent = `view ${hexpg(Math.floor(Math.max(v0, 0)))} … ${hexpg(Math.ceil(v0 + span))}` +
      `  ·  ${ROWS} rows of ${human(rowSpan)}  ·  1 px = ${human(pxPages)}` +
      (NODES > 1 ? `  ·  node zones of ${ZONE * 4} KiB ${ZONE * ppx >= 3 ? 'shown' : '(zoom in to see)'}` : '');
  }
  function pageAt(ev) {
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left - LABEL_W, y = ev.clientY - rect.top;
    const row = Math.min(ROWS - 1, Math.max(0, Math.floor(y / ROW_H)));
    const W = canvas.clientWidth - LABEL_W;
    return { pg: v0 + row * span / ROWS + (x / W) * span / ROWS, inside: x >= 0 };
  }
  let drag = null;
  canvas.addEventListener('mousedown', (e) => { drag = { x: e.clientX, y: e.clientY, v0, moved: false }; canvas.classList.add('dragging'); });
  window.addEventListener('mouseup', (e) => {
    canvas.classList.remove('dragging');
    if (drag && !drag.moved) {
      const p = pageAt(e);
      if (p.inside) select(at(Math.floor(p.pg)));
    }
    drag = null;
  });
  window.addEventListener('mousemove', (e) => {
    if (drag) {
      const dx = e.clientX - drag.x;
      if (Math.abs(dx) > 2) drag.moved = true;
      v0 = drag.v0 - dx * (span / ROWS) / (canvas.clientWidth - LABEL_W);
      clampView(); schedule();
      return;
    }
    if (e.target !== canvas) { $('tip').style.display = 'none'; return; }
    const p = pageAt(e);
    const r = p.inside ? at(Math.floor(p.pg)) : null;
    const tip = $('tip');
    if (!r) { tip.style.display = 'none'; return; }
    tip.textContent = describe(r) + `\n(page ${hexpg(Math.floor(p.pg))})`;
    tip.style.display = 'block';
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - 530) + 'px';
    tip.style.top = (e.clientY + 14) + 'px';
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const p = pageAt(e);
    const f = Math.exp((e.deltaY > 0 ? 1 : -1) * 0.25);
    const old = span;
    span = span * f;
    clampView();
    v0 = p.pg - (p.pg - v0) * span / old;
    clampView(); schedule();
  }, { passive: false });
  canvas.addEventListener('dblclick', (e) => {
    const r = at(Math.floor(pageAt(e).pg));
    if (r) zoomTo(r[1], r[2]);
  });
  function zoomTo(a, b) {
    const w = Math.max(b - a, 8);
    span = Math.max(ROWS * 4, w * ROWS * 1.6);
    v0 = a - w * 0.3;
    clampView(); schedule();
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawMap(); });
  }

  // ---- timeline: slider, marks, event text ----------------------------------------
  const slider = $('slider');
  slider.max = String(Math.max(0, NEV - 1));
  const purgeIdx = [], mismatchIdx = [];
  D.events.forEach((e, i) => { if (e[0] === 'purge' || (e[0] === 'call' && /vm_unmap_aliases|purge/.test(e[3]))) purgeIdx.push(i); });
  D.mismatches.forEach((m) => { if (m.index >= 0) mismatchIdx.push(m.index); });
  mismatchIdx.sort((a, b) => a - b);
  const mismatchAt = new Map(D.mismatches.map((m) => [m.index, m]));
  function eventText(i) {
    const e = D.events[i];
    if (!e) return '';
    const head = `event ${i + 1} of ${NEV}` + (e[0] === 'call' ? '' : ` · trace line ${e[1]} · cpu ${e[2]}`);
    if (e[0] === 'alloc') {
      const range = e[6] === 0 ? 'VMALLOC_START..VMALLOC_END' : `${e[6]}..${e[7]}`;
      const m = mismatchAt.get(i);
      let s = `${head}\nalloc_vmap_area: va_start=${e[8] ? 'failed' : e[3]} size=${e[4]} (pages=${e[4] >> 12}) align=${e[5]} range ${range}`;
      if (m) s += `\nDISAGREES: kernel ${m.kernel ?? 'failed'}, model ${m.model ?? 'failed'} — cause: ${m.cause}`;
      return s;
    }
    if (e[0] === 'free') return `${head}\nfree_vmap_area_noflush: va_start=${e[3]} nr_lazy=${e[4]} nr_lazy_max=${e[5]}`;
    if (e[0] === 'purge') return `${head}\npurge_vmap_area_lazy: start=${e[3]} end=${e[4]} num_purged=${e[5]}`;
    if (e[0] === 'call') return `${head}\n${e[3]}` + (e[4] ? ` = ${e[4]}` : '');
    return head;
  }
  const marks = $('marks');
  function drawMarks() {
    const dpr = window.devicePixelRatio || 1;
    const w = marks.clientWidth;
    marks.width = Math.round(w * dpr); marks.height = Math.round(18 * dpr);
    const c = marks.getContext('2d');
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.fillStyle = '#f3f3f3'; c.fillRect(0, 0, w, 18);
    const X = (i) => (NEV > 1 ? i / (NEV - 1) : 0) * (w - 1);
    c.fillStyle = '#d62728';
    for (const i of purgeIdx) c.fillRect(X(i), 0, 2, 9);
    c.fillStyle = '#111';
    for (const i of mismatchIdx) c.fillRect(X(i), 9, 2, 9);
    c.fillStyle = '#ff0066';
    c.fillRect(X(cur) - 1, 0, 3, 18);
  }
  marks.addEventListener('click', (e) => {
    const rect = marks.getBoundingClientRect();
    setEvent(Math.round((e.clientX - rect.left) / rect.width * (NEV - 1)));
  });

  // ---- fragmentation chart ------------------------------------------------------------
  const chart = $('chart');
  const F = D.frag;
  function drawChart() {
    const dpr = window.devicePixelRatio || 1;
    const w = chart.clientWidth, h = 210;
    chart.width = Math.round(w * dpr); chart.height = Math.round(h * dpr);
    const c = chart.getContext('2d');
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.clearRect(0, 0, w, h);
    const series = [
      ['largest free block in the range', F.largest, '#2a9d8f', true],
      ['free blocks in the range', F.count, '#264653', false],
      ['busy (used) / lazily freed', F.used, '#3b6fb6', false, F.lazy, '#f0a030'],
    ];
    const bandH = h / series.length;
    const X = (i) => 46 + (NEV > 1 ? i / (NEV - 1) : 0) * (w - 52);
    series.forEach((s, k) => {
      const y0 = k * bandH + 14, hh = bandH - 22;
      let vals = s[1];
      const all = s[4] ? vals.concat(s[4]) : vals;
      let mx = 0, mn = Infinity;
      for (const v of all) { if (v > mx) mx = v; if (v < mn) mn = v; }
      const lg = s[3];
      const tr = (v) => (lg ? Math.log2(Math.max(1, v)) : v);
      const lo = lg ? tr(Math.max(1, mn)) : 0, hi = Math.max(tr(mx), lo + 1);
      const Y = (v) => y0 + hh - (tr(v) - lo) / (hi - lo) * hh;
      c.fillStyle = '#333'; c.font = '11px system-ui, sans-serif';
      const now = s[1][cur];
      const fmt = (v) => (k === 1 ? String(v) : human(v));
      c.fillText(`${s[0]}: ${fmt(now)}` + (s[4] ? ` / ${fmt(s[4][cur])}` : '') + (lg ? '  (log scale)' : ''), 46, y0 - 3);
      c.fillStyle = '#666';
      c.fillText(fmt(lg ? 2 ** hi : mx), 0, y0 + 8);
      c.fillText(fmt(lg ? 2 ** lo : 0), 0, y0 + hh);
      const plot = (vs, col) => {
        c.strokeStyle = col; c.lineWidth = 1.2; c.beginPath();
        const stepN = Math.max(1, Math.floor(vs.length / (w * 2)));
        for (let i = 0; i < vs.length; i += stepN) { const x = X(i), y = Y(vs[i]); if (i === 0) c.moveTo(x, y); else c.lineTo(x, y); }
        c.stroke();
      };
      plot(vals, s[2]);
      if (s[4]) plot(s[4], s[5]);
      c.strokeStyle = '#ddd'; c.beginPath(); c.moveTo(46, y0 + hh + 0.5); c.lineTo(w - 6, y0 + hh + 0.5); c.stroke();
    });
    c.strokeStyle = '#ff0066'; c.beginPath(); c.moveTo(X(cur), 0); c.lineTo(X(cur), h); c.stroke();
    c.fillStyle = '#666'; c.fillText('event →', w - 50, h - 2);
  }
  chart.addEventListener('click', (e) => {
    const rect = chart.getBoundingClientRect();
    setEvent(Math.round((e.clientX - rect.left - 46) / (rect.width - 52) * (NEV - 1)));
  });

  // ---- panels ---------------------------------------------------------------------------
  function stats() {
    const L = getLayers();
    const pages = (a) => a.reduce((s, r) => s + r[2] - r[1], 0);
    const out = { busy: L.b.length, free: L.f.length, lazy: L.l.length, pooled: L.p.length, purging: L.u.length,
      busyPages: pages(L.b), lazyPages: pages(L.l) + pages(L.u), guards: L.b.filter((r) => r[8]).length };
    return out;
  }
  function drawStats() {
    const s = stats();
    $('stat-busy').textContent = s.busy;
    $('stat-free').textContent = s.free;
    $('stat-lazy').textContent = s.lazy + s.purging;
    $('stat-pooled').textContent = s.pooled;
    $('stat-guards').textContent = s.guards;
    $('stat-used').textContent = human(s.busyPages);
    $('stat-lazypages').textContent = `${s.lazyPages} pages`;
  }
  function drawPools() {
    const L = getLayers();
    const by = new Map();
    for (const r of L.p) { const k = r[3] * 100000 + r[4]; if (!by.has(k)) by.set(k, []); by.get(k).push(r); }
    const keys = [...by.keys()].sort((a, b) => a - b);
    const rows = [];
    for (const k of keys) {
      const lst = by.get(k).sort((a, b) => b[5] - a[5]);
      const node = Math.floor(k / 100000), idx = k % 100000;
      const shown = lst.slice(0, 3).map((r) => hexpg(r[1])).join('<br>');
      rows.push(`<tr><td class="mono">vmap_node[${node}]<br>.pool[${idx}]</td><td>${idx + 1}</td><td>${lst.length}</td>` +
        `<td class="mono">${shown}${lst.length > 3 ? '<br>… ' + hexpg(lst[lst.length - 1][1]) + ' (tail)' : ''}</td></tr>`);
    }
    $('pools').innerHTML = rows.length
      ? '<table><tr><th>pool</th><th>pages</th><th>areas</th><th>LIFO order: head (next handed out) first</th></tr>' + rows.join('') + '</table>'
      : '<span class="dim">no pooled areas at this event' + (NODES > 1 ? '' : ' (this profile has no vmap_node pools)') + '</span>';
    // purge lists per node
    const per = new Array(Math.max(1, NODES)).fill(0).map(() => [0, 0]);
    for (const r of L.l.concat(L.u)) { const p = per[r[3]] || per[0]; p[0]++; p[1] += r[2] - r[1]; }
    $('lazylists').innerHTML = per.map((p, n) => `vmap_node[${n}] purge_list: ${p[0]} areas, ${p[1]} pages`).join('<br>');
    nextAlloc();
  }
  function nextAlloc() {
    const pages = Math.max(1, parseInt($('next-pages').value, 10) || 1);
    const lines = [];
    for (let cpu = 0; cpu < M.cpus; cpu++) lines.push(nextOn(pages, cpu));
    $('next-result').textContent = lines.join('\n');
  }
  function nextOn(pages, cpu) {
    const L = getLayers();
    let text;
    const node = NODES > 1 ? cpu % NODES : 0;
    const pool = L.p.filter((r) => r[3] === node && r[4] === pages - 1).sort((a, b) => b[5] - a[5]);
    if (NODES > 1 && pool.length) {
      text = `node_alloc(): vmap_node[${node}].pool[${pages - 1}] head ${hexpg(pool[0][1])} (LIFO; taken if aligned)`;
    } else {
      // An exact-length, page-aligned search over the whole range finds the lowest
      // free block that can hold it (what find_vmap_lowest_match returns).
      const f = L.f.find((r) => r[2] - r[1] >= pages);
      text = (NODES > 1 ? `vmap_node[${node}].pool[${pages - 1}] empty; ` : '') +
        (f ? `free tree: lowest match ${hexpg(f[1])} in free block ${hexpg(f[1])}-${hexpg(f[2])}` : 'no free block fits: -EBUSY after a purge');
    }
    return `cpu${cpu}: ${text}`;
  }
  $('next-pages').addEventListener('input', nextAlloc);

  // the free tree around a block, from the nearest stored snapshot at or before cur
  const treeAt = Object.keys(D.trees).map(Number).sort((a, b) => a - b);
  function nearestTree(i) {
    let best = -1;
    for (const t of treeAt) if (t <= i) best = t;
    if (best < 0 && treeAt.length) best = treeAt[0];
    return best;
  }
  function nodeLabel(n, hit) {
    const col = n[3] ? 'red' : 'black';
    return `<li${hit ? ' class="hit"' : ''}><span class="${col}">●</span> <span class="mono">${n[0]}-${n[1]}</span> ` +
      `<span class="dim">${col}, subtree_max_size=${n[2]}</span>`;
  }
  function drawTree() {
    const el = $('tree');
    if (!M.has_tree) { el.innerHTML = '<span class="dim">this profile keeps no free tree (4.19: the busy list is walked)</span>'; return; }
    if (!selected || selected[0] !== 'f') { el.innerHTML = '<span class="dim">click a free block on the map to see free_vmap_area_root around it</span>'; return; }
    const t = nearestTree(cur);
    if (t < 0) { el.innerHTML = '<span class="dim">no tree snapshot stored</span>'; return; }
    const nodes = D.trees[String(t)];
    const want = VS + BigInt(selected[1]) * 4096n;
    // descend by address to the node containing the block's start
    const path = [];
    let i = 0, hit = -1;
    while (i >= 0) {
      const n = nodes[i]; path.push(i);
      const s = BigInt(n[0]), e = BigInt(n[1]);
      if (want >= s && want < e) { hit = i; break; }
      i = want < s ? n[4] : n[5];
    }
    let html = `<div class="dim">free_vmap_area_root as of event ${t + 1}${t !== cur ? ` (nearest stored snapshot; now at event ${cur + 1})` : ''}; ` +
      `path from the root, then two levels below${hit < 0 ? '; this block is not in that snapshot' : ''}</div><div class="tree">`;
    const sub = (j, depth) => {
      if (j < 0 || depth > 2) return '';
      const n = nodes[j];
      const kids = depth < 2 ? `<ul>${n[4] >= 0 ? sub(n[4], depth + 1) : '<li class="dim">left: NULL</li>'}${n[5] >= 0 ? sub(n[5], depth + 1) : '<li class="dim">right: NULL</li>'}</ul>` : '';
      return nodeLabel(n, j === hit) + kids + '</li>';
    };
    let open = 0;
    for (const j of path) {
      if (j === hit) { html += '<ul>' + sub(j, 0) + '</ul>'; break; }
      const n = nodes[j];
      const next = path[path.indexOf(j) + 1];
      html += '<ul>' + nodeLabel(n, false) + ` <span class="dim">→ ${next === n[4] ? 'left' : 'right'}</span>`;
      open++;
    }
    html += '</li></ul>'.repeat(open) + '</div>';
    el.innerHTML = html;
  }
  function drawWalk() {
    const el = $('walk');
    const w = D.walks[String(cur)];
    const e = D.events[cur];
    if (!w) {
      el.innerHTML = '<span class="dim">' + (D.walk_note ? esc(D.walk_note) : e && (e[0] === 'alloc' || e[0] === 'call')
        ? 'no descent stored for this event (kept for the first 150 disagreeing allocations and a sample of 200 others: use the «alloc with descent» buttons)'
        : 'scrub to an allocation to see its find_vmap_lowest_match descent') + '</span>';
      return;
    }
    const q = w.request || [];
    let html = `<div class="mono">request: size=${q[0]} align=${q[1]} vstart=${q[2]} vend=${q[3]} cpu${q[4]}; search length ${w.length}</div>`;
    if (w.pool) html += `<div>node_alloc(): vmap_node[${w.pool.node}].pool[${w.pool.index}] head ${w.pool.head}: ${w.pool.hit ? '<b>pool hit</b> (the tree is not searched)' : 'misaligned: moved to the tail, tree search'}</div>`;
    else if (NODES > 1) html += '<div class="dim">node_alloc(): no pooled area of this size for this CPU\'s node (or not the whole range): tree search</div>';
    html += '<table class="walk"><tr><th>#</th><th>vmap_area (free)</th><th>colour</th><th>subtree_max_size</th><th>step</th></tr>';
    w.steps.forEach((s, i) => {
      html += `<tr><td>${i + 1}</td><td class="mono">${s[0]}-${s[1]}</td><td class="${s[3] ? 'red' : 'black'}">${s[3] ? 'red' : 'black'}</td><td class="mono">${s[2]}</td><td>${esc(s[4])}</td></tr>`;
    });
    html += '</table>';
    html += `<div>${w.found ? `found free block ${w.found[0]}-${w.found[1]} → address ${w.addr ?? '(beyond vend: -ERANGE)'}` : 'no free block fits'}` +
      ` <span class="dim">(${esc(w.when || '')})</span></div>`;
    el.innerHTML = html;
  }
  // The call tree step by step: calls in the order they were made (pre-order).
  let callStep = Infinity, callLines = 1;
  function drawCalls() {
    const el = $('calls');
    if (!el || !D.calls) return;
    const c = D.calls[cur];
    if (!c) { el.textContent = ''; return; }
    const lines = [];
    const walk = (n, prefix, isRoot, last) => {
      const extra = [];
      if (n[3].length === 0 && n[1]) extra.push(`${n[1] > 0 ? '+' : ''}${n[1]} pages`);
      if (n[3].length === 0 && n[2]) extra.push(`${n[2]} PTEs`);
      const lbl = n[0] + (extra.length && !n[0].includes('[') ? `   [${extra.join('; ')}]` : '');
      lines.push(isRoot ? lbl : `${prefix}+-> ${lbl}`);
      n[3].forEach((ch, i) => walk(ch, isRoot ? ' ' : prefix + (last ? '    ' : '|   '), false, i === n[3].length - 1));
    };
    walk(c.tree, '', true, true);
    const n = lines.length, k = Math.min(callStep, n);
    callLines = n;
    let html = lines.slice(0, k).map((t, i) => (i === k - 1 && k < n ? `<span class="hit">${esc(t)}</span>` : esc(t))).join('\n');
    if (k >= n) {
      const st = ['', 'state changes:'];
      for (const [key, b, a] of c.state) st.push(`  ${key.padEnd(28)} ${String(b).padStart(8)} -> ${String(a).padEnd(8)}${a !== b ? ` (${a - b > 0 ? '+' : ''}${a - b})` : ''}`);
      html += esc(st.join('\n'));
    }
    el.innerHTML = html;
    $('call-step').textContent = `step ${k} of ${n}`;
  }
  if ($('calls')) {
    $('step-prev').onclick = () => { callStep = Math.max(1, Math.min(callStep, callLines) - 1); drawCalls(); };
    $('step-next').onclick = () => { callStep = callStep >= callLines ? 1 : callStep + 1; drawCalls(); };
    $('step-all').onclick = () => { callStep = Infinity; drawCalls(); };
  }
  function drawMismatches() {
    const rows = D.mismatches.map((m, j) =>
      `<tr class="clickable${m.index === cur ? ' current' : ''}" data-j="${j}"><td>${m.line}</td><td>${m.size}</td><td>${m.align}</td><td>${m.cpu}</td>` +
      `<td class="mono">${m.kernel ?? 'failed'}</td><td class="mono">${m.model ?? 'failed'}</td><td>${esc(m.cause)}</td>` +
      `<td>${esc(m.model_reason)}<br><span class="dim">kernel's address was: ${esc(m.kernel_location)}</span></td></tr>`);
    $('mismatches').innerHTML = D.mismatches.length
      ? `<table><tr><th>line</th><th>size</th><th>align</th><th>cpu</th><th>kernel</th><th>model</th><th>cause</th><th>the model's reasoning</th></tr>${rows.join('')}</table>`
      : '<span class="dim">' + (D.mode === 'replay' ? 'every allocation agrees with the kernel' : 'a tour has no kernel to disagree with') + '</span>';
  }
  $('mismatches').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-j]');
    if (!tr) return;
    const m = D.mismatches[Number(tr.dataset.j)];
    if (m.index >= 0) setEvent(m.index);
    if (m.kernel) {
      const pg = Number((BigInt(m.kernel) - VS) / 4096n);
      zoomTo(pg, pg + (m.size >> 12));
      select(at(pg));
    }
  });
  function select(r) {
    selected = r;
    $('details').textContent = r ? describe(r) : 'click an area on the map';
    drawTree();
    schedule();
  }

  function setEvent(i) {
    if (i !== cur) callStep = Infinity;
    moveTo(i);
    slider.value = String(cur);
    $('event').textContent = eventText(cur);
    if (selected) { // keep the selection if that record still exists
      const r = S.get(key(selected));
      selected = r || null;
      $('details').textContent = selected ? describe(selected) : 'the selected area changed at this event';
    }
    drawStats(); drawPools(); drawTree(); drawWalk(); drawCalls(); drawMarks(); drawChart();
    for (const tr of document.querySelectorAll('#mismatches tr[data-j]')) {
      tr.classList.toggle('current', D.mismatches[Number(tr.dataset.j)].index === cur);
    }
    schedule();
  }
  slider.addEventListener('input', () => setEvent(Number(slider.value)));
  const jump = (list, dir) => {
    if (dir > 0) { const n = list.find((i) => i > cur); if (n !== undefined) setEvent(n); }
    else { const p = list.filter((i) => i < cur).pop(); if (p !== undefined) setEvent(p); }
  };
  const walkIdx = Object.keys(D.walks).map(Number).sort((a, b) => a - b);
  $('prev').onclick = () => setEvent(cur - 1);
  $('next').onclick = () => setEvent(cur + 1);
  $('prev-m').onclick = () => jump(mismatchIdx, -1);
  $('next-m').onclick = () => jump(mismatchIdx, 1);
  $('prev-p').onclick = () => jump(purgeIdx, -1);
  $('next-p').onclick = () => jump(purgeIdx, 1);
  $('prev-w').onclick = () => jump(walkIdx, -1);
  $('next-w').onclick = () => jump(walkIdx, 1);
  $('fit').onclick = () => { fitUsed(); schedule(); };
  clusterButtons();
  $('whole').onclick = () => { wholeRange(); schedule(); };
  $('zoom-sel').onclick = () => { if (selected) zoomTo(selected[1], selected[2]); };
  document.addEventListener('keydown', (e) => {
    if (e.target.tagName === 'INPUT' && e.target.type !== 'range') return;
    if (e.key === 'ArrowRight') { setEvent(cur + 1); e.preventDefault(); }
    if (e.key === 'ArrowLeft') { setEvent(cur - 1); e.preventDefault(); }
  });
  window.addEventListener('resize', () => { resize(); drawMarks(); drawChart(); schedule(); });

  // ---- start ------------------------------------------------------------------------------
  $('replay-text').textContent = D.replay ? D.replay.text : '';
  drawMismatches();
  resize();
  fitUsed();
  setEvent(D.start || 0);
  $('details').textContent = 'click an area on the map (hover for details; wheel zooms, drag pans, double-click zooms to an area)';

  // a small API for tests and the console
  window.explorer = {
    setEvent, stats, get event() { return cur; }, get view() { return [v0, span]; },
    zoomTo, select: (pg) => select(at(pg)), at: (pg) => at(pg), records: () => [...S.values()], hexpg,
    timeDraw: () => { const t = performance.now(); drawMap(); return performance.now() - t; },
    timeScrub: (a, b) => { const t = performance.now(); setEvent(a); setEvent(b); return performance.now() - t; },
  };
  document.body.dataset.ready = '1';
})();
