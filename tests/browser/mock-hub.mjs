// A small stand-in for the presence-hub binary, for working on the web demo without a Rust
// build: dev-mode identities only, no auth, no persistence. It follows
// docs/protocol.md and docs/status-model.md closely enough to drive every page, and
// takes the same flags as the hub (--listen, --wrap-up-secs, --ring-timeout-secs,
// --disconnect-grace-secs). No dependencies (a minimal WebSocket server on node:http).
//
//   node tests/browser/mock-hub.mjs --listen 127.0.0.1:8080
//   HUB_MOCK=1 node tests/browser/run.mjs      (runs the browser test against it)
//
// It is NOT the product and the browser test's verdict only counts against the real hub.
import { createHash, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const webRoot = path.resolve(here, '../../web-demo');

const args = process.argv.slice(2);
function flag(name, def) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
const listen = flag('--listen', '127.0.0.1:8080');
const wrapUpSecs = Number(flag('--wrap-up-secs', 0));
const ringTimeoutSecs = Number(flag('--ring-timeout-secs', 30));
const graceSecs = Number(flag('--disconnect-grace-secs', 15));
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];

const epoch = randomUUID();
let seq = 0;
const history = []; // {seq, agent_id, frame}
const HISTORY_MAX = 10_000;
const MANUAL = ['offline', 'available', 'busy', 'on_break'];

// ------------------------------------------------------------------------ agents

/** agent_id -> {state, sockets:Set, ringTimer, wrapTimer, graceTimer} */
const agents = new Map();
const admins = new Set(); // {ws, subscribed, filter}
const adapters = new Set();
const seenEvents = new Map(); // event_id -> reply

function newAgent(id) {
  const now = Date.now();
  return {
    state: {
      agent_id: id,
      name: `Agent ${id}`,
      teams: ['support'],
      status: 'offline',
      manual_status: 'offline',
      since: now,
      reason: 'login',
      note: null,
      call: null,
      ring_expires_at: null,
      wrap_up_expires_at: null,
      connections: 0,
      missed_in_row: 0,
      version: 0,
    },
    sockets: new Set(),
    ringTimer: null,
    wrapTimer: null,
    graceTimer: null,
  };
}

function getAgent(id, create = false) {
  let a = agents.get(id);
  if (!a && create) {
    a = newAgent(id);
    agents.set(id, a);
  }
  return a;
}

/** Applies a change and emits one `agent` event. */
function change(a, fn) {
  const before = JSON.stringify(a.state);
  const prevStatus = a.state.status;
  fn(a.state);
  if (a.state.status !== prevStatus) a.state.since = Date.now();
  if (a.state.status !== 'ringing') a.state.ring_expires_at = null;
  if (a.state.status !== 'wrap_up') a.state.wrap_up_expires_at = null;
  if (!['ringing', 'on_call', 'wrap_up'].includes(a.state.status)) a.state.call = null;
  if (JSON.stringify(a.state) === before) return false;
  a.state.version++;
  seq++;
  const frame = JSON.stringify({ type: 'agent', seq, agent: a.state });
  history.push({ seq, agent_id: a.state.agent_id, teams: a.state.teams, frame });
  if (history.length > HISTORY_MAX) history.shift();
  for (const ws of a.sockets) ws.sendText(frame);
  for (const adm of admins) if (adm.subscribed && passes(adm.filter, a.state)) adm.ws.sendText(frame);
  return true;
}

function passes(filter, s) {
  if (filter.agents && !filter.agents.includes(s.agent_id)) return false;
  if (filter.teams && !s.teams.some((t) => filter.teams.includes(t))) return false;
  return true;
}

function manual(s, status, reason, note) {
  s.status = status;
  s.manual_status = status;
  s.reason = reason;
  s.note = note ?? null;
}

function returnToManual(s, reason) {
  s.status = s.manual_status;
  s.reason = reason;
}

function clearTimers(a) {
  clearTimeout(a.ringTimer);
  clearTimeout(a.wrapTimer);
  a.ringTimer = a.wrapTimer = null;
}

function notifyAdapters(msg) {
  const f = JSON.stringify(msg);
  for (const ws of adapters) ws.sendText(f);
}

