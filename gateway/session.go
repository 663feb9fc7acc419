package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// session is one socket of a user: its place in the hub (membership), its
// cursor, its reader (the HTTP handler's goroutine) and its writer (a
// goroutine of its own).
type session struct {
	h    *hub
	c    conn
	wake chan struct{} // poked when the hub has new entries; capacity 1
	ctrl chan []byte   // pongs and broadcasts, written between notifications

	// cursor is the last seq handed to the writer (or, after a gap frame,
	// the position just before the gap's next); fresh is true until the
	// first notification of a session that started from nothing (since 0):
	// eviction before it connected is not its gap. lostAfter, when not 0,
	// is a cursor the session jumped from because what lay after it was
	// gone from the log: the next frame is a gap. ended is set when the
	// handler has left the hub. All guarded by h.mu.
	cursor    uint64
	fresh     bool
	lostAfter uint64
	ended     bool
	erased    *wire.Gap // set by an erasure: the gap frame to send next

	// target is the seq the session must reach to be caught up: the log's
	// head when it started. caughtUp is set, by the writer only, once it
	// has sent the caught_up frame.
	target   uint64
	caughtUp bool

	expires time.Time // the token's exp: the socket closes with 4004 then

	writing atomic.Int64 // unix nanos when the current write began; 0 between writes
	slow    atomic.Bool  // a write outlived WriteTimeout
	once    sync.Once
	closed  chan struct{}
}

func newSession(h *hub, c conn, st start) *session {
	return &session{h: h, c: c, wake: make(chan struct{}, 1), ctrl: make(chan []byte, 16), closed: make(chan struct{}),
		cursor: st.cursor, fresh: st.fresh, target: st.target}
}

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run serves the socket once it is attached: the first frames (hello, and
// a gap), then the reader here and the writer on its own goroutine until the
// socket ends. Neither cancels the other's read: coder/websocket drops a
// connection whose read context ends, which would cut a closing handshake
// short.
func (s *session) run(first [][]byte, expires time.Time) {
	u := s.h.u
	for _, f := range first {
		if s.c.Write(u.ctx, websocket.MessageText, f) != nil {
			return
		}
	}
	expiry := u.tasks.afterFunc(time.Until(expires), "session", func() { s.closeWith(nil, closeTokenExpired) })
	defer expiry.Stop()

	wctx, stopWriter := context.WithCancel(context.Background())
	defer stopWriter()
	writerDone := make(chan struct{})
	if !u.tasks.goNamed("session", func() {
		defer close(writerDone)
		defer u.tasks.recover("session", func() { s.c.CloseNow() })
		s.write(wctx)
	}) {
		return // the gateway is stopping
	}
	// Deferred, so that a panic in the reader stops the writer too.
	defer func() {
		stopWriter()
		s.c.CloseNow() // ends a writer blocked in a write; a no-op after a clean close
		<-writerDone
	}()
	s.read()
}

// read handles the client's frames: acks and pings. A malformed frame closes
// only this socket.
func (s *session) read() {
	for {
		typ, b, err := s.c.Read(context.Background())
		if err != nil {
			return
		}
		f, err := wire.DecodeClientFrame(b)
		if typ != websocket.MessageText || err != nil || f.Type == wire.TypeAuth {
			s.closeWith(nil, closeBadFrame)
			continue // the read fails once the close handshake is done
		}
		switch f.Type {
		case wire.TypeAck:
			s.h.ack(s, f.Seq)
		case wire.TypePing:
			select {
			case s.ctrl <- wire.PongFrame:
			default: // pongs pile up only for a client that does not read
			}
		}
	}
}

// closeWith sends frame (if any), then closes the socket with cl, once. It
// does not block: the closing handshake runs on a goroutine of its own, and
// the reader ends when it is done. The writer stops at once; the frame waits
// for a write in flight.
func (s *session) closeWith(frame []byte, cl wire.Close) {
	s.once.Do(func() {
		close(s.closed)
		u := s.h.u
		if !u.tasks.goNamed("close", func() { u.m.closeSocket(s.c, frame, cl, u.cfg.WriteTimeout) }) {
			s.c.CloseNow() // the gateway is stopping
		}
	})
}

// write runs the writer: notifications after the cursor in seq order, and
// control frames between them, until ctx ends or the socket closes. A log
// that cannot be read (NATS down) keeps the socket open: the writer tries
// again with backoff, so an outage closes nothing.
func (s *session) write(ctx context.Context) {
	u := s.h.u
	ping := time.NewTicker(u.cfg.PingInterval)
	defer ping.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var backoff time.Duration
	for {
		b, err := s.next(ctx)
		switch {
		case errors.Is(err, errStaleEpoch):
			s.closeWith(nil, closeNewEpoch)
			return
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			u.log.Debug("session read from the log failed; retrying", "user", s.h.user, "in", backoff, "error", err)
			retry.Reset(backoff)
		default:
			backoff = 0
		}
		for i, f := range b.frames {
			if !s.send(ctx, f) {
				return
			}
			if b.live[i] > 0 {
				u.m.latency.Observe(time.Since(time.Unix(0, b.live[i])).Seconds())
			}
		}
		if n := b.notifications(); n > 0 {
			u.m.deliveries.Add(float64(n))
		}
		if f := s.caughtUpFrame(); f != nil && !s.send(ctx, f) {
			return
		}
		if (len(b.frames) > 0 || b.moved) && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			return
		case <-s.wake:
		case <-retry.C:
		case f := <-s.ctrl:
			if !s.send(ctx, f) {
				return
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, u.cfg.WriteTimeout)
			err := s.c.Ping(pctx)
			cancel()
			if err != nil {
				// No pong in time. Ping closes the socket only when the
				// ping itself could not be written: close it here too, or
				// a socket whose writer is gone would stay open, silent.
				s.c.CloseNow()
				return
			}
		}
	}
}

