// Shared helpers: auth/URLs, HTTP API, server clock, formatting, ticker, toasts, DOM.

export const params = new URLSearchParams(location.search);

/** Token from the page's own URL (?token=...). Absent in dev mode. */
export const token = params.get('token') || null;

/** Agent ids the hub accepts (docs/status-model.md). */
export const AGENT_ID_PATTERN = '[A-Za-z0-9._@\\-]{1,128}';
export const AGENT_ID_RE = /^[A-Za-z0-9._@-]{1,128}$/;

/**
 * WebSocket URL for a hub path ('ws/agent', 'ws/admin', 'ws/telephony'), resolved against the
 * page (so the demo also works behind a path prefix), ws: or wss: matching http: or https:.
 * With a token in the page URL it is passed on as ?token=; otherwise the dev-mode identity
 * parameters are used (agent_id / admin_id / adapter).
 */
export function wsUrl(path, devIdentity = {}) {
  const u = new URL(path, document.baseURI);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  if (token) {
    u.searchParams.set('token', token);
  } else {
    for (const [k, v] of Object.entries(devIdentity)) {
      if (v != null && v !== '') u.searchParams.set(k, String(v));
    }
  }
  return u.toString();
}

/** Link to another demo page that keeps the token (if any). */
export function pageUrl(path, extra = {}) {
  const u = new URL(path, document.baseURI);
  if (token) u.searchParams.set('token', token);
  for (const [k, v] of Object.entries(extra)) if (v != null && v !== '') u.searchParams.set(k, v);
  return u.pathname + u.search;
}

/**
 * Calls the hub's HTTP API. Returns {ok, status, data} and never throws for HTTP errors
 * (network failures give status 0 and data {error}).
 */
export async function api(path, { method = 'GET', body, query, signal } = {}) {
  const u = new URL(path, document.baseURI);
  if (query) {
    for (const [k, v] of Object.entries(query)) if (v != null && v !== '') u.searchParams.set(k, v);
  }
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(u, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal,
    });
  } catch (e) {
    return { ok: false, status: 0, data: { error: String(e?.message || e) } };
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  return { ok: res.ok, status: res.status, data };
}

// ---------------------------------------------------------------------------------------------
// Server clock. Every timestamp on the wire is the hub's clock (ms since the Unix epoch); the
// browser's clock may be off, so tickers use serverNow() = Date.now() + offset.

let clockOffset = 0;
let clockRtt = Infinity;
let clockSampledAt = 0;
const clockListeners = new Set();

/**
 * Records a server_time sample. `sentAt` is the local time the request went out (for pong
 * replies); without it (hello) the one-way delay is ignored.
 */
export function noteServerTime(serverTime, sentAt = null) {
  if (typeof serverTime !== 'number' || !Number.isFinite(serverTime)) return;
  const now = Date.now();
  const rtt = sentAt == null ? 1000 : Math.max(0, now - sentAt);
  const offset = sentAt == null ? serverTime - now : serverTime + rtt / 2 - now;
  // Prefer precise samples, but never keep a stale one for more than a minute.
  if (rtt <= clockRtt * 1.5 || now - clockSampledAt > 60_000) {
    clockOffset = offset;
    clockRtt = rtt;
    clockSampledAt = now;
    for (const fn of clockListeners) fn(clockOffset);
  }
}

export function resetServerClock() {
  clockRtt = Infinity;
  clockSampledAt = 0;
}

export const serverNow = () => Date.now() + clockOffset;
export const clockOffsetMs = () => clockOffset;
export function onClockChange(fn) {
  clockListeners.add(fn);
  return () => clockListeners.delete(fn);
}

// ---------------------------------------------------------------------------------------------
// Formatting

const pad2 = (n) => String(n).padStart(2, '0');

