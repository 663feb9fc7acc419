// Unit tests of herald.js, run with `node --test web/`. Everything the client
// touches is faked here: a WebSocket class the test drives (open, message,
// close with a code), a dispatcher behind fetch, an in-memory storage and a
// manual clock behind setTimeout/clearTimeout/now. No npm packages.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from './herald.js';

// flush lets the client's pending work settle: a few macrotask turns, each
// running every queued microtask first (the fake fetch answers on a later
// turn, as a real one does).
const tick = () => new Promise(resolve => setImmediate(resolve));
const flush = async () => {
  for (let i = 0; i < 5; i++) await tick();
};

// Every client start() made is closed after its test, even a failing one, so
// a broken client cannot keep the process alive.
const started = [];
afterEach(() => {
  for (const c of started.splice(0)) c.close();
});

// Clock is a manual clock: timers run only when the test advances it.
class Clock {
  t = 0;
  lastId = 0;
  timers = new Map();
  setTimeout = (fn, ms) => {
    const id = ++this.lastId;
    this.timers.set(id, { at: this.t + Math.max(0, ms || 0), fn });
    return id;
  };
  clearTimeout = id => {
    this.timers.delete(id);
  };
  now = () => this.t;
  get pending() {
    return this.timers.size;
  }
  // advance moves time forward by ms, running due timers in order and
  // letting the client's promises settle after each.
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let first = null;
      for (const [id, tm] of this.timers) if (tm.at <= end && (!first || tm.at < first.at)) first = { id, ...tm };
      if (!first) break;
      this.timers.delete(first.id);
      this.t = first.at;
      first.fn();
    }
    this.t = end;
    await flush();
  }
}

// makeWebSocket returns a fake WebSocket class and the list of its instances.
function makeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = []; // frames the client sent, decoded
      this.closedWith = null; // {code, reason} if the client closed it
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }
    // The server's side.
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    recv(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
    sentOf(type) {
      return this.sent.filter(f => f.type === type);
    }
  }
  return { FakeWebSocket, sockets };
}

// route is a 200 answer of /v1/connect.
const route = (gateway = 'gw-1', ring = 'ring-1') => [200, { gateway, url: `ws://${gateway}/ws`, ring }];
const apiError = (status, code) => [status, { error: { code, message: `test says ${code}` } }];
const NETWORK_ERROR = [0];

// makeDispatcher fakes fetch: answer(n) gives [status, body] for call n;
// status 0 is a network error.
function makeDispatcher(answer) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, method: init.method, auth: init.headers.Authorization });
    await tick();
    const [status, body] = answer(calls.length - 1);
    if (status === 0) throw new TypeError('Failed to fetch');
    return { status, ok: status >= 200 && status < 300, json: async () => body };
  };
  return { fetch, calls };
}

// answers answers call n with list[n], and the last one after that.
const answers = (...list) => n => list[Math.min(n, list.length - 1)];

class MemoryStorage {
  map = new Map();
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

// start connects a client to fakes. options go to connect(); answer is the
// dispatcher's behaviour (default: always gw-1).
function start({ answer = () => route(), ...options } = {}) {
  const clock = new Clock();
  const { FakeWebSocket, sockets } = makeWebSocket();
  const dispatcher = makeDispatcher(answer);
  const events = [];
  const frames = [];
  let tokens = 0;
  const storage = 'storage' in options ? options.storage : new MemoryStorage();
  const client = connect({
    baseURL: 'http://dispatcher:8080/',
    tokenProvider: async () => `tok-${++tokens}`,
    WebSocket: FakeWebSocket,
    fetch: dispatcher.fetch,
    random: () => 0.5,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    ...options,
    storage,
  });
  started.push(client);
  // Listeners added after connect() returned must still see everything.
  for (const type of ['notification', 'gap', 'broadcast', 'caught_up', 'status']) client.on(type, ev => events.push({ type, ...ev }));
  client.onframe = f => frames.push(f);
  const h = {
    client,
    clock,
    sockets,
    calls: dispatcher.calls,
    storage,
    events,
    frames,
    get tokens() {
      return tokens;
    },
    get sock() {
      return sockets.at(-1);
    },
    of: type => events.filter(e => e.type === type),
    statuses: state => events.filter(e => e.type === 'status' && (!state || e.state === state)),
    lastStatus: () => h.statuses().at(-1),
    seqs: () => h.of('notification').map(n => n.seq),
    // connected opens the newest socket and says hello.
    async connected({ epoch = 'e1', cursor = 0, gateway = 'gw-1', start = undefined } = {}) {
      await flush();
      const ws = h.sock;
      assert.ok(ws, 'no socket was opened');
      ws.open();
      ws.recv({ type: 'hello', gateway, user: 'u1', epoch, cursor, start });
      await flush();
      return ws;
    },
    async send(...frames) {
      for (const f of frames) h.sock.recv(f);
      await flush();
    },
    async serverClose(code, reason = '') {
      h.sock.serverClose(code, reason);
      await flush();
    },
  };
  return h;
}

const note = seq => ({ type: 'notification', seq, id: `n-${seq}`, data: { text: `message ${seq}` }, ts: '2025-01-01T00:00:00Z' });

// ---- connecting ----

test('connects: token, POST /v1/connect with the bearer token, socket to the answered url, auth, hello', async () => {
  const h = start();
  await flush();
  assert.equal(h.tokens, 1, 'tokenProvider is called before the first connect');
  assert.deepEqual(h.calls, [{ url: 'http://dispatcher:8080/v1/connect', method: 'POST', auth: 'Bearer tok-1' }]);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.sock.url, 'ws://gw-1/ws');
  assert.equal(h.statuses('connecting').length, 1, 'the first status reaches listeners added after connect()');

  h.sock.open();
  // No cursor yet: since and epoch are left out.
  assert.deepEqual(h.sock.sent, [{ type: 'auth', token: 'tok-1', ring: 'ring-1' }]);

  h.sock.recv({ type: 'hello', gateway: 'gw-1', user: 'u1', epoch: 'e1', cursor: 0 });
  const s = h.lastStatus();
  assert.equal(s.state, 'connected');
  assert.equal(s.gateway, 'gw-1');
  assert.equal(s.url, 'ws://gw-1/ws');
  assert.deepEqual(s.cursor, { epoch: 'e1', seq: 0 });
  assert.deepEqual(h.client.cursor, { epoch: 'e1', seq: 0 });
  assert.deepEqual(JSON.parse(h.storage.getItem('herald-cursor')), { epoch: 'e1', seq: 0, user: 'u1' });
  assert.equal(h.client.stats.connects, 1);
  assert.equal(h.frames[0].type, 'hello', 'onframe sees the raw frames');
  h.client.close();
});

