package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/wire"
)

// session is one socket of a user. Its reader is the HTTP handler's
// goroutine; its writer is a goroutine of its own.
type session struct {
	h    *hub
	c    *websocket.Conn
	wake chan struct{} // poked when the hub has new entries; capacity 1
	ctrl chan []byte   // pongs and broadcasts, written between notifications

	// cursor is the last seq handed to the writer; fresh is true until the
	// first notification of a session that started from nothing (since 0,
	// or a void cursor): eviction before it connected is not its gap.
	// lostAfter, when not 0, is a cursor the session jumped from because
	// what lay after it was gone from the log: the next frame is a gap.
	// ended is set when the handler has left the hub. All guarded by h.mu.
	cursor    uint64
	fresh     bool
	lostAfter uint64
	ended     bool

	writing atomic.Int64 // unix nanos when the current write began; 0 between writes
	slow    atomic.Bool  // a write outlived WriteTimeout
	once    sync.Once
	closed  chan struct{}
}

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close closes the socket with code, once. It does not block: the closing
// handshake runs on its own goroutine, and the reader ends when it is done.
func (s *session) close(code int, reason string) { s.closeWith(nil, code, reason) }

// closeWith sends frame (if any), then closes the socket with code, once.
// The writer stops at once; the frame waits for a write in flight.
func (s *session) closeWith(frame []byte, code int, reason string) {
	s.once.Do(func() {
		close(s.closed)
		s.h.g.m.closes.WithLabelValues(codeLabel(code)).Inc()
		// The closing handshake gets a goroutine counted in g.conns, which
		// is only safe while the handler (holding a count) still runs.
		s.h.mu.Lock()
		ended := s.ended
		if !ended {
			s.h.g.conns.Add(1)
		}
		s.h.mu.Unlock()
		if ended {
			s.c.CloseNow()
			return
		}
		go func() {
			defer s.h.g.conns.Done()
			if frame != nil {
				ctx, cancel := context.WithTimeout(context.Background(), s.h.g.cfg.WriteTimeout)
				s.c.Write(ctx, websocket.MessageText, frame)
				cancel()
			}
			s.c.Close(websocket.StatusCode(code), reason)
		}()
	})
}

// write runs the writer: notifications after the cursor in seq order, and
// control frames between them, until ctx ends or the socket closes.
func (s *session) write(ctx context.Context) {
	g := s.h.g
	ping := time.NewTicker(g.cfg.PingInterval)
	defer ping.Stop()
	for {
		frames, live, err := s.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Debug("session read from the log failed", "user", s.h.user, "error", err)
				s.close(wire.CloseTryAgainLater, "log unavailable")
			}
			return
		}
		for i, f := range frames {
			if !s.send(ctx, f) {
				return
			}
			if live[i] > 0 {
				g.m.latency.Observe(time.Since(time.Unix(0, live[i])).Seconds())
			}
		}
		if len(frames) > 0 {
			g.m.deliveries.Add(float64(countNotifications(live)))
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			return
		case <-s.wake:
		case f := <-s.ctrl:
			if !s.send(ctx, f) {
				return
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, g.cfg.WriteTimeout)
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

func countNotifications(live []int64) int {
	n := 0
	for _, v := range live {
		if v >= 0 {
			n++
		}
	}
	return n
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
		s.h.g.m.slowConsumers.Inc()
		s.close(wire.CloseSlowConsumer, "slow consumer")
		return false
	}
	return true
}

// take returns the frames of buffered entries, each after its gap frame if
// it has one, and advances the cursor past them. h.mu is held.
func (s *session) take(entries []entry) (frames [][]byte, live []int64) {
	for _, e := range entries {
		if gap := s.gapBefore(e.seq, e.prev, e.hubPrev); gap != nil {
			frames, live = append(frames, gap), append(live, -1)
		}
		frames, live = append(frames, e.frame), append(live, e.ts.UnixNano())
		s.cursor = e.seq
	}
	return frames, live
}

