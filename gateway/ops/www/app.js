// mcgw live status page: polls /status and /tunnels every 2 s and renders
// them. Everything from the server is inserted as text (textContent), never
// as HTML. No external assets: the vehicle has no internet.
'use strict';

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const TUNNELS_SHOWN = 100;

const $ = (id) => document.getElementById(id);
const samples = [];   // {t, active}: the history graph
const snapshots = []; // {t, by_result}: refusal counts over the last minutes
let token = null;
let lastStatus = null;
let statusAt = 0;     // Date.now() when lastStatus arrived

// The admin token, when the API needs one: from the URL fragment (never sent
// to the server, removed from the address bar) or this tab's session storage.
function loadToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem('mcgw-token', token);
    window.history.replaceState(null, '', location.pathname);
  } else {
    token = sessionStorage.getItem('mcgw-token');
  }
}

async function get(path) {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const r = await fetch(path, { headers, cache: 'no-store' });
  if (r.status === 401) throw Object.assign(new Error('admin token required'), { auth: true });
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60), sec = s % 60;
  if (d) return d + 'd ' + h + 'h';
  if (h) return h + 'h ' + m + 'm';
  if (m) return m + 'm ' + sec + 's';
  return sec + 's';
}

function setText(id, text) { $(id).textContent = text; }

// Replaces a tbody's rows; cells are [text, className] or text.
function fillRows(id, rows, empty, cols) {
  const body = $(id);
  body.replaceChildren();
  if (!rows.length) {
    const tr = body.insertRow(), td = tr.insertCell();
    td.colSpan = cols;
    td.className = 'empty';
    td.textContent = empty;
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (Array.isArray(cell)) { td.textContent = cell[0]; td.className = cell[1]; }
      else td.textContent = cell;
    }
  }
}

function setBadge(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.className = 'badge' + (kind ? ' ' + kind : '');
}

function renderHistory() {
  const now = Date.now();
  while (samples.length && now - samples[0].t > HISTORY_MS) samples.shift();
  if (!samples.length) return;
  const max = Math.max(1, ...samples.map((h) => h.active));
  const t0 = samples[0].t, span = Math.max(1, now - t0);
  const y = (h) => (58 - (h.active / max) * 54).toFixed(1);
  const pts = samples.length === 1 ? ['0,' + y(samples[0]), '300,' + y(samples[0])]
    : samples.map((h) => (((h.t - t0) / span) * 300).toFixed(1) + ',' + y(h));
  $('history-line').setAttribute('points', pts.join(' '));
  $('history-area').setAttribute('points', '0,60 ' + pts.join(' ') + ' 300,60');
  setText('history-span', fmtDuration(span / 1000));
  setText('history-max', String(Math.max(...samples.map((h) => h.active))));
}

function renderIdm(idm) {
  const kinds = { authorized: 'ok', refreshing: 'ok', authorizing: 'warn', unauthorized: 'bad',
                  error: 'bad', unconfigured: '' };
  setBadge('idm-state', idm.state === 'unconfigured' ? 'not configured' : idm.state, kinds[idm.state]);
  setText('idm-subject', idm.subject || '–');
  setText('idm-mcptt', (idm.mc_service_ids && idm.mc_service_ids.mcptt_id) || '–');
  const r = idm.refreshes;
  setText('idm-refresh', r.ok + ' ok, ' + r.failed + ' failed, ' + r.invalid_grant + ' invalid_grant, ' +
          r.id_token_invalid + ' id_token_invalid, ' + r.not_for_mc_service + ' not_for_mc_service');
  setText('idm-error', idm.last_error || '–');
  renderClock(idm.state === 'unconfigured' ? undefined : idm.clock_skew);
  renderExpiry();
  $('logout-box').hidden = idm.state === 'unconfigured';
}