test('connect() checks its options', () => {
  assert.throws(() => connect({}), /tokenProvider/);
  const { FakeWebSocket } = makeWebSocket();
  const base = { tokenProvider: () => 't', WebSocket: FakeWebSocket, fetch: async () => ({}) };
  assert.throws(() => connect({ ...base, backoffBase: -1 }), /backoffBase/);
  assert.throws(() => connect({ ...base, backoffBase: 100, backoffMax: 10 }), /backoffMax/);
  assert.throws(() => connect({ ...base, pingInterval: 0 }), /pingInterval/);
  const c = connect({ ...base, storage: null });
  assert.throws(() => c.on('notifications', () => {}), /unknown event/);
  c.close(); // before it started: nothing is called, nothing is left
});

test('connect() checks start and last as a gateway does', () => {
  const { FakeWebSocket } = makeWebSocket();
  const base = { tokenProvider: () => 't', WebSocket: FakeWebSocket, fetch: async () => ({}), storage: null };
  for (const bad of [{ start: 'newest' }, { start: 'last' }, { start: 'last', last: 0 }, { start: 'last', last: 1001 }, { start: 'live', last: 3 },
    { start: 'all', last: 3 }, { last: -1 }, { last: 2.5 }, { start: 'resume' }]) {
    assert.throws(() => connect({ ...base, ...bad }), /start must be/, JSON.stringify(bad));
  }
  for (const good of [{}, { start: 'all' }, { start: 'live' }, { start: 'last', last: 1 }, { last: 1000 }]) connect({ ...base, ...good }).close();
});

test('close() right after connect() stops before anything happens', async () => {
  const h = start();
  h.client.close();
  await h.clock.advance(60_000);
  assert.equal(h.tokens, 0);
  assert.equal(h.calls.length, 0);
  assert.deepEqual(h.statuses().map(s => s.state), ['stopped']);
  assert.equal(h.clock.pending, 0);
});

// ---- where a tab starts ----

test('start: a tab without a cursor sends its choice once; the hello gives it a cursor, and reconnects resume from it', async () => {
  for (const [options, sent, hello] of [
    [{ start: 'last', last: 10 }, { start: 'last', last: 10 }, { cursor: 41, start: 'last' }],
    [{ last: 5 }, { start: 'last', last: 5 }, { cursor: 46, start: 'last' }],
    [{ start: 'live' }, { start: 'live' }, { cursor: 0, start: 'live' }],
    [{ start: 'all' }, {}, { cursor: 0, start: 'all' }],
  ]) {
    const h = start(options);
    await flush();
    h.sock.open();
    assert.deepEqual(h.sock.sent[0], { type: 'auth', token: 'tok-1', ring: 'ring-1', ...sent }, JSON.stringify(options));
    h.sock.recv({ type: 'hello', gateway: 'gw-1', user: 'u1', epoch: 'e1', ...hello });
    await flush();
    assert.equal(h.lastStatus().start, hello.start);
    await h.serverClose(1012);
    await h.clock.advance(h.lastStatus().delay);
    h.sock.open();
    const resume = { type: 'auth', token: 'tok-1', epoch: 'e1', ring: 'ring-1' };
    if (hello.cursor > 0) resume.since = hello.cursor;
    assert.deepEqual(h.sock.sent[0], resume, 'the reconnect resumes rather than chooses again');
    h.client.close();
  }
});

