// iiot-gateway built-in dashboard.
//
// Nothing here knows a panel: the panel definitions come from /api/dashboards (generated from
// src/dashboards/panels.rs) and every panel is built from them. History comes from /api/series (charts)
// and /api/stat (stat panels, computed by the gateway), live values from the Server-Sent
// Events of /api/stream, node states from /api/nodes and the stream's `nodes` events.
//
// For tests and tools, each panel carries data attributes: data-panel-id, data-kind,
// data-value / data-color / data-values (stat), data-series / data-points / data-last /
// data-drawn (time series); <body> carries data-ready, data-live and data-events.
(() => {
  'use strict';

  // Grafana's colour names, as used by the panel thresholds.
  const COLORS = {
    green: '#73bf69', 'light-green': '#96d98d', yellow: '#fade2a', orange: '#ff9830',
    red: '#f2495c', blue: '#5794f2', purple: '#b877d9',
  };
  // One colour per series, in order of appearance.
  const PALETTE = ['#73bf69', '#f2cc0c', '#8ab8ff', '#ff780a', '#f2495c', '#5794f2',
    '#b877d9', '#37872d', '#fade2a', '#c4162a'];
  const RANGES = { '15m': 15 * 60e3, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
  const DEFAULT_RANGE = '1h';
  const UNITS = { celsius: '°C', humidity: '%RH', ohm: 'Ω', dBm: 'dBm', dB: 'dB', percent: '%', short: '' };
  const CHART_HEIGHT = 250;
  // History is re-read (re-bucketed) this often; live points are appended in between.
  const HISTORY_REFRESH_MS = 60e3;
  // A stat computed by the gateway (packet error rate) is re-read at most this often.
  const STAT_REFRESH_MIN_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  const state = {
    dashboards: [],
    dash: null,
    range: DEFAULT_RANGE,
    stats: [],
    charts: [],
    nodes: [],
    skewMs: 0, // server clock minus browser clock
    events: 0,
  };

  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store' });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`);
    return r.json();
  }

  function showError(e) {
    const box = $('error');
    box.hidden = false;
    box.textContent = String(e && e.message ? e.message : e);
  }

  // The colour of `v` under `steps`: the last step whose lower bound it reaches (the same
  // rule as panels::color in the gateway).
  function stepColor(steps, v) {
    let c = null;
    for (const s of steps) if (s.from === null || v >= s.from) c = s.color;
    return c;
  }

  function trimNumber(v, decimals) {
    return Number(v.toFixed(decimals)).toString();
  }

  // Room beside a y label: uPlot's tick length and gap, and a little air.
  const AXIS_PAD = 10 + 5 + 4;

  // The width in CSS pixels of the widest of `labels` in `axis`'s font.
  function labelWidth(u, axis, labels) {
    if (!labels || labels.length === 0) return 0;
    u.ctx.save();
    u.ctx.font = Array.isArray(axis.font) ? axis.font[0] : axis.font;
    const widest = Math.max(...labels.map((l) => u.ctx.measureText(String(l)).width));
    u.ctx.restore();
    return widest / (window.devicePixelRatio || 1);
  }

  // uPlot's `size` of a y axis: its widest label plus the ticks and gap (asked again after
  // the labels changed; the second pass keeps the first answer, as uPlot's own docs do).
  function yAxisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1 && axis._size) return axis._size;
    return Math.max(40, Math.ceil(labelWidth(u, axis, values) + AXIS_PAD));
  }

  // A number for axes and legends: SI prefixes for large values (gas resistance in Ω).
  function fmt(v, unit) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    const a = Math.abs(v);
    let s;
    if (a >= 1e6) s = trimNumber(v / 1e6, 2) + ' M';
    else if (a >= 1e4) s = trimNumber(v / 1e3, 1) + ' k';
    else if (a >= 100) s = trimNumber(v, 0);
    else s = trimNumber(v, 2);
    const u = UNITS[unit] ?? unit ?? '';
    return u ? (s.endsWith(' M') || s.endsWith(' k') ? s + u : s + ' ' + u) : s.trim();
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function every(ms) {
    return ms >= 60e3 ? `every ${trimNumber(ms / 60e3, 1)} min` : `every ${trimNumber(ms / 1e3, 1)} s`;
  }

  const serverNow = () => Date.now() + state.skewMs;

  const queryMatches = (q, r) => q.measurement === r.metric && (q.node === '*' || q.node === r.node);

  // ------------------------------------------------------------------------------------------
  // Stat panels

  class StatView {
    constructor(panel, section, body) {
      this.p = panel;
      this.section = section;
      this.body = body;
      this.values = new Map(); // node -> {value, text, color, ts}
      this.refreshTimer = null;
      this.lastRefresh = 0;
    }

    async load() {
      const res = await getJSON(`/api/stat?panel=${this.p.id}&range=${state.range}`);
      this.values.clear();
      for (const v of res.values) this.values.set(v.node, v);
      this.render();
    }

    // A live reading: raw values are shown at once; computed ones are re-read from the gateway.
    onReading(r) {
      if (!this.p.queries.some((q) => queryMatches(q, r))) return;
      if (this.p.compute !== 'values') {
        this.scheduleRefresh();
        return;
      }
      const value = Number(r.value);
      if (!Number.isFinite(value)) return;
      this.values.set(r.node, { node: r.node, value, text: r.value, color: stepColor(this.p.steps, value), ts: r.ts });
      this.dirty = true;
    }

    scheduleRefresh() {
      if (this.refreshTimer) return;
      const wait = Math.max(0, this.lastRefresh + STAT_REFRESH_MIN_MS - Date.now());
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = null;
        this.lastRefresh = Date.now();
        this.load().catch(showError);
      }, wait);
    }

    render() {
      this.dirty = false;
      const body = this.body;
      body.replaceChildren();
      const values = [...this.values.values()];
      const ds = this.section.dataset;
      if (values.length === 0) {
        body.append(el('div', 'nodata', 'No data'));
        ds.value = '';
        ds.color = '';
        ds.values = '{}';
        this.section.style.removeProperty('--stat');
        return;
      }
      const row = el('div', 'stat-row');
      const showNode = values.length > 1 || this.p.queries.some((q) => q.node === '*');
      for (const v of values) {
        const cell = el('div', 'stat');
        const value = el('div', 'stat-value');
        value.style.setProperty('--stat-cell', COLORS[v.color] || v.color || 'var(--text)');
        value.append(el('span', 'num', v.text));
        const unit = UNITS[this.p.unit] ?? this.p.unit;
        if (unit) value.append(el('span', 'unit', unit));
        cell.append(value);
        if (showNode) cell.append(el('div', 'stat-node', v.node));
        if (v.ts) {
          const t = el('div', 'stat-time', new Date(v.ts / 1e6).toLocaleTimeString());
          t.title = new Date(v.ts / 1e6).toISOString();
          cell.append(t);
        } else {
          cell.append(el('div', 'stat-time', `over ${state.range}`));
        }
        row.append(cell);
      }
      body.append(row);
      const first = values[0];
      ds.value = first.text;
      ds.color = first.color || '';
      ds.node = first.node;
      ds.values = JSON.stringify(Object.fromEntries(values.map((v) => [v.node, { text: v.text, color: v.color }])));
      this.section.style.setProperty('--stat', COLORS[first.color] || '#8e939b');
    }
  }

  // ------------------------------------------------------------------------------------------
  // Time series panels (uPlot)

  // The value of a series' newest point, or null.
  function lastValue(s) {
    let best = null;
    for (const p of s.points) if (best === null || p[0] >= best[0]) best = p;
    return best === null ? null : best[1];
  }

  class ChartView {
    constructor(panel, section, body) {
      this.p = panel;
      this.section = section;
      this.holder = el('div', 'chart');
      body.append(this.holder);
      this.series = []; // {key, q, node, label, color, points: [[ms, value]]}
      this.u = null;
      this.draws = 0;
      new ResizeObserver(() => this.resize()).observe(this.holder);
    }

    find(q, node) {
      const key = `${q.measurement}\u0000${node}`;
      let s = this.series.find((x) => x.key === key);
      if (!s) {
        const label = this.p.queries.length > 1 ? `${node} ${q.measurement}` : node;
        const color = PALETTE[this.series.length % PALETTE.length];
        s = { key, q, node, label, color, points: [] };
        this.series.push(s);
      }
      return s;
    }

    async load() {
      const results = await Promise.all(this.p.queries.map((q) => getJSON(
        `/api/series?measurement=${encodeURIComponent(q.measurement)}&node=${encodeURIComponent(q.node)}&range=${state.range}`)));
      for (const s of this.series) s.points = [];
      results.forEach((res, i) => {
        for (const s of res.series) {
          const target = this.find(this.p.queries[i], s.node);
          target.points = s.t.map((t, j) => [t, s.avg[j]]);
        }
      });
      this.redraw();
    }

    onReading(r) {
      for (const q of this.p.queries) {
        if (!queryMatches(q, r)) continue;
        const value = Number(r.value);
        if (!Number.isFinite(value)) continue;
        this.find(q, r.node).points.push([r.ts / 1e6, value]);
        this.dirty = true;
      }
    }

    // The x window: the range ending now, or at the newest point if the browser's idea of
    // "now" is behind the gateway's.
    window() {
      let end = serverNow();
      for (const s of this.series) for (const p of s.points) if (p[0] > end) end = p[0];
      return [end - RANGES[state.range], end];
    }

    // Aligned uPlot data: one x array (seconds) shared by every series, nulls where a series
    // has no point.
    data() {
      const [start] = this.window();
      const xs = new Set();
      for (const s of this.series) {
        s.points = s.points.filter((p) => p[0] >= start);
        for (const p of s.points) xs.add(p[0]);
      }
      const sorted = [...xs].sort((a, b) => a - b);
      const index = new Map(sorted.map((x, i) => [x, i]));
      const cols = this.series.map((s) => {
        const col = new Array(sorted.length).fill(null);
        for (const [t, v] of s.points) col[index.get(t)] = v;
        return col;
      });
      return [sorted.map((x) => x / 1000), ...cols];
    }

    options(width) {
      const unit = this.p.unit;
      const axis = {
        stroke: '#9aa0a8',
        grid: { stroke: '#2c3235', width: 1 },
        ticks: { stroke: '#2c3235', width: 1 },
        font: '12px "DejaVu Sans", Arial, sans-serif',
      };
      return {
        width,
        height: CHART_HEIGHT,
        scales: {
          x: { time: true, range: () => this.window().map((t) => t / 1000) },
          y: { range: (u, min, max) => {
            if (min === null || max === null) return [0, 1];
            const pad = Math.max((max - min) * 0.1, Math.abs(max) * 0.01, 0.5);
            return [min - pad, max + pad];
          } },
        },
        series: [
          {
            label: 'Time',
            value: (u, v) => (v === null ? 'latest' : new Date(v * 1000).toLocaleString()),
          },
          ...this.series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 2,
            // Shade the area only when it cannot hide another series.
            fill: this.series.length === 1 ? s.color + '1f' : undefined,
            fillTo: (u) => u.scales.y.min,
            spanGaps: true,
            points: { size: 5, fill: s.color },
            // With the cursor away from the chart the legend shows each series' latest value.
            value: (u, v, si, i) => fmt(i === null ? lastValue(s) : v, unit),
          })),
        ],
        axes: [
          { ...axis, space: 70 },
          // Sized to its widest label: a label cut at the left would show a wrong number
          // (-35.5 dBm as 35.5 dBm).
          { ...axis, size: yAxisSize, values: (u, vals) => vals.map((v) => fmt(v, unit)) },
        ],
        legend: { show: true, live: true },
        cursor: { points: { size: 7 } },
        hooks: {
          draw: [(u) => {
            this.draws += 1;
            this.section.dataset.drawn = String(this.draws);
            // What the y axis shows and whether every label fits (checked by the browser test).
            const y = u.axes[1];
            const widest = labelWidth(u, y, y._values);
            this.section.dataset.yLabels = JSON.stringify(y._values || []);
            this.section.dataset.yFits = String(widest + AXIS_PAD <= y._size);
          }],
        },
      };
    }

    redraw() {
      this.dirty = false;
      const data = this.data();
      const width = Math.max(200, this.holder.clientWidth);
      if (!this.u || this.u.series.length !== this.series.length + 1) {
        if (this.u) this.u.destroy();
        this.u = new uPlot(this.options(width), data, this.holder);
      } else {
        this.u.setData(data, true);
      }
      const ds = this.section.dataset;
      ds.series = this.series.map((s) => s.label).join(',');
      ds.points = String(this.series.reduce((n, s) => n + s.points.length, 0));
      ds.colors = JSON.stringify(Object.fromEntries(this.series.map((s) => [s.label, s.color])));
      ds.last = JSON.stringify(Object.fromEntries(this.series
        .filter((s) => s.points.length > 0)
        .map((s) => [s.label, lastValue(s)])));
    }

    resize() {
      if (!this.u) return;
      const width = Math.max(200, this.holder.clientWidth);
      if (Math.abs(width - this.u.width) > 1) this.u.setSize({ width, height: CHART_HEIGHT });
    }
  }

  // ------------------------------------------------------------------------------------------
  // Nodes

  function renderNodes(nodes) {
    state.nodes = nodes;
    const box = $('nodes');
    box.replaceChildren();
    for (const n of nodes) {
      const item = el('div', 'node');
      item.dataset.node = n.node;
      item.dataset.online = String(n.online);
      item.title = `${n.metrics.join(', ')}\noffline after ${Math.round(n.offline_after_ms / 1000)} s without a packet` +
        (n.interval_inferred ? '' : ' (interval not known yet: 10 s assumed)');
      item.append(el('span', 'dot'), el('span', 'name', n.node), el('span', 'state', n.online ? 'online' : 'offline'));
      const meta = el('span', 'meta');
      meta.dataset.lastSeen = String(n.last_seen / 1e6);
      meta.dataset.every = every(n.interval_ms) + (n.interval_inferred ? '' : '?');
      item.append(meta);
      // What the command queue knows: the node's firmware, and its commands not done yet.
      if (n.firmware) item.append(el('span', 'firmware', `fw ${n.firmware}`));
      if (n.pending_commands > 0) {
        const pending = el('span', 'pending', `${n.pending_commands} command${n.pending_commands === 1 ? '' : 's'} pending`);
        pending.dataset.pending = String(n.pending_commands);
        item.append(pending);
      }
      box.append(item);
    }
    tickNodes();
  }

  function tickNodes() {
    for (const meta of document.querySelectorAll('.node .meta')) {
      meta.textContent = `${meta.dataset.every} · seen ${ago(serverNow() - Number(meta.dataset.lastSeen))}`;
    }
  }

  async function loadNodes() {
    const before = Date.now();
    const res = await getJSON('/api/nodes');
    state.skewMs = res.now / 1e6 - (before + Date.now()) / 2;
    renderNodes(res.nodes);
  }

  // ------------------------------------------------------------------------------------------
  // Page

  function layout(panels) {
    // A 12-column grid: stats take 3 columns, charts 6; the last panel of a row that is not
    // full takes the rest of it.
    const spans = panels.map((p) => (p.kind === 'stat' ? 3 : 6));
    let row = [];
    let used = 0;
    const flush = () => {
      if (row.length && used < 12) spans[row[row.length - 1]] += 12 - used;
      row = [];
      used = 0;
    };
    panels.forEach((p, i) => {
      if (used + spans[i] > 12) flush();
      row.push(i);
      used += spans[i];
    });
    flush();
    return spans;
  }

  function buildChrome() {
    const tabs = $('tabs');
    for (const d of state.dashboards) {
      const a = el('a', '', d.title);
      a.href = `/d/${d.uid}?range=${state.range}`;
      a.dataset.uid = d.uid;
      if (d === state.dash) a.setAttribute('aria-current', 'page');
      tabs.append(a);
    }
    const ranges = $('ranges');
    for (const r of Object.keys(RANGES)) {
      const b = el('button', '', r);
      b.type = 'button';
      b.dataset.range = r;
      b.setAttribute('aria-pressed', String(r === state.range));
      b.addEventListener('click', () => setRange(r));
      ranges.append(b);
    }
    $('title').textContent = state.dash.title;
    document.title = `${state.dash.title} · iiot-gateway`;
  }

  function buildPanels() {
    const grid = $('grid');
    const spans = layout(state.dash.panels);
    state.dash.panels.forEach((p, i) => {
      const section = el('section', `panel panel-${p.kind}`);
      section.id = `panel-${p.id}`;
      section.style.gridColumn = `span ${spans[i]}`;
      Object.assign(section.dataset, { panelId: String(p.id), kind: p.kind, title: p.title });
      section.append(el('h2', '', p.title));
      const body = el('div', 'body');
      section.append(body);
      grid.append(section);
      if (p.kind === 'stat') state.stats.push(new StatView(p, section, body));
      else state.charts.push(new ChartView(p, section, body));
    });
  }

  async function loadAll() {
    await Promise.all([
      loadNodes(),
      ...state.stats.map((s) => s.load()),
      ...state.charts.map((c) => c.load()),
    ]);
    $('updated').textContent = `history ${state.range} · loaded ${new Date().toLocaleTimeString()}`;
  }

  function setRange(r) {
    state.range = r;
    const url = new URL(location.href);
    url.searchParams.set('range', r);
    history.replaceState(null, '', url);
    for (const b of document.querySelectorAll('#ranges button')) b.setAttribute('aria-pressed', String(b.dataset.range === r));
    for (const a of document.querySelectorAll('#tabs a')) a.href = `/d/${a.dataset.uid}?range=${r}`;
    loadAll().catch(showError);
  }

  let frame = 0;
  function scheduleRender() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const s of state.stats) if (s.dirty) s.render();
      for (const c of state.charts) if (c.dirty) c.redraw();
    });
  }

  function onReadings(rows) {
    for (const r of rows) {
      for (const s of state.stats) s.onReading(r);
      for (const c of state.charts) c.onReading(r);
    }
    state.events += 1;
    document.body.dataset.events = String(state.events);
    $('updated').textContent = `history ${state.range} · live ${new Date().toLocaleTimeString()}`;
    scheduleRender();
  }

  function setLive(s) {
    document.body.dataset.live = s;
    $('live-label').textContent = s;
  }

  function connect() {
    let wasDown = false;
    const es = new EventSource('/api/stream');
    es.onopen = () => {
      setLive('live');
      if (wasDown) loadAll().catch(showError);
      wasDown = false;
    };
    es.onerror = () => {
      setLive('reconnecting');
      wasDown = true;
    };
    es.addEventListener('readings', (e) => onReadings(JSON.parse(e.data)));
    es.addEventListener('nodes', (e) => renderNodes(JSON.parse(e.data)));
    es.addEventListener('resync', () => loadAll().catch(showError));
  }

  async function main() {
    const params = new URLSearchParams(location.search);
    if (RANGES[params.get('range')]) state.range = params.get('range');
    state.dashboards = await getJSON('/api/dashboards');
    const m = location.pathname.match(/^\/d\/([^/]+)/);
    state.dash = state.dashboards.find((d) => m && d.uid === m[1]) || state.dashboards[0];
    document.body.dataset.dashboard = state.dash.uid;
    buildChrome();
    buildPanels();
    connect();
    await loadAll();
    setInterval(tickNodes, 1000);
    // Slide the chart windows and re-bucket the history now and then.
    setInterval(() => { for (const c of state.charts) c.redraw(); }, 10e3);
    setInterval(() => loadAll().catch(showError), HISTORY_REFRESH_MS);
    document.body.dataset.ready = 'true';
  }

  main().catch(showError);
})();
