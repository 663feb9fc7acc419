package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var ctx = context.Background()

// appendConn connects as a dispatcher does: no buffering while reconnecting.
func appendConn(tb testing.TB, url string) *nats.Conn {
	return inboxtest.Connect(tb, url, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

func ensure(tb testing.TB, nc *nats.Conn, cfg inbox.Config) *inbox.Log {
	tb.Helper()
	l, err := inbox.Ensure(ctx, nc, cfg)
	if err != nil {
		tb.Fatalf("Ensure: %v", err)
	}
	return l
}

func mustAppend(tb testing.TB, l *inbox.Log, user, id string) inbox.Appended {
	tb.Helper()
	a, err := l.Append(ctx, user, id, []byte(`{"n":"`+id+`"}`))
	if err != nil {
		tb.Fatalf("Append(%s, %s): %v", user, id, err)
	}
	return a
}

// readAll reads a user's whole retained log in small batches.
func readAll(tb testing.TB, l *inbox.Log, user string) []inbox.Message {
	tb.Helper()
	var out []inbox.Message
	after := uint64(0)
	for {
		ms, err := l.ReadAfter(ctx, user, after, 7)
		if err != nil {
			tb.Fatalf("ReadAfter: %v", err)
		}
		if len(ms) == 0 {
			return out
		}
		out = append(out, ms...)
		after = ms[len(ms)-1].Seq
	}
}

// checkChain fails unless msgs form one unbroken chain from prev 0.
func checkChain(tb testing.TB, msgs []inbox.Message) {
	tb.Helper()
	prev := uint64(0)
	for i, m := range msgs {
		if m.Prev != prev {
			tb.Fatalf("message %d (seq %d) has prev %d, want %d: the chain forked or broke", i, m.Seq, m.Prev, prev)
		}
		prev = m.Seq
	}
}

func TestAppendBuildsAChainPerUser(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	var want = map[string][]uint64{}
	for i := range 30 {
		user := []string{"alice", "bob", "a.b*>"}[i%3]
		a := mustAppend(t, l, user, "n"+strconv.Itoa(i))
		if a.Duplicate || a.Epoch == "" || a.TS.IsZero() {
			t.Fatalf("append %d: %+v", i, a)
		}
		if ws := want[user]; len(ws) > 0 && a.Prev != ws[len(ws)-1] || len(ws) == 0 && a.Prev != 0 {
			t.Fatalf("append %d for %s: prev %d after %v", i, user, a.Prev, ws)
		}
		want[user] = append(want[user], a.Seq)
	}
	for user, seqs := range want {
		msgs := readAll(t, l, user)
		checkChain(t, msgs)
		if len(msgs) != len(seqs) {
			t.Fatalf("%s: read %d messages, appended %d", user, len(msgs), len(seqs))
		}
		for i, m := range msgs {
			if m.Seq != seqs[i] || string(m.Data) != fmt.Sprintf(`{"n":"%s"}`, m.ID) {
				t.Fatalf("%s: message %d = %+v, want seq %d", user, i, m, seqs[i])
			}
		}
	}
	heads, err := l.Heads(ctx, []string{"alice", "bob", "a.b*>", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	for user, seqs := range want {
		if heads[user] != seqs[len(seqs)-1] {
			t.Errorf("Heads[%s] = %d, want %d", user, heads[user], seqs[len(seqs)-1])
		}
	}
	if _, ok := heads["nobody"]; ok {
		t.Errorf("Heads has an entry for a user with no log")
	}
}

func TestHeadsManyUsers(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	var users []string
	want := map[string]uint64{}
	for i := range 700 { // more than one multi-last request
		u := "user-" + strconv.Itoa(i)
		users = append(users, u)
		if i%7 == 0 {
			continue // no log
		}
		want[u] = mustAppend(t, l, u, "x").Seq
	}
	got, err := l.Heads(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Heads returned %d users, want %d", len(got), len(want))
	}
	for u, seq := range want {
		if got[u] != seq {
			t.Fatalf("Heads[%s] = %d, want %d", u, got[u], seq)
		}
	}
}

func TestIdempotency(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	first := mustAppend(t, l, "alice", "order-1")
	mustAppend(t, l, "alice", "order-2")
	again := mustAppend(t, l, "alice", "order-1")
	if !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("repeat of order-1 = %+v, want duplicate of seq %d", again, first.Seq)
	}
	other := mustAppend(t, l, "bob", "order-1")
	if other.Duplicate || other.Seq == first.Seq {
		t.Fatalf("bob's order-1 = %+v: an id must be scoped to its user", other)
	}
	if n := len(readAll(t, l, "alice")); n != 2 {
		t.Fatalf("alice has %d messages, want 2", n)
	}
	// After a duplicate the next append still chains onto the real head.
	next := mustAppend(t, l, "alice", "order-3")
	checkChain(t, readAll(t, l, "alice"))
	if next.Prev != first.Seq+1 && next.Prev != readAll(t, l, "alice")[1].Seq {
		t.Fatalf("append after a duplicate has prev %d", next.Prev)
	}
}

// TestConcurrentAppendersNeverFork runs two logs on two connections (two
// dispatchers), twenty goroutines, one user, against a single server (R1)
// and a three-node cluster (R3), whose conflict and dedupe checks differ.
func TestConcurrentAppendersNeverFork(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run("R"+strconv.Itoa(replicas), func(t *testing.T) {
			var urls string
			if replicas == 1 {
				urls = inboxtest.Run(t).URL()
			} else {
				_, urls = inboxtest.RunCluster(t, 3)
			}
			cfg := inbox.Config{Replicas: replicas, MaxMsgsPerUser: 1000, AppendTimeout: 10 * time.Second}
			logs := []*inbox.Log{ensure(t, appendConn(t, urls), cfg), ensure(t, appendConn(t, urls), cfg)}
			const writers, each = 20, 10
			var wg sync.WaitGroup
			errs := make(chan error, writers*each)
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						id := fmt.Sprintf("w%d-%d", w, i)
						if _, err := logs[w%2].Append(ctx, "hot", id, []byte(`1`)); err != nil {
							errs <- fmt.Errorf("%s: %w", id, err)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			msgs := readAll(t, logs[0], "hot")
			if len(msgs) != writers*each {
				t.Fatalf("log holds %d messages, want %d", len(msgs), writers*each)
			}
			checkChain(t, msgs)
			seen := map[string]bool{}
			for _, m := range msgs {
				if seen[m.ID] {
					t.Fatalf("id %s stored twice", m.ID)
				}
				seen[m.ID] = true
			}
			for i, l := range logs {
				if n := inbox.LockedUsers(l); n != 0 {
					t.Fatalf("log %d keeps %d users' locks after every append ended", i, n)
				}
			}
			st := logs[0].Stats()
			st2 := logs[1].Stats()
			t.Logf("R%d: %d conflicts, %d retries for %d appends", replicas, st.Conflicts+st2.Conflicts, st.Retries+st2.Retries, writers*each)
		})
	}
}

func TestEvictionShowsInTheChain(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{MaxMsgsPerUser: 5})
	var seqs []uint64
	for i := range 12 {
		seqs = append(seqs, mustAppend(t, l, "alice", "a"+strconv.Itoa(i)).Seq)
		mustAppend(t, l, "bob", "b"+strconv.Itoa(i))
	}
	msgs := readAll(t, l, "alice")
	if len(msgs) != 5 {
		t.Fatalf("alice keeps %d messages, want 5", len(msgs))
	}
	// The oldest kept message names an evicted predecessor: a reader whose
	// cursor is below it knows exactly what it lost.
	if msgs[0].Seq != seqs[7] || msgs[0].Prev != seqs[6] {
		t.Fatalf("oldest kept message seq %d prev %d, want seq %d prev %d", msgs[0].Seq, msgs[0].Prev, seqs[7], seqs[6])
	}
	for i := 1; i < 5; i++ {
		if msgs[i].Prev != msgs[i-1].Seq {
			t.Fatalf("kept messages not chained at %d", i)
		}
	}
}

func TestReadAfterBatches(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{MaxMsgsPerUser: 1000})
	var seqs []uint64
	for i := range 250 {
		seqs = append(seqs, mustAppend(t, l, "alice", strconv.Itoa(i)).Seq)
	}
	got, err := l.ReadAfter(ctx, "alice", seqs[9], 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 || got[0].Seq != seqs[10] || got[99].Seq != seqs[109] {
		t.Fatalf("ReadAfter(seq of #9, 100) = %d messages from %d to %d", len(got), got[0].Seq, got[len(got)-1].Seq)
	}
	if got, err := l.ReadAfter(ctx, "alice", seqs[249], 100); err != nil || len(got) != 0 {
		t.Fatalf("ReadAfter past the end = %v, %v", got, err)
	}
	if got, err := l.ReadAfter(ctx, "nobody", 0, 100); err != nil || len(got) != 0 {
		t.Fatalf("ReadAfter of an empty log = %v, %v", got, err)
	}
	leader, err := l.ReadAfterLeader(ctx, "alice", seqs[247], 10)
	if err != nil || len(leader) != 2 || leader[0].Seq != seqs[248] || leader[0].ID != "248" {
		t.Fatalf("ReadAfterLeader = %+v, %v", leader, err)
	}
	for _, viaLeader := range []bool{false, true} {
		last, ok, err := l.Last(ctx, "alice", viaLeader)
		if err != nil || !ok || last.Seq != seqs[249] || last.Prev != seqs[248] || last.ID != "249" {
			t.Fatalf("Last(leader=%v) = %+v, %v, %v", viaLeader, last, ok, err)
		}
		if _, ok, err := l.Last(ctx, "nobody", viaLeader); ok || err != nil {
			t.Fatalf("Last(nobody, leader=%v) = %v, %v", viaLeader, ok, err)
		}
	}
}

// TestStaleCachedHead: another dispatcher appended since this one cached
// the user's head. The append conflicts, learns the head, and chains on it.
func TestStaleCachedHead(t *testing.T) {
	s := inboxtest.Run(t)
	a := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	b := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	mustAppend(t, a, "alice", "1")
	fromB := mustAppend(t, b, "alice", "2")
	third := mustAppend(t, a, "alice", "3")
	if third.Prev != fromB.Seq {
		t.Fatalf("append after another dispatcher's has prev %d, want %d", third.Prev, fromB.Seq)
	}
	if a.Stats().Conflicts != 1 {
		t.Fatalf("conflicts = %d, want 1", a.Stats().Conflicts)
	}
	checkChain(t, readAll(t, a, "alice"))
}

func TestEpochChangesWhenStreamIsRecreated(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{})
	before := l.Epoch()
	for i := range 3 {
		mustAppend(t, l, "alice", strconv.Itoa(i))
	}
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, "HERALD_INBOX"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // creation times must differ
	ensure(t, appendConn(t, s.URL()), inbox.Config{})
	// l still caches alice's old head: the append conflicts, sees the log
	// went backwards and learns the new epoch.
	a := mustAppend(t, l, "alice", "after")
	if a.Prev != 0 || a.Seq != 1 {
		t.Fatalf("first append in the new stream: %+v, want seq 1 prev 0", a)
	}
	if a.Epoch == before || l.Epoch() == before {
		t.Fatalf("epoch still %s after the stream was recreated", before)
	}
	if got, err := l.Refresh(ctx); err != nil || got != a.Epoch {
		t.Fatalf("Refresh = %s, %v; want %s", got, err, a.Epoch)
	}
}

func TestOpenNeedsTheStream(t *testing.T) {
	s := inboxtest.Run(t)
	nc := inboxtest.Connect(t, s.URL())
	if _, err := inbox.Open(ctx, nc, inbox.Config{}); !errors.Is(err, inbox.ErrUnavailable) {
		t.Fatalf("Open before the stream exists: %v", err)
	}
	want := ensure(t, appendConn(t, s.URL()), inbox.Config{}).Epoch()
	l, err := inbox.Open(ctx, nc, inbox.Config{})
	if err != nil || l.Epoch() != want {
		t.Fatalf("Open = %v (epoch %s), want epoch %s", err, l.Epoch(), want)
	}
}

// TestAppendWhileNATSIsDown checks that every outcome is the truth: an
// append answered ErrUnavailable is never stored, one answered
// ErrUnknownOutcome is stored at most once however often it is retried.
func TestAppendWhileNATSIsDown(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{AppendTimeout: 500 * time.Millisecond})
	mustAppend(t, l, "alice", "before")
	s.Stop()
	// Sent into a socket not yet known dead: unknown, or refused at once.
	_, err := l.Append(ctx, "alice", "racing", []byte(`1`))
	if !errors.Is(err, inbox.ErrUnknownOutcome) && !errors.Is(err, inbox.ErrUnavailable) {
		t.Fatalf("Append as NATS went down: %v", err)
	}
	racing := err
	waitFor(t, 5*time.Second, "the connection to notice", func() bool { return nc.Status() != nats.CONNECTED })
	if _, err := l.Append(ctx, "alice", "during", []byte(`1`)); !errors.Is(err, inbox.ErrUnavailable) {
		t.Fatalf("Append while reconnecting: %v, want ErrUnavailable (nothing can be sent)", err)
	}
	s.Start()
	waitFor(t, 10*time.Second, "the connection to come back", func() bool { return nc.Status() == nats.CONNECTED })
	// The caller retries both with the same ids.
	for _, id := range []string{"racing", "during"} {
		mustAppend(t, l, "alice", id)
		mustAppend(t, l, "alice", id)
	}
	msgs := readAll(t, l, "alice")
	checkChain(t, msgs)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	if fmt.Sprint(ids) != "[before racing during]" {
		t.Fatalf("log after the outage holds %v (the racing append answered %v); want each id exactly once", ids, racing)
	}
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStorageFull(t *testing.T) {
	s := inboxtest.Run(t, func(o *server.Options) { o.JetStreamMaxStore = 256 << 10 })
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	big := []byte(`"` + string(make([]byte, 0)) + fmt.Sprintf("%060000d", 0) + `"`)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = l.Append(ctx, "user-"+strconv.Itoa(i), "x", big)
	}
	if !errors.Is(err, inbox.ErrStorageFull) {
		t.Fatalf("appending past the store's limit: %v, want ErrStorageFull", err)
	}
}