/** Elapsed time: "0:07", "12:34", "1:02:03", "3d 4h". Negative counts as 0. */
export function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  const total = Math.floor(ms / 1000);
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}:${pad2(m)}:${pad2(s)}`;
  return `${m}:${pad2(s)}`;
}

/** Time left, rounded up so a countdown reaches 0:00 exactly when it expires. */
export function fmtCountdown(ms) {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  return fmtDuration(Math.ceil(ms / 1000) * 1000);
}

/** A spoken form for screen readers: "2 minutes 5 seconds". */
export function fmtDurationLong(ms) {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  const total = Math.floor(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const parts = [];
  if (h) parts.push(`${h} hour${h === 1 ? '' : 's'}`);
  if (m) parts.push(`${m} minute${m === 1 ? '' : 's'}`);
  if (s || parts.length === 0) parts.push(`${s} second${s === 1 ? '' : 's'}`);
  return parts.join(' ');
}

/** Local wall-clock time of a hub timestamp. */
export function fmtClock(serverMs) {
  if (!serverMs) return '';
  const local = new Date(serverMs - clockOffset);
  return local.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function fmtOffset(ms) {
  const tenths = Math.round(ms / 100);
  if (tenths === 0) return '0.0 s';
  return `${tenths > 0 ? '+' : '−'}${(Math.abs(tenths) / 10).toFixed(1)} s`;
}

// ---------------------------------------------------------------------------------------------
// One shared ticker, aligned to whole seconds of the server clock so every countdown and
// "time in status" changes together and nothing drifts.

const tickFns = new Set();
let tickTimer = null;

function scheduleTick() {
  const delay = 1000 - (((serverNow() % 1000) + 1000) % 1000) + 5;
  tickTimer = setTimeout(runTick, delay);
}

function runTick() {
  const now = serverNow();
  for (const fn of tickFns) {
    try {
      fn(now);
    } catch (e) {
      console.error('tick handler failed', e);
    }
  }
  scheduleTick();
}

export function onTick(fn) {
  tickFns.add(fn);
  if (!tickTimer) scheduleTick();
  return () => tickFns.delete(fn);
}

/** Runs every tick handler now (e.g. after a state change or when the tab becomes visible). */
export function tickNow() {
  const now = serverNow();
  for (const fn of tickFns) fn(now);
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && tickFns.size) tickNow();
});

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** el('button', {class: 'x', type: 'button', onclick: fn, dataset: {testid: 'y'}}, 'text') */
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Sets textContent only when it changes (avoids needless layout work). */
export function setText(node, text) {
  const t = text == null ? '' : String(text);
  if (node.textContent !== t) node.textContent = t;
}

export function setHidden(node, hidden) {
  if (node.hidden !== !!hidden) node.hidden = !!hidden;
}

// ---------------------------------------------------------------------------------------------
// Toasts: short messages at the bottom right; errors are announced assertively.

let toastHost = null;

function ensureToastHost() {
  if (toastHost) return toastHost;
  toastHost = el('div', { class: 'toasts', dataset: { testid: 'toasts' } });
  // Two live regions so errors interrupt and info does not.
  toastHost.politeRegion = el('div', { class: 'toast-stack', 'aria-live': 'polite' });
  toastHost.alertRegion = el('div', { class: 'toast-stack', 'aria-live': 'assertive' });
  toastHost.append(toastHost.alertRegion, toastHost.politeRegion);
  document.body.append(toastHost);
  return toastHost;
}

/** Shows a toast. kind: 'info' | 'success' | 'error' | 'warn'. */
export function toast(message, { kind = 'info', code = null, timeout = null } = {}) {
  const host = ensureToastHost();
  const node = el(
    'div',
    {
      class: `toast toast-${kind}`,
      dataset: { testid: 'toast', kind, ...(code ? { code } : {}) },
    },
    el('span', { class: 'toast-text' }, message),
    el('button', {
      type: 'button',
      class: 'toast-close',
      'aria-label': 'Dismiss message',
      text: '×',
      onclick: () => node.remove(),
    }),
  );
  (kind === 'error' ? host.alertRegion : host.politeRegion).append(node);
  const ms = timeout ?? (kind === 'error' ? 10_000 : 5_000);
  if (ms > 0) setTimeout(() => node.remove(), ms);
  // Keep the stack short.
  const all = host.querySelectorAll('.toast');
  if (all.length > 5) all[0].remove();
  return node;
}

const ERROR_HINTS = {
  invalid_state: 'Not possible in the current state (another tab or the phone system may have handled it already).',
  unknown_call: 'That call is no longer current.',
  invalid_status: 'That status cannot be set by hand.',
  unknown_agent: 'No such agent.',
  forbidden: 'Not allowed with these credentials.',
  conflict: 'Someone else changed this agent first; try again.',
  rate_limited: 'Too many requests; slow down.',
  bad_message: 'The hub did not understand the request.',
  disconnected: 'Not connected to the hub; try again when the connection is back.',
  timeout: 'The hub did not answer in time.',
};

/** Toast for an `error` reply (or a local failure with .code). */
export function toastError(what, err) {
  const code = err?.code || 'error';
  const hint = ERROR_HINTS[code] || '';
  const msg = err?.message && err.message !== hint ? ` ${err.message}` : '';
  return toast(`${what}: ${code}.${msg}${hint ? ` ${hint}` : ''}`, { kind: 'error', code });
}

/** Short random id for calls and events. */
export function randomId(prefix = '') {
  let id;
  if (crypto.randomUUID) id = crypto.randomUUID();
  else id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
  return prefix + id;
}

export function shortId(prefix = '') {
  return prefix + randomId().replace(/-/g, '').slice(0, 10);
}
