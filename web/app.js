// herald demo page: sign in as a user, watch this tab's socket, send
// notifications as a backend would, and watch the ring the dispatcher routes
// by. Plain ES module, no build step, no dependencies beyond herald.js.
//
// Everything is per tab: the only thing stored is herald.js's cursor, in
// sessionStorage under a per-user key, so two tabs are two devices.
//
// URL parameters (optional):
//   ?user=alice   sign in as alice on load (the page keeps it in the URL, so
//                 a reload resumes the same device from its cursor)
//   ?base=URL     a dispatcher on another origin (development only: only
//                 /v1/connect answers cross-origin requests)

import { connect } from './herald.js';

const params = new URLSearchParams(location.search);
const BASE = (params.get('base') || '').replace(/\/+$/, '');

const POLL_MS = 1000; // GET /v1/cluster interval
const POLL_TIMEOUT_MS = 4000;
const TOAST_MS = 3500;
const MAX_NOTIFICATIONS = 1000; // items kept in the list (oldest dropped)
const MAX_EVENTS = 200;
const MAX_FRAMES = 10000; // raw frames kept in window.heraldFrames

// Gateway colours: gw-1 gets the first, gw-2 the second, …; IDs without a
// trailing number are hashed. Distinct on light and dark backgrounds.
const PALETTE = ['#4f46e5', '#0ea5a4', '#f59e0b', '#e11d74', '#16a34a', '#8b5cf6', '#ef4444', '#0284c7', '#84cc16', '#f97316'];

// What each WebSocket close code means (DESIGN.md, Wire formats).
const CLOSE_CODES = {
  1000: 'closed',
  1001: 'going away',
  1006: 'connection lost',
  1008: 'bad frame',
  1009: 'frame too big',
  1011: 'server error',
  1012: 'service restart',
  1013: 'try again later',
  4001: 'moved',
  4002: 'auth timeout',
  4003: 'unauthorized',
  4004: 'token expired',
  4008: 'slow consumer',
  4009: 'too many sockets',
};

// ---- elements ----

const $ = id => document.getElementById(id);
const ui = {
  user: $('user'), signinForm: $('signin-form'), signin: $('signin'), signout: $('signout'),
  signinError: $('signin-error'), whoami: $('whoami'),
  status: $('status'), statusDetail: $('status-detail'), gateway: $('gateway'), gatewaySwatch: $('gateway-swatch'),
  cursor: $('cursor'), attempts: $('attempts'), reconnects: $('reconnects'), moves: $('moves'),
  sendForm: $('send-form'), to: $('to'), message: $('message'), send: $('send'), broadcast: $('broadcast'), response: $('response'),
  notifications: $('notifications'), received: $('received'), clear: $('clear'), toast: $('toast'),
  ring: $('ring'), ringArcs: $('ring-arcs'), ringTicks: $('ring-ticks'), markerLayer: $('ring-marker-layer'),
  ringC1: $('ring-c1'), ringC2: $('ring-c2'), ringC3: $('ring-c3'), ringId: $('ring-id'), degraded: $('degraded'),
  members: $('members'), ringNote: $('ring-note'), clusterError: $('cluster-error'), clusterCard: $('cluster-card'),
  events: $('events'),
  killCmd: $('kill-cmd'), copyKill: $('copy-kill'),
  openDevice: $('open-device'), openDeviceUser: $('open-device-user'), openDeviceSep: $('open-device-sep'), openOther: $('open-other'),
};

// ---- state ----

const state = {
  user: null, // the signed-in user ID
  client: null, // the herald.js client of this user
  gen: 0, // bumped on every sign-in/out, so late answers of an old one are ignored
  status: null, // the last status event
  received: 0, // notifications shown since sign-in
  live: false, // this socket has caught up: its notifications are live, not backlog
  apiKey: null, // a promise of the dev API key
};

// Every raw server frame this tab's client received, before herald.js's
// dedupe: the browser tests compare it with what the page shows.
window.heraldFrames = [];

// ---- small helpers ----

