// End-to-end browser test of the web demo against the real hub binary, in system Chromium.
//
//   cargo build --bin presence-hub && (cd tests/browser && npm ci) && node tests/browser/run.mjs
//
// Env:
//   HUB_BIN     hub binary (default target/debug/presence-hub, relative to the repo root)
//   HUB_MOCK=1  use tests/browser/mock-hub.mjs instead (for working on the pages only)
//   HUB_WEB_DIR serve the pages from this directory (e.g. web-demo) instead of the built-in copy
//   CHROMIUM    browser binary (default /usr/bin/chromium); nothing is ever downloaded
//   SHOTS_DIR   where screenshots go (default target/browser-screenshots, a scratch directory)
//   UPDATE_SCREENSHOTS=1  write them to docs/screenshots instead: refreshes the committed ones
//   HEADFUL=1   show the browser (needs a display)
//
// Exit status: 0 pass, 1 an assertion failed, 2 setup problem (no hub binary, no browser...).
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');
const useMock = process.env.HUB_MOCK === '1';
const hubBin = path.resolve(repoRoot, process.env.HUB_BIN || 'target/debug/presence-hub');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
// The committed screenshots are refreshed only on request; a plain run (CI, the README's
// command) writes to a scratch directory and leaves the repository untouched.
const shotsDir = path.resolve(
  repoRoot,
  process.env.SHOTS_DIR ||
    (process.env.UPDATE_SCREENSHOTS === '1' ? 'docs/screenshots' : 'target/browser-screenshots'),
);
const hubLogPath = path.join(os.tmpdir(), `presence-hub-browser-test-${process.pid}.log`);
// A fresh database per run (kept across the hub restart inside the run, removed at the end),
// so no state leaks in from an earlier run or into the repository.
const hubDbPath = path.join(os.tmpdir(), `presence-hub-browser-test-${process.pid}.db`);
const removeDb = () => {
  for (const suffix of ['', '-wal', '-shm']) rmSync(hubDbPath + suffix, { force: true });
};
removeDb();
const WRAP_UP_SECS = 3;
const T = 10_000; // default wait for a UI assertion

class SetupError extends Error {}
class AssertionFailure extends Error {}

// ----------------------------------------------------------------------------- hub process

let hub = null;
let hubLog = null;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function hubEnv() {
  // Dev mode: make sure no secret leaks in from the environment.
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/SECRET|JWT|TOKEN/i.test(k)) delete env[k];
  env.RUST_LOG = env.RUST_LOG || 'info';
  env.NO_COLOR = '1';
  return env;
}

async function startHub(port) {
  if (!hubLog) hubLog = createWriteStream(hubLogPath, { flags: 'a' });
  const hubArgs = ['--listen', `127.0.0.1:${port}`, '--wrap-up-secs', String(WRAP_UP_SECS)];
  if (!useMock) hubArgs.push('--database', hubDbPath);
  // By default the pages built into the binary are tested; HUB_WEB_DIR=web-demo serves the
  // working copy instead (handy while editing the pages without rebuilding the hub).
  if (process.env.HUB_WEB_DIR && !useMock) hubArgs.push('--web-dir', path.resolve(repoRoot, process.env.HUB_WEB_DIR));
  const [cmd, args] = useMock ? [process.execPath, [path.join(here, 'mock-hub.mjs'), ...hubArgs]] : [hubBin, hubArgs];
  for (let attempt = 1; ; attempt++) {
    hubLog.write(`\n--- starting ${cmd} ${args.join(' ')} (attempt ${attempt})\n`);
    const proc = spawn(cmd, args, { cwd: repoRoot, env: hubEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout.pipe(hubLog, { end: false });
    proc.stderr.pipe(hubLog, { end: false });
    proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    proc.on('error', (e) => hubLog.write(`spawn error: ${e.message}\n`));
    hub = proc;
    const ok = await waitHealthy(port, proc, 30_000);
    if (ok) return proc;
    await stopHub();
    if (attempt >= 3) throw new SetupError(`the hub did not answer GET /healthz on port ${port}; see ${hubLogPath}`);
    await sleep(1000); // e.g. the port is not free yet after a restart
  }
}

async function waitHealthy(port, proc, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  proc.exited.then(() => (exited = true));
  while (Date.now() < deadline && !exited) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (res.status === 200) return true;
    } catch {
      /* not up yet */
    }
    await sleep(100);
  }
  return false;
}