// next returns the frames to send after the cursor and advances it: the
// buffered ones, or a batch read from the log if the session is behind the
// buffer. live[i] is the publish time (unix nanos) of a buffered
// notification, 0 for one read from the log, and -1 for a gap frame.
func (s *session) next(ctx context.Context) (frames [][]byte, live []int64, err error) {
	h := s.h
	h.mu.Lock()
	cursor := s.cursor
	entries, reachable := h.after(cursor)
	if reachable {
		frames, live = s.take(entries)
		h.mu.Unlock()
		return frames, live, nil
	}
	h.mu.Unlock()

	// Behind the buffer: catch up from the log, a batch at a time.
	g := h.g
	l := g.inbox.Load()
	if l == nil {
		return nil, nil, errNotReady
	}
	select {
	case g.replays <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	// The buffer proves messages exist after the cursor unless they were
	// evicted; a replica that lags would make that look like a gap, so
	// readAfter asks the leader before believing it.
	msgs, err := g.readAfter(ctx, l, h.user, cursor, "replay")
	<-g.replays
	if err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(msgs) == 0 {
		// Nothing between the cursor and the buffer survives (or a replica
		// lags): continue from the buffer, whose first entry shows the gap.
		frames, live = s.take(h.buf)
		if len(frames) == 0 && h.base > s.cursor {
			// The hub took messages up to base that this session never
			// got, and the log no longer has them: the next frame the
			// session gets says so.
			if !s.fresh && s.lostAfter == 0 {
				s.lostAfter = s.cursor
			}
			s.cursor = h.base
		}
		return frames, live, nil
	}
	for _, m := range msgs {
		if gap := s.gapBefore(m.Seq, m.Prev, notFromHub); gap != nil {
			frames, live = append(frames, gap), append(live, -1)
		}
		frames, live = append(frames, frameOf(m.Seq, m.ID, m.Data, m.TS)), append(live, 0)
		s.cursor = m.Seq
	}
	g.m.replayed.Add(float64(len(msgs)))
	return frames, live, nil
}

// notFromHub is the hubPrev of a message read from the log for one session:
// no hub vouches for what came before it.
const notFromHub = ^uint64(0)

// gapBefore returns a gap frame if the message at seq, whose predecessor in
// the log was prev, does not follow the session's cursor; hubPrev is the
// hub's head before it took the message (notFromHub for a session's own log
// read). Called with h.mu held.
//
// prev > cursor: retention dropped messages between them. prev < cursor:
// when the message was appended the user's log was empty (retention drops
// the oldest first), so messages after the cursor may have come and gone
// unseen — unless the hub took this message right after the cursor
// (hubPrev == cursor), having seen everything in between itself.
func (s *session) gapBefore(seq, prev, hubPrev uint64) []byte {
	fresh, lost := s.fresh, s.lostAfter
	s.fresh, s.lostAfter = false, 0
	after := s.cursor
	switch {
	case lost != 0:
		after = lost
	case fresh, prev == s.cursor:
		return nil
	case prev < s.cursor && hubPrev == s.cursor:
		return nil
	}
	s.h.g.m.gaps.Inc()
	return wire.Encode(wire.Gap{Type: wire.TypeGap, Epoch: s.h.epoch, After: after, Next: seq})
}

// startCursor decides where a new session resumes: after since, if since is
// a position in this epoch's log; otherwise from the start, after a gap that
// voids the old cursor. It returns the cursor and the gap frame, if any.
func (h *hub) startCursor(ctx context.Context, since uint64, epoch string) (uint64, []byte, error) {
	h.mu.Lock()
	head, cur := h.head, h.epoch
	h.mu.Unlock()
	if since == 0 {
		return 0, nil, nil
	}
	valid := epoch == "" || epoch == cur
	l := h.g.inbox.Load()
	if l == nil {
		return 0, nil, errNotReady
	}
	if !valid {
		// The client's epoch may be newer than this gateway's view: then it
		// is this gateway that must catch up, not the client's cursor that
		// is void.
		if e, err := l.Refresh(ctx); err == nil && e == epoch {
			h.g.checkEpochSoon()
			return 0, nil, errStaleEpoch
		}
	}
	if valid && since > head {
		// Beyond what this hub has seen: ask the leader, which never lags.
		h.g.m.logReads.WithLabelValues("leader").Inc()
		last, found, err := l.Last(ctx, h.user, true)
		if err != nil {
			return 0, nil, err
		}
		valid = found && since <= last.Seq
		if found {
			h.sync(last.Seq) // the hub is behind the leader: catch up now
		}
	}
	if valid {
		return since, nil, nil
	}
	h.g.m.logReads.WithLabelValues("init").Inc()
	first, err := l.ReadAfter(ctx, h.user, 0, 1)
	if err != nil {
		return 0, nil, err
	}
	next := head + 1
	if len(first) > 0 {
		next = first[0].Seq
	}
	h.g.m.gaps.Inc()
	return 0, wire.Encode(wire.Gap{Type: wire.TypeGap, Epoch: cur, After: since, Next: next}), nil
}

var (
	errNotReady   = errors.New("gateway not ready")
	errStaleEpoch = errors.New("the client knows a newer epoch of the log than this gateway")
)

// leaderBatch bounds reads through the stream leader, which fetch one
// message per round trip.
const leaderBatch = 10