/** el builds an element: el('li', {class: 'x', dataset: {seq: 1}}, 'text', child). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  e.append(...children.filter(c => c !== null && c !== undefined && c !== false).map(c => (typeof c === 'number' ? String(c) : c)));
  return e;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  setAttrs(e, attrs);
  e.append(...children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'style' && typeof v === 'object') for (const [p, pv] of Object.entries(v)) e.style.setProperty(p, pv);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
}

const pad = (n, w = 2) => String(n).padStart(w, '0');
function clock(d = new Date()) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (!(ms >= 0)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

function closeText(code, reason) {
  const name = CLOSE_CODES[code];
  const c = code ? `${code}${name ? ` ${name}` : ''}` : '';
  if (c && reason) return `${c}: ${reason}`;
  return c || reason || '';
}

function shortFP(fp) {
  return fp ? fp.slice(0, 8) : '';
}

function errText(err) {
  return (err && err.message) || String(err);
}

/** One line of the data of a notification, for toasts and logs. */
function summary(data, max = 120) {
  let s = isTextOnly(data) ? data.text : typeof data === 'string' ? data : JSON.stringify(data);
  if (s === undefined) s = String(data);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function isTextOnly(data) {
  return data !== null && typeof data === 'object' && !Array.isArray(data) && typeof data.text === 'string' && Object.keys(data).length === 1;
}

function colorOf(gateway) {
  if (!gateway) return 'var(--idle)';
  const m = /(\d+)$/.exec(gateway);
  if (m && Number(m[1]) >= 1) return PALETTE[(Number(m[1]) - 1) % PALETTE.length];
  let h = 2166136261; // FNV-1a
  for (let i = 0; i < gateway.length; i++) h = Math.imul(h ^ gateway.charCodeAt(i), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}

// validUser mirrors the server's rule: 1..256 bytes of UTF-8, no control characters.
function validUser(u) {
  if (!u) return 'enter a user ID';
  if (new TextEncoder().encode(u).length > 256) return 'a user ID is at most 256 bytes';
  if (/[\u0000-\u001f\u007f-\u009f]/.test(u)) return 'a user ID has no control characters';
  return '';
}

/** api calls the dispatcher: {status, body} or throws on a network error. */
async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(BASE + path, init);
  let json = null;
  try {
    json = await res.json();
  } catch {
    // Not JSON: the status says enough.
  }
  return { status: res.status, body: json };
}

function apiError(r) {
  const e = r.body && r.body.error;
  return e ? `${e.code}: ${e.message}` : `HTTP ${r.status}`;
}

// ---- event log ----

/** logEvent adds a line to #events (newest first). kind styles it. */
function logEvent(text, kind = 'info') {
  const li = el('li', { dataset: { type: kind } }, el('time', {}, clock()), el('span', { class: 'ev-text' }, text));
  ui.events.prepend(li);
  while (ui.events.children.length > MAX_EVENTS) ui.events.lastElementChild.remove();
}

// ---- sign in / out ----

function suggestName() {
  return `user-${1000 + Math.floor(Math.random() * 9000)}`;
}

async function fetchToken(user) {
  const r = await api('POST', '/v1/dev/token', { user });
  if (r.status === 404) throw new Error('this dispatcher hands out no dev tokens (is it in dev mode?)');
  if (r.status !== 200 || !r.body || !r.body.token) throw new Error(`token: ${apiError(r)}`);
  const exp = Date.parse(r.body.expires);
  return { token: r.body.token, expires: Number.isFinite(exp) ? exp : Date.now() + 5 * 60000 };
}

/**
 * makeTokenProvider hands herald.js the user's token, fetching a fresh one
 * when it is within a minute of expiring (herald.js asks again after close
 * 4004 and after a 401 from /v1/connect).
 */
function makeTokenProvider(user, first) {
  let cached = first;
  const provider = async () => {
    if (!cached || cached.expires - Date.now() < 60000) cached = await fetchToken(user);
    return cached.token;
  };
  provider.invalidate = () => {
    cached = null;
  };
  return provider;
}

async function signIn(raw) {
  const user = raw.trim() || ui.user.placeholder;
  const invalid = validUser(user);
  if (invalid) return showSigninError(invalid);
  // Already connected (or trying) as this user: nothing to do.
  if (user === state.user && state.client && (!state.status || state.status.state !== 'stopped')) return;

  const gen = ++state.gen;
  showSigninError('');
  ui.signin.setAttribute('aria-busy', 'true');
  let first;
  try {
    first = await fetchToken(user);
  } catch (err) {
    if (gen === state.gen) showSigninError(`Could not sign in: ${errText(err)}`);
    return;
  } finally {
    if (gen === state.gen) ui.signin.removeAttribute('aria-busy');
  }
  if (gen !== state.gen) return; // another sign-in or a sign-out came first

  const switching = state.user !== user;
  stopClient();
  const previous = state.user;
  state.user = user;
  if (switching) {
    resetDevice();
    cluster.user = null; // until a poll answers for the new user
  }
  // #to follows the signed-in user unless it was set to someone else.
  if (!ui.to.value.trim() || ui.to.value.trim() === previous) ui.to.value = user;
  ui.user.value = user;
  setURLUser(user);
  renderIdentity();
  logEvent(`signed in as ${user}`, 'info');
  startClient(user, makeTokenProvider(user, first));
  renderMarker(); // the ring marker waits for the next poll with ?user=
  pollSoon();
}

function signOut() {
  if (!state.user) return;
  const user = state.user;
  state.gen++;
  stopClient();
  state.user = null;
  cluster.user = null;
  resetDevice();
  setURLUser(null);
  renderIdentity();
  renderStatus(null);
  renderMarker();
  logEvent(`signed out ${user}`, 'info');
  pollSoon();
}

/** stopClient closes the current client; its late events are ignored. */
function stopClient() {
  const c = state.client;
  state.client = null;
  state.status = null;
  if (c) c.close();
}

/** resetDevice clears what belonged to the previous user of this tab. */
function resetDevice() {
  ui.notifications.replaceChildren();
  state.received = 0;
  ui.received.textContent = '0';
  window.heraldFrames = [];
  hideToast();
}

function startClient(user, tokenProvider) {
  // A new tab starts with the user's last 10 notifications, not the whole
  // retained log; a reload resumes from its cursor.
  const client = connect({ baseURL: BASE, tokenProvider, storageKey: `herald-cursor:${user}`, start: 'last', last: 10 });
  state.live = false;
  state.client = client;
  // Listeners ignore a client that is no longer this tab's (signed out or
  // switched user): close() still reports 'stopped' afterwards.
  const mine = fn => ev => {
    if (state.client === client) fn(ev);
  };
  client.onframe = f => {
    if (state.client !== client) return;
    const frames = window.heraldFrames;
    frames.push(f);
    if (frames.length > MAX_FRAMES) frames.splice(0, frames.length - MAX_FRAMES);
  };
  client.on('status', mine(s => onStatus(s, tokenProvider)));
  client.on('notification', mine(onNotification));
  client.on('gap', mine(onGap));
  client.on('broadcast', mine(onBroadcast));
  client.on('caught_up', mine(onCaughtUp));
}

function showSigninError(msg) {
  ui.signinError.textContent = msg;
  ui.signinError.hidden = !msg;
}

// The signed-in user lives in the URL (not in storage), so a reload
// resumes the same device and a duplicated tab is another device of it.
function setURLUser(user) {
  const p = new URLSearchParams(location.search);
  if (user) p.set('user', user);
  else p.delete('user');
  const q = p.toString();
  history.replaceState(null, '', q ? `?${q}` : location.pathname);
}

function renderIdentity() {
  const user = state.user;
  ui.whoami.textContent = user ? user : 'not signed in';
  ui.whoami.dataset.signedIn = String(Boolean(user));
  ui.whoami.title = user ? `Signed in as ${user}` : '';
  ui.signin.textContent = user ? 'Switch user' : 'Sign in';
  ui.signout.hidden = !user;
  ui.notifications.dataset.signedIn = String(Boolean(user));
  document.title = user ? `${user} · herald demo` : 'herald · live demo';
  ui.openDevice.hidden = ui.openDeviceSep.hidden = !user;
  if (user) {
    const p = new URLSearchParams(location.search);
    p.set('user', user);
    ui.openDevice.href = `?${p}`;
    ui.openDeviceUser.textContent = user;
  }
  const other = new URLSearchParams(location.search);
  other.delete('user');
  ui.openOther.href = other.toString() ? `?${other}` : location.pathname;
  if (!user) ui.user.placeholder = suggestName();
}

// ---- connection status ----

function onStatus(s, tokenProvider) {
  const prev = state.status;
  state.status = s;
  // A token the gateway refused will not do again.
  if (s.code === 4003 || s.code === 4004) tokenProvider.invalidate();
  renderStatus(s);

  switch (s.state) {
    case 'connecting':
      if (!prev || prev.state === 'stopped') logEvent('connecting: asking the dispatcher for this user\'s gateway', 'status');
      break;
    case 'connected': {
      state.live = false; // until this socket's caught_up: its backlog comes first
      const seq = s.cursor ? s.cursor.seq : 0;
      logEvent(`connected to ${s.gateway} · cursor ${seq}`, 'ok');
      break;
    }
    case 'reconnecting':
      if (s.code === 4001) {
        logEvent(`moved: ${s.gateway || 'the gateway'} handed this device to its new owner (close 4001)`, 'move');
      } else {
        const why = closeText(s.code, s.reason) || 'connection lost';
        const from = s.gateway ? `${s.gateway} closed: ` : '';
        logEvent(`reconnecting in ${fmtDuration(s.delay)} (${from}${why})`, 'warn');
      }
      break;
    case 'stopped':
      logEvent(`stopped${s.code || s.reason ? ` (${closeText(s.code, s.reason)})` : ''}`, s.code && s.code !== 1000 ? 'error' : 'status');
      break;
  }
  renderMembers(); // "this tab" badge
}

function renderStatus(s) {
  const st = s ? s.state : 'stopped';
  ui.status.dataset.state = st;
  ui.status.querySelector('.state-word').textContent = st;
  ui.status.dataset.error = String(Boolean(s && s.state === 'stopped' && s.code && s.code !== 1000));

  let detail = '';
  if (!s) detail = state.user ? '' : 'not signed in';
  else if (st === 'connecting') detail = 'asking the dispatcher where to connect';
  else if (st === 'connected') detail = s.url || '';
  else if (st === 'reconnecting') {
    const why = s.code === 4001 ? 'moved to the new owner' : closeText(s.code, s.reason) || 'connection lost';
    detail = s.delay > 0 ? `${why} · retry in ${fmtDuration(s.delay)}` : why;
  } else if (st === 'stopped') detail = closeText(s.code, s.reason);
  ui.statusDetail.textContent = detail;
  ui.statusDetail.title = detail;

  // Only while connected: between sockets this device is on no gateway.
  const gw = s && s.state === 'connected' ? s.gateway || '' : '';
  ui.gateway.textContent = gw;
  ui.gatewaySwatch.style.background = gw ? colorOf(gw) : '';
  ui.gatewaySwatch.hidden = !gw;
  ui.attempts.textContent = s ? String(s.attempt ?? 0) : '';
  renderCursor(s && s.cursor);
  renderStats();
  if (gw) updateKillCommand(gw);
}

function renderCursor(c) {
  const cur = c || (state.client ? state.client.cursor : null);
  ui.cursor.textContent = cur && state.user ? String(cur.seq) : '';
  ui.cursor.title = cur && cur.epoch ? `epoch ${cur.epoch}` : '';
}

function renderStats() {
  const st = state.client ? state.client.stats : null;
  ui.reconnects.textContent = st ? String(st.reconnects ?? 0) : '0';
  ui.moves.textContent = st ? String(st.moves ?? 0) : '0';
}

function updateKillCommand(gw) {
  ui.killCmd.textContent = `curl -X POST '127.0.0.1:8079/children/${gw}/stop?signal=KILL'`;
}

// ---- incoming ----

function onNotification(n) {
  state.received++;
  ui.received.textContent = String(state.received);
  const sent = Date.parse(n.ts);
  const latency = Number.isFinite(sent) ? Date.now() - sent : NaN;
  const head = el('div', { class: 'item-head' },
    el('span', { class: 'seq mono' }, `#${n.seq}`),
    el('span', { class: 'chip' }, 'notification'),
    timeEl(n.ts),
    latency >= 0 && latency < 86400000
      ? el('span', { class: 'latency', title: 'from the POST to this tab' }, `+${fmtDuration(latency)}`)
      : null);
  const backlog = !state.live;
  addItem(el('li', { class: 'item', dataset: { kind: 'notification', seq: n.seq, id: n.id || '', backlog: String(backlog) } }, head, dataEl(n.data)));
  renderCursor();
  renderStats();
  // The backlog is shown quietly: a toast each would flood a new tab.
  if (!backlog) showToast(`Notification #${n.seq}`, summary(n.data));
}

function onCaughtUp(c) {
  state.live = true;
  logEvent(`caught up at #${c.cursor}: what follows is live`, 'ok');
}

function onGap(g) {
  // Seqs are the log's stream sequence, shared by all users: they tell what
  // is missing (everything between after and next), not how many.
  const before = state.client ? state.client.cursor : null; // not yet moved past the gap
  const newEpoch = before && before.epoch && before.epoch !== g.epoch;
  const text = newEpoch || !(g.next > g.after)
    ? `The log was recreated (new epoch); this device continues at #${g.next}. Anything it had not received from the old log is gone.`
    : `Notifications after #${g.after} and before #${g.next} expired (retention) before this device got them.`;
  addItem(el('li', { class: 'item', dataset: { kind: 'gap', after: g.after, next: g.next, epoch: g.epoch } },
    el('div', { class: 'item-head' }, el('span', { class: 'seq mono' }, `#${g.after} → #${g.next}`), el('span', { class: 'chip' }, 'gap'), timeEl()),
    el('p', { class: 'msg-text' }, text)));
  logEvent(`gap: after ${g.after}, next ${g.next}${newEpoch ? ' (new epoch)' : ''}`, 'warn');
  renderCursor();
  renderStats();
}

function onBroadcast(b) {
  addItem(el('li', { class: 'item', dataset: { kind: 'broadcast' } },
    el('div', { class: 'item-head' }, el('span', { class: 'seq mono' }, '★'), el('span', { class: 'chip' }, 'broadcast'), timeEl(b.ts)),
    dataEl(b.data)));
  showToast('Broadcast', summary(b.data));
}

function timeEl(ts) {
  const d = ts ? new Date(ts) : new Date();
  const ok = !Number.isNaN(d.getTime());
  return el('time', ok ? { datetime: d.toISOString(), title: d.toISOString() } : {}, ok ? clock(d) : clock());
}

function dataEl(data) {
  if (isTextOnly(data)) return el('p', { class: 'msg-text' }, data.text);
  if (typeof data === 'string') return el('p', { class: 'msg-text' }, data);
  return el('pre', { class: 'msg-json' }, JSON.stringify(data, null, 2));
}

function addItem(li) {
  ui.notifications.prepend(li);
  while (ui.notifications.children.length > MAX_NOTIFICATIONS) ui.notifications.lastElementChild.remove();
}

// ---- toast ----

let toastTimer = 0;
function showToast(title, body) {
  ui.toast.replaceChildren(el('strong', {}, title), el('span', {}, body));
  ui.toast.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(hideToast, TOAST_MS);
}

function hideToast() {
  clearTimeout(toastTimer);
  ui.toast.classList.remove('show');
}

// ---- sending ----

function getApiKey() {
  if (!state.apiKey) {
    state.apiKey = api('GET', '/v1/dev/config').then(r => {
      if (r.status !== 200 || !r.body || !r.body.api_key) throw new Error(`no dev API key: ${apiError(r)}`);
      return r.body.api_key;
    });
    state.apiKey.catch(() => {
      state.apiKey = null; // ask again next time
    });
  }
  return state.apiKey;
}

/** publish POSTs with the dev API key; a 401 fetches the key once more. */
async function publish(path, body) {
  for (let retried = false; ; retried = true) {
    const key = await getApiKey();
    const r = await api('POST', path, body, { Authorization: `Bearer ${key}` });
    if (r.status !== 401 || retried) return r;
    state.apiKey = null; // the dispatcher may have a new key
  }
}

let sendCounter = 0; // only the latest answer is shown
async function send(kind) {
  const text = ui.message.value;
  const to = ui.to.value.trim() || state.user || '';
  const n = ++sendCounter;
  let path, body;
  if (kind === 'broadcast') {
    path = '/v1/broadcast';
    body = { data: { text } };
  } else {
    const invalid = validUser(to);
    if (invalid) return showResponse(n, { error: `Recipient: ${invalid}` });
    if (!ui.to.value.trim()) ui.to.value = to;
    path = '/v1/notify';
    body = { user: to, data: { text } };
  }
  ui.response.setAttribute('aria-busy', 'true');
  try {
    const r = await publish(path, body);
    showResponse(n, { kind, to, r });
  } catch (err) {
    showResponse(n, { error: `Network error: ${errText(err)}` });
  }
}

function showResponse(n, { kind, to, r, error }) {
  if (n !== sendCounter) return; // a later send has answered or will
  ui.response.removeAttribute('aria-busy');
  const kv = (k, v) => el('span', { class: 'kv' }, el('span', { class: 'k' }, k), ' ', el('b', {}, String(v)));
  let parts;
  if (error) {
    ui.response.dataset.result = 'error';
    parts = [el('span', { class: 'code bad' }, 'error'), el('span', {}, error)];
  } else if (r.status >= 200 && r.status < 300 && r.body) {
    ui.response.dataset.result = 'ok';
    const b = r.body;
    parts = kind === 'broadcast'
      ? [el('span', { class: 'code ok' }, String(r.status)), kv('status', b.status), kv('live only', b.live_only ? 'yes' : 'no')]
      : [el('span', { class: 'code ok' }, String(r.status)), kv('seq', b.seq), kv('gateway', b.gateway), kv('status', b.status),
        kv('to', to), b.duplicate ? el('span', { class: 'badge warn' }, 'duplicate') : null];
  } else {
    ui.response.dataset.result = 'error';
    const e = (r.body && r.body.error) || {};
    parts = [el('span', { class: 'code bad' }, String(r.status)), kv('error', e.code || 'http_error'), el('span', { class: 'err-msg' }, e.message || '')];
  }
  const line = el('div', { class: 'resp-line' }, ...parts.filter(Boolean));
  if (r && r.body) ui.response.replaceChildren(line, el('code', { class: 'raw' }, JSON.stringify(r.body)));
  else ui.response.replaceChildren(line);
}

// ---- the ring ----

const CX = 150, CY = 150, R = 112; // matches the SVG in index.html

/** point on the ring at fraction p (0 at the top, clockwise) and radius r. */
function at(p, r = R) {
  const a = 2 * Math.PI * p - Math.PI / 2;
  return [CX + r * Math.cos(a), CY + r * Math.sin(a)];
}

const f2 = x => x.toFixed(2);

/** arcPath is an SVG path along the ring from fraction start to end. */
function arcPath(start, end) {
  const span = end - start;
  if (span >= 0.9999) {
    // The whole circle (one gateway): two half arcs.
    const [x0, y0] = at(0), [x1, y1] = at(0.5);
    return `M${f2(x0)} ${f2(y0)}A${R} ${R} 0 1 1 ${f2(x1)} ${f2(y1)}A${R} ${R} 0 1 1 ${f2(x0)} ${f2(y0)}`;
  }
  const [x0, y0] = at(start), [x1, y1] = at(end);
  return `M${f2(x0)} ${f2(y0)}A${R} ${R} 0 ${span > 0.5 ? 1 : 0} 1 ${f2(x1)} ${f2(y1)}`;
}

function drawTicks() {
  for (const p of [0, 0.25, 0.5, 0.75]) {
    const [x0, y0] = at(p, R - 18), [x1, y1] = at(p, R - 13);
    const [tx, ty] = at(p, R - 27);
    ui.ringTicks.append(
      svgEl('line', { x1: f2(x0), y1: f2(y0), x2: f2(x1), y2: f2(y1), class: 'tick' }),
      svgEl('text', { x: f2(tx), y: f2(ty + 3), 'text-anchor': 'middle', class: 'tick-label' }, String(p)));
  }
}

const cluster = {
  view: null, // the last /v1/cluster answer
  fp: undefined, // the last fingerprint (undefined before the first answer)
  arcsKey: '',
  membersKey: '',
  markerKey: '',
  centerKey: '',
  shares: new Map(), // gateway → fraction of the circle it owns
  user: null, // the last view.user for the signed-in user
  owner: { user: null, id: null }, // the last owner seen for the signed-in user
  failing: false,
  changedAt: null,
};

let pollTimer = 0;
let polling = false;

function pollSoon() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(pollCluster, 0);
}