test('caught_up: emitted once per socket with its cursor, counted; the notifications before it are the backlog', async () => {
  const h = start({ start: 'last', last: 2 });
  await h.connected({ cursor: 3, start: 'last' });
  await h.send(note(4), note(5), { type: 'caught_up', cursor: 5 }, note(6));
  assert.deepEqual(h.events.filter(e => e.type !== 'status').map(e => e.type === 'caught_up' ? `caught_up@${e.cursor}` : e.seq), [4, 5, 'caught_up@5', 6]);
  assert.equal(h.client.stats.caughtUps, 1);
  await h.send({ type: 'caught_up' }); // an empty log: cursor 0
  assert.deepEqual(h.of('caught_up').at(-1), { type: 'caught_up', cursor: 0 });
  await h.send({ type: 'caught_up', cursor: -1 }); // a gateway bug: dropped, resumed
  assert.equal(h.client.stats.badFrames, 1);
  h.client.close();
});

// ---- notifications, dedupe, acks ----

test('notifications: each seq once and in order, duplicates dropped, every delivered seq acked on the wire', async () => {
  const h = start();
  const ws = await h.connected();
  await h.send(note(1), note(2), note(2), note(1), note(3));

  assert.deepEqual(h.seqs(), [1, 2, 3]);
  assert.deepEqual(h.of('notification')[0], { type: 'notification', seq: 1, id: 'n-1', data: { text: 'message 1' }, ts: '2025-01-01T00:00:00Z' });
  assert.deepEqual(ws.sentOf('ack'), [{ type: 'ack', seq: 1 }, { type: 'ack', seq: 2 }, { type: 'ack', seq: 3 }]);
  assert.equal(h.client.stats.duplicates, 2);
  assert.equal(h.client.stats.notifications, 3);
  assert.equal(h.client.stats.acks, 3);
  // onframe gets every frame as received, duplicates included.
  assert.deepEqual(h.frames.filter(f => f.type === 'notification').map(f => f.seq), [1, 2, 2, 1, 3]);
  assert.deepEqual(h.client.cursor, { epoch: 'e1', seq: 3 });
  assert.deepEqual(JSON.parse(h.storage.getItem('herald-cursor')), { epoch: 'e1', seq: 3, user: 'u1' });
  h.client.close();
});

test('the cursor is advanced and persisted before the ack is sent', async () => {
  const h = start();
  const ws = await h.connected();
  const seen = [];
  const send = ws.send.bind(ws);
  ws.send = data => {
    seen.push({ frame: JSON.parse(data), stored: JSON.parse(h.storage.getItem('herald-cursor')).seq });
    send(data);
  };
  await h.send(note(1));
  assert.deepEqual(seen, [{ frame: { type: 'ack', seq: 1 }, stored: 1 }]);
  h.client.close();
});

test('hello is authoritative: a notification at or below its cursor is a duplicate', async () => {
  const h = start();
  await h.connected({ cursor: 5 });
  await h.send(note(4), note(5), note(6));
  assert.deepEqual(h.seqs(), [6]);
  assert.equal(h.client.stats.duplicates, 2);
  assert.deepEqual(h.sock.sentOf('ack'), [{ type: 'ack', seq: 6 }]);
  h.client.close();
});

test('a listener that throws does not stop delivery or acks', async () => {
  const reported = [];
  globalThis.reportError = err => reported.push(err);
  try {
    const h = start();
    h.client.on('notification', () => {
      throw new Error('app bug');
    });
    await h.connected();
    await h.send(note(1), note(2));
    assert.deepEqual(h.seqs(), [1, 2]);
    assert.deepEqual(h.sock.sentOf('ack').map(a => a.seq), [1, 2]);
    assert.equal(reported.length, 2);
    h.client.close();
  } finally {
    delete globalThis.reportError;
  }
});

test('off() removes a listener', async () => {
  const h = start();
  const got = [];
  const fn = n => got.push(n.seq);
  h.client.on('notification', fn);
  await h.connected();
  await h.send(note(1));
  h.client.off('notification', fn);
  await h.send(note(2));
  assert.deepEqual(got, [1]);
  assert.deepEqual(h.seqs(), [1, 2]);
  h.client.close();
});

test('broadcast: emitted, never moves the cursor, never acked', async () => {
  const h = start();
  const ws = await h.connected({ cursor: 4 });
  await h.send({ type: 'broadcast', data: { all: true }, ts: 't' });
  assert.deepEqual(h.of('broadcast'), [{ type: 'broadcast', data: { all: true }, ts: 't' }]);
  assert.deepEqual(h.client.cursor, { epoch: 'e1', seq: 4 });
  assert.deepEqual(ws.sentOf('ack'), []);
  h.client.close();
});

// ---- cursor and epoch ----

test('gap with a new epoch resets the cursor, so the new log\'s low seqs are delivered', async () => {
  const h = start();
  await h.connected({ epoch: 'e1', cursor: 10 });
  await h.send({ type: 'gap', epoch: 'e2', after: 10, next: 1 });
  assert.deepEqual(h.of('gap'), [{ type: 'gap', epoch: 'e2', after: 10, next: 1 }]);
  assert.deepEqual(h.client.cursor, { epoch: 'e2', seq: 0 });
  await h.send(note(1), note(2));
  assert.deepEqual(h.seqs(), [1, 2], 'seqs of the new epoch are not dropped as old');
  assert.deepEqual(JSON.parse(h.storage.getItem('herald-cursor')), { epoch: 'e2', seq: 2, user: 'u1' });
  assert.equal(h.client.stats.gaps, 1);
  h.client.close();
});

