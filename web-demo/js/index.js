// Index page: links (keeping ?token= if present), status legend, hub health.
import { $, AGENT_ID_RE, api, el, pageUrl, toast } from './common.js';
import { ALL_STATUSES, STATUS_META, ensureSprite, statusChip } from './status.js';

ensureSprite();

for (const [id, path] of [
  ['#link-agent', 'agent.html'],
  ['#link-wallboard', 'wallboard.html'],
  ['#link-telephony', 'telephony.html'],
]) {
  $(id).href = pageUrl(path);
}

const last = localStorage.getItem('presence-hub.agent_id');
if (last) $('#index-agent-id').value = last;

$('#agent-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = $('#index-agent-id').value.trim();
  if (!AGENT_ID_RE.test(id)) {
    toast('Agent ids are 1 to 128 letters, digits or . _ @ -', { kind: 'error' });
    return;
  }
  location.assign(pageUrl('agent.html', { agent_id: id }));
});

$('#legend').replaceChildren(
  ...ALL_STATUSES.map((s) =>
    el('li', {}, statusChip(s), el('span', { class: 'small muted' }, ` ${STATUS_META[s].kind}: ${STATUS_META[s].hint}`)),
  ),
);

(async () => {
  const res = await api('healthz');
  $('#hub-health').textContent = res.ok ? 'Hub: healthy.' : `Hub health check: HTTP ${res.status || 'unreachable'}.`;
})();
