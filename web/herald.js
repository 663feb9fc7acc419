// herald.js — the browser client of herald, the WebSocket push-notification
// gateway. A dependency-free ES module: copy it into your app and
//
//   import { connect } from './herald.js';
//   const client = connect({ tokenProvider: async () => myUserToken() });
//   client.on('notification', n => show(n.data));
//
// It follows the same protocol and reconnect rules as the Go client
// (gateway/client) and DESIGN.md: ask the dispatcher where the user's socket
// goes (POST /v1/connect), open it, resume from the cursor (epoch, seq) so
// the gateway replays what this tab has not seen, hand every notification to
// the app once and in order, ack it, and on any failure reconnect with
// full-jitter backoff. The cursor lives in sessionStorage: each tab is its
// own device, and a reload of the tab resumes where it left off.

const DEFAULTS = {
  baseURL: '',
  storageKey: 'herald-cursor',
  backoffBase: 250,
  backoffMax: 10000,
  stableAfter: 10000,
  tooManySocketsBackoff: 5000,
  pingInterval: 25000,
  moveWindow: 10000,
};

// maxLast bounds options.last, as gateways do (gateway/wire MaxLast).
const maxLast = 1000;

// connectTimeout bounds one POST /v1/connect: a dispatcher that never answers
// must not hang the client (the Go client's HTTP timeout).
const connectTimeout = 10000;

// maxAttempt bounds the backoff attempt counter; base·2^32 is far past any cap.
const maxAttempt = 32;

// Close codes (gateway/wire).
const CLOSE = {
  normal: 1000,
  serviceRestart: 1012,
  tryAgainLater: 1013,
  moved: 4001,
  authTimeout: 4002,
  unauthorized: 4003,
  tokenExpired: 4004,
  slowConsumer: 4008,
  tooManySockets: 4009,
};

const EVENTS = ['notification', 'gap', 'broadcast', 'caught_up', 'status'];

/**
 * Connects to herald and keeps this tab's socket open until `close()`.
 * Returns at once; connecting starts right after (so listeners added
 * immediately still see the first 'connecting' status).
 *
 * @param {object} options
 * @param {() => Promise<string>|string} options.tokenProvider Required. Returns a user
 *   token (JWT). Called before the first connect, after close 4004 and after a
 *   401 from /v1/connect. A rejection or empty token is retried with backoff.
 * @param {string} [options.baseURL=''] The dispatcher's base URL; '' is this origin.
 * @param {'all'|'last'|'live'} [options.start='all'] Where a tab without a
 *   cursor starts: the user's whole retained log, the last `last` messages of
 *   it, or only what comes after it connects. Chosen once: the hello gives
 *   the tab its cursor, and every reconnect (and reload) resumes from it.
 * @param {number} [options.last] With start 'last' (or alone), how many
 *   (1..1000).
 * @param {string} [options.storageKey='herald-cursor'] sessionStorage key of this
 *   tab's cursor {epoch, seq}, stored with its user; a token (JWT) for another
 *   user starts from a fresh cursor.
 * @param {Storage|null} [options.storage] Where the cursor is kept; default
 *   globalThis.sessionStorage if there is one; null keeps it in memory only.
 * @param {number} [options.backoffBase=250] Full-jitter backoff base (ms): a retry
 *   waits random() · min(backoffMax, backoffBase · 2^attempt).
 * @param {number} [options.backoffMax=10000] Backoff cap (ms): it bounds how
 *   long a device whose gateway died waits, after the ring has dropped it, to
 *   land on the new owner.
 * @param {number} [options.stableAfter=10000] A connection up this long (ms)
 *   resets the attempt counter.
 * @param {number} [options.tooManySocketsBackoff=5000] Minimum wait (ms) after
 *   close 4009.
 * @param {number} [options.pingInterval=25000] A ping is sent this often (ms); a
 *   socket silent for twice as long is dropped and reconnected.
 * @param {number} [options.moveWindow=10000] A second move (4001) within this
 *   many ms goes back through /v1/connect with backoff.
 * @param {typeof WebSocket} [options.WebSocket] For tests; default globalThis.WebSocket.
 * @param {typeof fetch} [options.fetch] For tests; default globalThis.fetch.
 * @param {() => number} [options.random] For tests; default Math.random.
 * @param {Function} [options.setTimeout] For tests.
 * @param {Function} [options.clearTimeout] For tests.
 * @param {() => number} [options.now] For tests; a clock in ms.
 * @returns {{
 *   on(type: 'notification'|'gap'|'broadcast'|'status', fn: Function): object,
 *   off(type: string, fn: Function): object,
 *   close(): void,
 *   readonly cursor: {epoch: string, seq: number},
 *   readonly stats: object,
 *   onframe: ((frame: object) => void)|null,
 * }} The client. Events: 'notification' {seq, id, data, ts} (after dedupe),
 *   'gap' {epoch, after, next}, 'broadcast' {data, ts}, 'caught_up' {cursor}
 *   (once per socket: everything the log held when it opened has been
 *   delivered, so what follows is live — show the backlog quietly), 'status'
 *   {state: 'connecting'|'connected'|'reconnecting'|'stopped', gateway, url,
 *   attempt, code, reason, delay, cursor; start, where a 'connected' socket
 *   started: 'all', 'last', 'live' or 'resume'}. Set `onframe` to see every raw server frame.
 */