test('gap in the same epoch skips to next-1: what the log no longer holds is not waited for', async () => {
  const h = start();
  await h.connected({ epoch: 'e1', cursor: 3 });
  await h.send({ type: 'gap', epoch: 'e1', after: 3, next: 8 });
  assert.deepEqual(h.client.cursor, { epoch: 'e1', seq: 7 });
  await h.send(note(5), note(8));
  assert.deepEqual(h.seqs(), [8]);
  h.client.close();
});

test('resume: the reconnect\'s auth carries since and epoch of the cursor', async () => {
  const h = start();
  await h.connected({ epoch: 'e1', cursor: 0 });
  await h.send(note(1), note(2), note(3));
  await h.serverClose(1012, 'service restart');
  await h.clock.advance(h.lastStatus().delay);
  assert.equal(h.sockets.length, 2);
  h.sock.open();
  assert.deepEqual(h.sock.sent[0], { type: 'auth', token: 'tok-1', since: 3, epoch: 'e1', ring: 'ring-1' });
  h.client.close();
});

test('the cursor survives in storage: a new client with the same key resumes, another key starts fresh', async () => {
  const storage = new MemoryStorage();
  const a = start({ storage });
  await a.connected({ epoch: 'e7', cursor: 0 });
  await a.send(note(1), note(2));
  a.client.close();

  const b = start({ storage });
  assert.deepEqual(b.client.cursor, { epoch: 'e7', seq: 2 }, 'read back at connect');
  await flush();
  b.sock.open();
  assert.deepEqual(b.sock.sent[0], { type: 'auth', token: 'tok-1', since: 2, epoch: 'e7', ring: 'ring-1' });
  b.client.close();

  const c = start({ storage, storageKey: 'other-tab' });
  await flush();
  c.sock.open();
  assert.deepEqual(c.sock.sent[0], { type: 'auth', token: 'tok-1', ring: 'ring-1' });
  assert.deepEqual(c.client.cursor, { epoch: '', seq: 0 });
  c.client.close();
  assert.deepEqual(JSON.parse(storage.getItem('herald-cursor')), { epoch: 'e7', seq: 2, user: 'u1' }, 'the other key left it alone');
});

test('a stored cursor is sent only for the user it belongs to (the JWT sub)', async () => {
  const jwt = sub => `h.${Buffer.from(JSON.stringify({ sub, exp: 1 })).toString('base64url')}.sig`;
  const storage = new MemoryStorage();
  const a = start({ storage, tokenProvider: async () => jwt('u1') });
  await a.connected({ epoch: 'e7', cursor: 0 }); // the fake's hello names u1
  await a.send(note(1), note(2));
  a.client.close();

  // The same user resumes.
  const same = start({ storage, tokenProvider: async () => jwt('u1') });
  await flush();
  same.sock.open();
  assert.equal(same.sock.sent[0].since, 2);
  same.client.close();

  // Another user in the same tab starts afresh: u1's position in the
  // stream would skip u2's older messages without a gap.
  const other = start({ storage, tokenProvider: async () => jwt('bö-2') });
  await flush();
  other.sock.open();
  assert.deepEqual(other.sock.sent[0], { type: 'auth', token: jwt('bö-2'), ring: 'ring-1' });
  assert.deepEqual(other.client.cursor, { epoch: '', seq: 0 });
  other.client.close();
});

test('an unreadable stored cursor, no storage, or a storage that throws: start fresh and keep working', async () => {
  const bad = new MemoryStorage();
  bad.setItem('herald-cursor', '{not json');
  const a = start({ storage: bad });
  assert.deepEqual(a.client.cursor, { epoch: '', seq: 0 });
  a.client.close();

  const b = start({ storage: null });
  await b.connected();
  await b.send(note(1));
  assert.deepEqual(b.client.cursor, { epoch: 'e1', seq: 1 });
  b.client.close();

  const full = {
    getItem: () => null,
    setItem: () => {
      throw new Error('QuotaExceededError');
    },
  };
  const c = start({ storage: full });
  await c.connected();
  await c.send(note(1), note(2));
  assert.deepEqual(c.seqs(), [1, 2]);
  assert.deepEqual(c.sock.sentOf('ack').map(a => a.seq), [1, 2]);
  c.client.close();
});

// ---- backoff ----

test('backoff: full jitter, delay = random() × cap, the cap doubling from backoffBase up to backoffMax', async () => {
  let r = 1;
  const h = start({ answer: () => apiError(503, 'unavailable'), random: () => r, backoffBase: 250, backoffMax: 30_000 });
  await flush();
  const caps = [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
  for (const [i, cap] of caps.entries()) {
    const s = h.lastStatus();
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.attempt, i);
    assert.equal(s.code, 503);
    assert.equal(s.delay, cap, `attempt ${i}: random()=1 gives the cap`);
    // The retry comes when the delay is over, not before.
    const calls = h.calls.length;
    await h.clock.advance(cap - 1);
    assert.equal(h.calls.length, calls, `attempt ${i}: retried before the delay`);
    await h.clock.advance(1);
    assert.equal(h.calls.length, calls + 1, `attempt ${i}: not retried after the delay`);
  }
  // The delay scales with random(): 0.25 of the cap, and 0 at random() = 0.
  r = 0.25;
  await h.clock.advance(30_000);
  assert.equal(h.lastStatus().delay, 7500);
  // (A zero delay retries at once, so stop there: this dispatcher never
  // answers 200 and the manual clock would spin.)
  h.client.on('status', s => s.state === 'reconnecting' && h.client.close());
  r = 0;
  await h.clock.advance(7500);
  assert.equal(h.statuses('reconnecting').at(-1).delay, 0);
  assert.equal(h.lastStatus().state, 'stopped');
});