async function pollCluster() {
  clearTimeout(pollTimer);
  if (polling) return;
  polling = true;
  const user = state.user;
  const ac = new AbortController();
  const timeout = setTimeout(() => ac.abort(), POLL_TIMEOUT_MS);
  try {
    const res = await fetch(`${BASE}/v1/cluster${user ? `?user=${encodeURIComponent(user)}` : ''}`, { cache: 'no-store', signal: ac.signal });
    let body = null;
    try {
      body = await res.json();
    } catch {
      // handled below
    }
    if (res.status !== 200 || !body) throw new Error(apiError({ status: res.status, body }));
    setClusterError(null);
    applyCluster(body, user);
  } catch (err) {
    setClusterError(ac.signal.aborted ? 'no answer' : errText(err));
  } finally {
    clearTimeout(timeout);
    polling = false;
    renderStats();
    pollTimer = setTimeout(pollCluster, POLL_MS);
  }
}

function setClusterError(msg) {
  ui.clusterError.hidden = !msg;
  ui.clusterError.textContent = msg ? `GET /v1/cluster failed: ${msg}` : '';
  if (msg && !cluster.failing) logEvent(`cluster view unavailable: ${msg}`, 'error');
  if (!msg && cluster.failing) logEvent('cluster view back', 'info');
  cluster.failing = Boolean(msg);
}

