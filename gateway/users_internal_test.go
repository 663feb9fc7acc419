package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Unit tests of hubs and sessions: a fake log and fake sockets, no NATS.

// fakeLog is one user's log in memory, as a chain.
type fakeLog struct {
	panicLast bool
	mu        sync.Mutex
	msgs      []inbox.Message
	reads     int
	lagging   bool // replicas answer nothing; the leader answers
}

func (l *fakeLog) append(seq uint64, data string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var prev uint64
	if n := len(l.msgs); n > 0 {
		prev = l.msgs[n-1].Seq
	}
	l.msgs = append(l.msgs, inbox.Message{Seq: seq, Prev: prev, ID: fmt.Sprint("n", seq), TS: time.Now(), Data: []byte(data)})
}

// evict drops the messages up to seq, as retention would.
func (l *fakeLog) evict(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = slices.DeleteFunc(l.msgs, func(m inbox.Message) bool { return m.Seq <= seq })
}

func (l *fakeLog) Last(ctx context.Context, user string, leader bool) (inbox.Message, bool, error) {
	if l.panicLast {
		panic("a bug reading the head")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.msgs) == 0 {
		return inbox.Message{}, false, nil
	}
	return l.msgs[len(l.msgs)-1], true, nil
}

func (l *fakeLog) ReadAfter(ctx context.Context, user string, after uint64, n int) ([]inbox.Message, error) {
	l.mu.Lock()
	lagging := l.lagging
	l.mu.Unlock()
	if lagging {
		return nil, nil
	}
	return l.read(after, n)
}

func (l *fakeLog) read(after uint64, n int) ([]inbox.Message, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	var out []inbox.Message
	for _, m := range l.msgs {
		if m.Seq > after && len(out) < n {
			out = append(out, m)
		}
	}
	return out, nil
}

func (l *fakeLog) ReadAfterLeader(ctx context.Context, user string, after uint64, n int) ([]inbox.Message, error) {
	return l.read(after, n)
}

// fakeConn records what a session writes.
type fakeConn struct {
	mu     sync.Mutex
	frames [][]byte
	closed websocket.StatusCode
}

func (c *fakeConn) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	<-ctx.Done()
	return 0, nil, ctx.Err()
}

func (c *fakeConn) Write(ctx context.Context, typ websocket.MessageType, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames = append(c.frames, p)
	return nil
}

func (c *fakeConn) Ping(ctx context.Context) error { return nil }

func (c *fakeConn) Close(code websocket.StatusCode, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = code
	return nil
}

func (c *fakeConn) CloseNow() error { return nil }

// testUsers is a registry over a fake log, in epoch "e1" unless the test
// changes epoch.
type testUsers struct {
	*users
	flog    *fakeLog
	mu      sync.Mutex
	current string // what confirm answers
	changed int    // epochChanged calls
	panics  []string
}

func newTestUsers(t *testing.T, cfg Config) *testUsers {
	t.Helper()
	cfg.ID, cfg.PublicURL, cfg.Addr = "gw-1", "ws://127.0.0.1:1/ws", ":0"
	cfg.NATS, cfg.Consul = nil, nil
	cfg.fillLimits()
	tu := &testUsers{flog: &fakeLog{}, current: "e1"}
	m := newTestMetrics()
	ts := &tasks{onPanic: func(where string, v any, _ []byte) {
		tu.mu.Lock()
		defer tu.mu.Unlock()
		tu.panics = append(tu.panics, where)
	}}
	u := newUsers(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), m, ts)
	u.epoch = func() string { return "e1" }
	u.confirm = func(context.Context) (string, error) {
		tu.mu.Lock()
		defer tu.mu.Unlock()
		return tu.current, nil
	}
	u.epochChanged = func() {
		tu.mu.Lock()
		defer tu.mu.Unlock()
		tu.changed++
	}
	u.respond = func(reply, status string) {}
	u.src.Store(&logBox{tu.flog})
	tu.users = u
	t.Cleanup(func() { ts.close(); ts.wait(0) })
	return tu
}