test('backoff: by default the cap doubles from 250 ms and stops at 10 s', async () => {
  const h = start({ answer: () => apiError(503, 'unavailable'), random: () => 1 });
  await flush();
  const caps = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
  for (const [i, cap] of caps.entries()) {
    assert.equal(h.lastStatus().delay, cap, `attempt ${i}`);
    await h.clock.advance(cap);
  }
});

test('backoff: with a real random() every delay is within [0, cap]', async () => {
  const h = start({ answer: () => NETWORK_ERROR, random: Math.random, backoffBase: 100, backoffMax: 3000 });
  await flush();
  const delays = [];
  for (let i = 0; i < 60; i++) {
    const s = h.lastStatus();
    const cap = Math.min(3000, 100 * 2 ** i);
    assert.ok(s.delay >= 0 && s.delay <= cap, `attempt ${i}: delay ${s.delay} outside [0, ${cap}]`);
    delays.push(s.delay);
    await h.clock.advance(s.delay);
  }
  assert.equal(h.calls.length, 61);
  assert.ok(new Set(delays).size > 50, 'delays are random');
  assert.ok(delays.slice(10).some(d => d > 1500), 'late delays use the whole capped range');
  h.client.close();
});

test('backoff: the attempt counter resets after a connection that stayed up stableAfter, not after a short one', async () => {
  const h = start({ random: () => 1, answer: answers(NETWORK_ERROR, NETWORK_ERROR, NETWORK_ERROR, route()) });
  await flush();
  for (let i = 0; i < 3; i++) await h.clock.advance(h.lastStatus().delay);
  assert.equal(h.sockets.length, 1);
  // A short connection does not reset the counter.
  await h.connected();
  await h.clock.advance(9_999);
  await h.serverClose(1012);
  assert.equal(h.lastStatus().attempt, 3);
  assert.equal(h.lastStatus().delay, 2000);
  await h.clock.advance(2000);
  // A connection up stableAfter (10 s) does.
  await h.connected();
  await h.clock.advance(10_000);
  await h.serverClose(1012);
  assert.equal(h.lastStatus().attempt, 0);
  assert.equal(h.lastStatus().delay, 250);
  h.client.close();
});

// ---- close codes ----

test('4001: reconnects to the moved url at once, without /v1/connect and without a ring', async () => {
  const h = start();
  await h.connected();
  await h.send(note(1), { type: 'moved', url: 'ws://gw-2/ws' });
  await h.serverClose(4001, 'moved');
  assert.equal(h.sockets.length, 2, 'no wait');
  assert.equal(h.sock.url, 'ws://gw-2/ws');
  assert.equal(h.calls.length, 1, 'the dispatcher was not asked');
  const s = h.lastStatus();
  assert.equal(s.state, 'reconnecting');
  assert.equal(s.code, 4001);
  assert.equal(s.delay, 0);
  h.sock.open();
  assert.deepEqual(h.sock.sent[0], { type: 'auth', token: 'tok-1', since: 1, epoch: 'e1' });
  assert.equal(h.client.stats.moves, 1);
  h.client.close();
});

test('4001 twice within moveWindow: back to /v1/connect with backoff; a move after the window is direct again', async () => {
  const h = start({ random: () => 1 });
  await h.connected();
  await h.send({ type: 'moved', url: 'ws://gw-2/ws' });
  await h.serverClose(4001);
  await h.connected({ gateway: 'gw-2' });
  await h.clock.advance(9_000);
  await h.send({ type: 'moved', url: 'ws://gw-1/ws' });
  await h.serverClose(4001);
  assert.equal(h.sockets.length, 2, 'the second move within 10 s is not followed at once');
  const s = h.lastStatus();
  assert.equal(s.state, 'reconnecting');
  assert.equal(s.code, 4001);
  assert.equal(s.delay, 250);
  await h.clock.advance(249);
  assert.equal(h.calls.length, 1);
  await h.clock.advance(1);
  assert.equal(h.calls.length, 2, 'then it asks the dispatcher');
  assert.equal(h.sockets.length, 3);
  assert.equal(h.client.stats.movesViaDispatcher, 1);

  await h.connected();
  await h.clock.advance(10_001);
  await h.send({ type: 'moved', url: 'ws://gw-3/ws' });
  await h.serverClose(4001);
  assert.equal(h.sock.url, 'ws://gw-3/ws', 'outside the window: direct');
  assert.equal(h.calls.length, 2);
  h.client.close();
});

test('4001 without a moved frame: /v1/connect with backoff', async () => {
  const h = start({ random: () => 1 });
  await h.connected();
  await h.serverClose(4001);
  assert.equal(h.sockets.length, 1);
  await h.clock.advance(250);
  assert.equal(h.calls.length, 2);
  h.client.close();
});