async function stopHub(signal = 'SIGTERM') {
  const proc = hub;
  hub = null;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill(signal);
  const done = await Promise.race([proc.exited, sleep(8000).then(() => null)]);
  if (!done) {
    proc.kill('SIGKILL');
    await proc.exited;
  }
}

function hubLogTail(lines = 40) {
  let all;
  try {
    all = readFileSync(hubLogPath, 'utf8').trimEnd().split('\n');
  } catch {
    return '(no hub log)';
  }
  // Panics first (their backtraces would push everything else out of the tail).
  const panics = [];
  all.forEach((l, i) => {
    if (/panicked at/.test(l)) panics.push(`HUB PANIC: ${l.trim()} ${all[i + 1]?.trim() ?? ''}`);
  });
  const tail = all.filter((l) => !/^\s+(\d+: |at )/.test(l)).slice(-lines);
  return [...panics, ...tail].join('\n');
}

// ----------------------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let currentStep = '';

function log(...a) {
  console.log(...a);
}

async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  await fn();
  log(`  ok  ${name} (${Date.now() - t0} ms)`);
}

/** Waits until an attribute of the first element matching `sel` equals `want`. */
let expectAttr = async function (page, sel, attr, want, what, timeout = T) {
  try {
    await page.waitForFunction(
      ([s, a, w]) => {
        const e = document.querySelector(s);
        return !!e && e.getAttribute(a) === w;
      },
      [sel, attr, String(want)],
      { timeout, polling: 100 },
    );
  } catch {
    const got = await page
      .evaluate(([s, a]) => document.querySelector(s)?.getAttribute(a) ?? '<no such element>', [sel, attr])
      .catch(() => '<page gone>');
    throw new AssertionFailure(`${what}: expected ${sel} [${attr}] = "${want}", got "${got}" (page ${page.url()})`);
  }
}

let expectVisible = async function (page, sel, what, visible = true, timeout = T) {
  try {
    await page.locator(sel).first().waitFor({ state: visible ? 'visible' : 'hidden', timeout });
  } catch {
    throw new AssertionFailure(`${what}: expected ${sel} to be ${visible ? 'visible' : 'hidden'} (page ${page.url()})`);
  }
}

let expectText = async function (page, sel, re, what, timeout = T) {
  try {
    await page.waitForFunction(
      ([s, src, flags]) => {
        const e = document.querySelector(s);
        return !!e && new RegExp(src, flags).test(e.textContent);
      },
      [sel, re.source, re.flags],
      { timeout, polling: 100 },
    );
  } catch {
    const got = await page.evaluate((s) => document.querySelector(s)?.textContent ?? '<no such element>', sel).catch(() => '<page gone>');
    throw new AssertionFailure(`${what}: expected ${sel} text to match ${re}, got "${got}"`);
  }
}

let expectCount = async function (page, sel, n, what, timeout = T) {
  try {
    await page.waitForFunction(([s, k]) => document.querySelectorAll(s).length >= k, [sel, n], { timeout, polling: 100 });
  } catch {
    const got = await page.evaluate((s) => document.querySelectorAll(s).length, sel).catch(() => -1);
    throw new AssertionFailure(`${what}: expected at least ${n} of ${sel}, found ${got}`);
  }
}

// VERBOSE=1 prints every check with its duration.
if (process.env.VERBOSE === '1') {
  const wrap = (fn, name) =>
    async function (...a) {
      const t0 = Date.now();
      try {
        return await fn(...a);
      } finally {
        log(`      · ${name} ${a.slice(1, -1).join(' ')} ${Date.now() - t0} ms`);
      }
    };
  expectAttr = wrap(expectAttr, 'attr');
  expectVisible = wrap(expectVisible, 'visible');
  expectText = wrap(expectText, 'text');
  expectCount = wrap(expectCount, 'count');
}

