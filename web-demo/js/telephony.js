// Telephony simulator: plays the phone system (an adapter) against the hub.
import { $, api, el, noteServerTime, params, randomId, setHidden, shortId, toast, wsUrl } from './common.js';
import { ReconnectingSocket, bindConnectionBanner } from './socket.js';
import { ensureSprite, statusChip } from './status.js';

ensureSprite();

const adapter = params.get('adapter') || 'sim';
const LOG_MAX = 400;
const CALLS_KEY = 'presence-hub.sim.calls';

const agentInput = $('#sim-agent-id');
const groupInput = $('#sim-ring-group');
const fromInput = $('#sim-from');
const toInput = $('#sim-to');
const timeoutInput = $('#sim-ring-timeout');
const callInput = $('#sim-call-id');
const logEl = $('#sim-log');

fromInput.value = randomCaller();
if (params.get('agent_id')) agentInput.value = params.get('agent_id');
if (params.get('ring_group')) groupInput.value = params.get('ring_group');

function randomCaller() {
  return `+1555${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
}

// --------------------------------------------------------------------------- calls we know

/** call_id -> {call_id, agent_id, direction, ring_group, from, to, state} */
const calls = new Map();
/** agent_id -> last call_id (so the buttons need no typing). */
const lastCall = new Map();

try {
  const saved = JSON.parse(sessionStorage.getItem(CALLS_KEY) || '[]');
  for (const c of saved) {
    calls.set(c.call_id, c);
    lastCall.set(c.agent_id, c.call_id);
  }
} catch {
  /* ignore */
}

function saveCalls() {
  const list = [...calls.values()].slice(-50);
  sessionStorage.setItem(CALLS_KEY, JSON.stringify(list));
}

function noteCall(c) {
  const prev = calls.get(c.call_id) || {};
  const merged = { ...prev, ...c };
  calls.set(c.call_id, merged);
  if (merged.agent_id) lastCall.set(merged.agent_id, merged.call_id);
  saveCalls();
  renderCalls();
  return merged;
}

function setCallState(callId, state) {
  const c = calls.get(callId);
  if (!c) return;
  c.state = state;
  saveCalls();
  renderCalls();
}

agentInput.addEventListener('input', () => {
  const id = lastCall.get(agentInput.value.trim());
  callInput.value = id || '';
});
if (agentInput.value) callInput.value = lastCall.get(agentInput.value) || '';

function renderCalls() {
  const rows = [...calls.values()].reverse().slice(0, 30);
  setHidden($('#calls-empty'), rows.length > 0);
  $('#calls-body').replaceChildren(
    ...rows.map((c) =>
      el(
        'tr',
        { dataset: { callId: c.call_id, agentId: c.agent_id || '', state: c.state || '' }, 'data-testid': 'sim-call-row' },
        el('td', {}, el('code', {}, c.call_id)),
        el('td', {}, c.agent_id || ''),
        el('td', {}, c.direction === 'outbound' ? '↗ outbound' : '↙ inbound'),
        el('td', { 'data-testid': 'sim-call-state' }, c.state || ''),
        el(
          'td',
          {},
          el(
            'div',
            { class: 'actions' },
            el('button', { type: 'button', class: 'small', onclick: () => sendFor(c, 'call_answered'), 'aria-label': `Answered ${c.call_id}` }, 'Answered'),
            el('button', { type: 'button', class: 'small', onclick: () => sendFor(c, 'call_cancelled'), 'aria-label': `Cancel ${c.call_id}` }, 'Cancel'),
            el('button', { type: 'button', class: 'small', onclick: () => sendFor(c, 'call_ended'), 'aria-label': `End ${c.call_id}` }, 'End'),
          ),
        ),
      ),
    ),
  );
}

// --------------------------------------------------------------------------- log

function log(kind, type, payload, extra = {}) {
  const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const li = el(
    'li',
    { dataset: { kind, type: type || '', ...extra } },
    el('span', { class: 'log-time' }, time),
    el('span', { class: 'log-kind' }, `${kind}${type ? ` ${type}` : ''}`),
    el('span', { class: 'log-json' }, typeof payload === 'string' ? payload : JSON.stringify(compact(payload))),
  );
  logEl.prepend(li);
  while (logEl.childElementCount > LOG_MAX) logEl.lastElementChild.remove();
  return li;
}

/** Replies carry the whole AgentState: keep the fields that matter in the log line. */
function compact(msg) {
  if (!msg || typeof msg !== 'object' || !msg.agent || typeof msg.agent !== 'object') return msg;
  const a = msg.agent;
  return {
    ...msg,
    agent: { agent_id: a.agent_id, status: a.status, manual_status: a.manual_status, version: a.version, call_id: a.call?.call_id ?? null },
  };
}

$('#log-clear').addEventListener('click', () => logEl.replaceChildren());

// --------------------------------------------------------------------------- sending events

function transport() {
  return document.querySelector('input[name="transport"]:checked')?.value || 'socket';
}

let lastEvent = null;

/** Sends one telephony event (fresh event_id unless resending) and logs the reply. */
async function sendEvent(evt, { resend = false } = {}) {
  if (!resend) evt = { event_id: randomId(), ...evt };
  lastEvent = evt;
  const via = transport();
  log('sent', evt.type, evt, { callId: evt.call_id || '', via });
  let reply;
  let httpStatus = null;
  if (via === 'http') {
    const res = await api('api/v1/telephony/events', { method: 'POST', body: evt });
    httpStatus = res.status;
    reply = res.data && typeof res.data === 'object' ? res.data : { type: 'error', code: `http_${res.status}`, message: String(res.data ?? '') };
  } else {
    if (!socket.isOpen) {
      toast('Not connected to the hub: switch to HTTP or wait for the reconnect.', { kind: 'error', code: 'disconnected' });
    }
    reply = await socket.request(evt);
  }
  const outcome = reply.type === 'error' ? 'error' : reply.accepted === false ? 'rejected' : reply.stale ? 'stale' : 'ok';
  log('reply', reply.type, httpStatus ? { http: httpStatus, ...reply } : reply, {
    callId: evt.call_id || '',
    replyTo: evt.type,
    outcome,
    duplicate: String(!!reply.duplicate),
  });
  return reply;
}

function field(input) {
  return input.value.trim();
}

function requireAgent() {
  const id = field(agentInput);
  if (!id) {
    toast('Enter an agent id first (or pick the longest available one of a ring group).', { kind: 'warn' });
    agentInput.focus();
  }
  return id;
}

function requireCall() {
  const id = field(callInput);
  if (!id) {
    toast('No call id: offer a call first, or type one.', { kind: 'warn' });
    callInput.focus();
  }
  return id;
}

async function offer(agentId) {
  const callId = shortId('call-');
  const evt = { type: 'call_offered', call_id: callId, agent_id: agentId };
  const from = field(fromInput);
  const to = field(toInput);
  const group = field(groupInput);
  const timeout = Number(field(timeoutInput));
  if (from) evt.from = from;
  if (to) evt.to = to;
  if (group) evt.ring_group = group;
  if (timeout > 0) evt.ring_timeout_ms = timeout;
  noteCall({ call_id: callId, agent_id: agentId, direction: 'inbound', ring_group: group || null, from, to, state: 'offering' });
  agentInput.value = agentId;
  callInput.value = callId;
  const reply = await sendEvent(evt);
  if (reply.type === 'ok' && reply.accepted !== false) {
    setCallState(callId, 'ringing');
  } else if (reply.type === 'ok') {
    setCallState(callId, `rejected: ${reply.reason || 'not accepted'}${reply.status ? ` (${reply.status})` : ''}`);
    toast(`Call not offered to ${agentId}: ${reply.reason || 'rejected'}${reply.status ? ` (agent is ${reply.status})` : ''}.`, { kind: 'warn' });
  } else {
    setCallState(callId, `error: ${reply.code}`);
    toast(`Offer failed: ${reply.code} ${reply.message || ''}`, { kind: 'error', code: reply.code });
  }
  fromInput.value = randomCaller();
  return reply;
}

async function pickLongest(group, exclude = null) {
  const res = await api('api/v1/available', { query: { ring_group: group } });
  if (!res.ok) {
    log('error', 'available', { http: res.status, body: res.data });
    toast(`Could not ask for available agents (HTTP ${res.status}).`, { kind: 'error' });
    return null;
  }
  const list = Array.isArray(res.data) ? res.data : res.data?.agents || [];
  log('info', 'available', { ring_group: group || null, agents: list.map((a) => a.agent_id) });
  const pick = list.find((a) => a.agent_id !== exclude);
  if (!pick) {
    toast(`Nobody is available${group ? ` in ring group ${group}` : ''}.`, { kind: 'warn' });
    return null;
  }
  return pick.agent_id;
}

async function sendFor(c, type) {
  const evt = { type, call_id: c.call_id, agent_id: c.agent_id };
  const reply = await sendEvent(evt);
  if (reply.type === 'ok' && !reply.stale) {
    const st = { call_answered: 'on call', call_cancelled: 'cancelled', call_ended: 'ended' }[type];
    if (st) setCallState(c.call_id, st);
  } else if (reply.type === 'ok' && reply.stale) {
    toast(`${type} for ${c.call_id} was stale: the hub ignored it.`, { kind: 'warn' });
  } else if (reply.type === 'error') {
    toast(`${type} failed: ${reply.code} ${reply.message || ''}`, { kind: 'error', code: reply.code });
  }
  return reply;
}

function currentCall() {
  const agentId = requireAgent();
  if (!agentId) return null;
  const callId = requireCall();
  if (!callId) return null;
  return calls.get(callId) && calls.get(callId).agent_id === agentId ? calls.get(callId) : { call_id: callId, agent_id: agentId };
}

$('#sim-offer').addEventListener('click', () => {
  const id = requireAgent();
  if (id) offer(id);
});
$('#sim-pick').addEventListener('click', async () => {
  const id = await pickLongest(field(groupInput));
  if (id) {
    agentInput.value = id;
    callInput.value = lastCall.get(id) || '';
    toast(`Longest available: ${id}`, { kind: 'info' });
  }
});
$('#sim-offer-longest').addEventListener('click', async () => {
  const id = await pickLongest(field(groupInput));
  if (id) offer(id);
});
$('#sim-answer').addEventListener('click', () => {
  const c = currentCall();
  if (c) sendFor(c, 'call_answered');
});
$('#sim-cancel').addEventListener('click', () => {
  const c = currentCall();
  if (c) sendFor(c, 'call_cancelled');
});
$('#sim-end').addEventListener('click', () => {
  const c = currentCall();
  if (c) sendFor(c, 'call_ended');
});
$('#sim-outbound').addEventListener('click', async () => {
  const agentId = requireAgent();
  if (!agentId) return;
  const callId = shortId('out-');
  const to = field(toInput) || '+15550000000';
  noteCall({ call_id: callId, agent_id: agentId, direction: 'outbound', to, state: 'starting' });
  callInput.value = callId;
  const reply = await sendEvent({ type: 'outbound_started', call_id: callId, agent_id: agentId, to });
  if (reply.type === 'ok') setCallState(callId, 'on call');
  else {
    setCallState(callId, `error: ${reply.code}`);
    toast(`Outbound call refused: ${reply.code} ${reply.message || ''}`, { kind: 'error', code: reply.code });
  }
});
$('#sim-resend').addEventListener('click', () => {
  if (!lastEvent) {
    toast('Nothing sent yet.', { kind: 'warn' });
    return;
  }
  sendEvent(lastEvent, { resend: true });
});
$('#sim-form').addEventListener('submit', (ev) => ev.preventDefault());

// --------------------------------------------------------------------------- notifications

async function onNotification(msg) {
  log('notification', msg.type, msg, { callId: msg.call_id || '', agentId: msg.agent_id || '' });
  const known = calls.get(msg.call_id);
  if (!known) noteCall({ call_id: msg.call_id, agent_id: msg.agent_id, direction: 'inbound' });
  if (msg.type === 'call_accepted') {
    setCallState(msg.call_id, 'accepted by agent');
  } else if (msg.type === 'call_declined') {
    setCallState(msg.call_id, `declined (${msg.reason || 'declined'})`);
  } else if (msg.type === 'ring_timeout') {
    setCallState(msg.call_id, 'rang out');
  }
  if ((msg.type === 'call_declined' || msg.type === 'ring_timeout') && $('#sim-reroute').checked) {
    const c = calls.get(msg.call_id);
    const group = c?.ring_group;
    if (group == null) {
      log('info', 'reroute', `no ring group for ${msg.call_id}: not re-routed`);
      return;
    }
    const next = await pickLongest(group, msg.agent_id);
    if (next) {
      log('info', 'reroute', `${msg.call_id} -> ${next}`);
      groupInput.value = group;
      if (c.from) fromInput.value = c.from;
      offer(next);
    }
  }
}

// --------------------------------------------------------------------------- agents list

let agentsTimer = null;
async function refreshAgents() {
  const res = await api('api/v1/agents');
  const msg = $('#agents-msg');
  if (!res.ok) {
    msg.textContent = res.status === 401 || res.status === 403 ? 'The agent list needs an admin token.' : `Could not load agents (HTTP ${res.status}).`;
    return;
  }
  msg.textContent = '';
  const list = (Array.isArray(res.data) ? res.data : res.data?.agents || []).slice().sort((a, b) => a.agent_id.localeCompare(b.agent_id));
  $('#agent-ids').replaceChildren(...list.map((a) => el('option', { value: a.agent_id })));
  $('#agents-body').replaceChildren(
    ...list.slice(0, 200).map((a) =>
      el(
        'tr',
        { dataset: { agentId: a.agent_id } },
        el('td', {}, a.name ? `${a.name} (${a.agent_id})` : a.agent_id),
        el('td', {}, statusChip(a.status)),
        el(
          'td',
          {},
          el(
            'button',
            {
              type: 'button',
              class: 'small',
              'aria-label': `Use ${a.agent_id}`,
              onclick: () => {
                agentInput.value = a.agent_id;
                callInput.value = lastCall.get(a.agent_id) || '';
                agentInput.focus();
              },
            },
            'Use',
          ),
        ),
      ),
    ),
  );
}

function startAgentsTimer() {
  clearInterval(agentsTimer);
  if ($('#agents-auto').checked) agentsTimer = setInterval(() => document.visibilityState === 'visible' && refreshAgents(), 3000);
}
$('#agents-refresh').addEventListener('click', refreshAgents);
$('#agents-auto').addEventListener('change', startAgentsTimer);
refreshAgents();
startAgentsTimer();

// --------------------------------------------------------------------------- socket

const updateBanner = bindConnectionBanner($('#conn-banner'), {
  pill: $('#conn-pill'),
  label: 'hub',
  onRetry: () => socket.reconnectNow(),
});

const socket = new ReconnectingSocket({
  url: () => wsUrl('ws/telephony', { adapter }),
  onHello(msg) {
    noteServerTime(msg.server_time);
    $('#adapter-who').textContent = `adapter: ${msg.id || adapter}`;
    log('info', 'hello', msg);
  },
  onMessage(msg) {
    if (msg.type === 'call_accepted' || msg.type === 'call_declined' || msg.type === 'ring_timeout') onNotification(msg);
    else if (msg.type === 'error') log('error', 'error', msg);
    else log('notification', msg.type, msg);
  },
  onState(state, info) {
    updateBanner(state, info);
    document.body.dataset.connection = state;
  },
});
socket.start();
window.presenceDemo = { socket }; // for the browser test and the console
renderCalls();