function setManual(a, status, note, reason) {
  const s = a.state;
  if (!MANUAL.includes(status)) return { code: 'invalid_status', message: `${status} is not a manual status` };
  if (s.status === 'ringing' || s.status === 'on_call') {
    change(a, (x) => {
      x.manual_status = status;
      x.reason = reason;
      x.note = note ?? null;
    });
  } else {
    clearTimers(a);
    change(a, (x) => {
      manual(x, status, reason, note);
      x.missed_in_row = 0;
    });
  }
  return null;
}

function logout(a, reason) {
  const s = a.state;
  if (s.status === 'on_call') {
    change(a, (x) => {
      x.manual_status = 'offline';
      x.reason = reason;
    });
  } else {
    if (s.status === 'ringing') {
      notifyAdapters({ type: 'call_declined', call_id: s.call.call_id, agent_id: s.agent_id, reason: 'logout' });
    }
    clearTimers(a);
    change(a, (x) => manual(x, 'offline', reason));
  }
  const bye = JSON.stringify({ type: 'logged_out', reason });
  for (const ws of [...a.sockets]) {
    ws.sendText(bye);
    ws.closeWith(1000, 'logged out');
  }
}

function wrapUpOrReturn(a, reason) {
  if (wrapUpSecs > 0) {
    change(a, (x) => {
      x.status = 'wrap_up';
      x.reason = reason;
      x.wrap_up_expires_at = Date.now() + wrapUpSecs * 1000;
    });
    a.wrapTimer = setTimeout(() => {
      if (a.state.status === 'wrap_up') change(a, (x) => returnToManual(x, 'wrap_up_expired'));
    }, wrapUpSecs * 1000);
  } else {
    change(a, (x) => returnToManual(x, reason));
  }
}

// ------------------------------------------------------------------------ telephony

function telephony(evt) {
  if (typeof evt.event_id !== 'string' || typeof evt.call_id !== 'string' || typeof evt.agent_id !== 'string') {
    return { type: 'error', code: 'bad_message', message: 'event_id, call_id and agent_id are required' };
  }
  const dup = seenEvents.get(evt.event_id);
  if (dup) return { ...dup, duplicate: true };
  const reply = telephonyOnce(evt);
  if (reply.type === 'ok') seenEvents.set(evt.event_id, reply);
  return reply;
}

function telephonyOnce(evt) {
  const a = getAgent(evt.agent_id);
  const s = a?.state;
  const current = s?.call?.call_id === evt.call_id;
  switch (evt.type) {
    case 'call_offered': {
      if (!a) return { type: 'ok', accepted: false, reason: 'unknown_agent', status: null };
      if (s.status !== 'available') return { type: 'ok', accepted: false, reason: 'not_available', status: s.status };
      const timeout = evt.ring_timeout_ms || ringTimeoutSecs * 1000;
      const now = Date.now();
      const call = {
        call_id: evt.call_id,
        direction: 'inbound',
        ring_group: evt.ring_group ?? null,
        from: evt.from ?? null,
        to: evt.to ?? null,
        offered_at: now,
        answered_at: null,
      };
      change(a, (x) => {
        x.status = 'ringing';
        x.reason = 'call_offered';
        x.call = call;
        x.ring_expires_at = now + timeout;
      });
      const offered = JSON.stringify({ type: 'call_offered', call, ring_expires_at: s.ring_expires_at });
      for (const ws of a.sockets) ws.sendText(offered);
      a.ringTimer = setTimeout(() => {
        if (s.status !== 'ringing' || s.call?.call_id !== call.call_id) return;
        change(a, (x) => {
          returnToManual(x, 'ring_timeout');
          x.missed_in_row++;
        });
        notifyAdapters({ type: 'ring_timeout', call_id: call.call_id, agent_id: s.agent_id });
      }, timeout);
      return { type: 'ok', accepted: true, agent: s };
    }
    case 'call_answered':
      if (!a) return { type: 'error', code: 'unknown_agent', message: 'no such agent' };
      if (!current) return { type: 'ok', stale: true };
      if (s.status === 'ringing') {
        clearTimers(a);
        change(a, (x) => {
          x.status = 'on_call';
          x.reason = 'call_answered';
          x.missed_in_row = 0;
          x.call = { ...x.call, answered_at: Date.now() };
        });
      }
      return { type: 'ok', agent: s };
    case 'call_cancelled':
    case 'call_ended':
      if (!a) return { type: 'error', code: 'unknown_agent', message: 'no such agent' };
      if (!current) return { type: 'ok', stale: true };
      if (s.status === 'ringing') {
        clearTimers(a);
        change(a, (x) => returnToManual(x, 'call_cancelled'));
      } else if (s.status === 'on_call' && evt.type === 'call_ended') {
        wrapUpOrReturn(a, 'call_ended');
      } else return { type: 'ok', stale: true };
      return { type: 'ok', agent: s };
    case 'outbound_started': {
      const ag = getAgent(evt.agent_id, true);
      const st = ag.state;
      if (st.status === 'ringing' || st.status === 'on_call') return { type: 'error', code: 'invalid_state', message: `agent is ${st.status}` };
      clearTimers(ag);
      const now = Date.now();
      change(ag, (x) => {
        x.status = 'on_call';
        x.reason = 'outbound_started';
        x.call = { call_id: evt.call_id, direction: 'outbound', ring_group: null, from: null, to: evt.to ?? null, offered_at: now, answered_at: now };
      });
      return { type: 'ok', agent: st };
    }
    default:
      return { type: 'error', code: 'bad_message', message: `unknown type ${evt.type}` };
  }
}