test('4003: stops for good', async () => {
  const h = start();
  await h.connected();
  await h.serverClose(4003, 'unauthorized');
  const s = h.lastStatus();
  assert.equal(s.state, 'stopped');
  assert.equal(s.code, 4003);
  assert.equal(h.clock.pending, 0);
  await h.clock.advance(120_000);
  assert.equal(h.calls.length, 1);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.tokens, 1);
});

test('4004 after hello: a new token from tokenProvider, reconnect at once with it', async () => {
  const h = start();
  await h.connected();
  await h.send(note(1));
  await h.serverClose(4004, 'token expired');
  assert.equal(h.tokens, 2);
  assert.equal(h.calls.length, 2, 'no wait');
  assert.equal(h.calls[1].auth, 'Bearer tok-2');
  assert.equal(h.lastStatus().delay, 0);
  h.sock.open();
  assert.deepEqual(h.sock.sent[0], { type: 'auth', token: 'tok-2', since: 1, epoch: 'e1', ring: 'ring-1' });
  h.client.close();
});

test('4004 before hello (the token was already expired): pause, then a new token', async () => {
  const h = start({ random: () => 1 });
  await flush();
  h.sock.open();
  await h.serverClose(4004);
  assert.equal(h.tokens, 1, 'a provider that hands out the same stale token must not spin');
  await h.clock.advance(250);
  assert.equal(h.tokens, 2);
  assert.equal(h.calls.at(-1).auth, 'Bearer tok-2');
  h.client.close();
});

test('4009: waits at least tooManySocketsBackoff, plus jitter', async () => {
  for (const [r, want] of [[0, 5000], [1, 5250]]) {
    const h = start({ random: () => r });
    await h.connected();
    await h.serverClose(4009, 'too many sockets');
    assert.equal(h.lastStatus().delay, want);
    await h.clock.advance(want - 1);
    assert.equal(h.calls.length, 1, `random ${r}: retried before ${want} ms`);
    await h.clock.advance(1);
    assert.equal(h.calls.length, 2);
    h.client.close();
  }
});

for (const code of [1012, 1013, 4002, 4008, 1006, 1011]) {
  test(`${code}: full-jitter backoff, then /v1/connect again`, async () => {
    const h = start({ random: () => 0.5, backoffBase: 1000 });
    await h.connected();
    await h.serverClose(code);
    const s = h.lastStatus();
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.code, code);
    assert.equal(s.gateway, 'gw-1');
    assert.equal(s.delay, 500);
    assert.equal(h.sockets.length, 1);
    await h.clock.advance(499);
    assert.equal(h.calls.length, 1, 'not before the delay');
    await h.clock.advance(1);
    assert.equal(h.calls.length, 2, 'through the dispatcher');
    // Without a close frame (1006) the gateway may be dead: the dispatcher
    // is told, so it can hold the answer until the ring changes.
    assert.equal(h.calls[1].url, `http://dispatcher:8080/v1/connect${code === 1006 ? '?unreachable=gw-1' : ''}`);
    assert.equal(h.sockets.length, 2);
    assert.equal(h.tokens, 1, 'the same token');
    assert.equal(h.client.stats.reconnects, 1);
    h.client.close();
  });
}

test('a socket that never opens: backoff and retry', async () => {
  const h = start({ random: () => 1 });
  await flush();
  await h.serverClose(1006);
  assert.equal(h.lastStatus().delay, 250);
  await h.clock.advance(250);
  assert.equal(h.sockets.length, 2);
  assert.equal(h.client.stats.dialFailures, 1);
  assert.deepEqual(h.calls.map(c => c.url), ['http://dispatcher:8080/v1/connect', 'http://dispatcher:8080/v1/connect?unreachable=gw-1']);
  h.client.close();
});

