package inbox_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamInfo reads the log's stream as it is now, waiting for it to be
// back after a restart.
func streamInfo(tb testing.TB, nc *nats.Conn) *jetstream.StreamInfo {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	var info *jetstream.StreamInfo
	waitFor(tb, 10*time.Second, "the stream's info", func() bool {
		s, err := js.Stream(ctx, "HERALD_INBOX")
		if err != nil {
			return false
		}
		info = s.CachedInfo()
		return true
	})
	return info
}

// loseTail makes the stream lose acknowledged messages (inboxtest's
// LoseTail) and waits for nc and the others to be connected again.
func loseTail(tb testing.TB, s *inboxtest.Server, nc *nats.Conn, others ...*nats.Conn) (before, after uint64) {
	tb.Helper()
	before, after = s.LoseTail("HERALD_INBOX")
	for _, c := range append(others, nc) {
		waitFor(tb, 10*time.Second, "the connections to come back", func() bool { return c.Status() == nats.CONNECTED })
	}
	return before, after
}

// createdEpoch is the epoch of a stream without a recorded one: its
// creation time in base 36, what every epoch was before herald_epoch.
func createdEpoch(info *jetstream.StreamInfo) string {
	return strconv.FormatInt(info.Created.UnixNano(), 36)
}

// updates counts the stream configuration updates anyone sends, from now
// on, on the connection it returns (which a test restarting the server
// waits for).
func updates(tb testing.TB, url string) (*nats.Conn, func() int) {
	tb.Helper()
	return inboxtest.Count(tb, url, "$JS.API.STREAM.UPDATE.HERALD_INBOX")
}

func refresh(tb testing.TB, l *inbox.Log) string {
	tb.Helper()
	e, err := l.Refresh(ctx)
	if err != nil {
		tb.Fatalf("Refresh: %v", err)
	}
	return e
}

// TestLostTailIsANewEpoch: the stream loses acknowledged messages. A
// gateway's log (Open) neither notices nor writes; the dispatcher's (Ensure)
// finds it at its next refresh and records a new epoch, once; the gateway
// then reads it; Ensure, with the same or another configuration, keeps it.
func TestLostTailIsANewEpoch(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{})
	old := l.Epoch()
	if want := createdEpoch(streamInfo(t, nc)); old != want {
		t.Fatalf("epoch of a stream without a recorded one = %s, want %s (its creation time)", old, want)
	}
	for i := range 20 {
		mustAppend(t, l, "alice", strconv.Itoa(i))
	}
	gwc := inboxtest.Connect(t, s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	gw, err := inbox.Open(ctx, gwc, inbox.Config{})
	if err != nil {
		t.Fatal(err)
	}

	loseTail(t, s, nc, gwc)
	_, written := updates(t, s.URL())
	if e := refresh(t, gw); e != old {
		t.Fatalf("a gateway's refresh changed the epoch to %s", e)
	}
	if _, ok := streamInfo(t, nc).Config.Metadata[inbox.EpochKey]; ok {
		t.Fatal("a gateway's refresh recorded an epoch")
	}
	now := refresh(t, l)
	if now == old || !strings.HasPrefix(now, old+".") || l.Stats().NewEpochs != 1 {
		t.Fatalf("after the loss the dispatcher's epoch is %s (was %s), %d recorded; want a new one recorded", now, old, l.Stats().NewEpochs)
	}
	mark := streamInfo(t, nc).Config.Metadata[inbox.EpochKey]
	if mark == "" || now != old+"."+mark {
		t.Fatalf("epoch %s, stream's %s = %q", now, inbox.EpochKey, mark)
	}
	if e := refresh(t, gw); e != now {
		t.Fatalf("the gateway reads epoch %s, want %s", e, now)
	}
	for range 3 {
		if e := refresh(t, l); e != now {
			t.Fatalf("epoch changed again to %s", e)
		}
	}
	if n := written(); n != 1 {
		t.Fatalf("%d stream updates to record one epoch", n)
	}
	a := mustAppend(t, l, "alice", "after")
	if a.Epoch != now {
		t.Fatalf("append after the loss in epoch %s, want %s", a.Epoch, now)
	}
	checkChain(t, readAll(t, l, "alice"))

	// A dispatcher starting keeps the epoch; so does an operator's change
	// of the stream's settings.
	if l2 := ensure(t, appendConn(t, s.URL()), inbox.Config{}); l2.Epoch() != now {
		t.Fatalf("Ensure: epoch %s, want %s kept", l2.Epoch(), now)
	}
	if a, err := inbox.Apply(ctx, nc, inbox.Config{MaxMsgsPerUser: 50}); err != nil || a.Epoch != now || len(a.Changes) != 1 {
		t.Fatalf("Apply(MaxMsgsPerUser 50) = %+v, %v; want one change, epoch %s kept", a, err, now)
	}
	info := streamInfo(t, nc)
	if info.Config.Metadata[inbox.EpochKey] != mark || info.Config.MaxMsgsPerSubject != 50 {
		t.Fatalf("after Apply: %s %q, MaxMsgsPerSubject %d; want %q kept and 50", inbox.EpochKey, info.Config.Metadata[inbox.EpochKey], info.Config.MaxMsgsPerSubject, mark)
	}
	if l2 := ensure(t, appendConn(t, s.URL()), inbox.Config{}); l2.Epoch() != now {
		t.Fatalf("Ensure after Apply: epoch %s, want %s kept", l2.Epoch(), now)
	}
	if e := refresh(t, l); e != now || l.Stats().NewEpochs != 1 {
		t.Fatalf("after the restarts: epoch %s, %d recorded; want %s, 1", e, l.Stats().NewEpochs, now)
	}
}

