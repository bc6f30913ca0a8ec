// Supervisor wallboard: live row per agent, counts, longest available, filters, sorting,
// admin actions; subscribe / resume with epoch+seq.
//
// Built for thousands of agents: a Map agent_id -> record with its DOM row; an event only
// marks its record dirty; one requestAnimationFrame pass updates the dirty rows (only the
// text that changed) and moves a row only when its sort key changed; rows are created in
// batches per frame; one shared 1 s ticker rewrites "time in status" of the rows on screen
// only (found by binary search), and rows off screen are not rendered (content-visibility).
import {
  $,
  fmtDuration,
  noteServerTime,
  onTick,
  params,
  serverNow,
  setHidden,
  setText,
  toast,
  toastError,
  wsUrl,
} from './common.js';
import { ReconnectingSocket, bindConnectionBanner } from './socket.js';
import {
  ALL_STATUSES,
  MANUAL_STATUSES,
  STATUS_META,
  STATUS_ORDER,
  ensureSprite,
  iconSvg,
  setStatusChip,
  statusChip,
  statusLabel,
} from './status.js';

ensureSprite();

const CREATE_BATCH = 250; // rows created per animation frame
const FULL_REORDER_THRESHOLD = 400; // above this many moved rows in a frame, re-sort everything

const adminId = params.get('admin_id') || 'wallboard';
const serverTeams = splitList(params.get('teams'));
const serverAgents = splitList(params.get('agents'));
const demoCount = Number(params.get('demo') || 0);

function splitList(v) {
  if (!v) return null;
  const list = v.split(',').map((s) => s.trim()).filter(Boolean);
  return list.length ? list : null;
}

// ------------------------------------------------------------------------------- state

/** agent_id -> {a, row, cells, k (sort key), shown (passes the filters), prev (what the row shows)} */
const records = new Map();
/** Records with a row in the DOM, in display order. */
let order = [];
const createQueue = [];
let bulk = false; // a snapshot is being rendered in batches
const dirty = new Set();
let rafPending = false;
let needFullOrder = false;
let summaryDirty = true;

let epoch = null;
let lastSeq = 0;
let syncing = false; // subscribe/resume in flight: events are buffered
let buffered = [];
let resyncs = 0;
let recoveries = 0;
let resyncTimer = null;
let demoApply = () => {}; // set by demo mode

const filters = {
  team: '',
  statuses: new Set(ALL_STATUSES),
  search: '',
};
let sortMode = 'status';
const knownTeams = new Set();

// ------------------------------------------------------------------------------- elements

const body = $('#rows');
const table = $('#wb-table');
const emptyMsg = $('#wb-empty');
const shownEl = $('#wb-shown');
const seqEl = $('#wb-seq');
const metaEl = $('#wb-meta');
const resyncedEl = $('#resynced');
const teamSelect = $('#filter-team');
const dialog = $('#admin-dialog');

// Counts per status, each with icon + label + number.
const countEls = {};
for (const s of ALL_STATUSES) {
  const li = document.createElement('li');
  li.className = `st-${s}`;
  li.dataset.testid = `count-${s}`;
  li.dataset.status = s;
  li.append(iconSvg(s));
  const n = document.createElement('span');
  n.className = 'count-n';
  n.textContent = '0';
  const label = document.createElement('span');
  label.className = 'count-label';
  label.textContent = statusLabel(s);
  li.append(n, label);
  $('#counts').append(li);
  countEls[s] = n;
}

// Status filter checkboxes.
for (const s of ALL_STATUSES) {
  const label = document.createElement('label');
  label.className = 'check';
  const cb = document.createElement('input');
  cb.type = 'checkbox';
  cb.checked = true;
  cb.value = s;
  cb.dataset.testid = `filter-status-${s}`;
  cb.addEventListener('change', () => {
    if (cb.checked) filters.statuses.add(s);
    else filters.statuses.delete(s);
    refilterAll();
  });
  const ic = iconSvg(s);
  ic.style.color = `var(--st-${s})`;
  label.append(cb, ic, document.createTextNode(statusLabel(s)));
  $('#filter-status').append(label);
}