// ------------------------------------------------------------------------ socket handlers

function reply(ws, msg, body) {
  if (msg.ref !== undefined) ws.sendText(JSON.stringify({ ...body, ref: msg.ref }));
  else if (body.type === 'error') ws.sendText(JSON.stringify(body));
}

function onAgentOpen(ws, id) {
  const a = getAgent(id, true);
  clearTimeout(a.graceTimer);
  a.graceTimer = null;
  if (a.sockets.size === 0 && a.state.connections === 0 && !a.inSession) {
    a.inSession = true;
    if (['ringing', 'on_call', 'wrap_up'].includes(a.state.status)) {
      change(a, (x) => {
        x.manual_status = 'offline';
        x.reason = 'login';
        x.connections++;
      });
    } else {
      change(a, (x) => {
        manual(x, 'offline', 'login');
        x.connections++;
      });
    }
  } else {
    change(a, (x) => x.connections++);
  }
  a.sockets.add(ws);
  ws.sendText(JSON.stringify({ type: 'hello', role: 'agent', agent: a.state, server_time: Date.now(), epoch, seq }));
  if (a.state.status === 'ringing') ws.sendText(JSON.stringify({ type: 'call_offered', call: a.state.call, ring_expires_at: a.state.ring_expires_at }));
  ws.onText = (msg) => {
    const s = a.state;
    switch (msg.type) {
      case 'set_status': {
        const err = setManual(a, msg.status, msg.note, 'manual');
        return reply(ws, msg, err ? { type: 'error', ...err } : { type: 'ok' });
      }
      case 'accept_call':
      case 'decline_call': {
        if (s.status !== 'ringing' || s.call?.call_id !== msg.call_id) {
          return reply(ws, msg, { type: 'error', code: 'invalid_state', message: `agent is ${s.status}` });
        }
        clearTimers(a);
        const callId = s.call.call_id;
        if (msg.type === 'accept_call') {
          change(a, (x) => {
            x.status = 'on_call';
            x.reason = 'call_accepted';
            x.missed_in_row = 0;
            x.call = { ...x.call, answered_at: Date.now() };
          });
          notifyAdapters({ type: 'call_accepted', call_id: callId, agent_id: s.agent_id });
        } else {
          change(a, (x) => manual(x, 'busy', 'call_declined'));
          notifyAdapters({ type: 'call_declined', call_id: callId, agent_id: s.agent_id, reason: 'declined' });
        }
        return reply(ws, msg, { type: 'ok' });
      }
      case 'end_wrap_up':
        if (s.status !== 'wrap_up') return reply(ws, msg, { type: 'error', code: 'invalid_state', message: `agent is ${s.status}` });
        clearTimers(a);
        change(a, (x) => returnToManual(x, 'wrap_up_ended'));
        return reply(ws, msg, { type: 'ok' });
      case 'logout':
        reply(ws, msg, { type: 'ok' });
        a.inSession = false;
        return logout(a, 'logout');
      case 'ping':
        return reply(ws, msg, { type: 'pong', server_time: Date.now() });
      default:
        return reply(ws, msg, { type: 'error', code: 'bad_message', message: `unknown type ${msg.type}` });
    }
  };
  ws.onClose = () => {
    if (!a.sockets.delete(ws)) return;
    change(a, (x) => (x.connections = Math.max(0, x.connections - 1)));
    if (a.sockets.size === 0 && a.inSession) {
      a.graceTimer = setTimeout(() => {
        a.inSession = false;
        logout(a, 'disconnected');
      }, graceSecs * 1000);
    }
  };
}

