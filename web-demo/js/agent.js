// Agent console: one agent's status, incoming calls, on-call and wrap-up, logout.
import {
  $,
  AGENT_ID_RE,
  clockOffsetMs,
  fmtClock,
  fmtCountdown,
  fmtDuration,
  fmtOffset,
  noteServerTime,
  onTick,
  params,
  serverNow,
  setHidden,
  setText,
  tickNow,
  toast,
  toastError,
  token,
  wsUrl,
} from './common.js';
import { ReconnectingSocket, bindConnectionBanner } from './socket.js';
import { MANUAL_STATUSES, STATUS_META, ensureSprite, iconSvg, setStatusChip, statusChip, statusLabel } from './status.js';

ensureSprite();

const LAST_ID_KEY = 'presence-hub.agent_id';
const agentIdParam = params.get('agent_id');

const LOGOUT_TEXT = {
  logout: 'You logged out.',
  admin_logout: 'A supervisor logged you out.',
  disconnected: 'You were logged out because the connection was lost for too long.',
};

const REASON_TEXT = {
  login: 'logged in',
  manual: 'set by you',
  admin: 'set by a supervisor',
  call_offered: 'call offered',
  call_accepted: 'you connected the call',
  call_answered: 'call answered',
  call_declined: 'you declined a call',
  ring_timeout: 'a call rang out',
  call_cancelled: 'the caller hung up',
  call_ended: 'the call ended',
  wrap_up_expired: 'wrap-up time is over',
  wrap_up_ended: 'you ended wrap-up',
  outbound_started: 'outbound call started',
  logout: 'logged out',
  admin_logout: 'logged out by a supervisor',
  disconnected: 'disconnected',
};

if (!token && !agentIdParam) {
  showLogin();
} else if (!token && !AGENT_ID_RE.test(agentIdParam)) {
  showLogin(`"${agentIdParam}" is not a valid agent id.`);
} else {
  startConsole();
}

function showLogin(problem) {
  setHidden($('#login'), false);
  $('#conn-pill').dataset.state = 'down';
  $('#conn-pill .pill-text').textContent = 'Not logged in';
  const input = $('#login-agent-id');
  input.value = problem ? agentIdParam : localStorage.getItem(LAST_ID_KEY) || '';
  if (problem) toast(problem, { kind: 'error' });
  input.focus();
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = input.value.trim();
    if (!AGENT_ID_RE.test(id)) {
      input.setCustomValidity('Use 1 to 128 letters, digits or . _ @ -');
      input.reportValidity();
      return;
    }
    input.setCustomValidity('');
    localStorage.setItem(LAST_ID_KEY, id);
    const u = new URL(location.href);
    u.searchParams.set('agent_id', id);
    location.assign(u);
  });
  $('#login-agent-id').addEventListener('input', () => input.setCustomValidity(''));
}