// TestAppendFindsLostTail: an append finds the loss by itself, before any
// refresh, and its message is in the new epoch.
func TestAppendFindsLostTail(t *testing.T) {
	for _, c := range []struct{ name, user string }{
		// A new user: the message is acknowledged with a seq the log
		// already acknowledged once.
		{"reused seq", "carol"},
		// alice's cached head is gone: the append conflicts and finds
		// her log went backwards.
		{"head went back", "alice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := inboxtest.Run(t)
			nc := appendConn(t, s.URL())
			l := ensure(t, nc, inbox.Config{})
			old := l.Epoch()
			for i := range 20 {
				mustAppend(t, l, "alice", strconv.Itoa(i))
			}
			_, after := loseTail(t, s, nc)
			a := mustAppend(t, l, c.user, "x")
			if a.Seq != after+1 || a.Epoch == old || a.Epoch != l.Epoch() || l.Stats().NewEpochs != 1 {
				t.Fatalf("append after the loss: %+v, log epoch %s (was %s), %d recorded; want seq %d in a new epoch",
					a, l.Epoch(), old, l.Stats().NewEpochs, after+1)
			}
			if e := refresh(t, l); e != a.Epoch || l.Stats().NewEpochs != 1 {
				t.Fatalf("refresh after the append: %s, %d recorded; want %s, 1", e, l.Stats().NewEpochs, a.Epoch)
			}
		})
	}
}

// TestTwoDispatchersOneLoss: the second dispatcher to look finds the epoch
// the first recorded and adopts it; when both look at once they agree on
// one epoch at the next refresh.
func TestTwoDispatchersOneLoss(t *testing.T) {
	t.Run("one after the other", func(t *testing.T) {
		s := inboxtest.Run(t)
		nc := appendConn(t, s.URL())
		a := ensure(t, nc, inbox.Config{})
		for i := range 20 {
			mustAppend(t, a, "alice", strconv.Itoa(i))
		}
		bc := appendConn(t, s.URL())
		b := ensure(t, bc, inbox.Config{}) // knows the last seq
		old := a.Epoch()
		loseTail(t, s, nc, bc)
		ea := refresh(t, a)
		eb := refresh(t, b)
		if ea == old || eb != ea || a.Stats().NewEpochs != 1 || b.Stats().NewEpochs != 0 {
			t.Fatalf("epochs %s and %s (was %s), recorded %d and %d; want one new epoch, recorded by the first",
				ea, eb, old, a.Stats().NewEpochs, b.Stats().NewEpochs)
		}
	})
	// The second finds the loss in an append (its message got a seq it
	// knew was taken) after the first recorded it: it re-reads the stream
	// before writing, and takes the first one's epoch.
	t.Run("the second appending", func(t *testing.T) {
		s := inboxtest.Run(t)
		nc := appendConn(t, s.URL())
		a := ensure(t, nc, inbox.Config{})
		for i := range 20 {
			mustAppend(t, a, "alice", strconv.Itoa(i))
		}
		bc := appendConn(t, s.URL())
		b := ensure(t, bc, inbox.Config{})
		old := a.Epoch()
		loseTail(t, s, nc, bc)
		_, written := updates(t, s.URL())
		ea := refresh(t, a)
		got := mustAppend(t, b, "carol", "x")
		if ea == old || got.Epoch != ea || b.Epoch() != ea || b.Stats().NewEpochs != 0 || written() != 1 {
			t.Fatalf("first epoch %s (was %s); the second's append in %s, its log in %s, %d recorded by it, %d updates; want one new epoch",
				ea, old, got.Epoch, b.Epoch(), b.Stats().NewEpochs, written())
		}
	})
	t.Run("at once", func(t *testing.T) {
		s := inboxtest.Run(t)
		nc := appendConn(t, s.URL())
		logs := []*inbox.Log{ensure(t, nc, inbox.Config{})}
		for i := range 20 {
			mustAppend(t, logs[0], "alice", strconv.Itoa(i))
		}
		bc := appendConn(t, s.URL())
		logs = append(logs, ensure(t, bc, inbox.Config{}))
		old := logs[0].Epoch()
		loseTail(t, s, nc, bc)
		var wg sync.WaitGroup
		for _, l := range logs {
			wg.Go(func() {
				if _, err := l.Refresh(ctx); err != nil {
					t.Errorf("Refresh: %v", err)
				}
			})
		}
		wg.Wait()
		ea, eb := refresh(t, logs[0]), refresh(t, logs[1])
		recorded := logs[0].Stats().NewEpochs + logs[1].Stats().NewEpochs
		if ea == old || eb != ea || recorded < 1 {
			t.Fatalf("epochs %s and %s (was %s), %d recorded", ea, eb, old, recorded)
		}
		t.Logf("%d of 2 dispatchers recorded an epoch", recorded)
	})
}