function snapshot(filter) {
  return { epoch, seq, agents: [...agents.values()].map((a) => a.state).filter((s) => passes(filter, s)) };
}

function onAdminOpen(ws, id) {
  const adm = { ws, subscribed: false, filter: {} };
  admins.add(adm);
  ws.sendText(JSON.stringify({ type: 'hello', role: 'admin', id, server_time: Date.now(), epoch }));
  ws.onText = (msg) => {
    const filter = { teams: msg.teams ?? null, agents: msg.agents ?? null };
    switch (msg.type) {
      case 'subscribe':
        adm.filter = filter;
        adm.subscribed = true;
        return reply(ws, msg, { type: 'ok', snapshot: snapshot(filter) });
      case 'resume': {
        adm.filter = filter;
        adm.subscribed = true;
        const oldest = history.length ? history[0].seq : seq + 1;
        if (msg.epoch === epoch && msg.seq >= oldest - 1 && msg.seq <= seq) {
          for (const h of history) if (h.seq > msg.seq && passes(filter, { agent_id: h.agent_id, teams: h.teams })) ws.sendText(h.frame);
          return reply(ws, msg, { type: 'ok', recovered: true });
        }
        return reply(ws, msg, { type: 'ok', recovered: false, snapshot: snapshot(filter) });
      }
      case 'unsubscribe':
        adm.subscribed = false;
        return reply(ws, msg, { type: 'ok' });
      case 'set_agent_status': {
        const a = getAgent(msg.agent_id);
        if (!a) return reply(ws, msg, { type: 'error', code: 'unknown_agent', message: 'no such agent' });
        const err = setManual(a, msg.status, msg.note, 'admin');
        return reply(ws, msg, err ? { type: 'error', ...err } : { type: 'ok' });
      }
      case 'logout_agent': {
        const a = getAgent(msg.agent_id);
        if (!a) return reply(ws, msg, { type: 'error', code: 'unknown_agent', message: 'no such agent' });
        reply(ws, msg, { type: 'ok' });
        a.inSession = false;
        return logout(a, 'admin_logout');
      }
      default:
        return reply(ws, msg, { type: 'error', code: 'bad_message', message: `unknown type ${msg.type}` });
    }
  };
  ws.onClose = () => admins.delete(adm);
}

function onTelephonyOpen(ws, id) {
  adapters.add(ws);
  ws.sendText(JSON.stringify({ type: 'hello', role: 'telephony', id, server_time: Date.now(), epoch }));
  ws.onText = (msg) => reply(ws, msg, telephony(msg));
  ws.onClose = () => adapters.delete(ws);
}

// ------------------------------------------------------------------------ minimal WebSocket