/** applyCluster updates the ring view from one /v1/cluster answer, redrawing only what changed. */
function applyCluster(view, askedFor) {
  const fp = typeof view.ring === 'string' ? view.ring : '';
  const members = Array.isArray(view.members) ? view.members : [];
  const prev = cluster.view;

  if (cluster.fp === undefined) {
    logEvent(fp ? `ring ${shortFP(fp)}: ${members.map(m => m.id).join(', ') || 'no gateways'}` : 'no ring yet: no gateway is passing', 'ring');
  } else if (fp !== cluster.fp) {
    ringChanged(prev, view);
  } else if (prev) {
    memberStateChanges(prev.members || [], members);
  }
  cluster.fp = fp;
  cluster.view = view;
  if (ui.ring.dataset.fingerprint !== fp || !ui.ringId.textContent) {
    ui.ring.dataset.fingerprint = fp;
    ui.ringId.textContent = fp ? `ring ${shortFP(fp)}` : 'no ring';
    ui.ringId.title = fp ? `Ring fingerprint ${fp}` : '';
  }
  if (ui.degraded.hidden !== !view.degraded) ui.degraded.hidden = !view.degraded;

  const arcs = Array.isArray(view.arcs) ? view.arcs : null;
  const arcsKey = `${fp}|${arcs ? arcs.length : 'none'}`;
  if (arcsKey !== cluster.arcsKey) {
    cluster.arcsKey = arcsKey;
    drawArcs(arcs);
  }
  // The user part only if it is about whoever is signed in now.
  const u = view.user && askedFor && askedFor === state.user && view.user.id === state.user ? view.user : null;
  if (u) noteOwner(u);
  cluster.user = state.user ? u || cluster.user : null;
  renderMembers();
  renderMarker();
}