test('a socket that fails to open with an error but no close event: backoff and retry all the same', async () => {
  const h = start({ random: () => 1 });
  await flush();
  h.sock.onerror({}); // what Node 20's WebSocket does on a refused connection
  await flush();
  assert.equal(h.lastStatus().state, 'reconnecting');
  assert.equal(h.lastStatus().code, 1006);
  assert.equal(h.lastStatus().delay, 250);
  await h.clock.advance(250);
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

// ---- the dispatcher ----

test('401 from /v1/connect: one new token, then retry at once', async () => {
  const h = start({ answer: answers(apiError(401, 'unauthorized'), route()) });
  await flush();
  assert.equal(h.tokens, 2);
  assert.deepEqual(h.calls.map(c => c.auth), ['Bearer tok-1', 'Bearer tok-2']);
  assert.equal(h.sockets.length, 1);
  h.sock.open();
  assert.equal(h.sock.sent[0].token, 'tok-2');
  h.client.close();
});

test('401 to a fresh token: stopped with code 401', async () => {
  const h = start({ answer: () => apiError(401, 'unauthorized') });
  await flush();
  const s = h.lastStatus();
  assert.equal(s.state, 'stopped');
  assert.equal(s.code, 401);
  assert.match(s.reason, /401/);
  assert.equal(h.tokens, 2);
  assert.equal(h.calls.length, 2);
  assert.equal(h.clock.pending, 0);
  await h.clock.advance(120_000);
  assert.equal(h.calls.length, 2);
});

test('503 and network errors from /v1/connect: backoff and retry with the same token', async () => {
  const h = start({ random: () => 1, answer: answers(apiError(503, 'unavailable'), NETWORK_ERROR, [200, { gateway: 'gw-1' }], route()) });
  await flush();
  assert.equal(h.lastStatus().code, 503);
  assert.match(h.lastStatus().reason, /503 unavailable/);
  await h.clock.advance(250);
  assert.equal(h.lastStatus().code, 0);
  assert.match(h.lastStatus().reason, /Failed to fetch/);
  await h.clock.advance(500);
  assert.match(h.lastStatus().reason, /no url/);
  await h.clock.advance(1000);
  assert.equal(h.calls.length, 4);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.tokens, 1);
  assert.equal(h.client.stats.resolveFailures, 3);
  h.client.close();
});

test('a dispatcher that never answers is given up on after 10 s', async () => {
  // fetch hangs until aborted.
  const hanging = start({
    random: () => 1,
    fetch: (url, init) =>
      new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted')))),
  });
  await hanging.clock.advance(9_999);
  assert.equal(hanging.statuses('reconnecting').length, 0);
  await hanging.clock.advance(1);
  assert.match(hanging.lastStatus().reason, /aborted/);
  hanging.client.close();
});

test('tokenProvider failing or returning nothing: backoff and ask again', async () => {
  let n = 0;
  const h = start({
    random: () => 1,
    tokenProvider: async () => {
      n++;
      if (n === 1) throw new Error('auth server down');
      if (n === 2) return '';
      return 'good';
    },
  });
  await flush();
  assert.match(h.lastStatus().reason, /auth server down/);
  assert.equal(h.calls.length, 0);
  await h.clock.advance(250);
  assert.match(h.lastStatus().reason, /no token/);
  await h.clock.advance(500);
  assert.deepEqual(h.calls.map(c => c.auth), ['Bearer good']);
  h.client.close();
});

// ---- keepalive ----

test('ping every pingInterval; a socket that answers stays up', async () => {
  const h = start({ pingInterval: 1000 });
  const ws = await h.connected();
  for (let i = 1; i <= 5; i++) {
    await h.clock.advance(1000);
    assert.equal(ws.sentOf('ping').length, i);
    await h.send({ type: 'pong' });
  }
  assert.equal(ws.closedWith, null);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.client.stats.pongs, 5);
  h.client.close();
});

test('a socket with no frame for 2×pingInterval is dropped and reconnected with backoff', async () => {
  const h = start({ pingInterval: 1000, random: () => 1 });
  const ws = await h.connected();
  await h.clock.advance(1999);
  assert.equal(ws.closedWith, null, 'not before 2×pingInterval');
  assert.equal(ws.sentOf('ping').length, 1);
  await h.clock.advance(1);
  assert.notEqual(ws.closedWith, null, 'the client closed the silent socket');
  const s = h.lastStatus();
  assert.equal(s.state, 'reconnecting');
  assert.match(s.reason, /sent no frame/);
  assert.equal(s.delay, 250);
  assert.equal(h.client.stats.deadSockets, 1);
  ws.recv(note(1)); // a late frame of the dropped socket is ignored
  await h.clock.advance(250);
  assert.equal(h.sockets.length, 2);
  assert.equal(h.calls.length, 2);
  assert.equal(h.calls[1].url, 'http://dispatcher:8080/v1/connect?unreachable=gw-1', 'a silent gateway may be dead');
  assert.deepEqual(h.seqs(), []);
  // The hint is for the next /v1/connect only: after a close frame, none.
  await h.connected();
  await h.serverClose(1012);
  await h.clock.advance(h.lastStatus().delay);
  assert.equal(h.calls.length, 3);
  assert.equal(h.calls[2].url, 'http://dispatcher:8080/v1/connect');
  h.client.close();
});

test('a bad frame drops the socket (resume from the cursor); an unknown frame type is ignored', async () => {
  const h = start({ random: () => 1 });
  const ws = await h.connected();
  await h.send({ type: 'future-thing', x: 1 }, note(1));
  assert.deepEqual(h.seqs(), [1]);
  await h.send('not json');
  assert.notEqual(ws.closedWith, null);
  assert.equal(h.client.stats.badFrames, 1);
  await h.clock.advance(250);
  h.sock.open();
  assert.equal(h.sock.sent[0].since, 1);
  h.client.close();
});

// ---- close() ----

test('close() while connected: the socket is closed with 1000, status stopped, no timers left, nothing more happens', async () => {
  const h = start();
  const ws = await h.connected();
  h.client.close();
  h.client.close(); // twice is fine
  assert.equal(ws.closedWith.code, 1000);
  assert.equal(h.statuses('stopped').length, 1);
  assert.equal(h.lastStatus().state, 'stopped');
  assert.equal(h.clock.pending, 0);
  ws.recv(note(1));
  ws.serverClose(1012);
  await h.clock.advance(3_600_000);
  assert.equal(h.calls.length, 1);
  assert.equal(h.sockets.length, 1);
  assert.deepEqual(h.seqs(), []);
});

