package inbox_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/nats-io/nats.go"
)

// TestMaxAppends: with MaxAppends in flight (here two appends waiting
// behind a stuck append of their user), one more append, of any user, is
// refused at once with ErrUnavailable, stores nothing and is counted;
// those in flight complete, and then appends go through again.
func TestMaxAppends(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{MaxAppends: 2, AppendTimeout: 30 * time.Second})
	mustAppend(t, l, "alice", "a0")
	release := inbox.HoldUser(t, l, "alice")
	first, second := appendAsync(ctx, l, "alice", "a1"), appendAsync(ctx, l, "alice", "a2")
	waitFor(t, 5*time.Second, "two appends in flight", func() bool { return l.Stats().InFlight == 2 })

	start := time.Now()
	_, err := l.Append(ctx, "bob", "b1", []byte(`1`))
	took := time.Since(start)
	if !errors.Is(err, inbox.ErrUnavailable) || errors.Is(err, inbox.ErrUnknownOutcome) {
		release()
		<-first
		<-second
		t.Fatalf("append beyond MaxAppends: %v, want ErrUnavailable", err)
	}
	t.Logf("refused after %v: %v", took, err)
	if st := l.Stats(); st.Busy != 1 || st.InFlight != 2 {
		t.Errorf("stats after the refusal: %+v, want Busy 1, InFlight 2", st)
	}
	release()
	for _, r := range []appendResult{<-first, <-second} {
		if r.err != nil {
			t.Fatalf("append in flight once released: %v", r.err)
		}
	}
	if got := ids(t, l, "bob"); got != "[]" {
		t.Fatalf("bob's log holds %s after the refused append, want nothing", got)
	}
	if a := mustAppend(t, l, "bob", "b1"); a.Duplicate {
		t.Fatalf("bob's retry is a duplicate: %+v", a)
	}
	if st := l.Stats(); st.InFlight != 0 || st.Busy != 1 {
		t.Fatalf("stats at the end: %+v, want InFlight 0, Busy 1", st)
	}
}

// TestDownForFailsAtOnce: an append fails at once, ErrUnavailable, while
// DownFor reports the connection down for more than MaxDown, and an append
// retrying stops once it does; while it reports less (a reconnect), the
// append keeps trying through the outage, even the read of its user's
// last message (this process never appended for carol), and lands once
// NATS is back.
func TestDownForFailsAtOnce(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	var down, asked atomic.Int64 // what DownFor reports; how often it was asked: once an append, and once each try
	l := ensure(t, nc, inbox.Config{
		AppendTimeout: 30 * time.Second,
		DownFor: func() time.Duration {
			asked.Add(1)
			return time.Duration(down.Load())
		},
	})
	mustAppend(t, l, "alice", "before")

	s.Stop()
	waitFor(t, 5*time.Second, "the connection to notice", func() bool { return nc.Status() != nats.CONNECTED })
	down.Store(int64(time.Second)) // reconnecting, within MaxDown
	tries := asked.Load()
	during := appendAsync(ctx, l, "carol", "during")
	waitFor(t, 5*time.Second, "the append to try a second time", func() bool { return asked.Load() >= tries+3 })
	s.Start()
	if r := <-during; r.err != nil {
		t.Fatalf("append while reconnecting, once NATS is back: %v", r.err)
	}
	waitFor(t, 10*time.Second, "the connection to come back", func() bool { return nc.Status() == nats.CONNECTED })

	down.Store(int64(3 * time.Second)) // over MaxDown (2s)
	start := time.Now()
	_, err := l.Append(ctx, "alice", "late", []byte(`1`))
	if !errors.Is(err, inbox.ErrUnavailable) || errors.Is(err, inbox.ErrUnknownOutcome) {
		t.Fatalf("append with the connection down for 3s: %v, want ErrUnavailable", err)
	}
	t.Logf("refused after %v: %v", time.Since(start), err)
	if n := l.Stats().Down; n != 1 {
		t.Fatalf("Stats().Down = %d, want 1", n)
	}

	// An append retrying (the stream's subjects answer nobody) stops once
	// the connection has been down too long.
	down.Store(0)
	s.Stop()
	waitFor(t, 5*time.Second, "the connection to notice", func() bool { return nc.Status() != nats.CONNECTED })
	retries := l.Stats().Retries
	stuck := appendAsync(ctx, l, "alice", "stuck")
	waitFor(t, 5*time.Second, "the append to retry", func() bool { return l.Stats().Retries > retries })
	down.Store(int64(3 * time.Second))
	var r appendResult
	select {
	case r = <-stuck:
	case <-time.After(20 * time.Second):
		t.Fatal("an append retrying went on for 20s after the connection was down too long")
	}
	if !errors.Is(r.err, inbox.ErrUnavailable) {
		t.Fatalf("append stopped by the connection's downtime: %v, want ErrUnavailable", r.err)
	}
	down.Store(0)
	s.Start()
	waitFor(t, 10*time.Second, "the connection to come back", func() bool { return nc.Status() == nats.CONNECTED })
	if got := ids(t, l, "alice"); got != "[before]" {
		t.Fatalf("alice's log holds %s, want [before]", got)
	}
	if got := ids(t, l, "carol"); got != "[during]" {
		t.Fatalf("carol's log holds %s, want [during]", got)
	}
}