function ringChanged(prev, view) {
  const before = new Map(((prev && prev.members) || []).map(m => [m.id, m]));
  const after = new Map((view.members || []).map(m => [m.id, m]));
  const changes = [];
  for (const id of after.keys()) if (!before.has(id)) changes.push(`${id} joined`);
  for (const id of before.keys()) if (!after.has(id)) changes.push(`${id} left`);
  for (const [id, m] of after) {
    const b = before.get(id);
    if (b && (b.weight !== m.weight || b.url !== m.url)) changes.push(`${id} changed`);
  }
  const what = changes.join(', ') || 'members changed';
  const fp = view.ring || '';
  logEvent(`ring changed: ${what} (${shortFP(cluster.fp) || 'none'} → ${shortFP(fp) || 'none'})`, 'ring');
  cluster.changedAt = new Date();
  ui.ringNote.textContent = `Ring changed at ${clock(cluster.changedAt)}: ${what}.`;
  flash();
}

function memberStateChanges(before, after) {
  const old = new Map(before.map(m => [m.id, m.state]));
  for (const m of after) {
    const was = old.get(m.id);
    if (was && was !== m.state) {
      logEvent(m.state === 'held'
        ? `${m.id} is held: its check fails but it still answers, so it stays in the ring for now`
        : `${m.id} is ${m.state} again`, m.state === 'held' ? 'warn' : 'info');
    }
  }
}