export function connect(options = {}) {
  const o = { ...DEFAULTS };
  for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v;
  if (typeof o.tokenProvider !== 'function') throw new TypeError('herald: tokenProvider (a function returning a token) is required');
  for (const k of ['backoffBase', 'backoffMax', 'stableAfter', 'tooManySocketsBackoff', 'pingInterval', 'moveWindow']) {
    if (typeof o[k] !== 'number' || !(o[k] >= 0) || o[k] === Infinity) throw new TypeError(`herald: ${k} must be a number of ms ≥ 0`);
  }
  if (o.backoffMax < o.backoffBase) throw new TypeError('herald: backoffMax is below backoffBase');
  // 0 would ping in a tight loop and call every socket dead at once.
  if (o.pingInterval === 0) throw new TypeError('herald: pingInterval must be above 0');
  o.start = startChoice(options.start, options.last);

  // Wrapped rather than stored bare: browsers throw "Illegal invocation"
  // when fetch or setTimeout is called with another `this`.
  const WS = o.WebSocket || globalThis.WebSocket;
  const fetchFn = o.fetch || (globalThis.fetch && ((url, init) => globalThis.fetch(url, init)));
  if (typeof WS !== 'function') throw new TypeError('herald: no WebSocket available');
  if (typeof fetchFn !== 'function') throw new TypeError('herald: no fetch available');
  const setT = o.setTimeout || ((fn, ms) => globalThis.setTimeout(fn, ms));
  const clearT = o.clearTimeout || (id => globalThis.clearTimeout(id));
  const random = o.random || Math.random;
  const now = o.now || (globalThis.performance ? () => globalThis.performance.now() : Date.now);
  const storage = options.storage !== undefined ? options.storage : defaultStorage();
  const base = String(o.baseURL).replace(/\/+$/, '');

  const listeners = new Map(EVENTS.map(t => [t, new Set()]));
  const stats = {
    connects: 0, // sockets that got a hello
    reconnects: 0, // times a socket ended and the client went to connect again
    moves: 0, // sockets closed with 4001
    movesViaDispatcher: 0, // of which came too soon after the last and went via /v1/connect
    gaps: 0,
    duplicates: 0, // notifications at or below the cursor, dropped
    notifications: 0, // handed to the app
    acks: 0,
    broadcasts: 0,
    caughtUps: 0, // caught_up frames: one per socket that caught up
    pings: 0,
    pongs: 0,
    backoffs: 0,
    tokenFetches: 0,
    resolves: 0, // POST /v1/connect
    resolveFailures: 0,
    dials: 0,
    dialFailures: 0, // sockets that never opened
    deadSockets: 0, // dropped after 2×pingInterval of silence
    badFrames: 0,
    lastCloseCode: 0,
    gateway: '',
  };

  let cursor = loadCursor();
  // The user the cursor belongs to, from the last hello; '' if unknown. A
  // cursor is a position in one user's log: sent for another user it would
  // look valid and silently skip that user's older messages.
  let cursorUser = loadCursorUser();
  let stopped = false;
  let token = '';
  let next = ''; // URL to dial without asking the dispatcher (after a move)
  // The gateway the last socket ended on without a close frame (it could
  // not be opened, or dropped): named in the next /v1/connect, which the
  // dispatcher then holds until its ring names another owner, or that
  // gateway answers its liveness probe. A device whose gateway crashed so
  // lands on the new owner as soon as the ring converges.
  let unreachable = '';
  let attempt = 0; // backoffs since the last stable connection
  let lastMove = null; // now() of the last 4001
  let current = null; // the open session: {ws, finish}
  let wake = null; // ends the backoff being waited out, if any
  let abortFetch = null;
  const timers = new Set(); // every pending timer, so close() can clear them all
  const cleanups = [];

  const client = {
    /** Adds a listener; returns the client for chaining. */
    on(type, fn) {
      eventSet(type).add(fn);
      return client;
    },
    /** Removes a listener added with on. */
    off(type, fn) {
      eventSet(type).delete(fn);
      return client;
    },
    /** Stops for good: closes the socket with 1000, cancels every timer. */
    close() {
      stop(CLOSE.normal, 'closed by the application');
    },
    get cursor() {
      return { ...cursor };
    },
    get stats() {
      return { ...stats };
    },
    // Set to a function to see every server frame as received (before
    // dedupe); browser tests assert on the wire through it.
    onframe: null,
  };

  watchBrowser();
  // Start after connect() has returned, so listeners the caller adds right
  // away see everything from the first status on.
  Promise.resolve().then(run).catch(err => {
    report(err);
    stop(0, `internal error: ${err && err.message}`);
  });
  return client;

  // ---- the connect loop ----

  async function run() {
    if (stopped) return; // closed before it started
    status('connecting');
    if (!(await getToken())) return;
    while (!stopped) {
      let url = next;
      let ring = ''; // a moved URL comes from a gateway, not a ring we know
      let gateway = '';
      next = '';
      if (!url) {
        const r = await resolve();
        if (stopped) return;
        if (r.unauthorized) return stop(401, r.reason);
        if (!r.url) {
          await backoff({ code: r.status || 0, reason: r.reason });
          continue;
        }
        ({ url, ring, gateway } = r);
      }
      const out = await session(url, ring);
      if (stopped) return;
      unreachable = out.code === 0 || out.code === 1006 ? out.gateway || gateway : '';
      if (out.stable) attempt = 0;
      await afterSocket(out);
    }
  }

  // afterSocket decides, from how a socket ended, what the next connect is.
  async function afterSocket(out) {
    const info = { gateway: out.gateway, url: out.url, code: out.code, reason: out.reason };
    if (out.code === CLOSE.unauthorized) return stop(out.code, out.reason || 'unauthorized');
    stats.reconnects++;
    switch (out.code) {
      case CLOSE.moved: {
        const t = now();
        const recent = lastMove !== null && t - lastMove < o.moveWindow;
        lastMove = t;
        stats.moves++;
        if (out.moved && !recent) {
          next = out.moved;
          status('reconnecting', { ...info, delay: 0 });
          return;
        }
        // Moved again so soon (or not told where): two gateways may disagree
        // on the ring. The dispatcher's view, after a pause, settles it.
        stats.movesViaDispatcher++;
        return backoff(info);
      }
      case CLOSE.tokenExpired:
        if (out.hello) {
          status('reconnecting', { ...info, delay: 0 });
        } else {
          // The token was already expired when we sent it: without a pause a
          // tokenProvider that keeps returning it would spin.
          await backoff(info);
          if (stopped) return;
        }
        await getToken();
        return;
      case CLOSE.tooManySockets:
        // A quick retry would only be refused again.
        return backoff(info, o.tooManySocketsBackoff);
      default:
        // 1012, 1013, 4002, 4008, a dead socket, a network error, anything
        // else: back off, then ask the dispatcher again.
        return backoff(info);
    }
  }

  // backoff reports the wait and sleeps a full-jitter delay of at least
  // floor. Spreading retries over the whole interval keeps a crowd of
  // clients whose gateway died from coming back in waves.
  async function backoff(info, floor = 0) {
    const cap = Math.min(o.backoffMax, o.backoffBase * 2 ** attempt);
    const delay = floor + random() * cap;
    status('reconnecting', { ...info, delay });
    if (stopped) return; // a listener closed the client
    if (attempt < maxAttempt) attempt++;
    stats.backoffs++;
    await new Promise(resolve => {
      const id = later(done, delay);
      wake = done;
      function done() {
        cancel(id);
        wake = null;
        resolve();
      }
    });
  }

  // getToken asks tokenProvider until it gives a token; false if stopped.
  async function getToken() {
    while (!stopped) {
      stats.tokenFetches++;
      let reason;
      try {
        const t = await o.tokenProvider();
        if (stopped) return false;
        if (typeof t === 'string' && t !== '') {
          token = t;
          return true;
        }
        reason = 'tokenProvider returned no token';
      } catch (err) {
        if (stopped) return false;
        reason = `tokenProvider failed: ${errText(err)}`;
      }
      await backoff({ reason });
    }
    return false;
  }

  // resolve asks the dispatcher where the socket goes. A 401 gets one fresh
  // token and one more try; a 401 to that is {unauthorized}.
  async function resolve() {
    for (let refreshed = false; ; refreshed = true) {
      const r = await postConnect();
      if (stopped || r.status !== 401) return r;
      if (refreshed) return { unauthorized: true, reason: r.reason };
      if (!(await getToken())) return {};
    }
  }

  // postConnect makes one POST /v1/connect: {url, ring, gateway} on success,
  // else {status, reason} (status 0 when there was no answer).
  async function postConnect() {
    stats.resolves++;
    const ac = typeof AbortController === 'function' ? new AbortController() : null;
    abortFetch = () => ac && ac.abort();
    const timeout = later(abortFetch, connectTimeout);
    const fail = (status, reason) => {
      stats.resolveFailures++;
      return { status, reason };
    };
    try {
      const query = unreachable ? `?unreachable=${encodeURIComponent(unreachable)}` : '';
      const res = await fetchFn(`${base}/v1/connect${query}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
        cache: 'no-store',
        signal: ac ? ac.signal : undefined,
      });
      let body = null;
      try {
        body = await res.json();
      } catch {
        // The status alone is enough; the body only adds detail.
      }
      if (res.status !== 200) {
        const e = (body && body.error) || {};
        return fail(res.status, `dispatcher answered ${res.status}${e.code ? ` ${e.code}: ${e.message}` : ''}`);
      }
      if (!body || typeof body.url !== 'string' || body.url === '') return fail(res.status, "dispatcher's answer has no url");
      return { url: body.url, ring: typeof body.ring === 'string' ? body.ring : '', gateway: body.gateway || '' };
    } catch (err) {
      return fail(0, `asking the dispatcher: ${errText(err)}`);
    } finally {
      cancel(timeout);
      abortFetch = null;
    }
  }

  // ---- one socket ----

  // session opens a socket to url, authenticates and handles its frames; it
  // resolves with how the socket ended: {url, gateway, hello, code, reason,
  // moved, stable}.
  function session(url, ring) {
    return new Promise(resolve => {
      const out = { url, gateway: '', hello: false, code: 0, reason: '', moved: '', stable: false };
      let ws = null;
      let openedAt = null;
      let pingTimer = null;
      let silenceTimer = null;
      stats.dials++;

      const s = {
        // finish ends the session once: its timers, its handlers, its socket
        // if closeCode is given (the gateway's close needs no answer).
        finish(code, reason, closeCode) {
          if (current !== s) return;
          current = null;
          cancel(pingTimer);
          cancel(silenceTimer);
          if (ws) {
            // Detached first: a dead or closing socket must not talk to us.
            ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
            if (closeCode !== undefined) {
              try {
                // A fixed reason: browsers throw on one over 123 bytes.
                closeCode ? ws.close(closeCode, 'client stopped') : ws.close();
              } catch {
                // Already closed.
              }
            }
          }
          if (openedAt === null && !stopped) stats.dialFailures++;
          out.code = code;
          out.reason = reason;
          out.stable = openedAt !== null && now() - openedAt >= o.stableAfter;
          stats.lastCloseCode = code;
          resolve(out);
        },
      };
      current = s;

      try {
        ws = new WS(url);
      } catch (err) {
        s.finish(0, `opening ${url}: ${errText(err)}`);
        return;
      }
      s.ws = ws;

      // Any frame proves the socket alive. Armed from the start, so a
      // handshake that hangs is given up on too.
      const armSilence = () => {
        cancel(silenceTimer);
        silenceTimer = later(() => {
          stats.deadSockets++;
          const why = openedAt === null ? 'did not open' : 'sent no frame';
          s.finish(0, `socket ${why} for 2×pingInterval: considered dead`, 0);
        }, 2 * o.pingInterval);
      };
      const ping = () => {
        pingTimer = later(ping, o.pingInterval);
        if (send(ws, { type: 'ping' })) stats.pings++;
      };
      armSilence();

      ws.onopen = () => {
        openedAt = now();
        const auth = { type: 'auth', token };
        const user = tokenUser(token);
        if (user !== null && cursorUser !== '' && user !== cursorUser) {
          cursorUser = '';
          setCursor('', 0); // another user's cursor: start this one afresh
        }
        if (cursor.seq > 0) auth.since = cursor.seq;
        if (cursor.epoch) auth.epoch = cursor.epoch;
        else if (o.start !== 'all') {
          // No cursor yet: this tab chooses where it starts, once.
          auth.start = o.start;
          if (o.start === 'last') auth.last = o.last;
        }
        if (ring) auth.ring = ring;
        if (!send(ws, auth)) return s.finish(0, 'could not send auth', 0);
        pingTimer = later(ping, o.pingInterval);
      };
      ws.onmessage = ev => {
        armSilence();
        const f = decodeFrame(ev.data);
        if (typeof f === 'string') {
          // A gateway bug. Resuming from the cursor on a new socket loses
          // nothing, where skipping the frame might.
          stats.badFrames++;
          return s.finish(0, `bad frame: ${f}`, 0);
        }
        if (typeof client.onframe === 'function') guard(() => client.onframe(f));
        handle(f, s, out);
      };
      // In browsers a failed socket fires close (with the code) after error,
      // but some runtimes (Node 20's WebSocket) never close one that failed
      // to open: that failure is final, so don't wait for the close.
      ws.onerror = () => {
        if (openedAt === null) s.finish(1006, `could not open ${url}`, 0);
      };
      ws.onclose = ev => s.finish(ev.code || 0, ev.reason || '');
    });
  }

  // handle applies one frame: the cursor rules of DESIGN.md, events, acks.
  function handle(f, s, out) {
    switch (f.type) {
      case 'hello':
        // Authoritative: the gateway knows the log; a gap may follow.
        cursorUser = f.user;
        setCursor(f.epoch, f.cursor);
        out.gateway = stats.gateway = f.gateway;
        out.hello = true;
        stats.connects++;
        status('connected', { gateway: f.gateway, url: out.url, start: f.start || '' });
        break;
      case 'notification':
        if (f.seq <= cursor.seq) {
          stats.duplicates++; // a safety net: gateways do not send twice
          break;
        }
        emit('notification', { seq: f.seq, id: f.id, data: f.data, ts: f.ts });
        setCursor(cursor.epoch, f.seq);
        stats.notifications++;
        // Not if a listener closed the client: the socket is gone.
        if (current === s && send(s.ws, { type: 'ack', seq: f.seq })) stats.acks++;
        break;
      case 'gap':
        emit('gap', { epoch: f.epoch, after: f.after, next: f.next });
        // next counts the gap's epoch, which may be new: adopting both keeps
        // the new log's low seqs from being dropped as old.
        setCursor(f.epoch, f.next - 1);
        stats.gaps++;
        break;
      case 'broadcast':
        emit('broadcast', { data: f.data, ts: f.ts });
        stats.broadcasts++;
        break;
      case 'caught_up':
        emit('caught_up', { cursor: f.cursor });
        stats.caughtUps++;
        break;
      case 'moved':
        out.moved = f.url; // the 4001 close follows
        break;
      case 'pong':
        stats.pongs++;
        break;
      default:
      // Unknown types are ignored, so a newer gateway can add frames.
    }
  }

  // ---- state, events, plumbing ----

  function stop(code, reason) {
    if (stopped) return;
    stopped = true;
    if (current) current.finish(code, reason, CLOSE.normal);
    if (abortFetch) abortFetch();
    for (const id of timers) clearT(id);
    timers.clear();
    if (wake) wake();
    for (const f of cleanups) f();
    status('stopped', { code, reason });
  }

  function status(state, extra = {}) {
    emit('status', {
      state,
      gateway: '',
      url: '',
      attempt,
      code: 0,
      reason: '',
      delay: 0,
      ...extra,
      cursor: { ...cursor },
    });
  }

  function emit(type, ev) {
    for (const fn of [...listeners.get(type)]) guard(() => fn(ev));
  }

  function eventSet(type) {
    const set = listeners.get(type);
    if (!set) throw new TypeError(`herald: unknown event ${JSON.stringify(type)}; use one of ${EVENTS.join(', ')}`);
    return set;
  }

  function setCursor(epoch, seq) {
    cursor = { epoch, seq };
    if (!storage) return;
    try {
      storage.setItem(o.storageKey, JSON.stringify({ ...cursor, user: cursorUser }));
    } catch {
      // Storage full or denied: the in-memory cursor still works for this page.
    }
  }

  function loadCursor() {
    try {
      const c = storage && JSON.parse(storage.getItem(o.storageKey));
      if (c && typeof c.epoch === 'string' && Number.isSafeInteger(c.seq) && c.seq >= 0) return { epoch: c.epoch, seq: c.seq };
    } catch {
      // Unreadable: start fresh (the gateway replays the retained log).
    }
    return { epoch: '', seq: 0 };
  }

  function loadCursorUser() {
    try {
      const c = storage && JSON.parse(storage.getItem(o.storageKey));
      if (c && typeof c.user === 'string' && cursor.seq > 0) return c.user;
    } catch {
      // Unreadable: loadCursor started fresh too.
    }
    return '';
  }

  // later is setTimeout that close() can cancel.
  function later(fn, ms) {
    const id = setT(() => {
      timers.delete(id);
      fn();
    }, ms);
    timers.add(id);
    return id;
  }

  function cancel(id) {
    if (id === null || id === undefined || !timers.has(id)) return;
    timers.delete(id);
    clearT(id);
  }

  // watchBrowser: a tab that becomes visible, or a browser back online, is
  // likely to succeed now; waiting out the rest of a backoff helps nobody.
  function watchBrowser() {
    const doc = globalThis.document;
    const win = globalThis.window;
    const wakeUp = () => wake && wake();
    if (doc && typeof doc.addEventListener === 'function') {
      const onVisible = () => doc.visibilityState === 'visible' && wakeUp();
      doc.addEventListener('visibilitychange', onVisible);
      cleanups.push(() => doc.removeEventListener('visibilitychange', onVisible));
    }
    if (win && typeof win.addEventListener === 'function') {
      win.addEventListener('online', wakeUp);
      cleanups.push(() => win.removeEventListener('online', wakeUp));
    }
  }
}

// decodeFrame parses and checks a server frame; a string says what is wrong.
function decodeFrame(data) {
  if (typeof data !== 'string') return 'not a text frame';
  let f;
  try {
    f = JSON.parse(data);
  } catch {
    return 'not JSON';
  }
  if (!f || typeof f !== 'object' || Array.isArray(f)) return 'not a JSON object';
  const seqOK = v => Number.isSafeInteger(v) && v >= 0;
  switch (f.type) {
    case 'hello':
      if (!f.gateway || typeof f.epoch !== 'string' || !f.epoch) return 'hello without gateway or epoch';
      if (f.cursor === undefined) f.cursor = 0;
      if (!seqOK(f.cursor)) return 'hello with a bad cursor';
      break;
    case 'notification':
      if (!seqOK(f.seq) || f.seq === 0) return 'notification without a seq';
      break;
    case 'gap':
      // Across epochs next may be below after: they count different logs.
      if (!seqOK(f.next) || f.next === 0 || typeof f.epoch !== 'string' || !f.epoch) return 'gap without next or epoch';
      break;
    case 'moved':
      if (typeof f.url !== 'string' || !f.url) return 'moved without a url';
      break;
    case 'caught_up':
      if (f.cursor === undefined) f.cursor = 0;
      if (!seqOK(f.cursor)) return 'caught_up with a bad cursor';
      break;
    case undefined:
    case '':
      return 'frame without a type';
  }
  return f;
}

// startChoice checks options.start and options.last as a gateway would, and
// returns the start spelled out ('last' alone means start 'last').
function startChoice(start, last = 0) {
  if (start === undefined) start = last === 0 ? 'all' : 'last';
  if ((start === 'all' || start === 'live') && last === 0) return start;
  if (start === 'last' && Number.isSafeInteger(last) && last >= 1 && last <= maxLast) return 'last';
  throw new TypeError(`herald: start must be 'all', 'live' or 'last' with last 1..${maxLast}`);
}

// send writes a frame if the socket is open; false if it could not.
function send(ws, frame) {
  if (!ws || ws.readyState !== 1) return false;
  try {
    ws.send(JSON.stringify(frame));
    return true;
  } catch {
    return false;
  }
}

// guard runs app code (listeners, onframe) so that its exceptions are
// reported but never break the client.
function guard(fn) {
  try {
    fn();
  } catch (err) {
    report(err);
  }
}

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else if (globalThis.console) console.error(err);
}

function errText(err) {
  return (err && err.message) || String(err);
}

// tokenUser returns the sub claim of a JWT, or null when the token is not a
// JWT this client can read. It is not verified (the gateway does that): it
// only tells whose cursor to send.
function tokenUser(token) {
  try {
    const p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(p), c => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

// defaultStorage is the tab's sessionStorage, if the page may use it (a
// sandboxed frame or disabled storage throws on access).
function defaultStorage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null;
  }
}