teamSelect.addEventListener('change', () => {
  filters.team = teamSelect.value;
  refilterAll();
});
let searchTimer = null;
$('#filter-search').addEventListener('input', (ev) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    filters.search = ev.target.value.trim().toLowerCase();
    refilterAll();
  }, 150);
});
$('#sort-select').addEventListener('change', (ev) => {
  sortMode = ev.target.value;
  for (const rec of records.values()) rec.k = sortKey(rec.a);
  needFullOrder = true;
  schedule();
});
$('#view-select').addEventListener('change', (ev) => {
  table.classList.toggle('view-tiles', ev.target.value === 'tiles');
});
$('#theme-toggle').addEventListener('change', (ev) => {
  document.body.classList.toggle('theme-dark', ev.target.checked);
});
if (params.get('view') === 'tiles') {
  $('#view-select').value = 'tiles';
  table.classList.add('view-tiles');
}
if (params.get('theme') === 'light') {
  $('#theme-toggle').checked = false;
  document.body.classList.remove('theme-dark');
}

// Row template (cloned: much cheaper than building each row by hand).
const rowTemplate = document.createElement('div');
rowTemplate.className = 'wb-row';
rowTemplate.setAttribute('role', 'row');
rowTemplate.dataset.testid = 'wb-row';
rowTemplate.innerHTML =
  '<div role="cell" class="c-name"><span class="wb-name"></span><span class="wb-sub"></span></div>' +
  '<div role="cell" class="c-status" data-testid="wb-status"><span class="status-chip"><svg class="icon status-icon" aria-hidden="true" focusable="false"><use href="#ico-unknown"></use></svg><span class="status-label"></span></span></div>' +
  '<div role="cell" class="c-time wb-time" data-testid="wb-time"></div>' +
  '<div role="cell" class="c-note" data-testid="wb-note"></div>' +
  '<div role="cell" class="c-call wb-call" data-testid="wb-call"></div>' +
  '<div role="cell" class="c-conn wb-conn" data-testid="wb-conn"></div>' +
  '<div role="cell" class="c-actions"><button type="button" class="small" data-testid="wb-manage">Manage</button></div>';

// Only rows on screen get their "time in status" rewritten every second. They are found by a
// binary search over the shown rows in display order (no per-row observers: with thousands of
// rows those cost more than everything else together).
let shownList = null; // order filtered by `shown`; null when it must be recomputed

function visibleRecords(margin = 200) {
  if (!shownList) shownList = order.filter((r) => r.shown);
  const list = shownList;
  if (!list.length) return [];
  const top = -margin;
  const bottom = window.innerHeight + margin;
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid].row.getBoundingClientRect().bottom < top) lo = mid + 1;
    else hi = mid;
  }
  const out = [];
  for (let i = lo; i < list.length; i++) {
    if (list[i].row.getBoundingClientRect().top > bottom) break;
    out.push(list[i]);
  }
  return out;
}

function tickVisible(now) {
  for (const rec of visibleRecords()) setText(rec.cells.time, fmtDuration(now - rec.a.since));
}

let scrollPending = false;
window.addEventListener(
  'scroll',
  () => {
    if (scrollPending) return;
    scrollPending = true;
    requestAnimationFrame(() => {
      scrollPending = false;
      tickVisible(serverNow());
    });
  },
  { passive: true },
);

// ------------------------------------------------------------------------------- rows

function displayName(a) {
  return a.name || a.agent_id;
}

function sortKey(a) {
  switch (sortMode) {
    case 'time':
      return [0, a.since, displayName(a).toLowerCase(), a.agent_id];
    case 'name':
      return [0, 0, displayName(a).toLowerCase(), a.agent_id];
    default:
      return [STATUS_ORDER[a.status] ?? 99, a.since, displayName(a).toLowerCase(), a.agent_id];
  }
}

function cmpKey(x, y) {
  for (let i = 0; i < 4; i++) {
    if (x[i] < y[i]) return -1;
    if (x[i] > y[i]) return 1;
  }
  return 0;
}

function sameKey(x, y) {
  return x && y && x[0] === y[0] && x[1] === y[1] && x[2] === y[2] && x[3] === y[3];
}