function noteOwner(u) {
  const o = cluster.owner;
  if (o.user === u.id && o.id && u.owner && o.id !== u.owner) {
    logEvent(`${u.id} now belongs to ${u.owner} (was ${o.id})`, 'move');
  }
  cluster.owner = { user: u.id, id: u.owner || o.id };
}

/** flash briefly highlights the ring after a change. */
function flash() {
  for (const node of [ui.ring, ui.clusterCard]) {
    node.classList.remove('flash');
    void node.getBoundingClientRect(); // restart the animation
    node.classList.add('flash');
  }
  setTimeout(() => {
    ui.ring.classList.remove('flash');
    ui.clusterCard.classList.remove('flash');
  }, 1800);
}

function drawArcs(arcs) {
  cluster.shares = new Map();
  const paths = [];
  for (const a of arcs || []) {
    const start = Number(a.start), end = Number(a.end);
    if (!Number.isFinite(start) || !Number.isFinite(end) || !a.gateway) continue;
    // Arcs are (start, end] in [0, 1]; one whose end is below its start
    // wraps past 1; an empty one is not drawn.
    if (end === start && arcs.length > 1) continue;
    const e = end <= start ? end + 1 : end;
    cluster.shares.set(a.gateway, (cluster.shares.get(a.gateway) || 0) + (e - start));
    const p = svgEl('path', { d: arcPath(start, e), class: 'arc', dataset: { gateway: a.gateway }, stroke: colorOf(a.gateway) });
    p.append(svgEl('title', {}, document.createTextNode(`${a.gateway}: ${start.toFixed(4)} – ${end.toFixed(4)}`)));
    paths.push(p);
  }
  ui.ringArcs.replaceChildren(...paths);
  ui.ring.classList.toggle('no-arcs', paths.length === 0);
  cluster.membersKey = ''; // shares changed: redraw the legend
}