// caughtUpFrame returns the caught_up frame once the session's cursor has
// reached its target, and nil before that and after it was sent. The frames
// up to the cursor have been sent by then: only the writer moves the
// cursor, as it takes a batch it then sends whole.
func (s *session) caughtUpFrame() []byte {
	if s.caughtUp {
		return nil
	}
	s.h.mu.Lock()
	cursor := s.cursor
	s.h.mu.Unlock()
	if cursor < s.target {
		return nil
	}
	s.caughtUp = true
	return wire.Encode(wire.CaughtUp{Type: wire.TypeCaughtUp, Cursor: cursor})
}

// send writes one frame. A write outliving WriteTimeout is noticed by the
// watchdog, which marks the session slow; the frame in flight still goes
// out if the peer reads again, then the socket is closed with 4008.
func (s *session) send(ctx context.Context, frame []byte) bool {
	select {
	case <-s.closed:
		return false // closing: the handshake owns the socket now
	default:
	}
	s.writing.Store(time.Now().UnixNano())
	err := s.c.Write(ctx, websocket.MessageText, frame)
	s.writing.Store(0)
	if err != nil {
		s.c.CloseNow() // a broken socket: make sure the reader ends too
		return false
	}
	if s.slow.Load() {
		s.h.u.m.slowConsumers.Inc()
		s.closeWith(nil, closeSlow)
		return false
	}
	return true
}

// batch is what the writer sends next: frames in order, and for each the
// publish time of a live notification (unix nanos), 0 for one read from the
// log, -1 for a gap frame. A gap is held back until the next notification
// or the end of the batch, so that consecutive losses make one gap frame.
type batch struct {
	frames [][]byte
	live   []int64
	gap    *wire.Gap
	moved  bool // the cursor moved past messages that sent nothing (skipped)
}

func (b *batch) addGap(epoch string, after, next uint64) {
	if b.gap == nil {
		b.gap = &wire.Gap{Type: wire.TypeGap, Epoch: epoch, After: after}
	}
	b.gap.Next = next
}

func (b *batch) flushGap() {
	if b.gap != nil {
		b.frames, b.live = append(b.frames, wire.Encode(*b.gap)), append(b.live, -1)
		b.gap = nil
	}
}

func (b *batch) add(frame []byte, live int64) {
	b.flushGap()
	b.frames, b.live = append(b.frames, frame), append(b.live, live)
}

func (b *batch) notifications() int {
	n := 0
	for _, v := range b.live {
		if v >= 0 {
			n++
		}
	}
	return n
}

// step adds one message of the chain to the batch and moves the cursor past
// it: its frame, after a gap if it does not follow the cursor; a hole (nil
// frame: a message that cannot be sent) becomes a gap that ends past it; a
// message the hub skips (expired, or collapsed into a newer one) sends
// nothing and leaves no gap. h.mu is held.
func (s *session) step(b *batch, e entry, live int64, now time.Time) {
	seq := e.seq
	if after, gap := s.gapBefore(seq, e.prev); gap {
		s.h.u.m.gaps.Inc()
		b.addGap(s.h.epoch, after, seq)
	}
	switch {
	case s.h.skips(e, now):
		s.h.u.m.skipped.Inc()
		b.moved = true
	case e.frame == nil:
		if b.gap == nil {
			s.h.u.m.gaps.Inc()
			b.addGap(s.h.epoch, s.cursor, seq+1)
		} else {
			b.gap.Next = seq + 1
		}
	default:
		b.add(e.frame, live)
	}
	s.cursor = seq
}