function matches(a) {
  if (filters.team && !(a.teams || []).includes(filters.team)) return false;
  if (!filters.statuses.has(a.status)) return false;
  if (filters.search) {
    const hay = `${a.name || ''} ${a.agent_id}`.toLowerCase();
    if (!hay.includes(filters.search)) return false;
  }
  return true;
}

function createRow(rec) {
  const row = rowTemplate.cloneNode(true);
  const c = row.children;
  rec.row = row;
  rec.cells = {
    name: c[0].firstChild,
    sub: c[0].lastChild,
    statusCell: c[1],
    chip: c[1].firstChild,
    time: c[2],
    note: c[3],
    call: c[4],
    conn: c[5],
    manage: c[6].firstChild,
  };
  rec.prev = {};
  row._rec = rec;
  row.dataset.agentId = rec.a.agent_id;
  fillRow(rec);
  return row;
}

function callText(call) {
  if (!call) return '';
  const dir = call.direction === 'outbound' ? '↗ Out' : '↙ In';
  const parties = call.direction === 'outbound' ? call.to || '?' : call.from || '?';
  return `${dir} ${parties}${call.ring_group ? ` · ${call.ring_group}` : ''}`;
}

/** Writes the record's state into its row, touching only what changed. */
function fillRow(rec) {
  const a = rec.a;
  const p = rec.prev;
  const { row, cells } = rec;
  if (p.status !== a.status) {
    if (p.status) row.classList.remove(`st-${p.status}`);
    row.classList.add(`st-${a.status}`);
    row.dataset.status = a.status;
    cells.statusCell.dataset.status = a.status;
    setStatusChip(cells.chip, a.status);
    p.status = a.status;
  }
  const name = displayName(a);
  if (p.name !== name) {
    cells.name.textContent = name;
    cells.manage.setAttribute('aria-label', `Manage ${name}`);
    p.name = name;
  }
  const sub = `${a.name ? a.agent_id : ''}${a.name && a.teams?.length ? ' · ' : ''}${(a.teams || []).join(', ')}`;
  if (p.sub !== sub) {
    cells.sub.textContent = sub;
    p.sub = sub;
  }
  const queued = a.manual_status !== a.status ? `next: ${statusLabel(a.manual_status)}` : '';
  const note = [a.note, queued].filter(Boolean).join(' · ');
  if (p.note !== note) {
    cells.note.textContent = note;
    p.note = note;
  }
  const call = callText(a.call);
  if (p.call !== call) {
    cells.call.textContent = call;
    cells.call.title = a.call ? `${a.call.call_id}: ${a.call.from || '?'} → ${a.call.to || '?'}` : '';
    p.call = call;
  }
  const n = a.connections ?? 0;
  const conn = n > 0 ? `${n} tab${n === 1 ? '' : 's'}` : a.status === 'offline' ? '—' : 'not connected';
  if (p.conn !== conn) {
    cells.conn.textContent = conn;
    cells.conn.dataset.connected = String(n > 0 || a.status === 'offline');
    p.conn = conn;
  }
  row.dataset.version = a.version;
  setText(cells.time, fmtDuration(serverNow() - a.since));
  const shown = matches(a);
  if (rec.shown !== shown) {
    row.hidden = !shown;
    rec.shown = shown;
    summaryDirty = true;
  }
}