// session joins user's hub as a socket resuming after since.
func (tu *testUsers) session(t *testing.T, user string, since uint64, epoch string) (*session, start) {
	t.Helper()
	h, err := tu.join(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.startAt(context.Background(), wire.ClientFrame{Type: wire.TypeAuth, Since: since, Epoch: epoch, Start: wire.StartAll})
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(h, &fakeConn{}, st)
	if err := tu.attach(h, s); err != nil {
		t.Fatal(err)
	}
	return s, st
}

// frames decodes what s would send next.
func frames(t *testing.T, s *session) []wire.ServerFrame {
	t.Helper()
	b, err := s.next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.ServerFrame
	for _, f := range b.frames {
		sf, err := wire.DecodeServerFrame(f)
		if err != nil {
			t.Fatalf("frame %s: %v", f, err)
		}
		out = append(out, sf)
	}
	return out
}

func describe(fs []wire.ServerFrame) string {
	var out []string
	for _, f := range fs {
		switch f.Type {
		case wire.TypeGap:
			out = append(out, fmt.Sprintf("gap(%d,%d)", f.After, f.Next))
		default:
			out = append(out, fmt.Sprintf("%d", f.Seq))
		}
	}
	return fmt.Sprint(out)
}

func doorbell(seq, prev uint64, data string) wire.Doorbell {
	return wire.Doorbell{User: "alice", Seq: seq, Epoch: "e1", HasContent: true, Prev: prev, ID: fmt.Sprint("n", seq), TS: time.Now(), Data: []byte(data)}
}

// TestAttachRefusesAHubClosedByANewEpoch: a socket between join and attach
// when the epoch changes must not attach to the closed hub, which nothing
// would ever wake or close again.
func TestAttachRefusesAHubClosedByANewEpoch(t *testing.T) {
	tu := newTestUsers(t, Config{})
	h, err := tu.join(context.Background(), "alice") // joined, not attached yet
	if err != nil {
		t.Fatal(err)
	}
	tu.closeEpoch()
	s := newSession(h, &fakeConn{}, start{})
	if err := tu.attach(h, s); !errors.Is(err, errStaleEpoch) {
		t.Fatalf("attach to a hub closed by a new epoch: %v, want errStaleEpoch", err)
	}
	tu.leave(h, nil)
	if n := tu.load(); n != 0 {
		t.Fatalf("%d sockets counted after the refusal", n)
	}
}

// TestTooManySocketsRefusedBeforeLogWork: the per-user limit is checked
// before the hub reads anything.
func TestTooManySocketsRefusedBeforeLogWork(t *testing.T) {
	tu := newTestUsers(t, Config{MaxSocketsPerUser: 2})
	tu.session(t, "alice", 0, "")
	tu.session(t, "alice", 0, "")
	reads := tu.flog.reads
	if _, err := tu.join(context.Background(), "alice"); !errors.Is(err, errTooManySockets) {
		t.Fatalf("third socket: %v, want errTooManySockets", err)
	}
	if tu.flog.reads != reads {
		t.Fatalf("the refused join read the log")
	}
}

// TestBufferBounds: the hub keeps at most twice BufferSize entries and
// BufferBytes bytes, always the newest, and base always names the entry
// before the first kept; an entry larger than BufferBytes alone does not
// break the trim (it once indexed buf[-1]).
func TestBufferBounds(t *testing.T) {
	tu := newTestUsers(t, Config{BufferSize: 8, BufferBytes: 1000})
	h := &hub{u: tu.users, sessions: map[*session]struct{}{}}
	frame := func(n int) []byte { return make([]byte, n) }
	h.push(entry{seq: 1, frame: frame(5000)}) // the first entry, alone over the bound
	if len(h.buf) != 1 || h.head != 1 {
		t.Fatalf("after one huge frame: %d entries, head %d", len(h.buf), h.head)
	}
	seq, before := uint64(1), map[uint64]uint64{1: 0} // entry → the seq pushed before it
	for i := range 500 {
		size := 10 + (i%7)*60 // 10..370 bytes
		seq += 3
		before[seq] = seq - 3
		h.push(entry{seq: seq, prev: seq - 3, frame: frame(size)})
		total := 0
		for _, e := range h.buf {
			total += len(e.frame)
		}
		switch {
		case total != h.bufBytes:
			t.Fatalf("push %d: bufBytes %d, frames hold %d", i, h.bufBytes, total)
		case len(h.buf) > 2*8, total > 1000 && len(h.buf) > 1:
			t.Fatalf("push %d: %d entries, %d bytes: over the bounds", i, len(h.buf), total)
		case h.buf[len(h.buf)-1].seq != seq || h.head != seq:
			t.Fatalf("push %d: the newest entry is not kept", i)
		case h.base != before[h.buf[0].seq]:
			t.Fatalf("push %d: base %d, but the first entry follows %d", i, h.base, before[h.buf[0].seq])
		}
	}
	h.push(entry{seq: seq + 3, prev: seq, frame: frame(5000)})
	if len(h.buf) != 1 || h.buf[0].seq != seq+3 || h.base != seq {
		t.Fatalf("after a huge frame: %d entries, base %d", len(h.buf), h.base)
	}
}

// TestUndeliverableMessageIsAGap: a message that cannot be encoded (not
// JSON here) is neither sent nor retried: the device gets one gap over it,
// and the message after it as usual.
func TestUndeliverableMessageIsAGap(t *testing.T) {
	tu := newTestUsers(t, Config{})
	s, _ := tu.session(t, "alice", 0, "")
	h := s.h
	h.doorbell(doorbell(3, 0, `1`), "")
	h.doorbell(doorbell(5, 3, `{`), "") // cannot be a frame
	h.doorbell(doorbell(7, 5, `2`), "")
	if got := describe(frames(t, s)); got != "[3 gap(3,6) 7]" {
		t.Fatalf("frames %s, want [3 gap(3,6) 7]", got)
	}
	// A device resuming from the log gets the same.
	for _, seq := range []uint64{3, 5, 7} {
		tu.flog.append(seq, map[uint64]string{3: `1`, 5: `{`, 7: `2`}[seq])
	}
	s2, _ := tu.session(t, "alice", 0, "")
	h.mu.Lock()
	h.base = 7 // as if the buffer had been trimmed: s2 reads the log
	h.buf = nil
	h.mu.Unlock()
	if got := describe(frames(t, s2)); got != "[3 gap(3,6) 7]" {
		t.Fatalf("from the log: %s, want [3 gap(3,6) 7]", got)
	}
	if n := counter(t, tu.m.undeliverable); n != 1 {
		t.Fatalf("%v undeliverable counted, want 1 (once, then remembered)", n)
	}
}

// TestPanickingMessageIsAGapOnce: a message whose handling panics is
// recovered, poisoned and given as a gap, and never handled again.
func TestPanickingMessageIsAGapOnce(t *testing.T) {
	tu := newTestUsers(t, Config{})
	enc := tu.encode
	calls := map[uint64]int{}
	tu.encode = func(m inbox.Message) ([]byte, error) {
		calls[m.Seq]++
		if string(m.Data) == `"boom"` {
			panic("boom")
		}
		return enc(m)
	}
	s, _ := tu.session(t, "alice", 0, "")
	s.h.doorbell(doorbell(4, 0, `"boom"`), "")
	s.h.doorbell(doorbell(6, 4, `1`), "")
	if got := describe(frames(t, s)); got != "[gap(0,5) 6]" {
		t.Fatalf("frames %s, want [gap(0,5) 6]", got)
	}
	// Read again from the log by a second device: not handled again.
	tu.flog.append(4, `"boom"`)
	tu.flog.append(6, `1`)
	s2, _ := tu.session(t, "alice", 0, "")
	s.h.mu.Lock()
	s.h.base, s.h.buf = 6, nil
	s.h.mu.Unlock()
	if got := describe(frames(t, s2)); got != "[gap(0,5) 6]" {
		t.Fatalf("second device: %s, want [gap(0,5) 6]", got)
	}
	if calls[4] != 1 || len(tu.panics) != 1 || tu.panics[0] != "encode" {
		t.Fatalf("the poisoned message was handled %d times, panics %v; want once", calls[4], tu.panics)
	}
}

// TestVoidCursorHelloThenGap: a cursor from another epoch gets a hello that
// repeats the client's own cursor, then the gap, so a socket that ends
// between the two resumes with the old cursor and learns of the gap again;
// and a message evicted between that decision and the first read is a gap
// too, not silently skipped.
func TestVoidCursorHelloThenGap(t *testing.T) {
	tu := newTestUsers(t, Config{})
	for _, seq := range []uint64{10, 12, 14} {
		tu.flog.append(seq, `1`)
	}
	s, st := tu.session(t, "alice", 40, "old-epoch")
	if st.hello.Epoch != "old-epoch" || st.hello.Cursor != 40 || st.hello.Start != wire.StartResume {
		t.Fatalf("hello says (%q, %d, %q), want the client's own cursor (old-epoch, 40) resumed", st.hello.Epoch, st.hello.Cursor, st.hello.Start)
	}
	g, err := wire.DecodeServerFrame(st.gap)
	if err != nil || g.Type != wire.TypeGap || g.Epoch != "e1" || g.After != 40 || g.Next != 10 {
		t.Fatalf("gap %s (%v), want after 40 next 10 in e1", st.gap, err)
	}
	tu.flog.evict(10) // gone before the session's first read
	if got := describe(frames(t, s)); got != "[gap(9,12) 12 14]" {
		t.Fatalf("frames %s, want [gap(9,12) 12 14]", got)
	}
	// Without the eviction, no second gap.
	tu.flog.append(16, `1`)
	s2, _ := tu.session(t, "alice", 99, "old-epoch")
	s2.h.mu.Lock()
	s2.h.base, s2.h.buf = 16, nil
	s2.h.mu.Unlock()
	if got := describe(frames(t, s2)); got != "[12 14 16]" {
		t.Fatalf("frames %s, want [12 14 16]", got)
	}
}

// TestNoGapWhereNoSeqLies: a device that resumes just before the next
// message (a cursor it took from a gap's next) gets no second gap, however
// the message's predecessor was evicted.
func TestNoGapWhereNoSeqLies(t *testing.T) {
	tu := newTestUsers(t, Config{})
	for _, seq := range []uint64{5, 9, 11} {
		tu.flog.append(seq, `1`)
	}
	tu.flog.evict(5)
	s, _ := tu.session(t, "alice", 8, "e1") // from gap{next: 9}
	s.h.mu.Lock()
	s.h.base = 11
	s.h.mu.Unlock()
	if got := describe(frames(t, s)); got != "[9 11]" {
		t.Fatalf("frames %s, want [9 11]", got)
	}
}

// TestOldEpochHubReadsNothingNew: a hub whose epoch the stream no longer
// has (recreated) takes nothing from it: a doorbell of another epoch rings
// the monitor instead of the log, and a repair whose read cannot be
// confirmed in the hub's epoch pushes nothing.
func TestOldEpochHubReadsNothingNew(t *testing.T) {
	tu := newTestUsers(t, Config{})
	s, _ := tu.session(t, "alice", 0, "")
	h := s.h
	tu.flog.append(1, `"new stream"`)
	d := doorbell(1, 0, `"new stream"`)
	d.Epoch = "e2"
	reads := tu.flog.reads
	h.doorbell(d, "")
	if tu.flog.reads != reads || tu.changed == 0 {
		t.Fatalf("a doorbell of another epoch: %d reads, %d epoch checks; want none and one", tu.flog.reads-reads, tu.changed)
	}
	tu.mu.Lock()
	tu.current = "e2" // the stream was recreated
	tu.mu.Unlock()
	h.sync(1, "e1") // anti-entropy, before it learnt
	waitUntil(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return !h.repairing && tu.flog.reads > reads
	})
	h.mu.Lock()
	head, n := h.head, len(h.buf)
	h.mu.Unlock()
	if head != 0 || n != 0 {
		t.Fatalf("the old-epoch hub took a message of the new stream: head %d, %d buffered", head, n)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestMetrics() *metrics { return newMetrics(prometheus.NewRegistry()) }

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// TestHubPanicCostsOnlyItsUser: a panic while a doorbell is handled in a
// hub is recovered; that user's hub leaves the registry and its sockets are
// closed (they resume from their cursors); another user's are untouched.
func TestHubPanicCostsOnlyItsUser(t *testing.T) {
	tu := newTestUsers(t, Config{})
	g := &Gateway{users: tu.users, m: tu.m, tasks: tu.tasks, log: tu.users.log}
	alice, _ := tu.session(t, "alice", 0, "")
	bob, _ := tu.session(t, "bob", 0, "")
	tu.epochChanged = func() { panic("a bug") } // called with alice's hub locked
	d := doorbell(1, 0, `1`)
	d.Epoch = "e2"
	g.onDoorbell(&nats.Msg{Subject: wire.GatewaySubject("gw-1"), Header: d.Header(), Data: d.Body()})
	// The hub's lock was released: a new socket of alice's builds a new hub.
	tu.epochChanged = func() {}
	if _, err := tu.join(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if h := tu.hub("alice"); h == alice.h {
		t.Fatal("alice's old hub is still registered after its panic")
	}
	waitUntil(t, func() bool {
		c := alice.c.(*fakeConn)
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.closed == websocket.StatusCode(closeInternal.Code)
	})
	if bob.c.(*fakeConn).closed != 0 || tu.hub("bob") == nil {
		t.Fatal("bob paid for alice's panic")
	}
	if len(tu.panics) != 1 || tu.panics[0] != "hub" {
		t.Fatalf("panics %v, want one in hub", tu.panics)
	}
}

// TestGapWhenTheLogEmptiedUnderAConnectedDevice: a message whose doorbell
// was lost, and that expired with everything before it before anti-entropy
// found it, leaves no trace but the next message's prev below the cursor:
// even a device connected throughout gets a gap then.
func TestGapWhenTheLogEmptiedUnderAConnectedDevice(t *testing.T) {
	tu := newTestUsers(t, Config{})
	s, _ := tu.session(t, "alice", 0, "")
	s.h.doorbell(doorbell(10, 0, `1`), "")
	if got := describe(frames(t, s)); got != "[10]" {
		t.Fatalf("frames %s", got)
	}
	// 11 was appended, its doorbell lost; 10 and 11 expired; 12 came after
	// an empty log.
	s.h.doorbell(doorbell(12, 0, `3`), "")
	if got := describe(frames(t, s)); got != "[gap(10,12) 12]" {
		t.Fatalf("frames %s, want [gap(10,12) 12]", got)
	}
}

// TestVoidCursorAsksTheLeader: with a void cursor the session restarts at
// the oldest retained message; a lagging replica that has none must not
// make it skip them all.
func TestVoidCursorAsksTheLeader(t *testing.T) {
	tu := newTestUsers(t, Config{})
	tu.flog.append(5, `1`)
	tu.flog.append(8, `2`)
	tu.flog.mu.Lock()
	tu.flog.lagging = true
	tu.flog.mu.Unlock()
	_, st := tu.session(t, "alice", 3, "old-epoch")
	g, err := wire.DecodeServerFrame(st.gap)
	if err != nil || g.Next != 5 || st.cursor != 4 {
		t.Fatalf("gap %s, cursor %d: want next 5, cursor 4 (the oldest retained, from the leader)", st.gap, st.cursor)
	}
}

// TestPanicInAHubsInitLeavesNothing: a panic while a new hub reads its head
// gives the reserved place back: the hub is not left in the registry, and
// the user's next socket gets a new one.
func TestPanicInAHubsInitLeavesNothing(t *testing.T) {
	tu := newTestUsers(t, Config{MaxSocketsPerUser: 1})
	tu.flog.panicLast = true
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		tu.join(context.Background(), "alice")
	}()
	if h := tu.hub("alice"); h != nil || tu.load() != 0 {
		t.Fatalf("a hub whose init panicked is still registered (%v), or its place counted (%d)", h != nil, tu.load())
	}
	tu.flog.panicLast = false
	tu.session(t, "alice", 0, "") // the one place is free again
}

// TestLastStartWalksTheBufferThenTheLog: a start from the last N walks back
// through the hub's buffer without reading the log, then through the log
// for what lies before the buffer; the chain (prev), not seq arithmetic,
// decides, and a predecessor the log no longer has means fewer than N are
// kept.
func TestLastStartWalksTheBufferThenTheLog(t *testing.T) {
	tu := newTestUsers(t, Config{BufferSize: 100})
	for seq := uint64(10); seq <= 30; seq += 2 { // 10, 12, ... 30: eleven, from before the hub
		tu.flog.append(seq, `1`)
	}
	s, _ := tu.session(t, "alice", 0, "")
	h := s.h
	for seq := uint64(31); seq <= 40; seq++ { // ten more, through doorbells into the buffer
		tu.flog.append(seq, `2`)
		prev := seq - 1
		if seq == 31 {
			prev = 30
		}
		h.doorbell(doorbell(seq, prev, `2`), "")
	}
	if len(h.buf) != 10 || h.head != 40 {
		t.Fatalf("buffer %d entries, head %d; want 10 and 40", len(h.buf), h.head)
	}
	for _, tc := range []struct {
		n          int
		want       uint64
		wantsReads bool
	}{
		{1, 39, false}, {10, 30, false}, {11, 28, true}, {20, 10, true},
		{21, 0, true}, // all that is kept: the first message has no predecessor
		{500, 0, true},
	} {
		before := tu.flog.reads
		got, err := h.beforeLast(context.Background(), h.head, tc.n, "e1")
		if err != nil || got != tc.want {
			t.Errorf("last %d: after %d (%v), want %d", tc.n, got, err, tc.want)
		}
		if read := tu.flog.reads > before; read != tc.wantsReads {
			t.Errorf("last %d: read the log: %v, want %v", tc.n, read, tc.wantsReads)
		}
	}
	tu.flog.evict(14) // 10, 12, 14 gone: 18 are kept
	if got, _ := h.beforeLast(context.Background(), h.head, 18, "e1"); got != 14 {
		t.Errorf("last 18 of 18 kept: after %d, want 14 (the oldest kept's predecessor)", got)
	}
	if got, _ := h.beforeLast(context.Background(), h.head, 19, "e1"); got != 0 {
		t.Errorf("last 19 of 18 kept: after %d, want 0", got)
	}
}

// TestSkippedBatchesDoNotStallTheWriter: a log read whose every message is
// skipped (expired) sends nothing but moves the cursor, and the next read
// goes on from there, without a gap, until the message after them.
func TestSkippedBatchesDoNotStallTheWriter(t *testing.T) {
	tu := newTestUsers(t, Config{ReadBatch: 10})
	past := time.Now().Add(-time.Minute)
	tu.flog.mu.Lock()
	for seq := uint64(1); seq <= 25; seq++ {
		tu.flog.msgs = append(tu.flog.msgs, inbox.Message{Seq: seq, Prev: seq - 1, ID: fmt.Sprint("n", seq), TS: past, Data: []byte(`1`), Expires: past})
	}
	tu.flog.mu.Unlock()
	tu.flog.append(26, `"alive"`)
	s, _ := tu.session(t, "alice", 0, "")
	var got []wire.ServerFrame
	for range 5 {
		b, err := s.next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(b.frames) == 0 && !b.moved {
			break
		}
		for _, f := range b.frames {
			sf, _ := wire.DecodeServerFrame(f)
			got = append(got, sf)
		}
	}
	if len(got) != 1 || got[0].Seq != 26 || s.cursor != 26 {
		t.Fatalf("frames %s, cursor %d; want only 26, past 25 expired ones without a gap", describe(got), s.cursor)
	}
}