/** Clicks like a user would: the page comes to the front first (background tabs render at ~1 fps). */
async function click(page, sel) {
  await page.bringToFront();
  await page.click(sel);
}

const agentStatus = (page, status, what, timeout = T) =>
  expectAttr(page, '[data-testid="agent-status"]', 'data-status', status, what, timeout);
const wallStatus = (page, id, status, what) =>
  expectAttr(page, `.wb-row[data-agent-id="${id}"] [data-testid="wb-status"]`, 'data-status', status, what);
const connected = (page, what, timeout = T) => expectAttr(page, '[data-testid="connection-pill"]', 'data-state', 'open', what, timeout);

async function shot(page, name) {
  mkdirSync(shotsDir, { recursive: true });
  await page.bringToFront();
  await page.waitForTimeout(250); // let a background tab render its latest state
  await page.screenshot({ path: path.join(shotsDir, name) });
  log(`      screenshot ${path.relative(repoRoot, path.join(shotsDir, name))}`);
}

// ----------------------------------------------------------------------------- scenario

async function scenario(browser, base, port) {
  const pageErrors = [];
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const watch = (page, label) => {
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/WebSocket connection|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) {
        log(`      [${label} console.error] ${m.text()}`);
      }
    });
    return page;
  };
  const open = async (label, url) => {
    const p = watch(await ctx.newPage(), label);
    await p.goto(base + url);
    return p;
  };
  const A = 'alice';

  let wall, tab1, tab2, sim, index;

  await step('index page lists the three pages', async () => {
    index = await open('index', '/');
    await expectVisible(index, '[data-testid="link-agent"]', 'agent link');
    await expectVisible(index, '[data-testid="link-wallboard"]', 'wallboard link');
    await expectVisible(index, '[data-testid="link-telephony"]', 'telephony link');
    await expectText(index, '[data-testid="hub-health"]', /healthy/, 'index shows hub health');
    await shot(index, 'index.png');
  });

  await step('wallboard connects and subscribes', async () => {
    wall = await open('wallboard', '/wallboard.html');
    await connected(wall, 'wallboard connection');
    await expectAttr(wall, '[data-testid="wb-sync"]', 'data-resyncs', '0', 'no resync yet');
  });

  await step('agent A logs in on two tabs: offline everywhere', async () => {
    tab1 = await open('agent tab 1', `/agent.html?agent_id=${A}`);
    tab2 = await open('agent tab 2', `/agent.html?agent_id=${A}`);
    await connected(tab1, 'tab 1 connection');
    await connected(tab2, 'tab 2 connection');
    await agentStatus(tab1, 'offline', 'tab 1 after login');
    await agentStatus(tab2, 'offline', 'tab 2 after login');
    await expectText(tab1, '[data-testid="connections"]', /^2$/, 'tab 1 sees two open tabs');
    await wallStatus(wall, A, 'offline', 'wallboard after login');
    await expectText(tab1, '[data-testid="status-timer"]', /^\d+:\d\d$/, 'time in status is shown');
  });

  await step('A sets available: both tabs and the wallboard follow', async () => {
    await click(tab1, '[data-testid="status-btn-available"]');
    await agentStatus(tab1, 'available', 'tab 1 available');
    await agentStatus(tab2, 'available', 'tab 2 available (multi-tab sync)');
    await expectAttr(tab2, '[data-testid="status-btn-available"]', 'aria-pressed', 'true', 'picker shows current status');
    await wallStatus(wall, A, 'available', 'wallboard available');
    await expectAttr(wall, '[data-testid="longest-available"]', 'data-agent-id', A, 'longest available agent');
  });

  await step('some more agents for the wallboard', async () => {
    const others = [
      ['bob', 'available', ''],
      ['carol', 'busy', 'coaching'],
      ['dave', 'on_break', 'lunch'],
    ];
    for (const [id, status, note] of others) {
      const p = await open(`agent ${id}`, `/agent.html?agent_id=${id}`);
      await connected(p, `${id} connection`);
      if (note) await p.fill('[data-testid="status-note"]', note);
      await click(p, `[data-testid="status-btn-${status}"]`);
      await agentStatus(p, status, `${id} ${status}`);
      await wallStatus(wall, id, status, `wallboard shows ${id} ${status}`);
    }
    await expectText(wall, '.wb-row[data-agent-id="dave"] [data-testid="wb-note"]', /lunch/, 'wallboard shows the note');
    await expectText(wall, '[data-testid="count-available"] .count-n', /^2$/, 'two available agents counted');
  });

  await step('telephony simulator connects; "longest available" picks A', async () => {
    sim = await open('simulator', '/telephony.html');
    await connected(sim, 'simulator connection');
    await sim.fill('[data-testid="sim-ring-group"]', '');
    await click(sim, '[data-testid="sim-pick"]');
    try {
      await sim.waitForFunction(() => document.querySelector('[data-testid="sim-agent-id"]').value !== '', null, { timeout: T });
    } catch {
      throw new AssertionFailure('GET /api/v1/available gave no agent to the simulator');
    }
    const picked = await sim.inputValue('[data-testid="sim-agent-id"]');
    if (picked !== A) throw new AssertionFailure(`longest available should be ${A} (available first), simulator picked "${picked}"`);
  });

  let callId;
  await step('simulator offers a call: both tabs ring', async () => {
    await sim.fill('[data-testid="sim-agent-id"]', A);
    await sim.fill('[data-testid="sim-ring-group"]', 'support');
    await sim.fill('[data-testid="sim-from"]', '+15551234567');
    await click(sim, '[data-testid="sim-offer"]');
    await expectCount(sim, '#sim-log li[data-kind="reply"][data-reply-to="call_offered"][data-outcome="ok"]', 1, 'hub accepted the offer');
    callId = await sim.inputValue('[data-testid="sim-call-id"]');
    for (const [p, n] of [
      [tab1, 'tab 1'],
      [tab2, 'tab 2'],
    ]) {
      await agentStatus(p, 'ringing', `${n} ringing`);
      await expectVisible(p, '[data-testid="ringing-card"]', `${n} shows the incoming-call card`);
      await expectText(p, '[data-testid="ring-from"]', /\+15551234567/, `${n} shows the caller`);
      await expectText(p, '[data-testid="ring-group"]', /support/, `${n} shows the ring group`);
      await expectText(p, '[data-testid="ring-countdown"]', /^0:[0-3]\d$/, `${n} shows the ring countdown`);
    }
    await wallStatus(wall, A, 'ringing', 'wallboard ringing');
    await shot(tab1, 'agent-ringing.png');
  });

  await step('Connect on tab 2: on_call on both tabs and the wallboard', async () => {
    await click(tab2, '[data-testid="btn-connect"]');
    await agentStatus(tab1, 'on_call', 'tab 1 on call');
    await agentStatus(tab2, 'on_call', 'tab 2 on call');
    await expectVisible(tab1, '[data-testid="oncall-card"]', 'tab 1 on-call card');
    await expectVisible(tab1, '[data-testid="ringing-card"]', 'ringing card gone', false);
    await wallStatus(wall, A, 'on_call', 'wallboard on call');
    await expectCount(sim, `#sim-log li[data-kind="notification"][data-type="call_accepted"][data-call-id="${callId}"]`, 1, 'adapter got call_accepted');
    await expectText(tab1, '[data-testid="call-duration"]', /^0:0[1-9]$/, 'call duration ticks', 5000);
    await shot(tab1, 'agent-on-call.png');
    await wall.bringToFront();
    await expectText(wall, `.wb-row[data-agent-id="${A}"] [data-testid="wb-call"]`, /\+15551234567/, 'wallboard shows the current call');
    await shot(wall, 'wallboard.png');
  });

  await step(`simulator ends the call: wrap-up (${WRAP_UP_SECS} s), then available`, async () => {
    await click(sim, '[data-testid="sim-end"]');
    await agentStatus(tab1, 'wrap_up', 'tab 1 wrap-up');
    await agentStatus(tab2, 'wrap_up', 'tab 2 wrap-up');
    await expectVisible(tab2, '[data-testid="wrapup-card"]', 'wrap-up card');
    await expectText(tab2, '[data-testid="wrapup-countdown"]', /^0:0[0-3]$/, 'wrap-up countdown');
    await wallStatus(wall, A, 'wrap_up', 'wallboard wrap-up');
    await agentStatus(tab1, 'available', 'back to available after wrap-up', (WRAP_UP_SECS + 5) * 1000);
    await agentStatus(tab2, 'available', 'tab 2 back to available');
    await wallStatus(wall, A, 'available', 'wallboard back to available');
  });

  await step('a second call, declined: busy', async () => {
    await click(sim, '[data-testid="sim-offer"]');
    await agentStatus(tab1, 'ringing', 'tab 1 ringing again');
    await agentStatus(tab2, 'ringing', 'tab 2 ringing again');
    const call2 = await sim.inputValue('[data-testid="sim-call-id"]');
    await click(tab1, '[data-testid="btn-decline"]');
    await agentStatus(tab1, 'busy', 'tab 1 busy after decline');
    await agentStatus(tab2, 'busy', 'tab 2 busy after decline');
    await wallStatus(wall, A, 'busy', 'wallboard busy after decline');
    await expectCount(
      sim,
      `#sim-log li[data-kind="notification"][data-type="call_declined"][data-call-id="${call2}"]`,
      1,
      'adapter got call_declined',
    );
    const declined = await sim
      .locator(`#sim-log li[data-kind="notification"][data-type="call_declined"][data-call-id="${call2}"] .log-json`)
      .first()
      .textContent();
    if (!/"reason":"declined"/.test(declined)) throw new AssertionFailure(`call_declined should carry reason "declined": ${declined}`);
    await shot(sim, 'telephony.png');
  });

  await step('an offer to a busy agent is refused (not_available)', async () => {
    await click(sim, '[data-testid="sim-offer"]');
    await expectCount(sim, '#sim-log li[data-kind="reply"][data-reply-to="call_offered"][data-outcome="rejected"]', 1, 'offer to busy agent rejected');
    await agentStatus(tab1, 'busy', 'still busy');
  });

  await step('outbound call; on break picked during it is queued; Done ends wrap-up', async () => {
    await click(sim, '[data-testid="sim-outbound"]');
    await agentStatus(tab1, 'on_call', 'outbound call on tab 1');
    await expectText(tab1, '[data-testid="call-direction"]', /Outbound/, 'outbound direction shown');
    await tab1.fill('[data-testid="status-note"]', 'lunch');
    await click(tab1, '[data-testid="status-btn-on_break"]');
    await expectVisible(tab2, '[data-testid="queued-status"]', 'queued status shown on tab 2');
    await expectAttr(tab2, '[data-testid="queued-status"]', 'data-status', 'on_break', 'queued on_break');
    await agentStatus(tab2, 'on_call', 'still on call while queued');
    await click(sim, '[data-testid="sim-end"]');
    await agentStatus(tab2, 'wrap_up', 'wrap-up after outbound');
    await click(tab2, '[data-testid="btn-done"]');
    await agentStatus(tab1, 'on_break', 'Done returns to the queued status');
    await agentStatus(tab2, 'on_break', 'tab 2 on break');
    await wallStatus(wall, A, 'on_break', 'wallboard on break');
    await expectText(wall, `.wb-row[data-agent-id="${A}"] [data-testid="wb-note"]`, /lunch/, 'wallboard shows the break note');
  });

  await step('reload keeps the status', async () => {
    await tab2.reload();
    await connected(tab2, 'tab 2 reconnects after reload');
    await agentStatus(tab2, 'on_break', 'status survives a reload');
    await expectText(tab1, '[data-testid="connections"]', /^2$/, 'two tabs again after the reload');
  });

  await step('supervisor sets A available from the wallboard', async () => {
    await click(wall, `.wb-row[data-agent-id="${A}"] [data-testid="wb-manage"]`);
    await expectVisible(wall, '[data-testid="admin-dialog"]', 'admin dialog opens');
    await click(wall, '[data-testid="admin-set-available"]');
    await agentStatus(tab1, 'available', 'admin set status reaches tab 1');
    await agentStatus(tab2, 'available', 'admin set status reaches tab 2');
    await wallStatus(wall, A, 'available', 'wallboard available after admin action');
    await expectVisible(wall, '[data-testid="admin-dialog"]', 'dialog closes', false);
  });

  await step('wallboard connection drop: resume replays what it missed (recovered, no resync)', async () => {
    const sync = async () =>
      wall.evaluate(() => {
        const d = document.querySelector('[data-testid="wb-sync"]').dataset;
        return { resyncs: Number(d.resyncs), recoveries: Number(d.recoveries) };
      });
    const before = await sync();
    // Cut the wallboard's socket, and change A while it is away.
    await wall.evaluate(() => window.presenceDemo.socket.simulateDrop());
    await click(tab1, '[data-testid="status-btn-busy"]');
    await agentStatus(tab1, 'busy', 'A busy during the wallboard gap');
    await connected(wall, 'wallboard reconnects after the drop');
    try {
      await wall.waitForFunction((n) => Number(document.querySelector('[data-testid="wb-sync"]').dataset.recoveries) > n, before.recoveries, {
        timeout: T,
      });
    } catch {
      throw new AssertionFailure(`resume after a drop should answer recovered:true (sync state before ${JSON.stringify(before)}, now ${JSON.stringify(await sync())})`);
    }
    await wallStatus(wall, A, 'busy', 'wallboard caught up with the change made during the gap');
    const after = await sync();
    if (after.resyncs !== before.resyncs) throw new AssertionFailure(`a recovered resume must not take a new snapshot: ${JSON.stringify(after)}`);
    // Live events keep flowing after the resume.
    await click(tab1, '[data-testid="status-btn-available"]');
    await agentStatus(tab2, 'available', 'A available again');
    await wallStatus(wall, A, 'available', 'wallboard gets live events after the resume');
    await click(tab1, '[data-testid="status-btn-busy"]');
    await wallStatus(wall, A, 'busy', 'wallboard still live');
    await click(tab1, '[data-testid="status-btn-available"]');
    await wallStatus(wall, A, 'available', 'wallboard still live (2)');
  });

  await step('hub restart: the wallboard reconnects and resyncs (new epoch)', async () => {
    const before = Number(await wall.getAttribute('[data-testid="wb-sync"]', 'data-resyncs'));
    const stopped = hub;
    await stopHub('SIGTERM');
    const exit = await stopped.exited;
    log(`      hub exited with ${JSON.stringify(exit)}`);
    try {
      await wall.waitForFunction(() => document.querySelector('[data-testid="connection-pill"]').dataset.state !== 'open', null, {
        timeout: T,
      });
    } catch {
      throw new AssertionFailure('the wallboard did not notice that the hub went away');
    }
    await expectVisible(wall, '[data-testid="connection-banner"]', 'wallboard shows the connection banner');
    await expectVisible(tab1, '[data-testid="connection-banner"]', 'agent tab shows the connection banner');
    await startHub(port);
    await connected(wall, 'wallboard reconnects', 30_000);
    await wall.waitForFunction(
      (n) => Number(document.querySelector('[data-testid="wb-sync"]').dataset.resyncs) > n,
      before,
      { timeout: T },
    ).catch(() => {
      throw new AssertionFailure('after the restart the wallboard did not resync (expected resume -> recovered:false + snapshot)');
    });
    await expectVisible(wall, '[data-testid="resynced-indicator"]', 'resynced indicator shown');
    const n = await wall.getAttribute('[data-testid="resynced-indicator"]', 'data-resynced');
    if (!(Number(n) >= 1)) throw new AssertionFailure(`data-resynced should be >= 1, is ${n}`);
    await connected(tab1, 'agent tab 1 reconnects', 30_000);
    await connected(tab2, 'agent tab 2 reconnects', 30_000);
    await connected(sim, 'simulator reconnects', 30_000);
    await expectCount(wall, `.wb-row[data-agent-id="${A}"]`, 1, 'A is on the wallboard after the resync');
  });

  await step('logout: both tabs show "Logged out" and stay logged out', async () => {
    await click(tab1, '[data-testid="btn-logout"]');
    await expectVisible(tab1, '[data-testid="logged-out"]', 'tab 1 logged out');
    await expectVisible(tab2, '[data-testid="logged-out"]', 'tab 2 logged out (other tab)');
    await wallStatus(wall, A, 'offline', 'wallboard offline after logout');
    await sleep(2500); // no automatic reconnect (that would log the agent in again)
    await expectVisible(tab2, '[data-testid="logged-out"]', 'tab 2 still logged out');
    await expectText(wall, `.wb-row[data-agent-id="${A}"] [data-testid="wb-conn"]`, /—/, 'no tabs connected after logout');
    await click(tab2, '[data-testid="btn-login-again"]');
    await connected(tab2, 'log in again');
    await agentStatus(tab2, 'offline', 'offline after logging in again');
  });

  await step('wallboard with 2,000 agents (synthetic, no hub) renders and keeps ticking', async () => {
    const perfPage = await open('wallboard demo', '/wallboard.html?demo=2000&rate=200');
    await expectCount(perfPage, '.wb-row', 2000, 'all 2,000 rows rendered', 20_000);
    await perfPage.waitForTimeout(4000);
    const perf = await perfPage.evaluate(() => window.__wallboardPerf);
    log(`      ${JSON.stringify(perf)}`);
    if (!perf || perf.frames < 20) throw new AssertionFailure(`the 2,000-agent wallboard froze: ${JSON.stringify(perf)}`);
    await perfPage.close();
  });

  if (pageErrors.length) throw new AssertionFailure(`uncaught errors in the pages:\n  ${pageErrors.join('\n  ')}`);
  await ctx.close();
}