function indexToInsert(rec) {
  let lo = 0;
  let hi = order.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmpKey(order[mid].k, rec.k) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function placeRow(rec) {
  const i = order.indexOf(rec);
  if (i >= 0) order.splice(i, 1);
  const at = indexToInsert(rec);
  order.splice(at, 0, rec);
  const next = order[at + 1];
  body.insertBefore(rec.row, next ? next.row : null);
}

function reorderAll() {
  shownList = null;
  order.sort((x, y) => cmpKey(x.k, y.k));
  let cur = body.firstElementChild;
  for (const rec of order) {
    if (rec.row === cur) cur = cur.nextElementSibling;
    else body.insertBefore(rec.row, cur);
  }
  needFullOrder = false;
}

function removeRecord(rec) {
  if (rec.row) {
    rec.row.remove();
    const i = order.indexOf(rec);
    if (i >= 0) order.splice(i, 1);
  }
  shownList = null;
  records.delete(rec.a.agent_id);
}

// ------------------------------------------------------------------------------- frame loop

function schedule() {
  if (!rafPending) {
    rafPending = true;
    requestAnimationFrame(flush);
  }
}

function flush() {
  rafPending = false;
  // 1. Rows still to create (snapshot of thousands of agents): a batch per frame.
  if (createQueue.length) {
    const frag = document.createDocumentFragment();
    const batch = createQueue.splice(0, CREATE_BATCH);
    for (const rec of batch) {
      if (records.get(rec.a.agent_id) !== rec || rec.row) continue;
      rec.k = sortKey(rec.a);
      createRow(rec);
      if (bulk) {
        frag.append(rec.row);
        order.push(rec);
      } else {
        placeRow(rec);
      }
      dirty.delete(rec);
    }
    body.append(frag);
    if (bulk) needFullOrder = true;
    summaryDirty = true;
    if (createQueue.length) schedule();
    else bulk = false;
  }
  // 2. Changed rows.
  let moved = 0;
  const toMove = [];
  for (const rec of dirty) {
    if (!rec.row || records.get(rec.a.agent_id) !== rec) continue;
    fillRow(rec);
    const k = sortKey(rec.a);
    if (!sameKey(k, rec.k)) {
      rec.k = k;
      moved++;
      toMove.push(rec);
    }
    if (dialogRec === rec) renderDialog();
  }
  dirty.clear();
  if (!bulk) {
    if (needFullOrder || moved > FULL_REORDER_THRESHOLD) reorderAll();
    else for (const rec of toMove) placeRow(rec);
  }
  if (moved) shownList = null;
  // 3. Counts, longest available, "showing N of M".
  if (summaryDirty) {
    shownList = null;
    renderSummary();
  }
}

function renderSummary() {
  summaryDirty = false;
  const counts = Object.fromEntries(ALL_STATUSES.map((s) => [s, 0]));
  let shown = 0;
  let longest = null;
  for (const rec of records.values()) {
    const a = rec.a;
    if (!filters.team || (a.teams || []).includes(filters.team)) {
      counts[a.status] = (counts[a.status] || 0) + 1;
      if (a.status === 'available' && (!longest || a.since < longest.since)) longest = a;
    }
    if (rec.row && rec.shown) shown++;
  }
  for (const s of ALL_STATUSES) setText(countEls[s], counts[s]);
  const total = records.size;
  setText(shownEl, total ? `Showing ${shown} of ${total} agent${total === 1 ? '' : 's'}` : 'No agents yet');
  shownEl.dataset.shown = shown;
  shownEl.dataset.total = total;
  setHidden(emptyMsg, total > 0);
  longestAgent = longest;
  renderLongest(serverNow());
}

let longestAgent = null;
function renderLongest(now) {
  const box = $('#longest');
  if (longestAgent) {
    setText($('#longest-name'), displayName(longestAgent));
    setText($('#longest-time'), `${fmtDuration(now - longestAgent.since)} available`);
    box.dataset.agentId = longestAgent.agent_id;
  } else {
    setText($('#longest-name'), 'Nobody available');
    setText($('#longest-time'), '');
    box.dataset.agentId = '';
  }
}

function refilterAll() {
  for (const rec of records.values()) {
    if (!rec.row) continue;
    const shown = matches(rec.a);
    if (rec.shown !== shown) {
      rec.row.hidden = !shown;
      rec.shown = shown;
    }
  }
  summaryDirty = true;
  schedule();
}

onTick((now) => {
  tickVisible(now);
  renderLongest(now);
  if (dialogRec) setText($('#admin-current-time'), fmtDuration(now - dialogRec.a.since));
});

// ------------------------------------------------------------------------------- data in

function noteTeams(a) {
  let added = false;
  for (const t of a.teams || []) {
    if (!knownTeams.has(t)) {
      knownTeams.add(t);
      added = true;
    }
  }
  if (added) {
    const current = teamSelect.value;
    const opts = [...knownTeams].sort();
    teamSelect.replaceChildren(new Option('All teams', ''), ...opts.map((t) => new Option(t, t)));
    teamSelect.value = current;
  }
}

/** An agent update (live or replayed). Ignores versions we already show. */
function applyAgent(a) {
  if (!a?.agent_id) return;
  let rec = records.get(a.agent_id);
  if (rec) {
    if (a.version <= rec.a.version) return;
    rec.a = a;
    dirty.add(rec);
  } else {
    rec = { a, row: null, cells: null, k: null, shown: undefined, prev: null };
    records.set(a.agent_id, rec);
    createQueue.push(rec);
  }
  noteTeams(a);
  summaryDirty = true;
  schedule();
}

/** A full snapshot replaces everything we show (versions may restart after a hub restart). */
function applySnapshot(snap) {
  epoch = snap.epoch ?? epoch;
  lastSeq = snap.seq ?? 0;
  const list = snap.agents || [];
  const seen = new Set();
  const fresh = [];
  for (const a of list) {
    seen.add(a.agent_id);
    noteTeams(a);
    const rec = records.get(a.agent_id);
    if (rec) {
      rec.a = a;
      if (rec.row) dirty.add(rec);
      else fresh.push(rec);
    } else {
      const r = { a, row: null, cells: null, k: null, shown: undefined, prev: null };
      records.set(a.agent_id, r);
      fresh.push(r);
    }
  }
  for (const rec of [...records.values()]) if (!seen.has(rec.a.agent_id)) removeRecord(rec);
  // Render new rows in display order, a batch per frame.
  for (const r of fresh) r.k = sortKey(r.a);
  fresh.sort((x, y) => cmpKey(x.k, y.k));
  createQueue.length = 0;
  createQueue.push(...fresh);
  bulk = fresh.length > 0;
  needFullOrder = true;
  summaryDirty = true;
  renderSync();
  schedule();
}

function handleEvent(msg) {
  if (msg.seq != null) {
    if (msg.seq <= lastSeq) return; // replayed twice
    lastSeq = msg.seq;
  }
  applyAgent(msg.agent);
  renderSyncSoon();
}

let syncTimer = null;
function renderSyncSoon() {
  if (!syncTimer) syncTimer = setTimeout(() => ((syncTimer = null), renderSync()), 500);
}

function renderSync() {
  metaEl.dataset.epoch = epoch ?? '';
  metaEl.dataset.seq = lastSeq;
  metaEl.dataset.resyncs = resyncs;
  metaEl.dataset.recoveries = recoveries;
  setText(seqEl, epoch ? `epoch ${String(epoch).slice(0, 12)} · seq ${lastSeq}` : '');
}

function showResynced() {
  resyncs++;
  resyncedEl.dataset.resynced = resyncs;
  document.body.dataset.resynced = resyncs;
  resyncedEl.hidden = false;
  clearTimeout(resyncTimer);
  resyncTimer = setTimeout(() => (resyncedEl.hidden = true), 8000);
  renderSync();
}

function filterArgs() {
  const f = {};
  if (serverTeams) f.teams = serverTeams;
  if (serverAgents) f.agents = serverAgents;
  return f;
}

async function subscribe(isResync) {
  syncing = true;
  buffered = [];
  const reply = await socket.request({ type: 'subscribe', ...filterArgs() });
  syncing = false;
  if (reply.type !== 'ok') {
    if (!reply.local) toastError('Subscribe failed', reply);
    return;
  }
  if (!reply.snapshot) {
    toast('The hub answered subscribe without a snapshot.', { kind: 'error' });
    return;
  }
  applySnapshot(reply.snapshot);
  drainBuffered();
  if (isResync) showResynced();
}

async function resume() {
  syncing = true;
  buffered = [];
  const reply = await socket.request({ type: 'resume', epoch, seq: lastSeq, ...filterArgs() });
  syncing = false;
  if (reply.type !== 'ok') {
    if (reply.local) return; // connection lost again: the next hello retries
    // A hub that cannot resume at all: fall back to a fresh snapshot.
    console.warn('resume rejected, subscribing again', reply);
    buffered = [];
    await subscribe(true);
    return;
  }
  if (reply.recovered) {
    recoveries++;
    drainBuffered(); // the replayed events (they came before this ok)
    renderSync();
    return;
  }
  if (!reply.snapshot) {
    await subscribe(true);
    return;
  }
  buffered = buffered.filter((m) => m.seq == null || m.seq > (reply.snapshot.seq ?? 0));
  applySnapshot(reply.snapshot);
  drainBuffered();
  showResynced();
}

function drainBuffered() {
  const list = buffered;
  buffered = [];
  for (const m of list) handleEvent(m);
}

// ------------------------------------------------------------------------------- admin dialog

let dialogRec = null;
const adminButtons = {};
for (const s of MANUAL_STATUSES) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = `st-${s}`;
  b.dataset.testid = `admin-set-${s}`;
  b.dataset.status = s;
  b.title = STATUS_META[s].hint;
  b.setAttribute('aria-pressed', 'false');
  b.append(iconSvg(s), document.createTextNode(statusLabel(s)));
  b.addEventListener('click', () => adminSetStatus(s));
  $('#admin-picker').append(b);
  adminButtons[s] = b;
}