// TestEpochStaysWithoutLoss: refreshes, a server restart and a dispatcher
// restart leave a stream that lost nothing in its epoch, which stays its
// creation time.
func TestEpochStaysWithoutLoss(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{})
	spy, written := updates(t, s.URL())
	want := createdEpoch(streamInfo(t, nc))
	for i := range 20 {
		mustAppend(t, l, "alice", strconv.Itoa(i))
		if e := refresh(t, l); e != want {
			t.Fatalf("epoch %s after append %d, want %s", e, i, want)
		}
	}
	s.Stop()
	s.Start()
	waitFor(t, 10*time.Second, "the connections to come back", func() bool {
		return nc.Status() == nats.CONNECTED && spy.Status() == nats.CONNECTED
	})
	if e := refresh(t, l); e != want {
		t.Fatalf("epoch %s after a server restart, want %s", e, want)
	}
	mustAppend(t, l, "alice", "after")
	if e := ensure(t, appendConn(t, s.URL()), inbox.Config{}).Epoch(); e != want {
		t.Fatalf("epoch %s for a starting dispatcher, want %s", e, want)
	}
	if e := refresh(t, l); e != want || l.Stats().NewEpochs != 0 {
		t.Fatalf("epoch %s, %d recorded; want %s, none", e, l.Stats().NewEpochs, want)
	}
	if md := streamInfo(t, nc).Config.Metadata; md[inbox.EpochKey] != "" {
		t.Fatalf("stream metadata %v: an epoch was recorded without a loss", md)
	}
	// Ensuring a stream exactly as it is writes nothing, so it cannot undo
	// an epoch another dispatcher records at that moment.
	if n := written(); n != 0 {
		t.Fatalf("%d stream updates without a loss or a configuration change", n)
	}
}

// TestLeftEpochNeverComesBack: after a recorded loss, the stream's
// configuration is written back without the new epoch (a dispatcher's
// Create racing the recording, an old version, a restored configuration).
// The dispatcher does not go back to the old epoch, whose seqs were given
// again: it records another.
func TestLeftEpochNeverComesBack(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{})
	old := l.Epoch()
	for i := range 20 {
		mustAppend(t, l, "alice", strconv.Itoa(i))
	}
	loseTail(t, s, nc)
	first := refresh(t, l)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(ctx, inbox.Config{}.StreamConfig()); err != nil { // no metadata
		t.Fatal(err)
	}
	if got := createdEpoch(streamInfo(t, nc)); got != old {
		t.Fatalf("the written-back stream is in epoch %s, want the old %s", got, old)
	}
	second := refresh(t, l)
	if second == old || second == first || l.Stats().NewEpochs != 2 {
		t.Fatalf("epochs: %s, then %s, then %s (%d recorded); want never back to the first", old, first, second, l.Stats().NewEpochs)
	}
	if e := refresh(t, l); e != second {
		t.Fatalf("epoch changed again to %s", e)
	}
}
