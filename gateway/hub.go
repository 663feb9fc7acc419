package gateway

import (
	"cmp"
	"context"
	"sort"
	"sync"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// entry is one message of the user's chain, encoded once as a frame that
// every session writes. A nil frame is a hole: a message that cannot be
// sent, which sessions turn into a gap.
type entry struct {
	seq, prev uint64 // prev: the message's Herald-Prev
	ts        time.Time
	frame     []byte
	expires   time.Time // zero: never
	collapse  string    // "": none
}

// entryOf is the entry of a message read from the log.
func (h *hub) entryOf(m inbox.Message) entry {
	return entry{seq: m.Seq, prev: m.Prev, ts: m.TS, frame: h.u.frame(h.epoch, h.user, m), expires: m.Expires, collapse: m.Collapse}
}

// maxCollapseKeys bounds the collapse keys a hub remembers; beyond them,
// collapsing is left to what one batch shows.
const maxCollapseKeys = 4096

// waiter is a dispatcher waiting (wait=delivered) for a socket to ack seq.
type waiter struct {
	seq     uint64
	reply   string
	expires time.Time
}

// maxPending bounds the doorbells a hub keeps while it initializes; beyond
// it, it only remembers the highest seq and reads the log.
const maxPending = 256

// maxWait bounds how long a wait=delivered request is remembered; the
// dispatcher's own timeout is at most 30s.
const maxWait = 35 * time.Second

// leaderBatch bounds reads through the stream leader, which fetch one
// message per round trip.
const leaderBatch = 10

// hub is one connected user's delivery state. All work for the user goes
// through it, so two doorbells for one user are never handled at once.
// Every method that takes mu releases it with defer: a recovered panic
// must not leave the user's hub locked.
type hub struct {
	u     *users
	user  string
	ready chan struct{} // closed when init has finished; initErr is set then

	mu        sync.Mutex // guards everything below and its sessions' cursors
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
	erasedTo  uint64 // the user's log was erased through this seq
	checking  bool   // a check of an emptied log runs (checkEmptied)
	// newest is the highest seq the hub knows of each collapse key, so a
	// session skips a message a newer one with its key replaces.
	newest map[string]uint64
}

// noteCollapse records that the message at seq has collapse key key. h.mu
// is held.
func (h *hub) noteCollapse(key string, seq uint64) {
	if key == "" {
		return
	}
	if h.newest == nil {
		h.newest = map[string]uint64{}
	}
	if _, ok := h.newest[key]; ok || len(h.newest) < maxCollapseKeys {
		h.newest[key] = max(h.newest[key], seq)
	}
}

// skips reports whether a session skips e: it has expired, or a newer
// message with its collapse key is known. A skipped message moves the
// cursor like a sent one and leaves no gap. h.mu is held.
func (h *hub) skips(e entry, now time.Time) bool {
	return (!e.expires.IsZero() && now.After(e.expires)) || (e.collapse != "" && h.newest[e.collapse] > e.seq)
}

// init learns the user's head from the log, in the epoch the gateway knows.
// Doorbells that arrive meanwhile wait in pending: the hub is in the map,
// so nothing is missed.
func (h *hub) init(ctx context.Context) {
	h.mu.Lock()
	h.initErr = errNotReady // what the joiners see if init panics
	h.mu.Unlock()
	defer close(h.ready)
	epoch := h.u.epoch()
	var (
		last  inbox.Message
		found bool
		err   = errNotReady
	)
	if l := h.u.reader(); l != nil {
		// Through the leader: a doorbell that came before this hub existed
		// was dropped, so a replica lagging behind that append would hide
		// the message until anti-entropy.
		h.u.m.logReads.WithLabelValues("init").Inc()
		if last, found, err = l.Last(ctx, h.user, true); err == nil {
			err = h.sameEpoch(ctx, epoch)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.initErr = err
		return
	}
	if found {
		h.head = last.Seq
	}
	h.base, h.epoch, h.inited = h.head, epoch, true
	pending := h.pending
	h.pending = nil
	for _, d := range pending {
		h.doorbellLocked(d)
	}
	h.startRepair() // for a want raised while pending was full
	h.initErr = nil
}

// sameEpoch confirms that what the caller has just read came from the
// stream of epoch: errStaleEpoch if the stream is another now.
func (h *hub) sameEpoch(ctx context.Context, epoch string) error {
	e, err := h.u.confirm(ctx)
	switch {
	case err != nil:
		return err
	case e != epoch:
		h.u.epochChanged()
		return errStaleEpoch
	}
	return nil
}

// doorbell handles a doorbell for the user; reply, if set, waits for an ack.
func (h *hub) doorbell(d wire.Doorbell, reply string) {
	answer := h.doorbellAnswer(d, reply)
	if answer != "" {
		h.u.respond(reply, answer)
	}
}

func (h *hub) doorbellAnswer(d wire.Doorbell, reply string) (answer string) {
	h.mu.Lock()
	defer h.mu.Unlock()
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
	return answer
}

func (h *hub) doorbellLocked(d wire.Doorbell) {
	m := h.u.m
	if !h.inited {
		if len(h.pending) < maxPending {
			h.pending = append(h.pending, d)
		} else {
			h.want = max(h.want, d.Seq)
		}
		return
	}
	if d.Epoch != "" && d.Epoch != h.epoch {
		// From another incarnation of the log, or from a dispatcher that
		// has not noticed a new one: the log decides, and this hub must not
		// read a stream that may not be its own. Anti-entropy finds the
		// message if the epoch is ours after all.
		m.doorbellOtherEpoch.Inc()
		h.u.epochChanged()
		return
	}
	switch {
	case d.Erased:
		h.eraseLocked(d.Seq)
	case d.Seq <= h.head:
		m.doorbellOld.Inc()
	case d.HasContent && d.Prev <= h.head:
		m.doorbellNext.Inc()
		h.push(h.entryOf(inbox.Message{Seq: d.Seq, Prev: d.Prev, ID: d.ID, TS: d.TS, Data: d.Data, Expires: d.Expires, Collapse: d.Collapse}))
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
// h.mu is held.
func (h *hub) push(e entry) {
	h.noteCollapse(e.collapse, e.seq)
	h.buf = append(h.buf, e)
	h.bufBytes += len(e.frame)
	if n, max := h.u.cfg.BufferSize, h.u.cfg.BufferBytes; len(h.buf) > 2*n || h.bufBytes > max {
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

// startRepair starts the repair goroutine unless it runs already. h.mu is
// held.
func (h *hub) startRepair() {
	if h.repairing || h.head >= h.want {
		return
	}
	if h.u.tasks.goNamed("repair", h.repair) {
		h.repairing = true
	}
}

// repair reads the chain from the log after head until it reaches want. A
// read that finds less than a doorbell proved exists (a lagging replica) is
// retried through the stream leader; if even the leader has nothing, the
// doorbell was from another epoch and the gateway checks. A panic here
// costs the user's sockets, not the process.
func (h *hub) repair() {
	done := false
	defer h.u.tasks.recover("hub", func() {
		if !done {
			h.u.fail(h)
		}
	})
	ctx := h.u.ctx
	l := h.u.reader()
	failures := 0
	for {
		after, want, epoch, ok := h.repairFrom(l)
		if !ok {
			done = true
			return
		}
		msgs, err := readAfter(ctx, h.u, l, h.user, after, "repair")
		if err == nil && len(msgs) > 0 {
			err = h.sameEpoch(ctx, epoch)
		}
		if err != nil || len(msgs) == 0 {
			failures++
			if err == nil || err == errStaleEpoch || failures > 3 || !sleep(ctx, 100*time.Millisecond<<failures) {
				if err == nil {
					h.u.log.Warn("log has nothing a doorbell said exists; checking the epoch", "user", h.user, "after", after, "want", want)
					h.u.epochChanged()
				}
				h.giveUpRepair()
				done = true
				return
			}
			continue
		}
		failures = 0
		h.take(msgs)
	}
}

// repairFrom returns where the repair continues; false when it is done (and
// then no longer marked running).
func (h *hub) repairFrom(l logReader) (after, want uint64, epoch string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.head >= h.want || l == nil {
		h.repairing = false
		return 0, 0, "", false
	}
	return h.head, h.want, h.epoch, true
}

// giveUpRepair ends a repair that could not read; anti-entropy tries again
// later.
func (h *hub) giveUpRepair() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.want = h.head
	h.repairing = false
}

// take pushes the messages read from the log that lie past the head.
func (h *hub) take(msgs []inbox.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		if m.Seq > h.head && !h.closed {
			h.push(h.entryOf(m))
		}
	}
}

// readAfter reads a batch of the user's log after seq, counted under
// reason. A read that finds nothing where the caller knows messages exist
// may have hit a lagging replica, so it asks the stream leader before
// returning nothing.
func readAfter(ctx context.Context, u *users, l logReader, user string, after uint64, reason string) ([]inbox.Message, error) {
	u.m.logReads.WithLabelValues(reason).Inc()
	msgs, err := l.ReadAfter(ctx, user, after, u.cfg.ReadBatch)
	if err == nil && len(msgs) == 0 {
		u.m.logReads.WithLabelValues("leader").Inc()
		msgs, err = l.ReadAfterLeader(ctx, user, after, leaderBatch)
	}
	return msgs, err
}

// sync is anti-entropy's finding: the log's last seq for the user, read
// from the stream of epoch.
func (h *hub) sync(logHead uint64, epoch string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || !h.inited {
		return
	}
	switch {
	case epoch != h.epoch:
		h.u.epochChanged()
	case logHead > h.head:
		h.u.m.antiEntropyRepairs.Inc()
		h.want = max(h.want, logHead)
		h.startRepair()
	case logHead < h.head:
		// The log went backwards: recreated, or it lost its tail (the
		// dispatchers record a new epoch then), or the user's messages
		// are all gone (an erasure whose doorbell was lost, or retention).
		h.u.epochChanged()
		h.checkEmptied(epoch)
	}
}

// checkEmptied asks the stream leader whether the user's log is empty (a
// replica may lag), and if it is, drops what the hub holds as an erasure
// would. A log that still has messages below the head lost its tail: the
// epoch check deals with that. h.mu is held.
func (h *hub) checkEmptied(epoch string) {
	l := h.u.reader()
	if h.checking || l == nil {
		return
	}
	h.checking = h.u.tasks.goNamed("repair", func() {
		defer h.u.tasks.recover("hub", nil)
		_, found, err := h.leaderLast(h.u.ctx, l, epoch)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.checking = false
		if err == nil && !found && !h.closed {
			h.eraseLocked(h.head)
		}
	})
}

// eraseLocked drops what the hub holds of the user's log through seq,
// which is gone from the log, and moves every session whose cursor is not
// past it to it, after a gap frame. A message appended after the
// erasure names no predecessor (prev 0) and follows it without a gap.
// h.mu is held.
func (h *hub) eraseLocked(through uint64) {
	if through <= h.erasedTo {
		return // old news: a doorbell rung twice, or late
	}
	h.erasedTo = through
	i := sort.Search(len(h.buf), func(i int) bool { return h.buf[i].seq > through })
	if i > 0 {
		h.buf = append(h.buf[:0:0], h.buf[i:]...)
		h.bufBytes = 0
		for _, e := range h.buf {
			h.bufBytes += len(e.frame)
		}
	}
	h.base, h.head = max(h.base, through), max(h.head, through)
	// Every session at or below it, even one that had it all, so that each
	// device learns of the erasure and starts afresh (an app drops what it
	// shows of the user's notifications on a gap).
	for s := range h.sessions {
		if s.cursor <= through {
			h.u.m.gaps.Inc()
			s.erased = &wire.Gap{Type: wire.TypeGap, Epoch: h.epoch, After: s.cursor, Next: through + 1}
			s.cursor, s.lostAfter, s.fresh = through, 0, false
			s.poke()
		}
	}
}

// after returns the buffered entries after seq, and whether seq is within
// the buffer's reach (not behind it). h.mu is held.
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
	for _, r := range h.acked1(s, seq) {
		h.u.respond(r, wire.Delivered)
	}
}

func (h *hub) acked1(s *session, seq uint64) (done []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq > s.cursor {
		return nil
	}
	h.u.m.acks.Inc()
	if seq <= h.acked {
		return nil
	}
	h.acked = seq
	kept := h.waiters[:0]
	for _, w := range h.waiters {
		if w.seq <= seq {
			done = append(done, w.reply)
		} else {
			kept = append(kept, w)
		}
	}
	h.waiters = kept
	return done
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

// closeAll sends frame (if any) to every session of the hub, then closes it.
func (h *hub) closeAll(frame []byte, cl wire.Close) {
	for _, s := range h.sessionList() {
		s.closeWith(frame, cl)
	}
}

func (h *hub) sessionList() []*session {
	h.mu.Lock()
	defer h.mu.Unlock()
	ss := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		ss = append(ss, s)
	}
	return ss
}

// start is where a new session begins: what its hello says, where its
// cursor is, the gap frame that follows the hello if the client's cursor is
// void, and the seq the session must pass to be caught up (the log's head
// when it started, as far as the hub knows).
type start struct {
	hello  wire.Hello // without type, gateway and user
	cursor uint64
	fresh  bool
	gap    []byte
	target uint64
}

// startAt decides where a new session resumes: after since, if since is a
// position in this epoch's log; for since 0 (a device without a cursor)
// where the auth frame's start says; otherwise from the oldest retained
// message, after a gap that voids the old cursor.
//
// With a gap the hello repeats the client's own cursor, and only the gap
// frame moves it: a client saves what each frame says as its cursor, so if
// the socket ends between the two, it comes back with its old cursor and
// learns of the gap then, instead of resuming as a fresh device that never
// hears of it.
func (h *hub) startAt(ctx context.Context, auth wire.ClientFrame) (start, error) {
	since, epoch := auth.Since, auth.Epoch
	h.mu.Lock()
	head, cur := h.head, h.epoch
	h.mu.Unlock()
	if since == 0 {
		return h.startFresh(ctx, auth)
	}
	resume := wire.Hello{Start: wire.StartResume}
	valid := epoch == "" || epoch == cur
	l := h.u.reader()
	if l == nil {
		return start{}, errNotReady
	}
	if !valid {
		// The client's epoch may be newer than this gateway's view: then it
		// is this gateway that must catch up, not the client's cursor that
		// is void.
		if e, err := h.u.confirm(ctx); err == nil && e == epoch {
			h.u.epochChanged()
			return start{}, errStaleEpoch
		}
	}
	target := head
	if valid && since > head {
		// Beyond what this hub has seen: ask the leader, which never lags.
		last, found, err := h.leaderLast(ctx, l, cur)
		if err != nil {
			return start{}, err
		}
		valid = found && since <= last.Seq
		if found {
			target = last.Seq
			h.sync(last.Seq, cur) // the hub is behind the leader: catch up now
		}
	}
	if valid {
		resume.Epoch, resume.Cursor = cur, since
		return start{hello: resume, cursor: since, target: target}, nil
	}
	h.u.m.logReads.WithLabelValues("init").Inc()
	first, err := l.ReadAfter(ctx, h.user, 0, 1)
	if err == nil && len(first) == 0 && head > 0 {
		// The hub has seen messages: a replica that has none may lag, and
		// believing it would skip every retained message.
		h.u.m.logReads.WithLabelValues("leader").Inc()
		first, err = l.ReadAfterLeader(ctx, h.user, 0, 1)
	}
	if err == nil {
		err = h.sameEpoch(ctx, cur)
	}
	if err != nil {
		return start{}, err
	}
	next := head + 1
	if len(first) > 0 {
		next = first[0].Seq
	}
	h.u.m.gaps.Inc()
	resume.Epoch, resume.Cursor = cmp.Or(epoch, cur), since
	return start{
		hello: resume,
		// Just before the oldest retained message, and not fresh: if that
		// message is evicted before the first read, the session says so.
		cursor: next - 1,
		gap:    wire.Encode(wire.Gap{Type: wire.TypeGap, Epoch: cur, After: since, Next: next}),
		target: head,
	}, nil
}

// leaderLast reads the user's last message through the stream leader and
// confirms it came from the stream of epoch.
func (h *hub) leaderLast(ctx context.Context, l logReader, epoch string) (inbox.Message, bool, error) {
	h.u.m.logReads.WithLabelValues("leader").Inc()
	last, found, err := l.Last(ctx, h.user, true)
	if err == nil {
		err = h.sameEpoch(ctx, epoch)
	}
	return last, found, err
}

// startFresh starts a device without a cursor where its auth frame says:
// the whole retained log, the last N messages, or what comes after now.
// The choice is made once per device: the hello carries the cursor it
// starts from.
// Such a session is fresh: what retention dropped before it began is not
// its gap, and neither is what it chose not to see.
func (h *hub) startFresh(ctx context.Context, auth wire.ClientFrame) (start, error) {
	h.mu.Lock()
	head, want, cur := h.head, h.want, h.epoch
	h.mu.Unlock()
	st := start{hello: wire.Hello{Epoch: cur, Start: auth.Start}, fresh: true, target: head}
	switch auth.Start {
	case wire.StartLive:
		// The leader's head, not only the hub's: a notification accepted
		// before this socket started must not reach it as live because its
		// doorbell is still on its way to this gateway.
		l := h.u.reader()
		if l == nil {
			return start{}, errNotReady
		}
		last, _, err := h.leaderLast(ctx, l, cur)
		if err != nil {
			return start{}, err
		}
		st.cursor = max(head, want, last.Seq)
		st.target = st.cursor
		if last.Seq > head {
			h.sync(last.Seq, cur)
		}
	case wire.StartLast:
		after, err := h.beforeLast(ctx, head, auth.Last, cur)
		if err != nil {
			return start{}, err
		}
		st.cursor, st.hello.Last = after, auth.Last
	}
	// The hello gives the device the cursor it starts from, so a socket
	// that ends before its first notification resumes there rather than
	// choosing again: a live device would skip what came meanwhile.
	st.hello.Cursor = st.cursor
	return st, nil
}

// beforeLast returns the seq after which the last n messages of the user's
// chain up to head lie, or 0 if the log holds n or fewer: it walks back
// through each message's predecessor, in the hub's buffer while it can,
// then in the log through the leader, one read per message. A message the
// log no longer has means everything older is gone too (retention drops
// the oldest first), so the log holds fewer than n.
func (h *hub) beforeLast(ctx context.Context, head uint64, n int, epoch string) (uint64, error) {
	at, left := head, n
	h.mu.Lock()
	for at != 0 && left > 0 {
		i := sort.Search(len(h.buf), func(i int) bool { return h.buf[i].seq >= at })
		if i == len(h.buf) || h.buf[i].seq != at {
			break
		}
		at, left = h.buf[i].prev, left-1
	}
	h.mu.Unlock()
	if at == 0 || left == 0 {
		return at, nil
	}
	l := h.u.reader()
	if l == nil {
		return 0, errNotReady
	}
	for ; at != 0 && left > 0; left-- {
		h.u.m.logReads.WithLabelValues("leader").Inc()
		msgs, err := l.ReadAfterLeader(ctx, h.user, at-1, 1)
		if err != nil {
			return 0, err
		}
		if len(msgs) == 0 || msgs[0].Seq != at {
			return 0, nil
		}
		at = msgs[0].Prev
	}
	return at, h.sameEpoch(ctx, epoch)
}