// next returns the frames to send after the cursor and advances it: the
// buffered ones, or a batch read from the log if the session is behind the
// buffer.
func (s *session) next(ctx context.Context) (batch, error) {
	if b, ok := s.fromErasure(); ok {
		return b, nil
	}
	if b, ok := s.fromBuffer(); ok {
		return b, nil
	}
	// Behind the buffer: catch up from the log, a batch at a time.
	u, h := s.h.u, s.h
	l := u.reader()
	if l == nil {
		return batch{}, errNotReady
	}
	h.mu.Lock()
	cursor, epoch := s.cursor, h.epoch
	h.mu.Unlock()
	select {
	case u.replays <- struct{}{}:
	case <-ctx.Done():
		return batch{}, ctx.Err()
	}
	// The buffer proves messages exist after the cursor unless they were
	// evicted; a replica that lags would make that look like a gap, so
	// readAfter asks the leader before believing it.
	msgs, err := readAfter(ctx, u, l, h.user, cursor, "replay")
	if err == nil {
		// Even an empty answer moves the cursor (what it lacks is gone):
		// it must come from this hub's stream too.
		err = h.sameEpoch(ctx, epoch)
	}
	<-u.replays
	if err != nil {
		return batch{}, err
	}
	return s.fromLog(msgs), nil
}

// fromErasure takes the gap frame an erasure left for the session, if any.
func (s *session) fromErasure() (batch, bool) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.erased == nil {
		return batch{}, false
	}
	var b batch
	b.gap, s.erased = s.erased, nil
	b.flushGap()
	return b, true
}

// fromBuffer takes the buffered entries after the cursor; false if the
// cursor is behind the buffer.
func (s *session) fromBuffer() (batch, bool) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	entries, reachable := h.after(s.cursor)
	if !reachable {
		return batch{}, false
	}
	var b batch
	now := time.Now()
	for _, e := range entries {
		s.step(&b, e, e.ts.UnixNano(), now)
	}
	b.flushGap()
	return b, true
}

// fromLog takes the messages read from the log for this session.
func (s *session) fromLog(msgs []inbox.Message) batch {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var b batch
	if len(msgs) == 0 {
		// Nothing between the cursor and the buffer survives (or a replica
		// lags): continue from the buffer, whose first entry shows the gap.
		now := time.Now()
		for _, e := range h.buf {
			if e.seq > s.cursor {
				s.step(&b, e, e.ts.UnixNano(), now)
			}
		}
		if len(b.frames) == 0 && b.gap == nil && h.base > s.cursor {
			// The hub took messages up to base that this session never
			// got, and the log no longer has them: the next frame the
			// session gets says so.
			if !s.fresh && s.lostAfter == 0 {
				s.lostAfter = s.cursor
			}
			s.cursor = h.base
		}
		b.flushGap()
		return b
	}
	for _, m := range msgs {
		h.noteCollapse(m.Collapse, m.Seq) // a newer one in this batch replaces an older one before it
	}
	now := time.Now()
	for _, m := range msgs {
		if m.Seq <= s.cursor {
			continue // the cursor moved on while the log was read
		}
		s.step(&b, h.entryOf(m), 0, now)
	}
	b.flushGap()
	u := h.u
	u.m.replayed.Add(float64(len(msgs)))
	return b
}

// gapBefore reports whether the message at seq, whose predecessor in the
// log was prev, leaves a gap after the session's cursor, and where the gap
// begins. It clears fresh and lostAfter. h.mu is held.
//
// prev > cursor: retention dropped messages between them. prev < cursor:
// when the message was appended the user's log was empty (retention drops
// the oldest first), so messages after the cursor may have come and gone
// unseen — even by a hub that took every message it heard of, for a
// message whose doorbell was lost can expire before anti-entropy finds it.
// No gap can hide where no seq lies between the gap's ends (seq ==
// after + 1).
func (s *session) gapBefore(seq, prev uint64) (after uint64, gap bool) {
	fresh, lost := s.fresh, s.lostAfter
	s.fresh, s.lostAfter = false, 0
	after = s.cursor
	switch {
	case lost != 0:
		after = lost
	case fresh, prev == s.cursor:
		return 0, false
	case prev == 0 && s.cursor == s.h.erasedTo:
		return 0, false // the first message after an erasure the session was told of
	}
	if seq == after+1 {
		return 0, false
	}
	return after, true
}