body.addEventListener('click', (ev) => {
  const btn = ev.target.closest('button[data-testid="wb-manage"]');
  if (!btn) return;
  const rec = btn.closest('.wb-row')?._rec;
  if (rec) openDialog(rec);
});

function openDialog(rec) {
  dialogRec = rec;
  $('#admin-note').value = '';
  renderDialog();
  dialog.dataset.agentId = rec.a.agent_id;
  dialog.showModal();
}

function renderDialog() {
  const a = dialogRec.a;
  setText($('#admin-title'), `Manage ${displayName(a)}`);
  const holder = $('#admin-current');
  holder.replaceChildren(
    document.createTextNode('Now: '),
    statusChip(a.status),
    document.createTextNode(' for '),
    Object.assign(document.createElement('strong'), { id: 'admin-current-time', textContent: fmtDuration(serverNow() - a.since) }),
    document.createTextNode(a.manual_status !== a.status ? `, then ${statusLabel(a.manual_status)}` : ''),
  );
  holder.dataset.status = a.status;
  for (const [s, b] of Object.entries(adminButtons)) b.setAttribute('aria-pressed', String(a.manual_status === s));
}

dialog.addEventListener('close', () => {
  const rec = dialogRec;
  dialogRec = null;
  rec?.cells?.manage.focus();
});