test('close() during a backoff or a pending /v1/connect leaves no timer', async () => {
  const a = start({ answer: () => apiError(503, 'unavailable') });
  await flush();
  assert.equal(a.lastStatus().state, 'reconnecting');
  a.client.close();
  assert.equal(a.clock.pending, 0);
  await a.clock.advance(3_600_000);
  assert.equal(a.calls.length, 1);

  const b = start({ fetch: () => new Promise(() => {}) }); // never answers, ignores abort
  await flush();
  b.client.close();
  assert.equal(b.clock.pending, 0);
  assert.equal(b.lastStatus().state, 'stopped');

  const c = start();
  await flush(); // the socket is still connecting
  c.client.close();
  assert.equal(c.sock.closedWith.code, 1000);
  assert.equal(c.clock.pending, 0);
});

test('close() from a reconnecting status listener leaves no backoff timer', async () => {
  const h = start();
  await h.connected();
  h.client.on('status', s => s.state === 'reconnecting' && h.client.close());
  await h.serverClose(1012);
  await flush();
  assert.equal(h.lastStatus().state, 'stopped');
  assert.equal(h.clock.pending, 0);
});

test('close() from a listener stops at once; no ack goes out on the closed socket', async () => {
  const h = start();
  h.client.on('notification', () => h.client.close());
  const ws = await h.connected();
  await h.send(note(1), note(2));
  assert.deepEqual(h.seqs(), [1]);
  assert.deepEqual(ws.sentOf('ack'), []);
  assert.equal(h.clock.pending, 0);
});

test('with real timers, close() leaves no timer behind (the process exits on its own)', async () => {
  const timeouts = () => process.getActiveResourcesInfo().filter(r => r === 'Timeout').length;
  const before = timeouts();
  const { FakeWebSocket, sockets } = makeWebSocket();
  const dispatcher = makeDispatcher(answers(apiError(503, 'x'), route()));
  const statuses = [];
  const client = connect({
    tokenProvider: () => 'tok',
    WebSocket: FakeWebSocket,
    fetch: dispatcher.fetch,
    storage: null,
    backoffBase: 5,
    backoffMax: 5,
    pingInterval: 20,
  });
  try {
    client.on('status', s => statuses.push(s.state));
    while (sockets.length === 0) await new Promise(r => setTimeout(r, 2));
    sockets[0].open();
    sockets[0].recv({ type: 'hello', gateway: 'gw-1', user: 'u', epoch: 'e', cursor: 0 });
    await new Promise(r => setTimeout(r, 30));
    assert.ok(sockets[0].sentOf('ping').length >= 1, 'pinged with real timers');
    assert.ok(timeouts() > before, 'ping and silence timers are pending');
  } finally {
    client.close();
  }
  assert.equal(timeouts(), before);
  assert.deepEqual(statuses, ['connecting', 'reconnecting', 'connected', 'stopped']);
});

// ---- browser events ----

test('browser: a visible tab or going online ends a backoff at once; hidden and offline do not; close() unhooks', async () => {
  const doc = Object.assign(new EventTarget(), { visibilityState: 'hidden' });
  const win = new EventTarget();
  globalThis.document = doc;
  globalThis.window = win;
  try {
    const h = start({ random: () => 1, backoffBase: 60_000, backoffMax: 60_000, answer: () => NETWORK_ERROR });
    await flush();
    assert.equal(h.calls.length, 1);
    assert.equal(h.lastStatus().delay, 60_000);

    doc.dispatchEvent(new Event('visibilitychange')); // still hidden
    win.dispatchEvent(new Event('offline'));
    await flush();
    assert.equal(h.calls.length, 1);

    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    await flush();
    assert.equal(h.calls.length, 2, 'visible: connect now');

    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(h.calls.length, 3, 'online: connect now');
    assert.equal(h.clock.pending, 1, 'the abandoned backoff timers were cleared');

    h.client.close();
    win.dispatchEvent(new Event('online'));
    doc.dispatchEvent(new Event('visibilitychange'));
    await flush();
    assert.equal(h.calls.length, 3);
  } finally {
    delete globalThis.document;
    delete globalThis.window;
  }
});

test('browser: online while connected changes nothing', async () => {
  const win = new EventTarget();
  globalThis.window = win;
  try {
    const h = start();
    const ws = await h.connected();
    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(h.sockets.length, 1);
    assert.equal(ws.closedWith, null);
    h.client.close();
  } finally {
    delete globalThis.window;
  }
});

// ---- the protocol corpus ----

test('corpus: herald.js accepts every valid server frame of docs/frames.corpus.json and refuses every invalid one', async () => {
  const { readFile } = await import('node:fs/promises');
  const corpus = JSON.parse(await readFile(new URL('../docs/frames.corpus.json', import.meta.url), 'utf8'));
  assert.ok(corpus.server.valid.length >= 5 && corpus.server.invalid.length >= 5);
  for (const frame of corpus.server.valid) {
    const h = start();
    await h.connected();
    const before = h.sockets.length;
    await h.send(frame);
    assert.equal(h.client.stats.badFrames, 0, `refused a valid frame: ${JSON.stringify(frame)}`);
    assert.equal(h.sockets.length, before, `a valid frame ended the socket: ${JSON.stringify(frame)}`);
    h.client.close();
  }
  for (const frame of corpus.server.invalid) {
    const h = start();
    await h.connected();
    await h.send(frame);
    assert.equal(h.client.stats.badFrames, 1, `accepted an invalid frame: ${JSON.stringify(frame)}`);
    h.client.close();
  }
});
