package gateway

import (
	"context"
	"sort"
	"time"

	"sync"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// entry is one message of the user's chain, encoded once as a frame that
// every session writes.
type entry struct {
	seq, prev uint64 // prev: the message's Herald-Prev
	hubPrev   uint64 // the hub's head before it took the message
	ts        time.Time
	frame     []byte
}

// waiter is a dispatcher waiting (wait=delivered) for a socket to ack seq.
type waiter struct {
	seq     uint64
	reply   string
	expires time.Time
}

// maxPending bounds the doorbells a hub keeps while it initializes; beyond
// it, it only remembers the highest seq and reads the log.
const maxPending = 256

// hub is one connected user's delivery state. All work for the user goes
// through it, so two doorbells for one user are never handled at once.
type hub struct {
	g     *Gateway
	user  string
	ready chan struct{} // closed when init has finished; initErr is set then

	mu        sync.Mutex // guards everything below
	initErr   error
	inited    bool
	closed    bool
	epoch     string
	head      uint64  // highest seq taken in chain order
	base      uint64  // head before buf[0]: buf covers the chain after base
	buf       []entry // the latest messages in chain order, see push
	bufBytes  int     // the frames' bytes in buf
	sessions  map[*session]struct{}
	joining   int             // sessions between join and attach
	pending   []wire.Doorbell // doorbells that came during init
	want      uint64          // highest seq known to exist; > head means a repair is due
	repairing bool
	acked     uint64 // highest seq any socket acknowledged
	waiters   []waiter
}

// join returns the user's hub, creating and initializing it if needed. The
// caller must attach a session or call leave.
func (g *Gateway) join(ctx context.Context, user string) (*hub, error) {
	g.mu.Lock()
	h := g.hubs[user]
	created := h == nil
	if created {
		h = &hub{g: g, user: user, ready: make(chan struct{}), sessions: make(map[*session]struct{})}
		g.hubs[user] = h
	}
	h.mu.Lock()
	h.joining++
	h.mu.Unlock()
	g.mu.Unlock()

	if created {
		h.init(ctx)
	}
	select {
	case <-h.ready:
	case <-ctx.Done():
		g.leave(h, nil)
		return nil, ctx.Err()
	}
	h.mu.Lock()
	err := h.initErr
	h.mu.Unlock()
	if err != nil {
		g.leave(h, nil)
		return nil, err
	}
	return h, nil
}

// init learns the user's head from the log. Doorbells that arrive meanwhile
// wait in pending: the hub is in the map, so nothing is missed.
func (h *hub) init(ctx context.Context) {
	l := h.g.inbox.Load()
	var (
		last  inbox.Message
		found bool
		err   error
	)
	if l == nil {
		err = errNotReady
	} else {
		// Through the leader: a doorbell that came before this hub existed
		// was dropped, so a replica lagging behind that append would hide
		// the message until anti-entropy.
		h.g.m.logReads.WithLabelValues("init").Inc()
		last, found, err = l.Last(ctx, h.user, true)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	defer close(h.ready)
	if err != nil {
		h.initErr = err
		return
	}
	if found {
		h.head = last.Seq
	}
	h.base, h.epoch, h.inited = h.head, h.g.currentEpoch(), true
	pending := h.pending
	h.pending = nil
	for _, d := range pending {
		h.doorbellLocked(d)
	}
	h.startRepair() // for a want raised while pending was full
}

// leave detaches s (nil when a join failed) and removes the hub from the
// gateway when nobody is left.
func (g *Gateway) leave(h *hub, s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if s != nil {
		delete(h.sessions, s)
		s.ended = true
		g.sockets--
	} else {
		h.joining--
	}
	if len(h.sessions) == 0 && h.joining == 0 && !h.closed {
		h.closed = true
		if g.hubs[h.user] == h {
			delete(g.hubs, h.user)
		}
	}
}

// attach adds s to the hub. It refuses with the close code to use when the
// hub was closed meanwhile (its epoch ended: 1012) or the user has too many
// sockets (4009); the caller then leaves.
func (h *hub) attach(s *session) (refuse int) {
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return wire.CloseServiceRestart
	case len(h.sessions) >= h.g.cfg.MaxSocketsPerUser:
		return wire.CloseTooManySockets
	}
	h.joining--
	h.sessions[s] = struct{}{}
	h.g.sockets++
	return 0
}

// doorbell handles a doorbell for the user; reply, if set, waits for an ack.
func (h *hub) doorbell(d wire.Doorbell, reply string) {
	h.mu.Lock()
	var answer string
	switch {
	case reply == "":
	case h.closed || len(h.sessions) == 0 && h.joining == 0:
		answer = wire.Offline
	case h.acked >= d.Seq:
		answer = wire.Delivered
	default:
		h.waiters = append(h.waiters, waiter{seq: d.Seq, reply: reply, expires: time.Now().Add(maxWait)})
	}
	if !h.closed {
		h.doorbellLocked(d)
	}
	h.mu.Unlock()
	if answer != "" {
		h.g.respond(reply, answer)
	}
}

// maxWait bounds how long a wait=delivered request is remembered; the
// dispatcher's own timeout is at most 30s.
const maxWait = 35 * time.Second

func (h *hub) doorbellLocked(d wire.Doorbell) {
	m := h.g.m
	if !h.inited {
		if len(h.pending) < maxPending {
			h.pending = append(h.pending, d)
		} else {
			h.want = max(h.want, d.Seq)
		}
		return
	}
	if d.Epoch != "" && d.Epoch != h.epoch {
		// From another incarnation of the log, or a dispatcher that has not
		// noticed a new one: the log decides.
		h.g.checkEpochSoon()
		d.HasContent = false
	}
	switch {
	case d.Seq <= h.head:
		m.doorbellOld.Inc()
	case d.HasContent && d.Prev <= h.head:
		m.doorbellNext.Inc()
		h.push(entry{seq: d.Seq, prev: d.Prev, ts: d.TS, frame: frameOf(d.Seq, d.ID, d.Data, d.TS)})
	default:
		m.doorbellRepair.Inc()
		h.want = max(h.want, d.Seq)
		h.startRepair()
	}
}

// push appends the next entry of the chain and wakes the sessions. The
// buffer grows to twice BufferSize entries or BufferBytes before it is cut
// back to at most BufferSize entries and half BufferBytes (always keeping
// the newest), so trimming costs one copy per many messages, not one each.
func (h *hub) push(e entry) {
	e.hubPrev = h.head
	h.buf = append(h.buf, e)
	h.bufBytes += len(e.frame)
	if n, max := h.g.cfg.BufferSize, h.g.cfg.BufferBytes; len(h.buf) > 2*n || h.bufBytes > max {
		keep, bytes := 1, len(h.buf[len(h.buf)-1].frame)
		for keep < len(h.buf) && keep < n && bytes+len(h.buf[len(h.buf)-keep-1].frame) <= max/2 {
			keep++
			bytes += len(h.buf[len(h.buf)-keep].frame)
		}
		// A single entry larger than BufferBytes is kept alone: there is
		// nothing older to cut.
		if over := len(h.buf) - keep; over > 0 {
			h.base = h.buf[over-1].seq
			h.buf = append(h.buf[:0:0], h.buf[over:]...)
			h.bufBytes = bytes
		}
	}
	h.head = e.seq
	for s := range h.sessions {
		s.poke()
	}
}

// startRepair starts the repair goroutine unless it runs already.
func (h *hub) startRepair() {
	if h.repairing || h.head >= h.want {
		return
	}
	h.repairing = true
	go h.repair()
}

// repair reads the chain from the log after head until it reaches want. A
// read that finds less than a doorbell proved exists (a lagging replica) is
// retried through the stream leader; if even the leader has nothing, the
// doorbell was from another epoch and the monitor checks.
func (h *hub) repair() {
	ctx := h.g.context()
	l := h.g.inbox.Load()
	failures := 0
	for {
		h.mu.Lock()
		if h.closed || h.head >= h.want || l == nil {
			h.repairing = false
			h.mu.Unlock()
			return
		}
		after, want := h.head, h.want
		h.mu.Unlock()

		msgs, err := h.g.readAfter(ctx, l, h.user, after, "repair")
		if err != nil || len(msgs) == 0 {
			failures++
			if err == nil || failures > 3 || !sleep(ctx, 100*time.Millisecond<<failures) {
				if err == nil {
					h.g.log.Warn("log has nothing a doorbell said exists; checking the epoch", "user", h.user, "after", after, "want", want)
					h.g.checkEpochSoon()
				}
				h.mu.Lock()
				h.want = h.head // anti-entropy tries again later
				h.repairing = false
				h.mu.Unlock()
				return
			}
			continue
		}
		failures = 0
		h.mu.Lock()
		for _, m := range msgs {
			if m.Seq > h.head {
				h.push(entry{seq: m.Seq, prev: m.Prev, ts: m.TS, frame: frameOf(m.Seq, m.ID, m.Data, m.TS)})
			}
		}
		h.mu.Unlock()
	}
}

// readAfter reads a batch of the user's log after seq, counted under
// reason. A read that finds nothing where the caller knows messages exist
// may have hit a lagging replica, so it asks the stream leader before
// returning nothing.
func (g *Gateway) readAfter(ctx context.Context, l *inbox.Log, user string, after uint64, reason string) ([]inbox.Message, error) {
	g.m.logReads.WithLabelValues(reason).Inc()
	msgs, err := l.ReadAfter(ctx, user, after, g.cfg.ReadBatch)
	if err == nil && len(msgs) == 0 {
		g.m.logReads.WithLabelValues("leader").Inc()
		msgs, err = l.ReadAfterLeader(ctx, user, after, leaderBatch)
	}
	return msgs, err
}

// sync is anti-entropy's finding: the log's last seq for the user.
func (h *hub) sync(logHead uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || !h.inited {
		return
	}
	switch {
	case logHead > h.head:
		h.g.m.antiEntropyRepairs.Inc()
		h.want = max(h.want, logHead)
		h.startRepair()
	case logHead < h.head:
		// The log went backwards: recreated (a new epoch) or purged.
		h.g.checkEpochSoon()
	}
}

// after returns the buffered entries after seq, and whether seq is within
// the buffer's reach (not behind it).
func (h *hub) after(seq uint64) ([]entry, bool) {
	if seq < h.base {
		return nil, false
	}
	i := sort.Search(len(h.buf), func(i int) bool { return h.buf[i].seq > seq })
	return h.buf[i:], true
}

// ack records that socket s acknowledged seq and answers the waiters it
// satisfies. An ack beyond what s was sent proves nothing and is ignored.
func (h *hub) ack(s *session, seq uint64) {
	h.mu.Lock()
	if seq > s.cursor {
		h.mu.Unlock()
		return
	}
	h.g.m.acks.Inc()
	if seq <= h.acked {
		h.mu.Unlock()
		return
	}
	h.acked = seq
	var done []string
	kept := h.waiters[:0]
	for _, w := range h.waiters {
		if w.seq <= seq {
			done = append(done, w.reply)
		} else {
			kept = append(kept, w)
		}
	}
	h.waiters = kept
	h.mu.Unlock()
	for _, r := range done {
		h.g.respond(r, wire.Delivered)
	}
}

// expireWaiters forgets waiters whose dispatcher has given up.
func (h *hub) expireWaiters(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := h.waiters[:0]
	for _, w := range h.waiters {
		if now.Before(w.expires) {
			kept = append(kept, w)
		}
	}
	h.waiters = kept
}

// closeAll closes every session of the hub.
func (h *hub) closeAll(code int, reason string) { h.closeAllWith(nil, code, reason) }

// closeAllWith sends frame (if any) to every session, then closes it.
func (h *hub) closeAllWith(frame []byte, code int, reason string) {
	h.mu.Lock()
	ss := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		ss = append(ss, s)
	}
	h.mu.Unlock()
	for _, s := range ss {
		s.closeWith(frame, code, reason)
	}
}

// deliveryReplies are the encoded answers to wait=delivered doorbells.
var deliveryReplies = map[string][]byte{
	wire.Delivered: wire.Encode(wire.DeliveryReply{Status: wire.Delivered}),
	wire.Offline:   wire.Encode(wire.DeliveryReply{Status: wire.Offline}),
}

func (g *Gateway) respond(reply, status string) {
	if err := g.cfg.NATS.Publish(reply, deliveryReplies[status]); err != nil {
		g.log.Debug("delivery reply", "error", err)
	}
}

// frameOf encodes a notification frame. TODO: a message that cannot be
// encoded becomes a gap.
func frameOf(seq uint64, id string, data []byte, ts time.Time) []byte {
	b, _ := wire.EncodeNotification(seq, id, data, ts)
	return b
}
