// natsgate's dashboard: reads /admin/stats (the gateway's last minute) and
// /admin/routes (stages and breakers) every two seconds and fills one table
// row per route. Rows are built once and updated in place, so a stage
// control being edited keeps its value between refreshes.
'use strict';

(function () {
  const REFRESH_MS = 2000;
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

  let timer = null;
  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 100);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [stats, admin] = await Promise.all([
        getJSON('/admin/stats'),
        getJSON('/admin/routes').catch(() => null), // older gateways have no admin API
      ]);
      render(stats, admin);
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
  });
})();
