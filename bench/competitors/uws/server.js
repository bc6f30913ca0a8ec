// Benchmark peer: a uWebSockets.js pub/sub server speaking the subset of the presence-hub
// protocol that loadgen's fan-out scenarios use (see ../README.md). Not a hub: no auth, no
// store, no status rules beyond the manual statuses, no filters, no resume.
//
//   node server.js --listen 127.0.0.1:7400
//
// Agent socket  /ws/agent?agent_id=ID  -> hello; set_status {ref,status,note} -> ok {ref,version}
//                                          and one `agent` event to every subscribed admin.
// Admin socket  /ws/admin?admin_id=ID  -> hello; subscribe {ref} -> ok {ref,snapshot}, then
//                                          every `agent` event (topic "all"), `seq` +1 each.
// GET /healthz -> 200 ok.
//
// Fan-out is uWS's own pub/sub: app.publish() on one topic, batched per event-loop turn: the
// changes handled in one turn (every agent message uWS read in it) are queued and published
// together from a setImmediate callback, where uWS writes each subscriber everything of the
// batch corked, in one write per socket. Publishing straight from each message handler
// instead measured one write per socket per event here (bench/competitors/README.md).
'use strict';

const uWS = require('uwebsockets');

function parseListen(argv) {
  let listen = process.env.LISTEN || '127.0.0.1:7400';
  for (let i = 2; i < argv.length; i++) {
    if (argv[i] === '--listen' && argv[i + 1]) listen = argv[++i];
  }
  const at = listen.lastIndexOf(':');
  return { host: listen.slice(0, at), port: Number(listen.slice(at + 1)) };
}

const MANUAL = new Set(['offline', 'available', 'busy', 'on_break']);
// Same bound as the hub's per-socket queue (--queue-bytes, 1 MiB): a subscriber past it is
// closed (as the hub closes with 4008), never silently skipped.
const QUEUE_BYTES = 1 << 20;
const ID_RE = /^[A-Za-z0-9._@-]{1,128}$/;
const epoch = Math.floor(Math.random() * 2 ** 48).toString(16).padStart(12, '0');

/** agent_id -> AgentState (the hub's field set and order). */
const agents = new Map();
let seq = 0;
const dec = new TextDecoder();

function newAgent(id) {
  return {
    agent_id: id, name: null, teams: [], status: 'offline', manual_status: 'offline',
    since: Date.now(), reason: 'login', note: null, call: null, ring_expires_at: null,
    wrap_up_expires_at: null, connections: 0, missed_in_row: 0, version: 0,
  };
}

/** Events of this event-loop turn, published together by `flush` (see the header). */
let pending = [];
let flushScheduled = false;

/** Publishes every pending event, in `seq` order, in one go. */
function flush() {
  flushScheduled = false;
  const batch = pending;
  pending = [];
  for (const frame of batch) app.publish('all', frame, false, false);
}

/** Bumps version and seq, queues the `agent` event for this turn's batch; returns the seq. */
function publishChange(a) {
  a.version += 1;
  seq += 1;
  pending.push(`{"type":"agent","seq":${seq},"agent":${JSON.stringify(a)}}`);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
  return seq;
}

function error(ref, code, message) {
  const r = ref === undefined ? '' : `,"ref":${JSON.stringify(ref)}`;
  return `{"type":"error"${r},"code":"${code}","message":"${message}"}`;
}

function parse(ws, message, isBinary) {
  if (isBinary) {
    ws.send(error(undefined, 'bad_message', 'binary frame'), false);
    return null;
  }
  let m;
  try {
    m = JSON.parse(dec.decode(message));
  } catch (e) {
    m = null;
  }
  if (m === null || typeof m !== 'object' || typeof m.type !== 'string') {
    ws.send(error(undefined, 'bad_message', 'not a JSON object with a type'), false);
    return null;
  }
  return m;
}