function wrapSocket(sock) {
  let buf = Buffer.alloc(0);
  let closed = false;
  const ws = {
    onText: () => {},
    onClose: () => {},
    sendText(text) {
      if (closed) return;
      sock.write(frame(0x1, Buffer.from(text)));
    },
    closeWith(code, reason = '') {
      if (closed) return;
      const p = Buffer.alloc(2 + Buffer.byteLength(reason));
      p.writeUInt16BE(code, 0);
      p.write(reason, 2);
      sock.write(frame(0x8, p));
      closed = true;
      sock.end();
      setTimeout(() => sock.destroy(), 1000).unref();
      ws.onClose();
    },
  };
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 0x0f;
      const masked = buf[1] & 0x80;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskOff + (i & 3)];
      buf = buf.subarray(off + len);
      if (op === 0x1) {
        let msg;
        try {
          msg = JSON.parse(payload.toString('utf8'));
        } catch {
          ws.sendText(JSON.stringify({ type: 'error', code: 'bad_message', message: 'not JSON' }));
          continue;
        }
        if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
          ws.sendText(JSON.stringify({ type: 'error', code: 'bad_message', message: 'not an object' }));
          continue;
        }
        ws.onText(msg);
      } else if (op === 0x8) {
        if (!closed) {
          sock.write(frame(0x8, payload.subarray(0, 2)));
          closed = true;
          sock.end();
          ws.onClose();
        }
      } else if (op === 0x9) {
        sock.write(frame(0xa, payload));
      } else if (op === 0x2) {
        ws.sendText(JSON.stringify({ type: 'error', code: 'bad_message', message: 'binary frame' }));
      }
    }
  });
  const gone = () => {
    if (!closed) {
      closed = true;
      ws.onClose();
    }
  };
  sock.on('close', gone);
  sock.on('error', gone);
  return ws;
}

function frame(op, payload) {
  const len = payload.length;
  let head;
  if (len < 126) head = Buffer.from([0x80 | op, len]);
  else if (len < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | op;
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | op;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

// ------------------------------------------------------------------------ HTTP

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png' };

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p === '/healthz') return json(res, 200, { ok: true });
  if (p === '/api/v1/agents') {
    let list = [...agents.values()].map((a) => a.state);
    if (url.searchParams.get('team')) list = list.filter((s) => s.teams.includes(url.searchParams.get('team')));
    if (url.searchParams.get('status')) list = list.filter((s) => s.status === url.searchParams.get('status'));
    return json(res, 200, { epoch, seq, agents: list });
  }
  if (p === '/api/v1/available') {
    const team = url.searchParams.get('team');
    const list = [...agents.values()]
      .map((a) => a.state)
      .filter((s) => s.status === 'available' && (!team || s.teams.includes(team)))
      .sort((x, y) => x.since - y.since);
    return json(res, 200, { agents: list });
  }
  if (p === '/api/v1/summary') {
    const counts = {};
    for (const a of agents.values()) counts[a.state.status] = (counts[a.state.status] || 0) + 1;
    return json(res, 200, { counts });
  }
  if (p === '/api/v1/telephony/events' && req.method === 'POST') {
    let body = '';
    for await (const c of req) body += c;
    let evt;
    try {
      evt = JSON.parse(body);
    } catch {
      return json(res, 400, { type: 'error', code: 'bad_message', message: 'not JSON' });
    }
    const r = telephony(evt);
    return json(res, r.type === 'ok' ? 200 : r.code === 'unknown_agent' ? 404 : r.code === 'invalid_state' ? 409 : 400, r);
  }
  // static files
  const rel = p === '/' ? 'index.html' : decodeURIComponent(p.slice(1));
  const file = path.resolve(webRoot, rel);
  if (!file.startsWith(webRoot + path.sep)) return json(res, 404, { error: 'not found' });
  try {
    const data = await readFile(file);
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-cache' });
    res.end(data);
  } catch {
    json(res, 404, { error: 'not found' });
  }
});

server.on('upgrade', (req, sock) => {
  const url = new URL(req.url, 'http://x');
  const key = req.headers['sec-websocket-key'];
  const q = url.searchParams;
  const route = {
    '/ws/agent': ['agent_id', onAgentOpen],
    '/ws/admin': ['admin_id', onAdminOpen],
    '/ws/telephony': ['adapter', onTelephonyOpen],
  }[url.pathname];
  if (!key || !route || !q.get(route[0])) {
    sock.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  sock.setNoDelay(true);
  const ws = wrapSocket(sock);
  allSockets.add(ws);
  const prevClose = () => allSockets.delete(ws);
  route[1](ws, q.get(route[0]));
  const userClose = ws.onClose;
  ws.onClose = () => {
    prevClose();
    userClose();
  };
});

const allSockets = new Set();

server.listen(port, host, () => console.log(`mock hub listening on http://${host}:${port} (epoch ${epoch})`));

process.on('SIGTERM', () => {
  for (const ws of [...allSockets]) ws.closeWith(1001, 'shutting down');
  server.close();
  setTimeout(() => process.exit(0), 200);
});
process.on('SIGINT', () => process.exit(0));