func TestMsgIDIsScopedToUser(t *testing.T) {
	if inbox.MsgID("a", "x") == inbox.MsgID("b", "x") {
		t.Fatal("same msg id for two users")
	}
	if got, want := inbox.MsgID("alice", "x"), wire.UserKey("alice")+"/x"; got != want {
		t.Fatalf("MsgID = %s, want %s", got, want)
	}
}

// TestStrayMessage: something other than herald published on a user's
// subject. Reads return it with an unknown predecessor, and appends go on.
func TestStrayMessage(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{})
	a := mustAppend(t, l, "alice", "1")
	if !a.PrevKnown || a.Prev != 0 {
		t.Fatalf("first append: %+v", a)
	}
	js, _ := jetstream.New(nc)
	stray := nats.NewMsg(wire.InboxSubject("alice"))
	stray.Header.Set(wire.HeaderPrev, "not a number")
	stray.Data = []byte("not json either")
	ack, err := js.PublishMsg(ctx, stray)
	if err != nil {
		t.Fatal(err)
	}
	last, ok, err := l.Last(ctx, "alice", false)
	if err != nil || !ok || last.Seq != ack.Sequence || last.Prev != 0 || last.Data != nil {
		t.Fatalf("Last = %+v, %v, %v; want the stray message, prev unknown, data dropped", last, ok, err)
	}
	// l still caches its own head (a.Seq): the append conflicts, reads the
	// stray as the head, and chains on it.
	b := mustAppend(t, l, "alice", "2")
	if b.Prev != ack.Sequence || !b.PrevKnown {
		t.Fatalf("append after the stray: %+v, want prev %d", b, ack.Sequence)
	}
}
