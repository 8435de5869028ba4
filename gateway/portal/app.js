// Understudy portal: a dependency-free single-page app served by the gateway at /portal/.
// Every string from the server reaches the DOM through textContent (see h()), never innerHTML.
'use strict';

(() => {
  const KEY_STORE = 'understudy.apiKey';
  const CHANNEL_STORE = 'understudy.channels';
  const MAX_ROWS = 500;
  const RETRY_MS = 2000;
  const enc = encodeURIComponent;
  const $ = (id) => document.getElementById(id);

  let me = null; // the identity from GET /api/v1/portal/me
  let current = null; // the rendered view's context: {el, signal, ctl, path, query, rawQuery}

  // ---------------------------------------------------------------- DOM helpers

  // h('a', {href, class, testid, data: {eventId}, onclick}, ...children): children are nodes or
  // strings (inserted as text); null, undefined and false are skipped; arrays are flattened.
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    let value;
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'value') value = v;
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv == null ? '' : String(dv);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, kids);
    if (value !== undefined) el.value = value;
    return el;
  }

  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  const opt = (value, label) => h('option', { value }, label ?? value);
  const input = (testid, props) => h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', testid, ...props });
  const field = (label, control, hint) =>
    h('label', { class: 'field' }, h('span', { class: 'label' }, label), control, hint ? h('small', { class: 'muted' }, hint) : null);
  const card = (title, ...kids) => h('section', { class: 'card' }, title ? h('h2', null, title) : null, ...kids);
  const pretty = (v) => (v === undefined ? '' : JSON.stringify(v, null, 2));
  const jsonPre = (v, testid) => h('pre', { class: 'json', testid }, pretty(v));
  const muted = (text, props) => h('p', { class: 'muted', ...props }, text);

  function table(headers, rows, props) {
    return h('table', props, h('thead', null, h('tr', null, headers.map((t) => h('th', null, t)))), h('tbody', null, rows));
  }

  function kvTable(obj, keys, testid) {
    const rows = (keys || Object.keys(obj)).map((k) => h('tr', null, h('th', null, k), h('td', null, fmtVal(obj[k]))));
    return h('table', { class: 'kv', testid }, h('tbody', null, rows));
  }

  function emptyRow(cols, text) {
    return h('tr', { class: 'empty' }, h('td', { colspan: cols }, text));
  }

  // Newest first, at most MAX_ROWS rows.
  function prependCapped(tbody, row) {
    tbody.prepend(row);
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
  }

  function clickableRow(tr, href) {
    tr.classList.add('clickable');
    tr.addEventListener('click', (ev) => {
      if (!ev.target.closest('a, button, input, select, textarea')) location.hash = href;
    });
    return tr;
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  // Local time with milliseconds: 2026-11-30 16:00:00.123
  function fmtTime(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtMs(v) {
    if (v == null || Number.isNaN(Number(v))) return '–';
    const n = Number(v);
    return `${n < 10 ? n.toFixed(2) : n < 1000 ? n.toFixed(1) : n.toFixed(0)} ms`;
  }

  // errors / total when both are there; else error_rate, read as a fraction (0..1).
  function fmtRate(rate, errors, total) {
    const r = typeof errors === 'number' && typeof total === 'number' ? (total ? errors / total : 0) : Number(rate) || 0;
    return `${(r * 100).toFixed(1)} %`;
  }

  const fmtVal = (v) => (v == null ? '–' : typeof v === 'object' ? JSON.stringify(v) : String(v));

  // A time typed by the user: RFC 3339 with an offset is sent as is; anything else Date can parse
  // is read as local time and sent as UTC; what does not parse is sent raw (the server says why).
  function toRfc3339(v) {
    const s = String(v || '').trim();
    if (!s || /(z|[+-]\d\d:?\d\d)$/i.test(s)) return s;
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? s : d.toISOString();
  }

  function successCell(e) {
    if (e.success == null) return '–';
    return h('span', { class: e.success ? 'ok' : 'bad' }, e.success ? 'ok' : 'error');
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      Object.assign(this, { status, code, retryAfter });
    }
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORE) || '';

  function baseHeaders(extra) {
    const headers = { 'X-Requested-With': 'understudy-portal' };
    const key = apiKey();
    if (key) headers['X-API-Key'] = key;
    return Object.assign(headers, extra);
  }

  // The {"error":{"code","message"}} envelope, or the bare HTTP status when the body is not one.
  async function errorFrom(res) {
    const body = await res.json().catch(() => null);
    const e = (body && body.error) || {};
    return new ApiError(res.status, e.code || `http_${res.status}`, e.message || `HTTP ${res.status} ${res.statusText}`.trim(),
      res.headers.get('Retry-After'));
  }

  async function api(path, { method = 'GET', body, headers, signal } = {}) {
    const init = { method, credentials: 'same-origin', cache: 'no-store', headers: baseHeaders(headers), signal };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (!res.ok) throw await errorFrom(res);
    const text = await res.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch (_) { throw new ApiError(res.status, 'invalid_response', `The answer of ${path} is not JSON`); }
  }

  const isAbort = (err) => err && err.name === 'AbortError';

  function errorText(err) {
    let text = err && err.message ? err.message : String(err);
    if (err && err.retryAfter) text += ` (retry after ${err.retryAfter} s)`;
    return text;
  }

  function showError(text) {
    $('error').textContent = text || '';
    $('error-banner').hidden = !text;
  }
  const clearError = () => showError('');

  // Shows an error unless it belongs to a view the user has left.
  function report(ctx, err) {
    if (isAbort(err) || (ctx && ctx.signal.aborted)) return;
    showError(errorText(err));
  }

  // Wraps an async handler so that its errors land in the banner.
  function task(ctx, fn) {
    return (...args) => Promise.resolve().then(() => fn(...args)).catch((err) => report(ctx, err));
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  // ---------------------------------------------------------------- SSE over fetch

  // A minimal text/event-stream parser: push() decoded text; calls onEvent({type, data, id}) per
  // event and onComment(text) per comment line.
  function sseParser(onEvent, onComment) {
    let buf = '', data = [], type = '', id = null;
    function line(l) {
      if (l === '') {
        if (data.length) onEvent({ type: type || 'message', data: data.join('\n'), id });
        data = []; type = ''; id = null;
        return;
      }
      if (l[0] === ':') { if (onComment) onComment(l.slice(1).trim()); return; }
      const i = l.indexOf(':');
      const name = i < 0 ? l : l.slice(0, i);
      let value = i < 0 ? '' : l.slice(i + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (name === 'data') data.push(value);
      else if (name === 'event') type = value;
      else if (name === 'id') id = value;
    }
    return {
      push(text) {
        buf += text;
        for (;;) {
          const m = /\r\n|\r|\n/.exec(buf);
          if (!m || (m[0] === '\r' && m.index === buf.length - 1)) break; // a lone \r may be half of \r\n
          line(buf.slice(0, m.index));
          buf = buf.slice(m.index + m[0].length);
        }
      },
    };
  }

  async function readSse(url, { headers, signal, onOpen, onEvent, onComment }) {
    const res = await fetch(url, {
      credentials: 'same-origin', cache: 'no-store', signal,
      headers: baseHeaders(Object.assign({ Accept: 'text/event-stream' }, headers)),
    });
    if (!res.ok) throw await errorFrom(res);
    if (onOpen) onOpen(res);
    if (!res.body) return;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = sseParser(onEvent, onComment);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
  }

  // Follows a stream until stopped or the view is left: status connecting → live → disconnected,
  // reconnecting after RETRY_MS; a 4xx answer (but 429) stops it. opts: url(), headers(),
  // onEvent, onComment, onStatus(text), onGiveUp(err).
  function followSse(ctx, opts) {
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    ctx.signal.addEventListener('abort', stop, { once: true });
    (async () => {
      while (!ctl.signal.aborted) {
        opts.onStatus('connecting');
        try {
          await readSse(opts.url(), {
            headers: opts.headers ? opts.headers() : {}, signal: ctl.signal,
            onOpen: () => opts.onStatus('live'), onEvent: opts.onEvent, onComment: opts.onComment,
          });
          if (ctl.signal.aborted) break;
          opts.onStatus('disconnected');
        } catch (err) {
          if (ctl.signal.aborted || isAbort(err)) break;
          opts.onStatus('disconnected');
          report(ctx, err);
          if (err.status >= 400 && err.status < 500 && err.status !== 429) {
            ctl.abort();
            if (opts.onGiveUp) opts.onGiveUp(err);
            return;
          }
        }
        await sleep(RETRY_MS, ctl.signal);
      }
    })();
    return { stop, signal: ctl.signal };
  }

  function statusBadge(testid) {
    const el = h('span', { class: 'status', testid }, 'connecting');
    el.set = (text) => { el.textContent = text; el.dataset.state = text.split(' ')[0]; };
    el.set('connecting');
    return el;
  }

  // ---------------------------------------------------------------- audit event rows

  const COLS = {
    time: ['Time', (e, href) => h('a', { href }, fmtTime(e.ts))],
    tenant: ['Tenant', (e) => e.tenant || '–'],
    tool: ['Tool', (e) => e.tool || '–'],
    source: ['Source', (e) => e.source || '–'],
    user: ['User', (e) => e.user || '–'],
    success: ['Success', successCell],
    duration: ['Duration', (e) => fmtMs(e.duration_ms)],
    status: ['Status', (e) => (e.status == null ? '–' : e.status)],
    chaos: ['Chaos', (e) => e.chaos || '–'],
    error: ['Error', (e) => e.error || ''],
  };
  const TAIL_COLS = ['time', 'tenant', 'tool', 'source', 'user', 'success', 'duration', 'chaos'];
  const LIST_COLS = ['time', 'tenant', 'tool', 'source', 'user', 'success', 'duration', 'status', 'chaos', 'error'];

  const eventHref = (id) => `#/events/${enc(id)}`;

  function eventRow(e, cols, testid) {
    const href = eventHref(e.id);
    const tr = h('tr', {
      testid, class: e.success === false ? 'failed' : null, title: `Open event ${e.id}`,
      data: { eventId: e.id, tool: e.tool, tenant: e.tenant ?? '', success: String(e.success) },
    }, cols.map((c) => h('td', { class: `col-${c}` }, COLS[c][1](e, href))));
    return clickableRow(tr, href);
  }

  function eventTable(cols, events, rowTestid, props) {
    const rows = events.length ? events.map((e) => eventRow(e, cols, rowTestid)) : emptyRow(cols.length, 'No events.');
    return table(cols.map((c) => COLS[c][0]), rows, props);
  }

  // ---------------------------------------------------------------- session

  const loginHref = () => `/portal/auth/login?return_to=${enc(location.pathname + location.hash)}`;

  async function loadMe() {
    try {
      me = await api('/api/v1/portal/me');
    } catch (err) {
      if (err.status === 401 && apiKey()) {
        sessionStorage.removeItem(KEY_STORE);
        await loadMe(); // perhaps a session cookie still stands
        showError(`The API key was refused: ${err.message}`);
        return;
      }
      if (err.status === 401) { showLogin(); return; }
      showError(errorText(err));
      $('main').replaceChildren(muted('The portal could not load your identity. Reload to try again.'));
      return;
    }
    const who = $('whoami');
    who.textContent = `${me.subject} (${me.role})`;
    who.title = [`auth: ${me.auth_type}`, me.name, me.email, me.tenant ? `tenant: ${me.tenant}` : null, me.key_name ? `key: ${me.key_name}` : null]
      .filter(Boolean).join('\n');
    $('session').hidden = false;
    $('nav').hidden = false;
    route();
  }

  function showLogin() {
    me = null;
    $('nav').hidden = true;
    $('session').hidden = true;
    const keyInput = h('input', { type: 'password', testid: 'api-key-input', autocomplete: 'off', placeholder: 'usk_… or the admin token', 'aria-label': 'API key' });
    const form = h('form', { class: 'inline' }, keyInput, h('button', { type: 'submit', class: 'primary', testid: 'api-key-save' }, 'Use this key'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = keyInput.value.trim();
      if (!key) { showError('Paste an API key first.'); return; }
      sessionStorage.setItem(KEY_STORE, key);
      clearError();
      loadMe();
    });
    const ssoNote = muted('');
    $('main').replaceChildren(h('section', { class: 'card login', testid: 'login-panel' },
      h('h2', null, 'Sign in'),
      h('p', null, h('a', { class: 'button primary', href: loginHref(), testid: 'login' }, 'Log in with your organisation')),
      ssoNote,
      h('h3', null, 'Or use an API key'),
      muted('The key stays in this browser tab (sessionStorage) and is sent as X-API-Key.'),
      form));
    api('/.well-known/oauth-protected-resource').then((meta) => {
      if (meta && Array.isArray(meta.authorization_servers) && !meta.authorization_servers.length) {
        ssoNote.textContent = 'Single sign-on is not configured on this gateway: use an API key.';
      }
    }).catch(() => {});
  }

  async function logout() {
    sessionStorage.removeItem(KEY_STORE); // an API-key login ends here; a cookie session at the gateway:
    await fetch('/portal/auth/logout', { method: 'POST', credentials: 'same-origin', headers: baseHeaders() }).catch(() => null);
    location.reload();
  }

  // ---------------------------------------------------------------- router

  const ROUTES = [
    [/^\/dashboard$/, viewDashboard],
    [/^\/tenants$/, viewTenants],
    [/^\/tenants\/(.+)$/, viewTenant],
    [/^\/tail$/, viewTail],
    [/^\/events$/, viewEvents],
    [/^\/events\/(.+)$/, viewEvent],
    [/^\/tryit$/, viewTryit],
    [/^\/keys$/, viewKeys],
    [/^\/channels$/, viewChannels],
  ];

  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/dashboard';
    const q = raw.includes('?') ? raw.indexOf('?') : raw.length;
    const rawQuery = raw.slice(q + 1);
    return { path: raw.slice(0, q), rawQuery, query: new URLSearchParams(rawQuery) };
  }

  function safeDecode(s) {
    try { return decodeURIComponent(s); } catch (_) { return s; }
  }

  function route() {
    if (!me) {
      const link = document.querySelector('[data-testid="login"]');
      if (link) link.href = loginHref();
      return;
    }
    if (current) current.ctl.abort();
    clearError();
    const { path, rawQuery, query } = parseHash();
    const match = ROUTES.map(([re, fn]) => [path.match(re), fn]).find(([m]) => m);
    if (!match) { location.replace('#/dashboard'); return; }
    const ctl = new AbortController();
    const el = h('div', { class: 'view' });
    current = { el, ctl, signal: ctl.signal, path, rawQuery, query };
    $('main').replaceChildren(el);
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', path === a.dataset.route || path.startsWith(`${a.dataset.route}/`));
    }
    const [m, fn] = match;
    task(current, fn)(current, ...m.slice(1).map(safeDecode));
  }

  // ---------------------------------------------------------------- dashboard

  function stat(label, value, testid) {
    return h('div', { class: 'stat' }, h('div', { class: 'stat-value', testid }, value), h('div', { class: 'stat-label' }, label));
  }

  function barChart(ts) {
    const buckets = ts.buckets || [];
    const max = Math.max(1, ...buckets.map((b) => b.count || 0));
    const bars = buckets.map((b) => {
      const bar = h('div', { class: 'bar' });
      bar.style.height = `${((b.count || 0) / max) * 100}%`;
      const errs = h('div', { class: 'bar-errors' });
      errs.style.height = b.count ? `${((b.errors || 0) / b.count) * 100}%` : '0';
      bar.append(errs);
      return h('div', {
        class: 'bar-slot', testid: 'timeseries-bar', data: { ts: b.ts, count: b.count, errors: b.errors },
        title: `${fmtTime(b.ts)}: ${b.count} calls, ${b.errors} errors`,
      }, bar);
    });
    return h('div', { class: 'chart-wrap' },
      h('div', { class: 'chart', testid: 'timeseries' }, bars),
      h('div', { class: 'chart-axis muted' }, h('span', null, fmtTime(ts.from)),
        h('span', null, `peak ${max} per ${ts.bucket || `${ts.bucket_seconds}s`} · errors in red`), h('span', null, fmtTime(ts.to))));
  }

  function countTable(rows, testid) {
    const body = rows.length
      ? rows.map((r) => h('tr', null, h('td', null, r.key), h('td', { class: 'num' }, fmtVal(r.count)), h('td', { class: 'num' }, fmtVal(r.errors))))
      : emptyRow(3, 'Nothing yet.');
    return table(['Key', 'Calls', 'Errors'], body, { testid });
  }

  async function viewDashboard(ctx) {
    const body = h('div', { testid: 'dashboard' });
    const refresh = h('button', { type: 'button', testid: 'dashboard-refresh' }, 'Refresh');
    ctx.el.append(h('div', { class: 'title-row' }, h('h1', null, 'Dashboard'), refresh), body);
    async function load() {
      const [d, ts] = await Promise.all([
        api('/api/v1/portal/dashboard', { signal: ctx.signal }),
        api('/api/v1/portal/audit/timeseries', { signal: ctx.signal }).catch((err) => err),
      ]);
      const bySource = Object.entries(d.by_source || {}).map(([key, v]) =>
        (v && typeof v === 'object' ? { key, count: v.count ?? JSON.stringify(v), errors: v.errors } : { key, count: v }));
      bySource.sort((a, b) => (Number(b.count) || 0) - (Number(a.count) || 0));
      body.replaceChildren(
        muted(`The last ${Math.round((d.window_seconds || 3600) / 60)} minutes.`),
        h('div', { class: 'stats' },
          stat('calls', fmtVal(d.total), 'dash-total'),
          stat('errors', fmtVal(d.errors), 'dash-errors'),
          stat('error rate', fmtRate(d.error_rate, d.errors, d.total), 'dash-error-rate'),
          stat('p50', fmtMs(d.p50_ms), 'dash-p50'),
          stat('p95', fmtMs(d.p95_ms), 'dash-p95'),
          stat('tenants', fmtVal(d.tenants), 'dash-tenants')),
        card('Calls over time', ts instanceof Error ? muted(errorText(ts)) : barChart(ts)),
        h('div', { class: 'columns' },
          card('By source', countTable(bySource, 'dash-by-source')),
          card('Top tools', countTable(d.top_tools || [], 'dash-top-tools'))),
        card('Recent events', eventTable(LIST_COLS, d.recent || [], 'recent-row', { testid: 'dash-recent' })));
      if (ts instanceof Error) report(ctx, ts);
    }
    refresh.addEventListener('click', task(ctx, load));
    await load();
  }

  // ---------------------------------------------------------------- tenants

  async function viewTenants(ctx) {
    ctx.el.append(h('h1', null, 'Tenants'));
    const d = await api('/public/tenants', { signal: ctx.signal });
    const tenants = d.tenants || [];
    const rows = tenants.length ? tenants.map((t) => {
      const href = `#/tenants/${enc(t.tenant_id)}`;
      return clickableRow(h('tr', { testid: 'tenant-row', data: { tenant: t.tenant_id } },
        h('td', null, h('a', { href }, t.tenant_id)), h('td', null, fmtVal(t.visibility)), h('td', null, fmtVal(t.owner)),
        h('td', null, fmtVal(t.source)), h('td', null, t.read_only == null ? '–' : t.read_only ? 'yes' : 'no'), h('td', { class: 'num' }, fmtVal(t.version))), href);
    }) : emptyRow(6, 'No tenants visible to you.');
    ctx.el.append(card(null, table(['Tenant', 'Visibility', 'Owner', 'Source', 'Read-only', 'Version'], rows, { testid: 'tenants-table' })));
  }

  function settled(result, render) {
    return result.status === 'fulfilled' ? render(result.value) : h('p', { class: 'bad' }, errorText(result.reason));
  }

  async function viewTenant(ctx, id) {
    const base = `/public/tenants/${enc(id)}`;
    const opts = { signal: ctx.signal };
    ctx.el.append(h('div', { class: 'title-row' }, h('h1', null, `Tenant ${id}`),
      h('span', null, h('a', { href: `#/tryit?tenant=${enc(id)}` }, 'Try its tools'), ' · ', h('a', { href: `#/events?tenant=${enc(id)}` }, 'Its events'), ' · ', h('a', { href: '#/tenants' }, 'All tenants'))));
    const results = await Promise.allSettled([
      api(base, opts), api(`${base}/scenarios`, opts), api(`/api/v1/portal/tools?tenant=${enc(id)}`, opts), api(`${base}/chaos`, opts)]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) report(ctx, failed.reason);
    const [cfg, scenarios, tools, chaos] = results;
    ctx.el.append(h('div', { testid: 'tenant-detail', data: { tenant: id } },
      card('Configuration', settled(cfg, (t) => [
        kvTable(t, ['tenant_id', 'visibility', 'owner', 'source', 'read_only', 'version'].filter((k) => k in t)),
        h('h3', null, 'State'), jsonPre(t.state ?? null, 'tenant-state'),
        h('h3', null, 'Settings'), jsonPre(t.settings ?? null, 'tenant-settings'),
        h('details', null, h('summary', null, 'Full configuration'), jsonPre(t, 'tenant-config'))])),
      card('Tools', settled(tools, (d) => toolsTable(id, d.tools || []))),
      card('Scenarios', settled(scenarios, (d) => scenarioList(d.scenarios || []))),
      card('Chaos', settled(chaos, (d) => jsonPre(d.chaos ?? d, 'tenant-chaos')))));
  }

  function toolsTable(tenant, tools) {
    const rows = tools.length ? tools.map((t) => h('tr', { testid: 'tool-row', data: { tool: t.name } },
      h('td', null, h('a', { href: `#/tryit?tenant=${enc(tenant)}&tool=${enc(t.name)}`, title: 'Try it' }, t.name)),
      h('td', null, fmtVal(t.group)), h('td', null, t.description || ''))) : emptyRow(3, 'No tools.');
    return table(['Name', 'Group', 'Description'], rows, { testid: 'tenant-tools' });
  }

  function scenarioList(scenarios) {
    if (!scenarios.length) return muted('No scenarios.', { testid: 'tenant-scenarios' });
    return h('div', { testid: 'tenant-scenarios' }, scenarios.map((s) => {
      const label = s.tool_name ? `tool ${s.tool_name}` : Array.isArray(s.keywords) ? `keywords: ${s.keywords.join(', ')}` : '';
      return h('details', { class: 'scenario', testid: 'scenario', data: { scenarioId: s.id } },
        h('summary', null, h('code', null, fmtVal(s.id)), ` ${label}`), jsonPre(s));
    }));
  }

  // ---------------------------------------------------------------- live tail

  async function viewTail(ctx) {
    const status = statusBadge('tail-status');
    const tool = input('tail-filter-tool', { placeholder: 'tool', value: ctx.query.get('tool') || '' });
    const tenant = input('tail-filter-tenant', { placeholder: 'tenant', value: ctx.query.get('tenant') || '' });
    const form = h('form', { class: 'inline' }, field('Tool', tool), field('Tenant', tenant),
      h('button', { type: 'submit', testid: 'tail-apply' }, 'Apply'),
      h('button', { type: 'button', testid: 'tail-clear', onclick: () => tbody.replaceChildren() }, 'Clear'));
    const tbody = h('tbody');
    ctx.el.append(
      h('div', { class: 'title-row' }, h('h1', null, 'Live tail'), h('span', null, 'Stream: ', status)),
      card(null, form, muted(`Newest first; the last ${MAX_ROWS} events are kept. Click a row for its detail.`),
        h('table', { testid: 'tail-table' }, h('thead', null, h('tr', null, TAIL_COLS.map((c) => h('th', null, COLS[c][0])))), tbody)));

    function onEvent(ev) {
      if (ev.type !== 'audit') return;
      let e;
      try { e = JSON.parse(ev.data); } catch (_) { return; }
      prependCapped(tbody, eventRow(e, TAIL_COLS, 'tail-row'));
    }

    let stream = null;
    function start() {
      if (stream) stream.stop();
      const qs = new URLSearchParams(Object.entries({ tool: tool.value.trim(), tenant: tenant.value.trim() }).filter(([, v]) => v)).toString();
      const url = `/api/v1/portal/audit/stream${qs ? `?${qs}` : ''}`;
      stream = followSse(ctx, { url: () => url, onEvent, onStatus: status.set });
    }
    form.addEventListener('submit', (ev) => { ev.preventDefault(); clearError(); start(); });
    start();
  }

  // ---------------------------------------------------------------- events search

  const FILTERS = ['from', 'to', 'tool', 'user', 'session', 'tenant', 'source', 'success', 'q'];
  const SOURCES = ['mcp', 'hosted', 'execute', 'llm', 'portal-replay', 'portal-tryit'];

  async function viewEvents(ctx) {
    const f = {};
    for (const name of FILTERS) if (name !== 'success') f[name] = input(`filter-${name}`, { name });
    f.from.placeholder = f.to.placeholder = 'RFC 3339 or local 2026-11-30 15:00';
    f.q.placeholder = 'tool, user, session, tenant, scenario or error';
    f.source.setAttribute('list', 'source-list');
    f.success = h('select', { testid: 'filter-success', name: 'success' }, opt('', 'any'), opt('true', 'success'), opt('false', 'failure'));
    const extra = input('filter-extra', { class: 'wide', placeholder: 'param.city=Paris&has=response_error' });
    const limit = h('select', { testid: 'filter-limit' }, [20, 50, 100, 200, 500, 1000].map((n) => opt(String(n))));
    limit.value = '50';
    let offset = 0;
    prefill(ctx.rawQuery);

    const total = h('span', { testid: 'events-total', class: 'muted' });
    const prev = h('button', { type: 'button', testid: 'events-prev' }, '← Newer');
    const next = h('button', { type: 'button', testid: 'events-next' }, 'Older →');
    const exportLink = h('a', { class: 'button', testid: 'export-link', download: 'audit.ndjson' }, 'Export NDJSON');
    const results = h('div', { testid: 'events-results' });
    const form = h('form', { class: 'filters', testid: 'events-form' },
      FILTERS.map((n) => field(n === 'q' ? 'Search' : n[0].toUpperCase() + n.slice(1), f[n])),
      field('Extra filters', extra, 'param.<path>=v, response.<path>=v, header.<Name>=v, has=<column>, joined with &'),
      field('Per page', limit),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'events-search' }, 'Search'), exportLink),
      h('datalist', { id: 'source-list' }, SOURCES.map((s) => opt(s))));
    ctx.el.append(h('h1', null, 'Events'), card(null, form),
      card(null, h('div', { class: 'title-row' }, total, h('span', null, prev, ' ', next)), results));

    function prefill(raw) {
      const rest = [];
      for (const part of raw.split('&').filter(Boolean)) {
        const eq = part.indexOf('=');
        const key = safeDecode(eq < 0 ? part : part.slice(0, eq));
        const value = eq < 0 ? '' : safeDecode(part.slice(eq + 1).replace(/\+/g, ' '));
        if (f[key]) f[key].value = value;
        else if (key === 'limit') limit.value = value;
        else if (key === 'offset') offset = Number(value) || 0;
        else rest.push(part);
      }
      extra.value = rest.join('&');
    }

    function filterQuery() {
      const qs = new URLSearchParams();
      for (const name of FILTERS) {
        const v = (name === 'from' || name === 'to') ? toRfc3339(f[name].value) : f[name].value.trim();
        if (v) qs.set(name, v);
      }
      const raw = extra.value.trim().replace(/^[?&]+/, '');
      return [qs.toString(), raw].filter(Boolean).join('&');
    }

    async function search() {
      const filters = filterQuery();
      const query = [filters, `limit=${enc(limit.value)}`, `offset=${offset}`].filter(Boolean).join('&');
      exportLink.href = `/api/v1/portal/audit/export?${['format=jsonl', filters].filter(Boolean).join('&')}`;
      history.replaceState(null, '', `#/events?${query}`);
      const d = await api(`/api/v1/portal/audit/events?${query}`, { signal: ctx.signal });
      const events = d.events || [];
      offset = d.offset ?? offset;
      const first = events.length ? offset + 1 : 0;
      total.textContent = `${d.total} events · showing ${first}–${offset + events.length}`;
      prev.disabled = offset <= 0;
      next.disabled = offset + events.length >= d.total;
      results.replaceChildren(eventTable(LIST_COLS, events, 'event-row', { testid: 'events-table' }));
    }

    form.addEventListener('submit', (ev) => { ev.preventDefault(); clearError(); offset = 0; task(ctx, search)(); });
    prev.addEventListener('click', task(ctx, () => { offset = Math.max(0, offset - Number(limit.value)); return search(); }));
    next.addEventListener('click', task(ctx, () => { offset += Number(limit.value); return search(); }));
    exportLink.addEventListener('click', (ev) => {
      if (!apiKey()) return; // a cookie session: the plain link carries it
      ev.preventDefault();
      task(ctx, () => download(exportLink.href, 'audit.ndjson'))();
    });
    await search();
  }

  // A download that needs the API key header (a plain link cannot send it).
  async function download(url, name) {
    const res = await fetch(url, { credentials: 'same-origin', headers: baseHeaders() });
    if (!res.ok) throw await errorFrom(res);
    const href = URL.createObjectURL(await res.blob());
    const a = h('a', { href, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10000);
  }

  // ---------------------------------------------------------------- event detail and replay

  const SUMMARY_FIELDS = ['id', 'ts', 'tenant', 'tool', 'user', 'session', 'auth_type', 'source', 'success',
    'duration_ms', 'transport', 'scenario', 'chaos', 'status', 'error'];
  const PAYLOAD_PARTS = ['request_params', 'request_headers', 'response_result', 'response_error', 'notifications', 'replayed_from'];

  async function viewEvent(ctx, id) {
    ctx.el.append(h('div', { class: 'title-row' }, h('h1', null, 'Event'), h('a', { href: '#/events' }, '← Events')));
    const e = await api(`/api/v1/portal/audit/events/${enc(id)}`, { signal: ctx.signal });
    const summary = { ...e, ts: `${fmtTime(e.ts)}  (${e.ts})`, duration_ms: fmtMs(e.duration_ms) };
    delete summary.payload;
    const payload = e.payload;
    const parts = payload ? PAYLOAD_PARTS.filter((k) => k in payload).concat(Object.keys(payload).filter((k) => !PAYLOAD_PARTS.includes(k))) : [];
    const replayedFrom = payload && payload.replayed_from;
    ctx.el.append(h('div', { testid: 'event-detail', data: { eventId: e.id } },
      card('Summary', kvTable(summary, SUMMARY_FIELDS.filter((k) => k in summary).concat(Object.keys(summary).filter((k) => !SUMMARY_FIELDS.includes(k)))),
        replayedFrom ? h('p', null, 'Replay of ', h('a', { href: eventHref(replayedFrom), testid: 'replayed-from-link' }, replayedFrom)) : null),
      card('Payload', payload ? parts.map((k) => h('div', { class: 'part' }, h('h3', null, k), jsonPre(payload[k], `payload-${k.replace(/_/g, '-')}`)))
        : muted('No payload was recorded for this event.'))),
    replayCard(ctx, e.id));
  }

  function replayCard(ctx, id) {
    const button = h('button', { type: 'button', class: 'primary', testid: 'replay-button' }, 'Replay');
    const out = h('div', { class: 'replay-out' });
    button.addEventListener('click', async () => {
      clearError();
      button.disabled = true;
      let wait = 0; // seconds to keep the button disabled after a 429
      try {
        const r = await api(`/api/v1/portal/audit/events/${enc(id)}/replay`, { method: 'POST', body: {}, signal: ctx.signal });
        out.replaceChildren(
          r && r.event_id ? h('p', null, 'New event: ', h('a', { href: eventHref(r.event_id), testid: 'replay-event-link' }, r.event_id)) : null,
          jsonPre(r, 'replay-result'));
      } catch (err) {
        if (isAbort(err)) return;
        report(ctx, err);
        if (err.status === 429) wait = Number(err.retryAfter) || 0;
        out.replaceChildren(h('pre', { class: 'json bad', testid: 'replay-result' },
          err.status === 429 ? `429 rate_limited: ${err.message}\nRetry-After: ${err.retryAfter ?? '?'} s` : `${err.status || ''} ${err.code || ''}: ${err.message}`));
      } finally {
        button.disabled = wait > 0;
        if (wait > 0) setTimeout(() => { button.disabled = false; }, wait * 1000);
      }
    });
    return card('Replay', muted('Runs the same MCP tool call again against the tenant; the new call is audited with source portal-replay.'),
      h('p', null, button), out);
  }

  // ---------------------------------------------------------------- try it

  async function viewTryit(ctx) {
    const tenantSel = h('select', { testid: 'tryit-tenant' });
    const toolSel = h('select', { testid: 'tryit-tool' });
    const description = muted('', { testid: 'tryit-description' });
    const schema = h('pre', { class: 'json', testid: 'tryit-schema' });
    const args = h('textarea', { testid: 'tryit-args', rows: 8, spellcheck: 'false', value: '{}' });
    const result = h('pre', { class: 'json', testid: 'tryit-result', hidden: true });
    const form = h('form', null,
      h('div', { class: 'inline' }, field('Tenant', tenantSel), field('Tool', toolSel)),
      description, h('h3', null, 'Input schema'), schema,
      field('Arguments (JSON)', args),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'tryit-run' }, 'Run')));
    ctx.el.append(h('h1', null, 'Try it'), card(null, form), card('Result', result));
    let tools = [];

    function showTool() {
      const t = tools.find((x) => x.name === toolSel.value);
      description.textContent = t ? t.description || '' : 'This tenant has no tools.';
      schema.textContent = t ? pretty(t.input_schema ?? null) : '';
    }

    async function loadTools(wanted) {
      toolSel.replaceChildren();
      tools = [];
      showTool();
      if (!tenantSel.value) return;
      const d = await api(`/api/v1/portal/tools?tenant=${enc(tenantSel.value)}`, { signal: ctx.signal });
      tools = d.tools || [];
      append(toolSel, tools.map((t) => opt(t.name, t.group && t.group !== 'tenant' ? `${t.name} (${t.group})` : t.name)));
      if (wanted && tools.some((t) => t.name === wanted)) toolSel.value = wanted;
      showTool();
    }

    async function run() {
      clearError();
      if (!toolSel.value) throw new Error('Pick a tool first.');
      let parsed;
      try { parsed = JSON.parse(args.value || '{}'); } catch (err) { throw new Error(`The arguments are not valid JSON: ${err.message}`); }
      result.hidden = false;
      result.classList.remove('bad');
      result.textContent = 'Running…';
      try {
        const r = await api(`/api/v1/admin/tryit/${enc(toolSel.value)}`, {
          method: 'POST', body: { arguments: parsed }, headers: { 'X-Tenant-ID': tenantSel.value }, signal: ctx.signal });
        result.classList.toggle('bad', !!(r && r.isError));
        result.textContent = pretty(r);
      } catch (err) {
        result.classList.add('bad');
        result.textContent = `${err.status || ''} ${err.code || ''}: ${err.message}`;
        throw err;
      }
    }

    tenantSel.addEventListener('change', task(ctx, () => loadTools()));
    toolSel.addEventListener('change', showTool);
    form.addEventListener('submit', (ev) => { ev.preventDefault(); task(ctx, run)(); });

    const d = await api('/public/tenants', { signal: ctx.signal });
    append(tenantSel, (d.tenants || []).map((t) => opt(t.tenant_id)));
    const wanted = ctx.query.get('tenant');
    if (wanted && (d.tenants || []).some((t) => t.tenant_id === wanted)) tenantSel.value = wanted;
    await loadTools(ctx.query.get('tool'));
  }

  // ---------------------------------------------------------------- API keys

  async function viewKeys(ctx) {
    const tbody = h('tbody');
    const name = input('key-name', { required: true });
    const role = h('select', { testid: 'key-role' }, ['viewer', 'editor', 'admin'].map((r) => opt(r)));
    const tenant = input('key-tenant', { placeholder: 'all tenants' });
    const description = input('key-description', { class: 'wide' });
    const expires = input('key-expires', { placeholder: 'never; RFC 3339 or local time' });
    const minted = h('div');
    const form = h('form', { class: 'filters', testid: 'key-form' }, field('Name', name), field('Role', role), field('Tenant', tenant),
      field('Description', description), field('Expires at', expires),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'key-mint' }, 'Mint key')));
    ctx.el.append(h('h1', null, 'API keys'),
      card('Keys', h('table', { testid: 'keys-table' }, h('thead', null, h('tr', null,
        ['Name', 'Identity', 'Role', 'Tenant', 'Description', 'Expires', 'Created', 'Created by', ''].map((t) => h('th', null, t)))), tbody)),
      card('Mint a key', form, minted));

    function keyRow(k) {
      const revoke = h('button', { type: 'button', class: 'danger', testid: 'key-revoke', data: { keyName: k.name } }, 'Revoke');
      revoke.addEventListener('click', task(ctx, async () => {
        if (!window.confirm(`Revoke the key "${k.name}"? Clients using it are refused at once.`)) return;
        clearError();
        await api(`/api/v1/admin/keys/${enc(k.name)}`, { method: 'DELETE', signal: ctx.signal });
        await load();
      }));
      return h('tr', { testid: 'key-row', data: { keyName: k.name } },
        h('td', null, h('code', null, k.name)), h('td', null, fmtVal(k.identity)), h('td', null, fmtVal(k.role)),
        h('td', null, fmtVal(k.tenant)), h('td', null, k.description || ''), h('td', null, k.expires_at ? fmtTime(k.expires_at) : 'never'),
        h('td', null, fmtTime(k.created_at)), h('td', null, fmtVal(k.created_by)), h('td', null, revoke));
    }

    async function load() {
      const d = await api('/api/v1/admin/keys', { signal: ctx.signal });
      const keys = d.keys || [];
      tbody.replaceChildren(...(keys.length ? keys.map(keyRow) : [emptyRow(9, 'No keys yet.')]));
    }

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      task(ctx, async () => {
        clearError();
        const body = { name: name.value.trim(), role: role.value };
        if (tenant.value.trim()) body.tenant = tenant.value.trim();
        if (description.value.trim()) body.description = description.value.trim();
        if (expires.value.trim()) body.expires_at = toRfc3339(expires.value);
        const r = await api('/api/v1/admin/keys', { method: 'POST', body, signal: ctx.signal });
        minted.replaceChildren(h('div', { class: 'warning', testid: 'key-warning' },
          h('strong', null, 'Copy this key now: it is shown only once and cannot be recovered.'),
          h('pre', { class: 'json secret', testid: 'key-plaintext' }, r.plaintext),
          jsonPre(r.key)));
        form.reset();
        await load();
      })();
    });
    await load();
  }

  // ---------------------------------------------------------------- channels

  // Channels created in this tab, with their publish tokens: [{id, name, visibility, publish_token, channel_url, …}]
  function rememberedChannels() {
    try { return [].concat(JSON.parse(sessionStorage.getItem(CHANNEL_STORE) || '[]')); } catch (_) { return []; }
  }
  const saveChannels = (list) => sessionStorage.setItem(CHANNEL_STORE, JSON.stringify(list));
  const rememberChannel = (ch) => saveChannels([ch, ...rememberedChannels().filter((c) => c.id !== ch.id)]);
  const forgetChannel = (id) => saveChannels(rememberedChannels().filter((c) => c.id !== id));

  // The channel's SSE path, on this origin (channel_url is built on --public-url, maybe another host).
  function streamPath(ch) {
    if (ch.channel_url) {
      try { return new URL(ch.channel_url, location.href).pathname; } catch (_) { /* fall back */ }
    }
    return `/channel/v1/${ch.visibility === 'private' ? 'private' : 'public'}/${enc(ch.id)}`;
  }

  async function viewChannels(ctx) {
    const cname = input('channel-name', { required: true, placeholder: 'orders' });
    const visibility = h('select', { testid: 'channel-visibility' }, opt('public'), opt('private'));
    const cdesc = input('channel-description', { class: 'wide' });
    const ctenant = input('channel-tenant', { placeholder: 'none' });
    const created = h('div');
    const createForm = h('form', { class: 'filters', testid: 'channel-create-form' }, field('Name', cname), field('Visibility', visibility),
      field('Description', cdesc), field('Tenant (X-Tenant-ID)', ctenant),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'channel-create' }, 'Create channel')));
    const listBody = h('tbody');
    const openId = input('channel-open-id', { placeholder: 'channel id', class: 'wide' });
    const openToken = input('channel-open-token', { placeholder: 'pub_… or rdg_… (optional for a public channel)', class: 'wide' });
    const openForm = h('form', { class: 'inline' }, field('Channel id', openId), field('Token', openToken),
      h('button', { type: 'submit', testid: 'channel-open' }, 'Open'));
    const panel = h('div', { testid: 'channel-panel' });
    ctx.el.append(h('h1', null, 'Channels'),
      card('Create a channel', createForm, created),
      card('Your channels (this tab)', muted('There is no list route: the channels created here are remembered with their publish tokens in sessionStorage.'),
        h('table', { testid: 'channel-list' }, h('thead', null, h('tr', null, ['Name', 'Id', 'Visibility', 'Created', ''].map((t) => h('th', null, t)))), listBody)),
      card('Open a channel', openForm), panel);
    let follower = null;
    ctx.signal.addEventListener('abort', () => follower && follower.stop());

    function renderList() {
      const list = rememberedChannels();
      listBody.replaceChildren(...(list.length ? list.map((c) => h('tr', { testid: 'channel-row', data: { channelId: c.id } },
        h('td', null, c.name || ''), h('td', null, h('code', null, c.id)), h('td', null, fmtVal(c.visibility)), h('td', null, fmtTime(c.created_at)),
        h('td', null,
          h('button', { type: 'button', testid: 'channel-row-open', onclick: task(ctx, () => open(c.id, c.publish_token)) }, 'Open'), ' ',
          h('button', { type: 'button', class: 'link', onclick: () => { forgetChannel(c.id); renderList(); } }, 'Forget'))))
        : [emptyRow(5, 'None yet.')]));
    }

    async function create() {
      clearError();
      const body = { name: cname.value.trim(), visibility: visibility.value };
      if (cdesc.value.trim()) body.description = cdesc.value.trim();
      const headers = ctenant.value.trim() ? { 'X-Tenant-ID': ctenant.value.trim() } : {};
      const ch = await api('/v1/channels', { method: 'POST', body, headers, signal: ctx.signal });
      rememberChannel(ch);
      renderList();
      created.replaceChildren(h('div', { class: 'warning', testid: 'channel-created' },
        h('strong', null, 'The publish token is shown once by the gateway; this tab remembers it until it closes.'),
        jsonPre(ch)));
      createForm.reset();
      await open(ch.id, ch.publish_token);
    }

    async function open(id, token) {
      clearError();
      id = id.trim();
      token = (token || '').trim();
      if (!id) throw new Error('Enter a channel id.');
      if (follower) follower.stop();
      openId.value = id;
      openToken.value = token;
      const known = rememberedChannels().find((c) => c.id === id);
      if (!token && known) token = known.publish_token || '';
      const kind = !token ? 'none' : token.startsWith('rdg_') ? 'read' : 'publish';
      let ch;
      if (kind === 'publish') ch = await api(`/v1/channels/${enc(id)}`, { headers: { 'X-Publish-Token': token }, signal: ctx.signal });
      else ch = known ? { ...known } : { id, visibility: kind === 'read' ? 'private' : 'public' };
      delete ch.publish_token;
      renderChannel(ch, token, kind);
    }

    function renderChannel(ch, token, kind) {
      const status = statusBadge('channel-status');
      status.set('stopped');
      const tbody = h('tbody');
      const fromOldest = h('input', { type: 'checkbox', testid: 'channel-from-oldest', checked: true });
      const followBtn = h('button', { type: 'button', testid: 'channel-follow' }, 'Follow');
      const ended = muted('', { testid: 'channel-comment' });
      let lastId = null;

      function onEvent(ev) {
        if (ev.type !== 'message') return;
        let m = null;
        try { m = JSON.parse(ev.data); } catch (_) { /* malformed (chaos) */ }
        if (ev.id || (m && m.id)) lastId = ev.id || m.id;
        const row = m && typeof m === 'object'
          ? h('tr', { testid: 'channel-message', data: { messageId: m.id } }, h('td', null, fmtTime(m.published_at)),
            h('td', null, h('code', null, fmtVal(m.id))), h('td', null, jsonPre(m.payload)), h('td', null, m.metadata == null ? '–' : jsonPre(m.metadata)))
          : h('tr', { testid: 'channel-message', class: 'failed' }, h('td', null, fmtTime(new Date().toISOString())), h('td', null, ev.id || '–'),
            h('td', { colspan: 2 }, h('code', null, `invalid JSON: ${ev.data}`)));
        prependCapped(tbody, row);
      }

      function toggleFollow() {
        if (follower && !follower.signal.aborted) {
          follower.stop();
          followBtn.textContent = 'Follow';
          status.set('stopped');
          return;
        }
        clearError();
        followBtn.textContent = 'Stop';
        const path = streamPath(ch);
        follower = followSse(ctx, {
          url: () => (!lastId && fromOldest.checked ? `${path}?from=oldest` : path),
          headers: () => Object.assign(kind !== 'none' && ch.visibility !== 'public' ? { Authorization: `Bearer ${token}` } : {},
            lastId ? { 'Last-Event-ID': lastId } : {}),
          onEvent,
          onComment: (text) => { if (text.startsWith('stream ended') || text.startsWith('Last-Event-ID') || text.startsWith('messages')) ended.textContent = text; },
          onStatus: status.set,
          onGiveUp: () => { followBtn.textContent = 'Follow'; },
        });
      }
      followBtn.addEventListener('click', toggleFollow);

      const publish = kind === 'publish' ? publishForm(ch, token) : muted(kind === 'read'
        ? 'A read token: you can follow this private channel but not publish to it.'
        : 'No token: only a public channel can be followed, and publishing needs the publish token.');
      panel.replaceChildren(card(`Channel ${ch.name || ch.id}`,
        jsonPre(ch, 'channel-info'), publish,
        h('h3', null, 'Messages'),
        h('div', { class: 'inline' }, followBtn, h('label', null, fromOldest, ' from the oldest retained message'), h('span', null, 'Stream: ', status)),
        ended,
        h('table', { testid: 'channel-messages' }, h('thead', null, h('tr', null, ['Published', 'Id', 'Payload', 'Metadata'].map((t) => h('th', null, t)))), tbody)));
      toggleFollow();
    }

    function publishForm(ch, token) {
      const payload = h('textarea', { testid: 'channel-payload', rows: 4, spellcheck: 'false', value: '{"event":"hello"}' });
      const metadata = input('channel-metadata', { placeholder: '{"source":"portal"} (optional)', class: 'wide' });
      const ttl = input('channel-ttl', { placeholder: 'seconds (optional)' });
      const out = h('div');
      const form = h('form', { testid: 'channel-publish-form' },
        field('Payload', payload, 'JSON; text that is not JSON is sent as a string'),
        h('div', { class: 'inline' }, field('Metadata (JSON object)', metadata), field('TTL', ttl),
          h('button', { type: 'submit', class: 'primary', testid: 'channel-publish' }, 'Publish')), out);
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        task(ctx, async () => {
          clearError();
          let value;
          try { value = JSON.parse(payload.value); } catch (_) { value = payload.value; }
          const body = { payload: value };
          if (metadata.value.trim()) {
            try { body.metadata = JSON.parse(metadata.value); } catch (err) { throw new Error(`The metadata is not valid JSON: ${err.message}`); }
          }
          if (ttl.value.trim()) body.ttl_seconds = Number(ttl.value.trim());
          const m = await api(`/v1/channels/${enc(ch.id)}/publish`, { method: 'POST', body, headers: { 'X-Publish-Token': token }, signal: ctx.signal });
          out.replaceChildren(h('p', { class: 'muted' }, 'Published:'), jsonPre(m, 'channel-publish-result'));
        })();
      });
      return form;
    }

    createForm.addEventListener('submit', (ev) => { ev.preventDefault(); task(ctx, create)(); });
    openForm.addEventListener('submit', (ev) => { ev.preventDefault(); task(ctx, () => open(openId.value, openToken.value))(); });
    renderList();
  }

  // ---------------------------------------------------------------- start

  function boot() {
    $('error-close').addEventListener('click', clearError);
    $('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', route);
    loadMe();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