// The "Log out" button: a JSON POST (the admin listener refuses any other
// content type, which is what keeps cross-site forms and images out). The
// IdMS's end_session_endpoint is offered as a link, never followed.
async function logout() {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  $('logout').disabled = true;
  let text, doc = null;
  try {
    const r = await fetch('logout', { method: 'POST', headers, body: '{}', cache: 'no-store' });
    if (r.status === 200 || r.status === 502) doc = await r.json();
    if (!doc) text = 'Log out failed: HTTP ' + r.status;
    else if (doc.error) text = 'Logged out here, but the refresh token was NOT revoked at the IdMS: ' + doc.error;
    else text = doc.revoked ? 'Logged out; the refresh token was revoked at the IdMS.' : 'Logged out (no login was held).';
  } catch (e) {
    text = 'Log out failed: no answer from the gateway';
  }
  setText('logout-text', text);
  $('logout-result').className = 'alert ' + (doc && !doc.error ? 'ok' : 'warn');
  $('logout-result').hidden = false;
  const end = doc && doc.end_session_endpoint;
  const link = $('end-session');
  link.hidden = !(end && /^https:\/\//.test(end));
  if (!link.hidden) link.href = end;
  $('logout').disabled = false;
}

// One decimal with a sign; 0.0 has none.
function fmtSigned(x) {
  const s = x.toFixed(1);
  return /^-?0\.0$/.test(s) ? '0.0' : (x > 0 ? '+' : '') + s;
}

// The gateway's clock against the IdMS's (from its Date header): skew_s > 0
// means the gateway is ahead. null: no IdMS answer yet; undefined: no [idm].
// Past threshold_s (the ID token leeway) logins and refreshes may fail, so
// the value turns to the warning colour and the fix is spelled out.
function renderClock(c) {
  const el = $('idm-clock'), hint = $('idm-clock-hint');
  el.className = '';
  el.title = '';
  hint.hidden = true;
  if (c === undefined) { el.textContent = '–'; return; }
  if (c === null) { el.textContent = 'not measured yet'; return; }
  el.textContent = fmtSigned(c.skew_s) + ' s (±' + c.uncertainty_s.toFixed(1) + ' s)';
  el.title = "the gateway's clock minus the IdMS's, measured " +
             new Date(c.measured_at * 1000).toLocaleTimeString();
  if (!c.large) return;
  el.className = 'warn';
  hint.textContent = 'The gateway\'s clock is ' + Math.abs(c.skew_s).toFixed(0) + ' s ' +
    (c.skew_s > 0 ? 'ahead of' : 'behind') + ' the IdMS\'s (more than ' + c.threshold_s +
    ' s): check NTP/GNSS time on the gateway';
  hint.hidden = false;
}

// Counts down between polls.
function renderExpiry() {
  if (!lastStatus) return;
  const idm = lastStatus.idm;
  if (!idm.access_token_expires_at) { setText('idm-expiry', '–'); return; }
  const left = idm.access_token_expires_at - lastStatus.time - (Date.now() - statusAt) / 1000;
  const at = new Date(idm.access_token_expires_at * 1000).toLocaleTimeString();
  setText('idm-expiry', left > 0 ? 'in ' + fmtDuration(left) + ' (' + at + ')' : 'expired at ' + at);
}

// "last 5 min" is the difference to the oldest snapshot at most 5 min old; a
// gateway up for less than that counts everything since its start.
function renderRefusals(byResult, uptimeS) {
  const now = Date.now();
  snapshots.push({ t: now, by_result: byResult });
  while (snapshots.length > 1 && now - snapshots[1].t >= HISTORY_MS) snapshots.shift();
  const old = uptimeS * 1000 <= HISTORY_MS ? {} : snapshots[0].by_result;
  const rows = Object.keys(byResult).filter((k) => k !== 'ok' && k !== 'cancelled')
    .map((k) => [k, byResult[k] - (old[k] || 0), byResult[k]])
    .sort((a, b) => b[2] - a[2]);
  fillRows('refusals', rows.filter((r) => r[2] > 0).map((r) => [r[0], [String(r[1]), 'n'], [String(r[2]), 'n']]),
           'none', 3);
}

function renderStatus(s) {
  const t = s.tunnels;
  setText('version', s.version + (s.state === 'draining' ? ' · draining' : ''));
  setText('tunnels-active', String(t.active));
  const udp = t.by_type && t.by_type.udp ? t.by_type.udp.active : 0;
  setText('tunnels-by-proto', Object.entries(t.by_proto)
    .map(([p, v]) => p + ': ' + v.active).join(' · ') + (udp ? ' · udp: ' + udp : '') +
    ' · ' + t.connections_active + ' connections');
  samples.push({ t: Date.now(), active: t.active });
  renderHistory();
  renderIdm(s.idm);
  setText('clients-active', String(s.clients.active));
  setText('bytes-up', fmtBytes(s.bytes.upstream));
  setText('bytes-down', fmtBytes(s.bytes.downstream));
  setText('limit', t.limit ? t.active + ' / ' + t.limit + ', ' + t.limit_per_client + ' per device' : 'none');
  setText('uptime', fmtDuration(s.uptime_s));
  setText('reloads', s.reloads.ok + ' ok, ' + s.reloads.failed + ' failed' +
          (s.reloads.last_ok ? '' : ' (last one rejected)'));
  renderRefusals(t.by_result, s.uptime_s);
  fillRows('rate-limited', (s.clients.rate_limited || []).map((c) => [
    [c.client, 'wrap'], [String(c.refused), 'n'], [fmtDuration(c.since_s), 'n']]),
           'none', 3);
  fillRows('destinations', s.destinations.map((d) => [[d.target, 'wrap'], [String(d.tunnels), 'n']]),
           'no open tunnels', 2);
  fillRows('listeners', s.listeners.map((l) => [l.addr, [String(l.connections_active), 'n']]),
           'none', 2);
}

function renderTunnels(list, total) {
  setText('tunnels-shown', list.length < total ? '(first ' + list.length + ' of ' + total + ')' : '');
  fillRows('tunnels', list.map((x) => [
    String(x.id), x.type === 'udp' ? x.proto + ' udp' : x.proto, x.subject ? x.client + ' ' + x.subject : x.client, [x.target ? x.target + (x.local ? ' from ' + x.local : '') + (x.egress ? ' via ' + x.egress : '') : '–', 'wrap'],
    x.state, [fmtDuration(x.age_ms / 1000), 'n'], [fmtBytes(x.bytes_up), 'n'], [fmtBytes(x.bytes_down), 'n'],
  ]), 'no open tunnels', 8);
}

async function poll() {
  try {
    const status = await get('status');
    const tunnels = await get('tunnels?limit=' + TUNNELS_SHOWN);
    lastStatus = status;
    statusAt = Date.now();
    renderStatus(status);
    renderTunnels(tunnels, status.tunnels.active);
    $('token-box').hidden = true;
    setBadge('conn', 'live', 'ok');
    setText('updated', new Date().toLocaleTimeString());
  } catch (e) {
    if (e.auth) $('token-box').hidden = false;
    setBadge('conn', e.auth ? 'token required' : 'no answer', 'bad');
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  loadToken();
  $('token-box').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('token-input').value.trim();
    sessionStorage.setItem('mcgw-token', token);
    $('token-input').value = '';
  });
  $('logout').addEventListener('click', logout);
  setInterval(renderExpiry, 1000);
  poll();
});