async function adminAct(what, msg) {
  if (demoCount) {
    demoApply(msg);
    dialog.close();
    return;
  }
  const reply = await socket.request(msg);
  if (reply.type === 'error') {
    toastError(what, reply);
    return;
  }
  toast(`${what}: done.`, { kind: 'success' });
  dialog.close();
}

function adminSetStatus(s) {
  if (!dialogRec) return;
  const msg = { type: 'set_agent_status', agent_id: dialogRec.a.agent_id, status: s };
  const note = $('#admin-note').value.trim().slice(0, 64);
  if (note && (s === 'busy' || s === 'on_break')) msg.note = note;
  adminAct(`Set ${displayName(dialogRec.a)} to ${statusLabel(s)}`, msg);
}

$('#admin-logout').addEventListener('click', () => {
  if (!dialogRec) return;
  adminAct(`Log out ${displayName(dialogRec.a)}`, { type: 'logout_agent', agent_id: dialogRec.a.agent_id });
});

// ------------------------------------------------------------------------------- socket

const updateBanner = bindConnectionBanner($('#conn-banner'), {
  pill: $('#conn-pill'),
  label: 'hub',
  onRetry: () => socket.reconnectNow(),
});

let socket = null;
if (demoCount > 0) {
  startDemo(demoCount, Number(params.get('rate') || 50));
} else {
  socket = new ReconnectingSocket({
    url: () => wsUrl('ws/admin', { admin_id: adminId }),
    onHello(msg) {
      noteServerTime(msg.server_time);
      if (epoch == null) subscribe(false);
      else resume();
    },
    onMessage(msg) {
      if (msg.type === 'agent') {
        if (syncing) buffered.push(msg);
        else handleEvent(msg);
      } else if (msg.type === 'error') {
        toastError('The hub reported an error', msg);
      }
    },
    onState(state, info) {
      updateBanner(state, info);
      document.body.dataset.connection = state;
      if (state !== 'open') syncing = false;
    },
  });
  socket.start();
  window.presenceDemo = { socket }; // for the browser test and the console
}