function renderMembers() {
  const view = cluster.view;
  if (!view) return;
  const members = Array.isArray(view.members) ? view.members : [];
  const connectedTo = state.status && state.status.state === 'connected' ? state.status.gateway : '';
  const owner = cluster.user ? cluster.user.owner : '';
  const key = JSON.stringify([members, connectedTo, owner]);
  if (key === cluster.membersKey) return;
  cluster.membersKey = key;

  const sorted = [...members].sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
  ui.members.replaceChildren(...sorted.map(m => {
    const counts = m.sockets === null || m.sockets === undefined
      ? 'no answer'
      : `${m.sockets} socket${m.sockets === 1 ? '' : 's'} · ${m.users ?? 0} user${m.users === 1 ? '' : 's'}`;
    const share = cluster.shares.get(m.id);
    const li = el('li', { dataset: { gateway: m.id, state: m.state }, style: { '--gw': colorOf(m.id) } },
      el('span', { class: 'swatch', 'aria-hidden': 'true' }),
      el('span', { class: 'm-main' },
        el('span', { class: 'm-id mono' }, m.id),
        el('span', { class: `badge state ${m.state === 'held' ? 'warn' : 'ok'}` }, m.state),
        m.id === connectedTo ? el('span', { class: 'badge you' }, 'this tab') : null,
        m.id === owner && m.id !== connectedTo ? el('span', { class: 'badge owner' }, 'owner') : null),
      el('span', { class: 'm-sub' },
        el('span', { class: 'm-counts' }, counts),
        share !== undefined ? el('span', { class: 'm-share', title: 'share of the circle' }, `${(share * 100).toFixed(1)}%`) : null,
        m.weight > 1 ? el('span', { class: 'm-weight' }, `weight ${m.weight}`) : null));
    li.title = m.url || '';
    return li;
  }));
  if (!sorted.length) ui.members.append(el('li', { class: 'empty-member' }, 'no gateways in the ring'));
  // Held gateways' arcs are drawn faded.
  const held = new Set(members.filter(m => m.state === 'held').map(m => m.id));
  for (const p of ui.ringArcs.children) p.classList.toggle('held', held.has(p.dataset.gateway));
}