function upgradeWith(key) {
  return (res, req, context) => {
    const id = req.getQuery(key);
    if (!id || !ID_RE.test(id)) {
      res.writeStatus('400 Bad Request').end(`missing or bad ${key}`);
      return;
    }
    res.upgrade({ id }, req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
  };
}

const wsOptions = {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: QUEUE_BYTES,
  closeOnBackpressureLimit: true,
  idleTimeout: 120,
};

const app = uWS.App();

app.ws('/ws/agent', {
  ...wsOptions,
  upgrade: upgradeWith('agent_id'),
  open: (ws) => {
    const { id } = ws.getUserData();
    let a = agents.get(id);
    if (!a) {
      a = newAgent(id);
      agents.set(id, a);
    }
    a.connections += 1;
    a.reason = 'login';
    const s = publishChange(a);
    ws.send(`{"type":"hello","role":"agent","agent":${JSON.stringify(a)},"server_time":${Date.now()},"epoch":"${epoch}","seq":${s}}`, false);
  },
  message: (ws, message, isBinary) => {
    const m = parse(ws, message, isBinary);
    if (!m) return;
    const a = agents.get(ws.getUserData().id);
    const ref = m.ref;
    const refPart = ref === undefined ? '' : `,"ref":${JSON.stringify(ref)}`;
    switch (m.type) {
      case 'set_status': {
        if (!MANUAL.has(m.status)) {
          ws.send(error(ref, 'invalid_status', 'not a manual status'), false);
          return;
        }
        const note = m.note === undefined ? null : m.note;
        if (note !== null && (typeof note !== 'string' || note.length > 64)) {
          ws.send(error(ref, 'bad_message', 'note must be a string of at most 64 chars'), false);
          return;
        }
        if (a.status !== m.status || a.note !== note) {
          a.status = m.status;
          a.manual_status = m.status;
          a.note = note;
          a.reason = 'manual';
          a.since = Date.now();
          publishChange(a);
        }
        if (ref !== undefined) ws.send(`{"type":"ok"${refPart},"version":${a.version}}`, false);
        return;
      }
      case 'ping':
        ws.send(`{"type":"pong","server_time":${Date.now()}${refPart}}`, false);
        return;
      default:
        ws.send(error(ref, 'bad_message', 'unknown type'), false);
    }
  },
  close: (ws) => {
    const a = agents.get(ws.getUserData().id);
    if (a) a.connections -= 1;
  },
});

app.ws('/ws/admin', {
  ...wsOptions,
  upgrade: upgradeWith('admin_id'),
  open: (ws) => {
    ws.send(`{"type":"hello","role":"admin","id":${JSON.stringify(ws.getUserData().id)},"server_time":${Date.now()},"epoch":"${epoch}"}`, false);
  },
  message: (ws, message, isBinary) => {
    const m = parse(ws, message, isBinary);
    if (!m) return;
    const refPart = m.ref === undefined ? '' : `,"ref":${JSON.stringify(m.ref)}`;
    switch (m.type) {
      case 'subscribe': {
        // Single-threaded: the snapshot and the subscription are taken in one go, so every
        // event with a greater seq comes after it and none before (what is pending is
        // published first: it is in the snapshot already).
        flush();
        const list = JSON.stringify([...agents.values()]);
        ws.send(`{"type":"ok"${refPart},"snapshot":{"epoch":"${epoch}","seq":${seq},"agents":${list}}}`, false);
        ws.subscribe('all');
        return;
      }
      case 'unsubscribe':
        ws.unsubscribe('all');
        if (m.ref !== undefined) ws.send(`{"type":"ok"${refPart}}`, false);
        return;
      case 'ping':
        ws.send(`{"type":"pong","server_time":${Date.now()}${refPart}}`, false);
        return;
      default:
        ws.send(error(m.ref, 'bad_message', 'unknown type'), false);
    }
  },
});

app.get('/healthz', (res) => {
  res.end('ok');
});
app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end('not found');
});

const { host, port } = parseListen(process.argv);
app.listen(host, port, (token) => {
  if (!token) {
    console.error(`uws peer: cannot listen on ${host}:${port}`);
    process.exit(2);
  }
  console.log(`uws peer (uwebsockets npm package) listening on ${host}:${port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