// ------------------------------------------------------------------------------- demo mode
// wallboard.html?demo=2000&rate=200 renders synthetic agents without a hub, to check that
// the board stays smooth with thousands of rows. window.__wallboardPerf has frame stats.

function startDemo(n, rate) {
  setHidden($('#demo-badge'), false);
  updateBanner('open');
  const teams = ['sales', 'support', 'billing', 'vip', 'nightshift'];
  const first = ['Ada', 'Bo', 'Cy', 'Di', 'Eve', 'Finn', 'Gus', 'Hana', 'Ivo', 'Jo', 'Kai', 'Lea', 'Mo', 'Nia', 'Oz', 'Pia'];
  const now = serverNow();
  let seq = 0;
  const agents = [];
  for (let i = 0; i < n; i++) {
    const status = ALL_STATUSES[Math.floor(Math.random() * ALL_STATUSES.length)];
    agents.push({
      agent_id: `demo${i}`,
      name: `${first[i % first.length]} ${String.fromCharCode(65 + (i % 26))}. #${i}`,
      teams: [teams[i % teams.length]],
      status,
      manual_status: MANUAL_STATUSES.includes(status) ? status : 'available',
      since: now - Math.floor(Math.random() * 3_600_000),
      reason: 'manual',
      note: status === 'on_break' ? 'lunch' : null,
      call: null,
      connections: status === 'offline' ? 0 : 1,
      missed_in_row: 0,
      version: 1,
    });
  }
  applySnapshot({ epoch: 'demo', seq: 0, agents: agents.map((a) => ({ ...a })) });
  const next = {
    available: ['ringing', 'busy', 'on_break'],
    ringing: ['on_call', 'available', 'busy'],
    on_call: ['wrap_up', 'available'],
    wrap_up: ['available'],
    busy: ['available'],
    on_break: ['available'],
    offline: ['available'],
  };
  let events = 0;
  setInterval(() => {
    const k = Math.max(1, Math.round(rate / 10));
    for (let i = 0; i < k; i++) {
      const a = agents[Math.floor(Math.random() * agents.length)];
      const choices = next[a.status];
      const s = choices[Math.floor(Math.random() * choices.length)];
      a.status = s;
      if (MANUAL_STATUSES.includes(s)) a.manual_status = s;
      a.connections = 1;
      a.note = s === 'on_break' ? 'lunch' : s === 'busy' ? 'coaching' : ['ringing', 'on_call', 'wrap_up'].includes(s) ? a.note : null;
      a.since = serverNow();
      a.version++;
      a.call = ['ringing', 'on_call'].includes(s) ? { call_id: `c${seq}`, direction: 'inbound', ring_group: 'main', from: `+1555${String(seq).padStart(6, '0')}`, to: '+18005550100' } : s === 'wrap_up' ? a.call : null;
      handleEvent({ type: 'agent', seq: ++seq, agent: { ...a } });
      events++;
    }
  }, 100);
  demoApply = (msg) => {
    const a = agents.find((x) => x.agent_id === msg.agent_id);
    if (!a) return;
    a.status = msg.type === 'logout_agent' ? 'offline' : msg.status;
    a.manual_status = a.status;
    a.note = msg.note || null;
    a.since = serverNow();
    a.version++;
    handleEvent({ type: 'agent', seq: ++seq, agent: { ...a } });
  };
  // Frame statistics.
  const perf = { frames: 0, over50: 0, maxFrame: 0, events: 0, since: performance.now() };
  window.__wallboardPerf = perf;
  let last = performance.now();
  const perfEl = $('#wb-perf');
  perfEl.hidden = false;
  const loop = (t) => {
    const dt = t - last;
    last = t;
    perf.frames++;
    if (perf.frames > 5) {
      if (dt > 50) perf.over50++;
      perf.maxFrame = Math.max(perf.maxFrame, dt);
    }
    requestAnimationFrame(loop);
  };
  if (params.get('perf') !== '0') requestAnimationFrame(loop);
  setInterval(() => {
    perf.events = events;
    const secs = (performance.now() - perf.since) / 1000;
    perfEl.textContent = `demo: ${n} agents, ${Math.round(events / secs)} events/s, ${Math.round(perf.frames / secs)} fps, slowest frame ${Math.round(perf.maxFrame)} ms`;
  }, 1000);
}