// Hovering or focusing a gateway in the legend highlights its arcs.
function focusGateway(id) {
  ui.ring.classList.toggle('focusing', Boolean(id));
  for (const p of ui.ringArcs.children) p.classList.toggle('focus', p.dataset.gateway === id);
}

function renderMarker() {
  const u = state.user ? cluster.user : null;
  const key = JSON.stringify([u, state.user]);
  if (key !== cluster.markerKey) {
    cluster.markerKey = key;
    let marker = document.getElementById('user-marker');
    if (!u || typeof u.position !== 'number') {
      if (marker) marker.remove();
    } else {
      const color = colorOf(u.owner);
      // Drawn at the top, then rotated to the user's position.
      const [lx0, ly0] = at(0, R - 16), [lx1, ly1] = at(0, R + 16);
      const [px, py] = at(0, R + 24);
      const g = svgEl('g', {
        id: 'user-marker', class: 'marker', transform: `rotate(${(u.position * 360).toFixed(3)} ${CX} ${CY})`,
        dataset: { owner: u.owner || '', position: String(u.position) },
      },
      svgEl('title', {}, document.createTextNode(`${u.id} at ${u.position.toFixed(4)}, owned by ${u.owner || 'nobody'}`)),
      svgEl('line', { x1: f2(lx0), y1: f2(ly0), x2: f2(lx1), y2: f2(ly1), class: 'marker-line' }),
      svgEl('circle', { cx: f2(px), cy: f2(py), r: 7, class: 'marker-dot', fill: color }));
      if (marker) marker.replaceWith(g);
      else ui.markerLayer.append(g);
    }
  }
  renderCenter();
}

function renderCenter() {
  const view = cluster.view;
  const members = view && Array.isArray(view.members) ? view.members : [];
  const u = state.user ? cluster.user : null;
  const clip = (str, n) => (str.length > n ? `${str.slice(0, n - 1)}…` : str);
  let lines, fill = '';
  if (state.user) {
    lines = ['you are', clip(state.user, 16), u ? (u.owner ? `on ${u.owner}'s arc` : 'no owner') : ''];
    fill = u && u.owner ? colorOf(u.owner) : '';
  } else if (view) {
    lines = [view.ring ? `ring ${shortFP(view.ring)}` : 'no ring', `${members.length} gateway${members.length === 1 ? '' : 's'}`, 'sign in to see your place'];
  } else {
    lines = ['loading…', '', ''];
  }
  const key = JSON.stringify([lines, fill]);
  if (key === cluster.centerKey) return;
  cluster.centerKey = key;
  [ui.ringC1, ui.ringC2, ui.ringC3].forEach((t, i) => {
    t.textContent = lines[i];
  });
  if (fill) ui.ringC3.setAttribute('fill', fill);
  else ui.ringC3.removeAttribute('fill');
}

// ---- wiring ----

ui.signinForm.addEventListener('submit', e => {
  e.preventDefault();
  signIn(ui.user.value);
});
ui.signout.addEventListener('click', signOut);
ui.sendForm.addEventListener('submit', e => {
  e.preventDefault();
  send('notify');
});
ui.broadcast.addEventListener('click', () => send('broadcast'));
ui.clear.addEventListener('click', () => {
  ui.notifications.replaceChildren();
  state.received = 0;
  ui.received.textContent = '0';
});
ui.members.addEventListener('mouseover', e => {
  const li = e.target.closest('li[data-gateway]');
  focusGateway(li ? li.dataset.gateway : null);
});
ui.members.addEventListener('mouseleave', () => focusGateway(null));
ui.copyKill.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(ui.killCmd.textContent);
    ui.copyKill.textContent = 'Copied';
  } catch {
    // No clipboard (e.g. not a secure context): select it for a manual copy.
    getSelection().selectAllChildren(ui.killCmd);
    ui.copyKill.textContent = 'Selected';
  }
  setTimeout(() => {
    ui.copyKill.textContent = 'Copy';
  }, 1500);
});

drawTicks();
renderIdentity();
renderStatus(null);
renderCenter();
pollCluster();
const initialUser = params.get('user');
if (initialUser) {
  ui.user.value = initialUser;
  signIn(initialUser);
}