function startConsole() {
  if (agentIdParam) localStorage.setItem(LAST_ID_KEY, agentIdParam);

  /** The AgentState we show (null until the first hello). */
  let agent = null;
  let epoch = null;
  let loggedOut = null; // logout reason once `logged_out` arrived
  let lastRingingCall = null;
  const baseTitle = document.title;

  // ----------------------------------------------------------------- elements
  const consoleEl = $('#console');
  const statusHolder = $('#status-chip-holder');
  const chip = statusChip('offline');
  statusHolder.append(chip);
  const queuedChip = statusChip('offline');
  $('#queued-chip-holder').append(queuedChip);
  const timerEl = $('#status-timer');
  const noteShown = $('#status-note-shown');
  const queued = $('#queued');
  const missed = $('#missed');
  const ringingCard = $('#ringing-card');
  const oncallCard = $('#oncall-card');
  const wrapupCard = $('#wrapup-card');
  const btnConnect = $('#btn-connect');
  const btnDecline = $('#btn-decline');
  const btnDone = $('#btn-done');
  const btnLogout = $('#btn-logout');
  const noteInput = $('#status-note');
  const loggedOutEl = $('#logged-out');

  // Status picker: one button per manual status, icon + label (not colour alone).
  const picker = $('#picker');
  const pickerButtons = {};
  for (const s of MANUAL_STATUSES) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = `st-${s}`;
    b.dataset.testid = `status-btn-${s}`;
    b.dataset.status = s;
    b.setAttribute('aria-pressed', 'false');
    b.title = STATUS_META[s].hint;
    b.append(iconSvg(s), document.createTextNode(statusLabel(s)));
    b.addEventListener('click', () => setStatus(s));
    picker.append(b);
    pickerButtons[s] = b;
  }

  // ----------------------------------------------------------------- socket
  const updateBanner = bindConnectionBanner($('#conn-banner'), {
    pill: $('#conn-pill'),
    label: 'hub',
    onRetry: () => socket.reconnectNow(),
  });

  const socket = new ReconnectingSocket({
    url: () => wsUrl('ws/agent', { agent_id: agentIdParam }),
    heartbeat: {
      interval: 20_000,
      timeout: 10_000,
      message: () => ({ type: 'ping' }),
      onReply: (msg, sentAt) => {
        noteServerTime(msg.server_time, sentAt);
        renderOffset();
      },
    },
    onHello(msg) {
      noteServerTime(msg.server_time);
      renderOffset();
      if (epoch && msg.epoch !== epoch) console.info('hub restarted: new epoch', msg.epoch);
      epoch = msg.epoch;
      loggedOut = null;
      setHidden(loggedOutEl, true);
      setHidden(consoleEl, false);
      setHidden(btnLogout, false);
      // hello is authoritative (after a hub restart versions may start again from 1).
      applyAgent(msg.agent, true);
    },
    onMessage(msg) {
      switch (msg.type) {
        case 'agent':
          applyAgent(msg.agent, false);
          break;
        case 'call_offered':
          onCallOffered(msg);
          break;
        case 'logged_out':
          loggedOut = msg.reason || 'logout';
          break;
        case 'error':
          toastError('The hub reported an error', msg);
          break;
        default:
          break;
      }
    },
    decideReconnect(code) {
      // 1000 follows `logged_out`: never log ourselves back in by reconnecting.
      if (loggedOut || code === 1000) return 'stop';
      if (code === 1008) return 'stop';
      return 'reconnect';
    },
    onState(state, info) {
      if (state === 'stopped' && info.why !== 'policy' && info.why !== 'bad_url' && (loggedOut || info.code === 1000)) {
        showLoggedOut(loggedOut);
        $('#conn-banner').dataset.state = 'logged_out';
        $('#conn-banner').hidden = true;
        $('#conn-pill').dataset.state = 'down';
        $('#conn-pill .pill-text').textContent = 'Logged out';
      } else {
        updateBanner(state, info);
      }
      const open = state === 'open';
      for (const b of Object.values(pickerButtons)) b.disabled = !open;
      btnConnect.disabled = btnDecline.disabled = btnDone.disabled = !open;
      btnLogout.disabled = !open;
      document.body.dataset.connection = state;
    },
  });
  socket.start();
  window.presenceDemo = { socket }; // for the browser test and the console

  // ----------------------------------------------------------------- state
  function applyAgent(a, authoritative) {
    if (!a) return;
    if (!authoritative && agent && a.agent_id === agent.agent_id && a.version <= agent.version) return; // stale or duplicate
    const prev = agent;
    agent = a;
    render(prev);
  }

  function onCallOffered(msg) {
    // The agent event carries the same call; this one is the "ring now" cue.
    const id = msg.call?.call_id;
    if (id && id !== lastRingingCall) {
      lastRingingCall = id;
      if (document.visibilityState !== 'visible') document.title = `☎ Incoming call · ${baseTitle}`;
    }
  }

  function render(prev) {
    const a = agent;
    setText($('#agent-who'), a.name ? `${a.name} (${a.agent_id})` : a.agent_id);
    setStatusChip(chip, a.status);
    statusHolder.dataset.status = a.status;
    document.body.dataset.status = a.status;

    const system = a.status !== a.manual_status;
    setHidden(queued, !system);
    queued.dataset.status = a.manual_status;
    setStatusChip(queuedChip, a.manual_status);

    setHidden(noteShown, !a.note);
    setText(noteShown, a.note ? `Note: ${a.note}` : '');
    setHidden(missed, !(a.missed_in_row > 0));
    setText(missed, a.missed_in_row > 0 ? `⚠ ${a.missed_in_row} call${a.missed_in_row === 1 ? '' : 's'} in a row rang out without an answer.` : '');

    for (const [s, b] of Object.entries(pickerButtons)) b.setAttribute('aria-pressed', String(a.manual_status === s));

    const call = a.call || {};
    // Ringing
    const ringing = a.status === 'ringing';
    setHidden(ringingCard, !ringing);
    if (ringing) {
      setText($('#ring-from'), call.from || 'Unknown caller');
      setText($('#ring-to'), call.to || '—');
      setText($('#ring-group'), call.ring_group || '—');
      ringingCard.dataset.callId = call.call_id || '';
      const enteringRing = !prev || prev.status !== 'ringing' || prev.call?.call_id !== call.call_id;
      if (enteringRing) {
        btnConnect.disabled = btnDecline.disabled = !socket.isOpen;
        const active = document.activeElement;
        if (!active || active === document.body || active.tagName === 'BUTTON') btnConnect.focus();
      }
      document.title = `☎ Incoming call · ${baseTitle}`;
    } else {
      document.title = `${statusLabel(a.status)} · ${baseTitle}`;
    }
    // On call
    const onCall = a.status === 'on_call';
    setHidden(oncallCard, !onCall);
    if (onCall) {
      const outbound = call.direction === 'outbound';
      setText($('#oncall-heading'), outbound ? 'Outbound call' : 'Inbound call');
      setText($('#call-direction'), outbound ? 'Outbound' : 'Inbound');
      setText($('#call-from'), call.from || '—');
      setText($('#call-to'), call.to || '—');
      setText($('#call-group'), call.ring_group || '—');
      oncallCard.dataset.callId = call.call_id || '';
    }
    // Wrap-up
    setHidden(wrapupCard, a.status !== 'wrap_up');

    setText($('#d-agent'), a.name ? `${a.name} (${a.agent_id})` : a.agent_id);
    setText($('#d-teams'), (a.teams || []).join(', ') || '—');
    setText($('#d-connections'), String(a.connections ?? '—'));
    setText($('#d-reason'), REASON_TEXT[a.reason] || a.reason || '—');
    setText($('#d-since'), fmtClock(a.since));
    tickNow();
  }

  function renderOffset() {
    setText($('#d-offset'), `${fmtOffset(clockOffsetMs())} (hub clock minus this computer's)`);
  }

  onTick((now) => {
    if (!agent) return;
    const a = agent;
    setText(timerEl, fmtDuration(now - a.since));
    if (a.status === 'ringing' && a.ring_expires_at) {
      const left = a.ring_expires_at - now;
      setText($('#ring-countdown'), fmtCountdown(left));
      const total = a.ring_expires_at - (a.call?.offered_at || a.since);
      $('#ring-progress').style.transform = `scaleX(${total > 0 ? Math.max(0, Math.min(1, left / total)) : 0})`;
    }
    if (a.status === 'on_call') {
      const start = a.call?.answered_at || a.since;
      setText($('#call-duration'), fmtDuration(now - start));
    }
    if (a.status === 'wrap_up') {
      if (a.wrap_up_expires_at) {
        const left = a.wrap_up_expires_at - now;
        setText($('#wrapup-countdown'), fmtCountdown(left));
        const total = a.wrap_up_expires_at - a.since;
        $('#wrapup-progress').style.transform = `scaleX(${total > 0 ? Math.max(0, Math.min(1, left / total)) : 0})`;
      } else {
        setText($('#wrapup-countdown'), '—');
      }
    }
  });

  // ----------------------------------------------------------------- actions
  async function act(what, msg, buttons = []) {
    for (const b of buttons) b.disabled = true;
    const reply = await socket.request(msg);
    for (const b of buttons) b.disabled = !socket.isOpen;
    if (reply.type === 'error') toastError(what, reply);
    return reply;
  }

  function setStatus(s) {
    const msg = { type: 'set_status', status: s };
    if (s === 'busy' || s === 'on_break') {
      const note = noteInput.value.trim().slice(0, 64);
      if (note) msg.note = note;
    }
    return act(`Could not set ${statusLabel(s)}`, msg);
  }

  btnConnect.addEventListener('click', () => {
    const id = agent?.call?.call_id;
    if (id) act('Could not connect the call', { type: 'accept_call', call_id: id }, [btnConnect, btnDecline]);
  });
  btnDecline.addEventListener('click', () => {
    const id = agent?.call?.call_id;
    if (id) act('Could not decline the call', { type: 'decline_call', call_id: id }, [btnConnect, btnDecline]);
  });
  btnDone.addEventListener('click', () => act('Could not end wrap-up', { type: 'end_wrap_up' }, [btnDone]));
  btnLogout.addEventListener('click', async () => {
    if (agent?.status === 'on_call') {
      toast('You will be logged out when this call ends.', { kind: 'info' });
    }
    await act('Could not log out', { type: 'logout' }, [btnLogout]);
  });

  function showLoggedOut(reason) {
    agent = null;
    setHidden(consoleEl, true);
    setHidden(btnLogout, true);
    setHidden(loggedOutEl, false);
    setText($('#logged-out-reason'), LOGOUT_TEXT[reason] || 'This session was closed by the hub.');
    loggedOutEl.dataset.reason = reason || '';
    document.title = `Logged out · ${baseTitle}`;
    document.body.dataset.status = 'logged_out';
    $('#btn-login-again').focus();
  }

  $('#btn-login-again').addEventListener('click', () => {
    loggedOut = null;
    setHidden(loggedOutEl, true);
    updateBanner('idle');
    socket.start();
  });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && agent) render(agent);
  });
}
