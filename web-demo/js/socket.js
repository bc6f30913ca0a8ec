// A WebSocket that reconnects by itself, with request/reply by `ref`.
//
// States (onState(state, info)):
//   'connecting'  socket opening
//   'handshake'   socket open, waiting for the hub's `hello`
//   'open'        hello received; requests can be sent
//   'waiting'     connection lost; a reconnect is scheduled at info.retryAt
//   'stopped'     no more reconnects (logout, policy close, or stop()); info.why says which
//
// Close codes (docs/protocol.md): 1000 logout/normal, 1001 hub shutting down, 1008 policy,
// 1009 message too big, 4008 slow consumer. What to do is decided by `decideReconnect(code,
// reason)` -> 'reconnect' | 'stop'; by default 1008 stops (no hammering a hub that refuses us)
// and everything else reconnects with exponential backoff and jitter.

export class ReconnectingSocket {
  constructor(opts) {
    this.opts = {
      minDelay: 500,
      maxDelay: 15_000,
      jitter: 0.3,
      requestTimeout: 10_000,
      helloTimeout: 10_000,
      heartbeat: null, // {interval, timeout, message: () => obj, onReply?: (msg, sentAt) => void}
      ...opts,
    };
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.helloTimer = null;
    this.hbTimer = null;
    this.hbDeadline = null;
    this.hbSentAt = 0;
    this.hbRef = null;
    this.lastFrameAt = 0;
    this.pending = new Map();
    this.nextRef = 1;
    this.connectedOnce = false;
    this.lastClose = null;

    this._onOnline = () => {
      if (this.state === 'waiting') this.reconnectNow();
    };
    this._onVisible = () => {
      if (document.visibilityState === 'visible' && this.state === 'waiting' && this.retryAt - Date.now() > 2000) {
        this.reconnectNow();
      }
    };
    window.addEventListener('online', this._onOnline);
    document.addEventListener('visibilitychange', this._onVisible);
  }

  get isOpen() {
    return this.state === 'open';
  }

  /** Connects (again). Resets the backoff. */
  start() {
    if (this.state === 'connecting' || this.state === 'handshake' || this.state === 'open') return;
    this.attempt = 0;
    this._connect();
  }

  /** Skips the wait of a scheduled reconnect. */
  reconnectNow() {
    if (this.state === 'waiting' || this.state === 'stopped' || this.state === 'idle') this._connect();
  }

  /** Closes for good (no reconnect). */
  stop(code = 1000, reason = 'client stop') {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this._teardown();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* ignore */
      }
    }
    this._failPending('disconnected');
    this._setState('stopped', { why: 'client', code, reason });
  }

  /**
   * Drops the connection as if the network had cut it (no close handshake), then reconnects
   * as usual. For demos and the browser test.
   */
  simulateDrop() {
    if (this.ws) this._drop(4000, 'dropped on purpose');
  }

  /** Sends without waiting for a reply. Returns false when not connected. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Sends with a fresh `ref` and resolves with the reply: {type:'ok',...} or
   * {type:'error', code, message}. Local failures (not connected, timeout, connection lost
   * before the reply) resolve as {type:'error', code:'disconnected'|'timeout', local:true}.
   */
  request(msg) {
    const ref = this.nextRef++;
    if (this.state !== 'open' || !this.send({ ...msg, ref })) {
      return Promise.resolve({ type: 'error', ref, code: 'disconnected', message: 'not connected', local: true });
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(String(ref));
        resolve({ type: 'error', ref, code: 'timeout', message: 'no reply', local: true });
      }, this.opts.requestTimeout);
      this.pending.set(String(ref), { resolve, timer, msg });
    });
  }

  // -------------------------------------------------------------------------------------------

  _setState(state, info = {}) {
    this.state = state;
    this.opts.onState?.(state, { attempt: this.attempt, retryAt: this.retryAt, ...info });
  }

  _connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this._teardown();
    let ws;
    try {
      const url = typeof this.opts.url === 'function' ? this.opts.url() : this.opts.url;
      ws = new WebSocket(url);
    } catch (e) {
      this._setState('stopped', { why: 'bad_url', reason: String(e?.message || e) });
      return;
    }
    this.ws = ws;
    this._setState('connecting');
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this._setState('handshake');
      this.helloTimer = setTimeout(() => {
        if (ws === this.ws && this.state === 'handshake') this._drop(4000, 'no hello from the hub');
      }, this.opts.helloTimeout);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this._frame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this._closed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  _frame(data) {
    this.lastFrameAt = Date.now();
    if (typeof data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('hub sent a frame that is not JSON', data);
      return;
    }
    if (!msg || typeof msg !== 'object') return;

    if (msg.type === 'hello' && this.state === 'handshake') {
      clearTimeout(this.helloTimer);
      this.attempt = 0;
      this.connectedOnce = true;
      this._setState('open');
      this._startHeartbeat();
      this.opts.onHello?.(msg);
      return;
    }
    if (msg.type === 'pong') {
      const sentAt = this.hbSentAt || null;
      this.opts.heartbeat?.onReply?.(msg, sentAt);
    }
    if (msg.ref != null && (msg.type === 'ok' || msg.type === 'error' || msg.type === 'pong')) {
      const p = this.pending.get(String(msg.ref));
      if (p) {
        this.pending.delete(String(msg.ref));
        clearTimeout(p.timer);
        p.resolve(msg);
        return;
      }
      if (this.hbRef != null && String(msg.ref) === String(this.hbRef)) return; // heartbeat reply
    }
    this.opts.onMessage?.(msg);
  }

  // Liveness from the browser side: the hub pings us at the WebSocket level, but a browser
  // cannot see those pings, so a dead network would go unnoticed until TCP gives up. If
  // nothing arrived for `interval`, send an application ping; no frame within `timeout` after
  // it means the connection is dead: drop it and reconnect.
  _startHeartbeat() {
    const hb = this.opts.heartbeat;
    if (!hb) return;
    clearInterval(this.hbTimer);
    this.hbTimer = setInterval(() => {
      if (this.state !== 'open') return;
      const now = Date.now();
      if (this.hbDeadline && this.lastFrameAt >= this.hbSentAt) this.hbDeadline = null;
      if (this.hbDeadline && now > this.hbDeadline) {
        this._drop(4001, 'no answer to heartbeat');
        return;
      }
      if (!this.hbDeadline && now - this.lastFrameAt >= hb.interval) {
        this.hbRef = this.nextRef++;
        this.hbSentAt = now + 1; // a frame must arrive strictly after the ping went out
        this.hbDeadline = now + hb.timeout;
        this.send({ ...hb.message(), ref: this.hbRef });
      }
    }, 1000);
  }

  /** Forgets the current socket without waiting for the browser's close handshake. */
  _drop(code, reason) {
    const ws = this.ws;
    this._teardown();
    if (ws) {
      try {
        ws.close(4000, reason);
      } catch {
        /* ignore */
      }
    }
    this._closed(code, reason, true);
  }

  _teardown() {
    clearTimeout(this.helloTimer);
    clearInterval(this.hbTimer);
    this.hbTimer = null;
    this.hbDeadline = null;
    this.hbRef = null;
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    this.ws = null;
  }

  _failPending(code) {
    for (const [ref, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ type: 'error', ref, code, message: 'connection lost before the reply', local: true });
    }
    this.pending.clear();
  }

  _closed(code, reason, alreadyTornDown = false) {
    if (!alreadyTornDown) this._teardown();
    this._failPending('disconnected');
    this.lastClose = { code, reason };
    const decide = this.opts.decideReconnect?.(code, reason) ?? (code === 1008 ? 'stop' : 'reconnect');
    if (decide === 'stop') {
      this._setState('stopped', { why: code === 1008 ? 'policy' : 'closed', code, reason });
      return;
    }
    const base = Math.min(this.opts.maxDelay, this.opts.minDelay * 2 ** this.attempt);
    const delay = Math.max(100, Math.round(base * (1 + (Math.random() * 2 - 1) * this.opts.jitter)));
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this._connect(), delay);
    this._setState('waiting', { code, reason, retryAt: this.retryAt, delay });
  }
}

