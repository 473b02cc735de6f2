// natsgate's dashboard: reads /admin/stats (the fleet's last minute),
// /admin/routes (stages and breakers) and /admin/fleet (the replicas and
// their drift) every two seconds and fills one table row per route, and
// /admin/history (the fleet's last 15 minutes) every ten seconds and draws
// one SVG chart per route, and /admin/report every ten seconds for the
// header's summary line. Rows are built once and updated in place, so a
// stage control being edited keeps its value between refreshes.
'use strict';

(function () {
  const REFRESH_MS = 2000;
  // A history point closes every 10 s: polling faster would redraw the same.
  const HISTORY_MS = 10000;
  const STAGES = ['legacy', 'shadow', 'canary', 'nats'];
  const TOKEN_KEY = 'natsgate-admin-token';
  const rows = new Map(); // route name -> row parts

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  // ms formats milliseconds with about three significant digits.
  function ms(v) {
    if (v == null || !isFinite(v)) return '–';
    if (v < 1) return v.toFixed(3);
    if (v < 10) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return Math.round(v).toString();
  }

  function pct(v) {
    if (v == null || !isFinite(v)) return '–';
    const p = v * 100;
    return (p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%';
  }

  function perSec(v) {
    if (v == null) return '–';
    return v >= 100 ? v.toFixed(0) : v.toFixed(1);
  }

  async function getJSON(url) {
    const res = await fetch(url, { cache: 'no-store' });
    if (!res.ok) throw new Error(url + ': ' + res.status + ' ' + res.statusText);
    return res.json();
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  function setMsg(text, ok) {
    const m = $('auth-msg');
    m.textContent = text;
    m.className = 'msg ' + (ok ? 'ok' : 'bad');
  }

  // cutover changes a route's stage through the admin API; reset (stage
  // null) returns it to the config file's.
  async function cutover(name, stage, percent) {
    // The actor header names the dashboard in the gateway's audit line.
    const init = { method: stage ? 'PUT' : 'DELETE', headers: { Authorization: 'Bearer ' + token(), 'X-Natsgate-Actor': 'dashboard' } };
    if (stage) {
      const body = { cutover: stage };
      if (stage === 'canary') body.canary_percent = Number(percent);
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    try {
      const res = await fetch('/admin/routes/' + encodeURIComponent(name) + '/cutover', init);
      if (!res.ok) {
        let why = res.status + ' ' + res.statusText;
        try {
          const p = await res.json();
          why = p.detail || p.title || why;
        } catch (_) { /* not a problem body */ }
        setMsg(name + ': ' + why, false);
        return;
      }
      setMsg(name + (stage ? ': now ' + stage + (stage === 'canary' ? ' ' + percent + '%' : '') : ': back to its configured stage'), true);
      const row = rows.get(name);
      if (row) row.dirty = false;
      refreshSoon();
      setTimeout(refreshHistory, 200); // the change's mark, without waiting ten seconds
      setTimeout(refreshReport, 200); // and the summary line
    } catch (e) {
      setMsg(name + ': ' + e.message, false);
    }
  }

  function makeRow(r) {
    const cell = (col, cls) => el('td', { 'data-col': col, class: cls || '' });
    const row = { dirty: false, cells: {} };
    const tr = el('tr', { 'data-route': r.name });
    const cols = [
      ['route', ''], ['stage', ''], ['rate', 'num'], ['errors', 'num'],
      ['legacy-p50', 'num legacy'], ['legacy-p95', 'num legacy'], ['legacy-p99', 'num legacy'],
      ['nats-p50', 'num nats'], ['nats-p95', 'num nats'], ['nats-p99', 'num nats'],
      ['hops', ''], ['shadow', ''], ['breakers', ''],
    ];
    for (const [col, cls] of cols) {
      row.cells[col] = cell(col, cls);
      tr.append(row.cells[col]);
    }

    const sides = [];
    if (r.pattern) sides.push('nats ' + r.pattern);
    if (r.upstream) sides.push('upstream ' + r.upstream);
    row.cells.route.append(
      el('div', { class: 'route-name', text: r.name }),
      el('div', { class: 'route-path', text: (r.method === '*' ? 'ANY' : r.method) + ' ' + r.path }),
      el('div', { class: 'small', text: sides.join(' · ') }));

    row.badge = el('span', { class: 'stage' });
    row.override = el('span', { class: 'overridden' });
    row.cells.stage.append(row.badge, row.override);

    // The stage control, for routes with both sides.
    if (r.pattern && r.upstream) {
      row.select = el('select', { 'aria-label': 'stage of ' + r.name });
      for (const s of STAGES) row.select.append(el('option', { value: s, text: s }));
      row.percent = el('input', { type: 'number', min: '0', max: '100', step: '1', value: '10', 'aria-label': 'canary percent of ' + r.name });
      const apply = el('button', { type: 'button', text: 'Apply' });
      const reset = el('button', { type: 'button', text: 'Reset', title: 'back to the config file\'s stage' });
      row.select.addEventListener('change', () => { row.dirty = true; showPercent(row); });
      row.percent.addEventListener('input', () => { row.dirty = true; });
      apply.addEventListener('click', () => cutover(r.name, row.select.value, row.percent.value));
      reset.addEventListener('click', () => cutover(r.name, null));
      row.control = el('div', { class: 'control', hidden: '' }, row.select, row.percent, apply, reset);
      row.cells.stage.append(row.control);
    }

    row.bar = el('div', { class: 'bar' });
    row.hopText = el('div', { class: 'small' });
    row.cells.hops.append(row.bar, row.hopText);

    row.tr = tr;
    return row;
  }

  function showPercent(row) {
    if (row.percent) row.percent.hidden = row.select.value !== 'canary';
  }

  function setNum(td, v, cls) {
    td.textContent = ms(v);
    td.classList.toggle('none', v == null);
    td.classList.remove('faster', 'slower');
    if (cls) td.classList.add(cls);
  }

  // compare marks the NATS figure against legacy: faster or slower by more
  // than 5%.
  function compare(natsV, legacyV) {
    if (natsV == null || legacyV == null) return '';
    if (natsV < legacyV * 0.95) return 'faster';
    if (natsV > legacyV * 1.05) return 'slower';
    return '';
  }

  function fillRow(row, r, a, writable) {
    const c = row.cells;
    const stage = a ? a.stage : r.stage;
    const percent = a ? a.canary_percent : null;
    row.badge.className = 'stage stage-' + stage;
    row.badge.textContent = stage + (stage === 'canary' && percent != null ? ' ' + percent + '%' : '');
    row.override.textContent = a && a.overridden ? 'override (config: ' + a.config_stage + ')' : '';
    if (row.control) {
      // Shown where the admin API takes changes; usable once a token is in.
      row.control.hidden = !writable;
      for (const c of row.control.children) c.disabled = !token();
      row.control.title = token() ? '' : 'paste the admin token above to change the stage';
      const editing = row.dirty || row.control.contains(document.activeElement);
      if (!editing) {
        row.select.value = stage;
        if (percent != null) row.percent.value = String(percent);
        showPercent(row);
      }
    }

    const b = r.backends || {};
    let nats = b.nats ? b.nats.latency : {};
    const legacy = b.legacy ? b.legacy.latency : {};
    // In shadow no client is answered over NATS: show the NATS hop of the
    // shadow copies instead, marked as such.
    const sh = r.shadow || {};
    const fromShadow = !b.nats && r.hops && r.hops.nats && (sh.match || sh.mismatch || sh.error) > 0;
    if (fromShadow) nats = r.hops.nats;
    c.rate.textContent = perSec(r.rate);
    const split = [];
    if (b.nats) split.push('nats ' + perSec(b.nats.rate));
    if (b.legacy) split.push('legacy ' + perSec(b.legacy.rate));
    if (split.length > 1) c.rate.append(el('div', { class: 'small', text: split.join(' · ') }));

    c.errors.textContent = r.requests ? pct(r.error_rate) : '–';
    c.errors.classList.toggle('err-high', r.error_rate >= 0.01);

    for (const q of ['p50', 'p95', 'p99']) {
      setNum(c['legacy-' + q], legacy[q]);
      const td = c['nats-' + q];
      setNum(td, nats[q], fromShadow ? '' : compare(nats[q], legacy[q]));
      td.classList.toggle('from-shadow', !!fromShadow);
      td.title = fromShadow ? 'NATS hop of the shadow copies: no client waits on them' : '';
    }

    fillHops(row, r);
    fillShadow(c.shadow, r);
    fillBreakers(c.breakers, a);
  }

  // fillHops splits the NATS path's median: gateway, transport, worker.
  function fillHops(row, r) {
    const h = r.hops || {};
    const edge = r.backends && r.backends.nats ? r.backends.nats.latency.p50 : null;
    const hop = h.nats ? h.nats.p50 : null;
    const worker = h.worker ? h.worker.p50 : null;
    row.bar.replaceChildren();
    if (hop == null) {
      row.bar.hidden = true;
      row.hopText.textContent = h.upstream ? 'upstream hop ' + ms(h.upstream.p50) : '–';
      return;
    }
    row.bar.hidden = false;
    const gw = edge != null ? Math.max(edge - hop, 0) : 0;
    const transport = worker != null ? Math.max(hop - worker, 0) : hop;
    const parts = [['gw', gw, 'gateway'], ['transport', transport, 'NATS transport'], ['worker', worker || 0, 'worker']];
    const total = parts.reduce((s, p) => s + p[1], 0) || 1;
    for (const [cls, v, title] of parts) {
      if (v <= 0) continue;
      const seg = el('span', { class: 'seg-' + cls, title: title + ' ' + ms(v) + ' ms' });
      seg.style.width = (100 * v / total).toFixed(1) + '%'; // CSSOM, which the page's CSP allows
      row.bar.append(seg);
    }
    const text = ['gateway ' + ms(gw), 'transport ' + ms(transport)];
    if (worker != null) text.push('worker ' + ms(worker));
    if (h.upstream) text.push('upstream ' + ms(h.upstream.p50));
    row.hopText.textContent = text.join(' · ');
  }

  function fillShadow(td, r) {
    td.replaceChildren();
    const s = r.shadow || {};
    const compared = (s.match || 0) + (s.mismatch || 0);
    if (compared === 0 && !s.error && !s.dropped) {
      td.append(el('span', { class: 'none', text: '–' }));
    } else {
      td.append(el('div', { text: pct(s.match_rate) + ' match' }),
        el('div', { class: 'small', text: compared + ' compared' + (s.error ? ', ' + s.error + ' errors' : '') + (s.dropped ? ', ' + s.dropped + ' dropped' : '') }));
    }
    if (r.pattern && r.upstream) {
      td.append(el('a', { href: '/admin/routes/' + encodeURIComponent(r.name) + '/mismatches', target: '_blank', rel: 'noopener', class: 'small', text: 'recent mismatches' + (s.mismatch ? ' (' + s.mismatch + ')' : '') }));
    }
  }

  function fillBreakers(td, a) {
    td.replaceChildren();
    const br = a && a.breakers ? Object.entries(a.breakers) : [];
    if (br.length === 0) {
      td.append(el('span', { class: 'none', text: '–' }));
      return;
    }
    for (const [target, state] of br) {
      td.append(el('span', { class: 'breaker ' + state }, el('span', { class: 'dot' }), target + ': ' + state));
    }
  }

  function render(stats, admin) {
    const byName = new Map();
    for (const a of (admin && admin.routes) || []) byName.set(a.name, a);

    const nats = $('nats');
    nats.textContent = stats.nats_connected ? 'NATS connected' : 'NATS disconnected';
    nats.className = 'pill ' + (stats.nats_connected ? 'ok' : 'down');
    // Figures are the fleet's (every replica heard in the last 5 s) unless
    // the fleet is off; older gateways send no scope.
    $('scope').textContent = stats.scope === 'fleet'
      ? 'fleet of ' + stats.replicas + (stats.replicas === 1 ? ' replica' : ' replicas')
      : (stats.scope === 'replica' ? 'this replica' : '');
    $('window').textContent = 'last ' + Math.round(stats.window_seconds) + ' s';
    $('updated').textContent = 'updated ' + new Date(stats.time).toLocaleTimeString();
    const writable = admin && 'cutover_writable' in admin ? admin.cutover_writable : stats.admin_writable;
    $('auth').hidden = !writable;

    const tbody = $('rows');
    const seen = new Set();
    for (const r of stats.routes) {
      seen.add(r.name);
      let row = rows.get(r.name);
      if (!row) {
        row = makeRow(r);
        rows.set(r.name, row);
      }
      tbody.append(row.tr); // keeps the stats' order
      fillRow(row, r, byName.get(r.name), writable);
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    $('empty').hidden = stats.routes.length > 0;
  }

  // ago says how long before ref (ms) t (ms) was, for a replica's last
  // message: both from the gateway's clock, so the browser's does not matter.
  function ago(ref, t) {
    const s = Math.max(0, (ref - t) / 1000);
    return s < 0.5 ? 'now' : s.toFixed(s < 10 ? 1 : 0) + ' s ago';
  }

  // renderFleet lists the replicas heard in the last 5 s, the leader
  // marked, and puts drift above them: a replica with another config or
  // another applied stage is the thing an operator must see first.
  function renderFleet(fleet) {
    $('fleet').hidden = !fleet;
    if (!fleet) return;
    const reps = fleet.replicas || [];
    const drift = fleet.drift || [];
    const drifting = new Set(drift.map((d) => d.id));
    $('fleet-sum').textContent = reps.length + (reps.length === 1 ? ' replica' : ' replicas') +
      ' · ' + (fleet.leader ? 'leader ' + fleet.leader : 'no leader elected');
    const newest = Math.max(...reps.map((r) => Date.parse(r.last_seen)));
    $('replicas').replaceChildren(...reps.map((r) => el('li', { class: 'replica' + (drifting.has(r.id) ? ' drifting' : ''), 'data-replica': r.id },
      el('span', { class: 'replica-id', text: r.id }),
      r.leader ? el('span', { class: 'leader', title: 'the elected leader: it runs the rollouts', text: '★ leader' }) : null,
      el('span', { class: 'small', text: (r.version || '?') + ' · config ' + (r.config_hash || '?') + ' · seen ' + ago(newest, Date.parse(r.last_seen)) }))));
    $('drift').hidden = drift.length === 0;
    $('drift-list').replaceChildren(...drift.map((d) => el('li', { 'data-replica': d.id }, el('strong', { text: d.id }), ': ' + d.reason)));
  }

  // --- Charts: the last 15 minutes per route, drawn as SVG. ---

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  // The chart's geometry in viewBox units (about pixels at a card's width).
  const G = {
    w: 520, h: 218, left: 50, right: 10,
    lat: { top: 22, bottom: 118 }, // latency panel
    rate: { top: 138, bottom: 190 }, // request rate panel
    axis: 204, // the time axis's labels
  };
  const BACKENDS = ['legacy', 'nats'];
  const charts = new Map(); // route name -> chart parts

  // niceScale picks a top and a tick step for values up to max: 1, 2, 2.5
  // or 5 times a power of ten, about n ticks.
  function niceScale(max, n) {
    if (!(max > 0)) return { top: 1, step: 0.25 };
    const raw = max / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    return { top: Math.ceil(max / step - 1e-9) * step, step };
  }

  function tickText(v, unit) {
    const s = v >= 10 || v === 0 ? String(Math.round(v)) : String(Number(v.toPrecision(2)));
    return unit === '/s' ? s + '/s' : s + ' ' + unit;
  }

  // linePath draws one series; a point without a value breaks the line
  // (the backend answered nothing then), and a lone point is a dot.
  function linePath(xs, vals, y) {
    let d = '';
    let n = 0;
    for (let i = 0; i < vals.length; i++) {
      const v = vals[i];
      if (v == null || !isFinite(v)) continue;
      n++;
      const X = xs[i].toFixed(1), Y = y(v).toFixed(1);
      const prev = i > 0 && vals[i - 1] != null && isFinite(vals[i - 1]);
      const next = i + 1 < vals.length && vals[i + 1] != null && isFinite(vals[i + 1]);
      if (!prev) d += 'M' + X + ' ' + Y + (next ? '' : 'h0.5');
      else d += 'L' + X + ' ' + Y;
    }
    return { d, n };
  }

  function clock(ms) { return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }); }

  // panel draws one panel's grid, its ms or req/s ticks and its lines.
  function panel(g, box, title, unit, series, xs) {
    let max = 0;
    for (const s of series) for (const v of s.vals) if (v != null && v > max) max = v;
    const sc = niceScale(max, 3);
    const y = (v) => box.bottom - (v / sc.top) * (box.bottom - box.top);
    g.append(svg('text', { class: 'panel-title', x: G.left, y: box.top - 6, text: title }));
    for (let v = 0; v <= sc.top + 1e-9; v += sc.step) {
      const Y = y(v).toFixed(1);
      g.append(svg('line', { class: v === 0 ? 'axis' : 'grid', x1: G.left, x2: G.w - G.right, y1: Y, y2: Y }),
        svg('text', { class: 'tick y', x: G.left - 4, y: Number(Y) + 3, text: tickText(v, unit) }));
    }
    for (const s of series) {
      const { d, n } = linePath(xs, s.vals, y);
      if (n === 0) continue;
      g.append(svg('path', { class: 'line ' + s.backend + ' ' + s.series, d, 'data-backend': s.backend, 'data-series': s.series, 'data-points': String(n) }));
    }
  }

  function makeChart(name) {
    const c = { sig: '', rh: null, xs: [] };
    c.stage = el('span', { class: 'stage' });
    c.readout = el('span', { class: 'readout small' });
    c.svg = svg('svg', { class: 'chart', 'data-route': name, viewBox: '0 0 ' + G.w + ' ' + G.h, role: 'img', 'aria-label': name + ': the last 15 minutes' });
    c.card = el('div', { class: 'chart-card', 'data-route': name, id: 'chart-' + name },
      el('div', { class: 'chart-head' }, el('span', { class: 'route-name', text: name }), c.stage, c.readout), c.svg);
    // The readout names the point under the pointer: one listener a chart.
    c.svg.addEventListener('mousemove', (ev) => {
      if (!c.rh || c.xs.length === 0) return;
      const r = c.svg.getBoundingClientRect();
      const x = (ev.clientX - r.left) * G.w / r.width;
      let i = 0;
      for (let j = 1; j < c.xs.length; j++) if (Math.abs(c.xs[j] - x) < Math.abs(c.xs[i] - x)) i = j;
      showPoint(c, i);
    });
    c.svg.addEventListener('mouseleave', () => { c.readout.textContent = ''; if (c.cursor) c.cursor.setAttribute('visibility', 'hidden'); });
    return c;
  }

  function showPoint(c, i) {
    const p = c.rh.points[i];
    const parts = [clock(p.t)];
    for (const b of BACKENDS) {
      const v = p.backends[b];
      if (v) parts.push(b + ' ' + perSec(v.rate) + '/s, p50 ' + ms(v.p50_ms) + ', p99 ' + ms(v.p99_ms) + ' ms' + (v.errors ? ', ' + v.errors + ' 5xx' : ''));
    }
    if (p.shadow_match || p.shadow_mismatch) parts.push('shadow ' + (p.shadow_match || 0) + ' match, ' + (p.shadow_mismatch || 0) + ' mismatch');
    if (parts.length === 1) parts.push('no requests');
    c.readout.textContent = parts.join(' · ');
    if (c.cursor) {
      const X = c.xs[i].toFixed(1);
      c.cursor.setAttribute('x1', X);
      c.cursor.setAttribute('x2', X);
      c.cursor.setAttribute('visibility', 'visible');
    }
  }

  // drawChart redraws a route's chart from its history: a latency panel
  // (p99 solid, p50 dashed, by backend), a request-rate panel, a shared
  // time axis in minutes before the newest point, and a vertical mark for
  // each stage change and rollout decision.
  function drawChart(c, rh, snap) {
    c.rh = rh;
    c.stage.className = 'stage stage-' + rh.stage;
    c.stage.textContent = rh.stage + (rh.stage === 'canary' && rh.canary_percent != null ? ' ' + rh.canary_percent + '%' : '');
    const from = snap.from, to = snap.to;
    const step = snap.step_seconds * 1000;
    const pw = G.w - G.left - G.right;
    const xOf = (t) => G.left + (Math.min(Math.max(t, from), to) - from) / Math.max(to - from, 1) * pw;
    c.xs = rh.points.map((p) => xOf(p.t + step / 2));
    const pick = (b, f) => rh.points.map((p) => (p.backends[b] ? p.backends[b][f] : null));

    const g = svg('g');
    panel(g, G.lat, 'latency, ms', 'ms', BACKENDS.flatMap((b) => [
      { backend: b, series: 'p50', vals: pick(b, 'p50_ms') },
      { backend: b, series: 'p99', vals: pick(b, 'p99_ms') },
    ]), c.xs);
    panel(g, G.rate, 'requests a second, by backend', '/s', BACKENDS.map((b) => ({ backend: b, series: 'rate', vals: pick(b, 'rate') })), c.xs);
    if (!rh.points.some((p) => Object.keys(p.backends).length > 0)) {
      g.append(svg('text', { class: 'nodata', x: G.left + pw / 2, y: (G.lat.top + G.lat.bottom) / 2, text: 'no requests in the last 15 minutes' }));
    }

    // The time axis: a tick a minute, labelled every five, "now" being the
    // end of the newest settled point (a few seconds behind the clock).
    for (let m = 0; m <= 15; m++) {
      const X = xOf(to - m * 60000).toFixed(1);
      const major = m % 5 === 0;
      g.append(svg('line', { class: major ? 'tick-x major' : 'tick-x', x1: X, x2: X, y1: G.rate.bottom, y2: G.rate.bottom + (major ? 5 : 3) }));
      if (major) g.append(svg('text', { class: 'tick x', x: X, y: G.axis, 'text-anchor': m === 0 ? 'end' : m === 15 ? 'start' : 'middle', text: m === 0 ? 'now' : m + ' min ago' }));
    }

    // Marks: a mark newer than the newest point sits at the right edge.
    let lastLabel = -Infinity;
    const evs = (rh.events || []).map((ev) => ({ ev, X: xOf(Date.parse(ev.at)) })).sort((a, b) => a.X - b.X);
    for (let k = 0; k < evs.length; k++) {
      const { ev, X } = evs[k];
      const line = svg('line', { class: 'mark ' + ev.kind, 'data-kind': ev.kind, x1: X.toFixed(1), x2: X.toFixed(1), y1: G.lat.top - 4, y2: G.rate.bottom },
        svg('title', { text: clock(Date.parse(ev.at)) + ' ' + ev.kind + ': ' + ev.text }));
      g.append(line);
      // Label the newest of marks that would overlap.
      const next = evs[k + 1];
      if (next && next.X - X < 60) continue;
      if (X - lastLabel < 60) continue;
      const right = X > G.w - 90;
      // The label is what the route runs; who did it is in the title.
      const what = ev.text.replace(/ by .*$/, '');
      const label = what.length > 22 ? what.slice(0, 21) + '…' : what;
      g.append(svg('text', { class: 'mark-label ' + ev.kind, x: (right ? X - 3 : X + 3).toFixed(1), y: G.lat.top + 6, 'text-anchor': right ? 'end' : 'start', text: label },
        svg('title', { text: clock(Date.parse(ev.at)) + ' ' + ev.kind + ': ' + ev.text })));
      lastLabel = X;
    }
    c.cursor = svg('line', { class: 'cursor', x1: 0, x2: 0, y1: G.lat.top, y2: G.rate.bottom, visibility: 'hidden' });
    g.append(c.cursor);
    c.svg.replaceChildren(g);
  }

  function renderHistory(snap) {
    const box = $('charts');
    const seen = new Set();
    for (const rh of snap.routes || []) {
      seen.add(rh.name);
      let c = charts.get(rh.name);
      if (!c) {
        c = makeChart(rh.name);
        charts.set(rh.name, c);
      }
      box.append(c.card); // keeps the config's order
      // Redraw only what changed: most polls bring one new point a route.
      const sig = snap.to + '|' + rh.stage + rh.canary_percent + '|' + JSON.stringify(rh.points) + JSON.stringify(rh.events);
      if (sig !== c.sig) {
        drawChart(c, rh, snap);
        c.sig = sig;
      }
    }
    for (const [name, c] of charts) {
      if (!seen.has(name)) {
        c.card.remove();
        charts.delete(name);
      }
    }
  }

  let historyTimer = null;
  async function refreshHistory() {
    clearTimeout(historyTimer);
    try {
      renderHistory(await getJSON('/admin/history'));
      $('history-error').hidden = true;
    } catch (e) {
      $('history-error').textContent = 'Cannot read the history: ' + e.message;
      $('history-error').hidden = false;
    }
    historyTimer = setTimeout(refreshHistory, HISTORY_MS);
  }

  // The summary line: the report's own text, so that the dashboard and
  // `natsgate report` say the same.
  let reportTimer = null;
  async function refreshReport() {
    clearTimeout(reportTimer);
    try {
      const rep = await getJSON('/admin/report');
      $('summary').textContent = rep.summary.text;
    } catch (e) {
      $('summary').textContent = ''; // an older gateway has no report
    }
    reportTimer = setTimeout(refreshReport, HISTORY_MS);
  }

  let timer = null;
  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 100);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [stats, admin, fleet] = await Promise.all([
        getJSON('/admin/stats'),
        getJSON('/admin/routes').catch(() => null), // older gateways have no admin API
        getJSON('/admin/fleet').catch(() => null), // nor a fleet
      ]);
      render(stats, admin);
      renderFleet(fleet);
      $('error').hidden = true;
    } catch (e) {
      $('error').textContent = 'Cannot read the gateway: ' + e.message;
      $('error').hidden = false;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener('DOMContentLoaded', () => {
    const input = $('token');
    input.value = token();
    input.addEventListener('input', () => {
      if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      else sessionStorage.removeItem(TOKEN_KEY);
      refreshSoon();
    });
    refresh();
    refreshHistory();
    refreshReport();
  });
})();