// ----------------------------------------------------------------------------- main

async function main() {
  if (!useMock && !existsSync(hubBin)) throw new SetupError(`hub binary not found: ${hubBin} (run cargo build, or set HUB_BIN)`);
  if (!existsSync(chromiumPath)) throw new SetupError(`Chromium not found at ${chromiumPath} (apt-get install -y chromium, or set CHROMIUM)`);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  log(`presence-hub browser test: ${useMock ? 'MOCK hub' : hubBin} on ${base}, Chromium ${chromiumPath}`);
  await startHub(port);
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: process.env.HEADFUL !== '1',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ].filter((a) => a !== '--headless' || process.env.HEADFUL !== '1'),
  });
  try {
    await scenario(browser, base, port);
  } catch (e) {
    // Screenshots of every open page help to see what went wrong.
    const dir = path.join(os.tmpdir(), `presence-hub-browser-test-failure-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    let i = 0;
    for (const ctx of browser.contexts()) {
      for (const page of ctx.pages()) {
        const name = `${++i}-${new URL(page.url()).pathname.replace(/\W+/g, '_')}.png`;
        await page.screenshot({ path: path.join(dir, name) }).catch(() => {});
      }
    }
    console.error(`screenshots of the open pages: ${dir}`);
    throw e;
  } finally {
    await browser.close().catch(() => {});
  }
}

let exitCode = 0;
const cleanup = async () => {
  await stopHub().catch(() => {});
  hubLog?.end();
  removeDb();
};
for (const [sig, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(code);
  });
}

try {
  await main();
  log('PASS: browser test');
} catch (e) {
  if (e instanceof SetupError) {
    console.error(`SETUP ERROR: ${e.message}`);
    exitCode = 2;
  } else {
    const msg = e instanceof AssertionFailure ? e.message : e?.stack || String(e);
    console.error(`FAIL in step "${currentStep}": ${msg}`);
    console.error(`--- last lines of the hub log (${hubLogPath}):\n${hubLogTail()}`);
    exitCode = 1;
  }
} finally {
  await cleanup();
}
process.exit(exitCode);
