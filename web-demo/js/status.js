// Status names, labels, colours and icons shared by every page.
// Colour is never the only signal: every status has a text label and an icon of its own shape.

export const MANUAL_STATUSES = ['available', 'busy', 'on_break', 'offline'];
export const SYSTEM_STATUSES = ['ringing', 'on_call', 'wrap_up'];
// Display / sort order on the wallboard: who can take calls first, then who is on calls.
export const ALL_STATUSES = ['available', 'ringing', 'on_call', 'wrap_up', 'busy', 'on_break', 'offline'];

export const STATUS_META = {
  available: { label: 'Available', kind: 'manual', hint: 'Can receive inbound calls' },
  busy: { label: 'Busy', kind: 'manual', hint: 'At the desk, no inbound calls' },
  on_break: { label: 'On break', kind: 'manual', hint: 'Away from the desk' },
  offline: { label: 'Offline', kind: 'manual', hint: 'No inbound calls (outbound still possible)' },
  ringing: { label: 'Ringing', kind: 'system', hint: 'An inbound call is being offered' },
  on_call: { label: 'On call', kind: 'system', hint: 'Connected to a call' },
  wrap_up: { label: 'Wrap-up', kind: 'system', hint: 'After-call work' },
};

export const STATUS_ORDER = Object.fromEntries(ALL_STATUSES.map((s, i) => [s, i]));

export function statusLabel(status) {
  return STATUS_META[status]?.label ?? String(status ?? 'Unknown');
}

export function isManual(status) {
  return MANUAL_STATUSES.includes(status);
}

// One SVG symbol per status, each a different shape.
const ICONS = {
  available:
    '<circle cx="12" cy="12" r="10" fill="currentColor"/>' +
    '<path d="M7 12.5l3.2 3.2L17 9" fill="none" stroke="var(--icon-contrast,#fff)" stroke-width="2.6" stroke-linecap="round" stroke-linejoin="round"/>',
  busy:
    '<circle cx="12" cy="12" r="10" fill="currentColor"/>' +
    '<rect x="6" y="10.5" width="12" height="3" rx="1" fill="var(--icon-contrast,#fff)"/>',
  on_break:
    '<rect x="5" y="4" width="5" height="16" rx="1.5" fill="currentColor"/>' +
    '<rect x="14" y="4" width="5" height="16" rx="1.5" fill="currentColor"/>',
  offline:
    '<circle cx="12" cy="12" r="8.5" fill="none" stroke="currentColor" stroke-width="3"/>' +
    '<path d="M6 18L18 6" stroke="currentColor" stroke-width="3" stroke-linecap="round"/>',
  ringing:
    '<path d="M12 2.5a6.5 6.5 0 0 0-6.5 6.5v4.2L3.5 16.5h17l-2-3.3V9A6.5 6.5 0 0 0 12 2.5z" fill="currentColor"/>' +
    '<circle cx="12" cy="19.5" r="2.3" fill="currentColor"/>',
  on_call:
    '<path d="M6.6 10.8c1.4 2.8 3.8 5.1 6.6 6.6l2.2-2.2c.3-.3.7-.4 1-.2 1.1.4 2.3.6 3.6.6.6 0 1 .4 1 1V20c0 .6-.4 1-1 1C10.6 21 3 13.4 3 4c0-.6.4-1 1-1h3.5c.6 0 1 .4 1 1 0 1.3.2 2.5.6 3.6.1.3 0 .7-.2 1l-2.3 2.2z" fill="currentColor"/>',
  wrap_up:
    '<path d="M3 17.25V21h3.75L17.8 9.94l-3.75-3.75L3 17.25zM20.7 7.04a1 1 0 0 0 0-1.41l-2.34-2.34a1 1 0 0 0-1.41 0l-1.83 1.83 3.75 3.75 1.83-1.83z" fill="currentColor"/>',
  unknown:
    '<rect x="4" y="4" width="16" height="16" rx="3" fill="none" stroke="currentColor" stroke-width="2.5"/>',
  // Non-status icons
  inbound:
    '<path d="M19 5L8 16M8 8v8h8" fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" stroke-linejoin="round"/>',
  outbound:
    '<path d="M5 19L16 8M8 8h8v8" fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" stroke-linejoin="round"/>',
};

let spriteInjected = false;

/** Adds the hidden SVG sprite with one <symbol id="ico-NAME"> per icon to the document (once). */
export function ensureSprite() {
  if (spriteInjected) return;
  spriteInjected = true;
  const symbols = Object.entries(ICONS)
    .map(([name, body]) => `<symbol id="ico-${name}" viewBox="0 0 24 24">${body}</symbol>`)
    .join('');
  const holder = document.createElement('div');
  holder.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0" style="position:absolute" aria-hidden="true" focusable="false">${symbols}</svg>`;
  document.body.prepend(holder.firstChild);
}

export function iconName(status) {
  return ICONS[status] ? status : 'unknown';
}

/** An <svg> that shows one icon of the sprite. */
export function iconSvg(name, cls = 'icon') {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', cls);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `#ico-${ICONS[name] ? name : 'unknown'}`);
  svg.append(use);
  return svg;
}

/** A status chip: icon + label, coloured by the `st-STATUS` class. */
export function statusChip(status, { testid } = {}) {
  const chip = document.createElement('span');
  chip.className = 'status-chip';
  if (testid) chip.dataset.testid = testid;
  chip.append(iconSvg(iconName(status), 'icon status-icon'));
  const label = document.createElement('span');
  label.className = 'status-label';
  chip.append(label);
  setStatusChip(chip, status);
  return chip;
}

/** Updates a chip made by statusChip() in place (cheap: only touches what changed). */
export function setStatusChip(chip, status) {
  if (chip.dataset.status === status) return;
  if (chip.dataset.status) chip.classList.remove(`st-${chip.dataset.status}`);
  chip.classList.add(`st-${status}`);
  chip.dataset.status = status;
  chip.querySelector('use').setAttribute('href', `#ico-${iconName(status)}`);
  chip.querySelector('.status-label').textContent = statusLabel(status);
  chip.title = STATUS_META[status]?.hint ?? '';
}