/** Human text for a close code. */
export function closeCodeText(code) {
  switch (code) {
    case 1000:
      return 'closed normally';
    case 1001:
      return 'the hub is restarting';
    case 1006:
      return 'the connection dropped';
    case 1008:
      return 'refused by policy';
    case 1009:
      return 'message too big';
    case 1011:
      return 'hub error';
    case 4000:
    case 4001:
      return 'no answer from the hub';
    case 4008:
      return 'too slow to keep up';
    default:
      return code ? `code ${code}` : 'the connection dropped';
  }
}

/**
 * Keeps a connection banner (and an optional header pill) in sync with a socket's state.
 * The banner carries data-state for tests: connecting | handshake | open | waiting | stopped.
 */
export function bindConnectionBanner(banner, { pill = null, label = 'hub', onRetry } = {}) {
  const text = banner.querySelector('.banner-text') || banner;
  const retryBtn = banner.querySelector('button');
  let countdown = null;
  let everOpen = false;
  if (retryBtn && onRetry) retryBtn.addEventListener('click', onRetry);

  function setPill(kind, t) {
    if (!pill) return;
    pill.dataset.state = kind;
    pill.querySelector('.pill-text').textContent = t;
  }

  return function update(state, info = {}) {
    clearInterval(countdown);
    banner.dataset.state = state;
    banner.classList.remove('banner-warn', 'banner-error', 'banner-info');
    if (retryBtn) retryBtn.hidden = true;
    switch (state) {
      case 'open':
        everOpen = true;
        banner.hidden = true;
        setPill('open', 'Live');
        break;
      case 'connecting':
      case 'handshake':
        if (everOpen) {
          banner.hidden = false;
          banner.classList.add('banner-warn');
          text.textContent = `Connection to the ${label} lost. Reconnecting…`;
        } else {
          banner.hidden = false;
          banner.classList.add('banner-info');
          text.textContent = `Connecting to the ${label}…`;
        }
        setPill('connecting', 'Connecting');
        break;
      case 'waiting': {
        banner.hidden = false;
        banner.classList.add('banner-warn');
        if (retryBtn) retryBtn.hidden = false;
        const why = closeCodeText(info.code);
        const tickText = () => {
          const s = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
          text.textContent = everOpen
            ? `Connection to the ${label} lost (${why}). Reconnecting in ${s} s…`
            : `Cannot reach the ${label}. Trying again in ${s} s…${info.attempt >= 3 ? ' If this keeps failing, check that the hub runs and that the sign-in token (if any) is valid.' : ''}`;
        };
        tickText();
        countdown = setInterval(tickText, 250);
        setPill('down', 'Offline');
        break;
      }
      case 'stopped':
        banner.hidden = false;
        banner.classList.add('banner-error');
        if (retryBtn) retryBtn.hidden = false;
        if (info.why === 'policy') {
          text.textContent = `The ${label} refused the connection (${info.reason || 'policy'}). Check your sign-in, then try again.`;
        } else if (info.why === 'bad_url') {
          text.textContent = `Cannot connect: ${info.reason}`;
        } else {
          text.textContent = `Disconnected from the ${label}.`;
        }
        setPill('down', 'Disconnected');
        break;
      case 'idle':
        everOpen = false;
        banner.hidden = true;
        break;
      default:
        break;
    }
  };
}
