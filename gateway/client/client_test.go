package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewValidates(t *testing.T) {
	tok := func(context.Context) (string, error) { return "t", nil }
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no token", Config{Dispatcher: "http://d"}},
		{"nowhere to go", Config{Token: tok}},
		{"dispatcher not http", Config{Token: tok, Dispatcher: "ws://d"}},
		{"dispatcher without host", Config{Token: tok, Dispatcher: "http://"}},
		{"url not ws", Config{Token: tok, URL: "ftp://g/ws"}},
		{"negative duration", Config{Token: tok, URL: "ws://g/ws", PingInterval: -1}},
		{"max below base", Config{Token: tok, URL: "ws://g/ws", BackoffBase: time.Second, BackoffMax: time.Millisecond}},
		{"epoch too long", Config{Token: tok, URL: "ws://g/ws", Epoch: string(make([]byte, wire.MaxEpochBytes+1))}},
		{"unknown start", Config{Token: tok, URL: "ws://g/ws", Start: "newest"}},
		{"last without a count", Config{Token: tok, URL: "ws://g/ws", Start: wire.StartLast}},
		{"last over the cap", Config{Token: tok, URL: "ws://g/ws", Last: wire.MaxLast + 1}},
		{"live with a count", Config{Token: tok, URL: "ws://g/ws", Start: wire.StartLive, Last: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatalf("New(%+v) succeeded, want an error", tc.cfg)
			}
		})
	}
	c, err := New(Config{Token: tok, Dispatcher: "http://d:1/"})
	if err != nil {
		t.Fatal(err)
	}
	got := c.cfg
	if got.Dispatcher != "http://d:1" || got.BackoffBase != 250*time.Millisecond || got.BackoffMax != 10*time.Second ||
		got.StableAfter != 10*time.Second || got.TooManySocketsBackoff != 5*time.Second || got.PingInterval != 25*time.Second ||
		c.hc.Timeout != 10*time.Second {
		t.Fatalf("defaults not filled: %+v, http timeout %v", got, c.hc.Timeout)
	}
}

func TestFullJitterBounds(t *testing.T) {
	const base, limit, samples = 10 * time.Millisecond, time.Second, 4000
	prev := time.Duration(0)
	for attempt := 0; attempt <= 12; attempt++ {
		ceil := backoffCap(attempt, base, limit)
		if want := min(limit, base<<attempt); ceil != want {
			t.Fatalf("attempt %d: cap %v, want %v", attempt, ceil, want)
		}
		if ceil < prev {
			t.Fatalf("attempt %d: cap %v shrank from %v", attempt, ceil, prev)
		}
		prev = ceil
		var hi, sum time.Duration
		for range samples {
			d := fullJitter(attempt, base, limit)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", attempt, d, ceil)
			}
			hi = max(hi, d)
			sum += d
		}
		// Full jitter spreads over the whole interval: the largest sample
		// nears the cap and the mean is about half of it.
		if hi < ceil*9/10 {
			t.Errorf("attempt %d: largest of %d delays %v, want near the cap %v", attempt, samples, hi, ceil)
		}
		if mean := sum / samples; mean < ceil*4/10 || mean > ceil*6/10 {
			t.Errorf("attempt %d: mean delay %v, want about %v", attempt, mean, ceil/2)
		}
	}
	for _, attempt := range []int{40, 62, 63, 100, maxAttempt} {
		if ceil := backoffCap(attempt, base, limit); ceil != limit {
			t.Errorf("attempt %d: cap %v, want the limit %v (no overflow)", attempt, ceil, limit)
		}
	}
}

// The attempt counter grows with each backoff and resets after a connection
// that lasted StableAfter; each delay is within the cap of its attempt.
func TestBackoffGrowsAndResetsAfterStableConnection(t *testing.T) {
	const stable = 150 * time.Millisecond
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		switch s.n {
		case 3:
			s.hold(stable + 50*time.Millisecond)
			s.close(wire.CloseTryAgainLater)
		case 5:
			// stays up
		default:
			s.close(wire.CloseTryAgainLater)
		}
	})
	d := newDispatcher(t, routeTo(gw))
	cfg := Config{Dispatcher: d.url, BackoffBase: time.Millisecond, BackoffMax: time.Second, StableAfter: stable}
	h := start(t, cfg, nil)
	waitFor(t, waitLong, "the sixth socket", func() bool { return gw.count() == 6 && h.rec.connected() == 6 })

	var attempts []int
	for _, s := range h.rec.downs() {
		if s.CloseCode != wire.CloseTryAgainLater {
			t.Fatalf("down status %+v, want close 1013", s)
		}
		if ceil := backoffCap(s.Attempt, cfg.BackoffBase, cfg.BackoffMax); s.Backoff < 0 || s.Backoff > ceil {
			t.Errorf("attempt %d waited %v, want within [0, %v]", s.Attempt, s.Backoff, ceil)
		}
		attempts = append(attempts, s.Attempt)
	}
	if want := []int{0, 1, 2, 0, 1}; !slices.Equal(attempts, want) {
		t.Fatalf("backoff attempts %v, want %v (reset after the stable 4th connection)", attempts, want)
	}
	if got := len(d.calls()); got != 6 {
		t.Errorf("%d /v1/connect calls, want 6 (one per connect)", got)
	}
	if st := h.c.Stats(); st.Backoffs != 5 || st.Connects != 6 || st.Reconnects != 5 || st.LastCloseCode != wire.CloseTryAgainLater {
		t.Errorf("stats %+v, want 5 backoffs, 6 connects, 5 reconnects, last close 1013", st)
	}
}

// Duplicates (seq at or below the cursor) are dropped and counted, every
// delivered notification is acked once, in order, and OnFrame sees every
// raw frame with the gateway that sent it.
func TestDedupeAndAck(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.send(wire.Broadcast{Type: wire.TypeBroadcast, Data: []byte(`"early"`), TS: "t"}) // before hello
		s.hello("e1", 0)
		s.notify(1, 2, 2, 1, 3)
		s.send(wire.Broadcast{Type: wire.TypeBroadcast, Data: []byte(`"hi"`), TS: "t"})
	})
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url}, nil)
	waitFor(t, waitLong, "two broadcasts", func() bool { return len(h.rec.kinds(EventBroadcast)) == 2 })
	waitFor(t, waitLong, "ack 3", func() bool { return slices.Contains(gw.socket(0).acks(), 3) })

	if got, want := h.rec.seqs(), []uint64{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if got, want := gw.socket(0).acks(), []uint64{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("acks %v, want %v (one per delivered notification, none for duplicates)", got, want)
	}
	if epoch, seq := h.c.Cursor(); epoch != "e1" || seq != 3 {
		t.Errorf("cursor (%q, %d), want (e1, 3): broadcasts never move it", epoch, seq)
	}
	st := h.c.Stats()
	if st.DroppedDuplicates != 2 || st.Notifications != 3 || st.Acks != 3 || st.Broadcasts != 2 {
		t.Errorf("stats %+v, want 2 duplicates, 3 notifications, 3 acks, 2 broadcasts", st)
	}
	raw := h.rec.raw()
	var types, gateways []string
	for _, f := range raw {
		types = append(types, f.frame.Type)
		gateways = append(gateways, f.gateway)
	}
	wantTypes := []string{"broadcast", "hello", "notification", "notification", "notification", "notification", "notification", "broadcast"}
	if !slices.Equal(types, wantTypes) {
		t.Errorf("raw frames %v, want %v (before dedupe)", types, wantTypes)
	}
	if want := []string{"", "gw-a", "gw-a", "gw-a", "gw-a", "gw-a", "gw-a", "gw-a"}; !slices.Equal(gateways, want) {
		t.Errorf("OnFrame gateways %q, want %q: \"\" before hello, then the hello's gateway", gateways, want)
	}
	if got := raw[3].frame; got.Seq != 2 || got.ID != "n2" || string(got.Data) != `{"n":2}` || got.TS == "" {
		t.Errorf("raw notification %+v, want seq 2 id n2 data {\"n\":2} with a ts", got)
	}
}

// A frame of a type the client does not know (from a newer gateway) is
// skipped: the socket stays up and what follows is delivered.
func TestUnknownFrameTypesSkipped(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		s.notify(1)
		s.write([]byte(`{"type":"presence","user":"u","online":true}`))
		s.notify(2)
		s.hold(waitLong)
	})
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url}, nil)
	waitFor(t, waitLong, "ack 2", func() bool { return gw.count() > 0 && slices.Contains(gw.socket(0).acks(), 2) })
	if got, want := h.rec.seqs(), []uint64{1, 2}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if st := h.c.Stats(); st.IgnoredFrames != 1 || st.BadFrames != 0 || st.Reconnects != 0 || gw.count() != 1 {
		t.Errorf("stats %+v with %d sockets, want 1 ignored frame, no bad frame, one socket", st, gw.count())
	}
}

// A gateway that cannot be dialled is named in the next /v1/connect, and
// only in that one: a socket that then ends with a close frame names none.
func TestDialFailureNamesTheGateway(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		if s.n == 0 {
			s.close(wire.CloseServiceRestart)
		}
	})
	// The handshake fails: the connection is dropped without an answer.
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	}))
	t.Cleanup(dead.Close)
	deadURL := "ws" + strings.TrimPrefix(dead.URL, "http") + "/ws"
	d := newDispatcher(t, func(n int) (int, any) {
		if n == 0 {
			return http.StatusOK, route{Gateway: "gw-dead", URL: deadURL, Ring: "ring-1"}
		}
		return routeTo(gw)(n)
	})
	h := start(t, Config{Dispatcher: d.url}, nil)
	waitFor(t, waitLong, "two connections to gw-a", func() bool { return h.rec.connected() == 2 })
	if got, want := []string{d.queryOf(0), d.queryOf(1), d.queryOf(2)}, []string{"", "unreachable=gw-dead", ""}; !slices.Equal(got, want) {
		t.Fatalf("/v1/connect queries %q, want %q", got, want)
	}
}

// With NoAck the client delivers but never acks.
func TestNoAck(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		s.notify(1, 2, 3)
		s.send(wire.Broadcast{Type: wire.TypeBroadcast, Data: []byte(`"after"`), TS: "t"})
	})
	h := start(t, Config{URL: gw.url, NoAck: true}, nil)
	// The read loop acks a notification before it reads the next frame, so
	// once the broadcast is delivered any ack is on the wire, ahead of the
	// close that stopping sends.
	waitFor(t, waitLong, "the broadcast", func() bool { return len(h.rec.kinds(EventBroadcast)) == 1 })
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := gw.socket(0)
	waitFor(t, waitLong, "the socket to end", s.isEnded)
	if code := s.clientCloseCode(); code != wire.CloseNormal {
		t.Fatalf("socket ended with %d, want the client's 1000 (after everything it sent)", code)
	}
	if acks := s.acks(); len(acks) != 0 {
		t.Errorf("acks %v with NoAck, want none", acks)
	}
	if got, want := h.rec.seqs(), []uint64{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if st := h.c.Stats(); st.Acks != 0 || st.Notifications != 3 {
		t.Errorf("stats %+v, want 3 notifications and no acks", st)
	}
}

// A gap into a new epoch resets the cursor so the new log's low seqs are
// delivered; a reconnect resumes from (epoch, seq) and drops what it has.
func TestGapNewEpochAndResume(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		switch s.n {
		case 0:
			s.hello("e1", 0)
			s.notify(1, 2, 3)
			s.gap("e2", 3, 1)
			s.notify(1, 2)
			s.close(wire.CloseServiceRestart)
		default:
			s.hello(s.auth.Epoch, s.auth.Since)
			s.notify(2, 3)
		}
	})
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url}, nil)
	waitFor(t, waitLong, "six notifications", func() bool { return len(h.rec.seqs()) == 6 })

	if got, want := h.rec.seqs(), []uint64{1, 2, 3, 1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	gaps := h.rec.kinds(EventGap)
	if len(gaps) != 1 || gaps[0].Frame.Epoch != "e2" || gaps[0].Frame.After != 3 || gaps[0].Frame.Next != 1 {
		t.Errorf("gap events %+v, want one gap e2 after 3 next 1", gaps)
	}
	first, second := gw.socket(0).auth, gw.socket(1).auth
	if first.Since != 0 || first.Epoch != "" || first.Token != "tok-1" || first.Ring != "ring-1" {
		t.Errorf("first auth %+v, want since 0, no epoch, tok-1, ring-1", first)
	}
	if second.Since != 2 || second.Epoch != "e2" || second.Token != "tok-1" {
		t.Errorf("resume auth %+v, want since 2 epoch e2 with the same token", second)
	}
	if epoch, seq := h.c.Cursor(); epoch != "e2" || seq != 3 {
		t.Errorf("cursor (%q, %d), want (e2, 3)", epoch, seq)
	}
	if st := h.c.Stats(); st.DroppedDuplicates != 1 || st.Gaps != 1 {
		t.Errorf("stats %+v, want 1 duplicate (seq 2 replayed), 1 gap", st)
	}
}

// TestStartChosenOnce: a client without a cursor sends its start in the
// first auth only; the hello's cursor is where it resumes from, and
// caught_up reaches OnEvent in its place among the notifications.
func TestStartChosenOnce(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		switch s.n {
		case 0:
			s.send(wire.Hello{Type: wire.TypeHello, Gateway: s.gw.id, User: testUser, Epoch: "e1", Cursor: 7, Start: wire.StartLast, Last: 2})
			s.notify(8, 9)
			s.send(wire.CaughtUp{Type: wire.TypeCaughtUp, Cursor: 9})
			s.close(wire.CloseServiceRestart)
		default:
			s.send(wire.Hello{Type: wire.TypeHello, Gateway: s.gw.id, User: testUser, Epoch: s.auth.Epoch, Cursor: s.auth.Since, Start: wire.StartResume})
			s.send(wire.CaughtUp{Type: wire.TypeCaughtUp, Cursor: s.auth.Since})
			s.notify(10)
		}
	})
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url, Last: 2}, nil)
	waitFor(t, waitLong, "three notifications", func() bool { return len(h.rec.seqs()) == 3 })
	first, second := gw.socket(0).auth, gw.socket(1).auth
	if first.Start != wire.StartLast || first.Last != 2 || first.Since != 0 || first.Epoch != "" {
		t.Errorf("first auth %+v, want start last 2 without a cursor", first)
	}
	if second.Start != wire.StartAll || second.Last != 0 || second.Since != 9 || second.Epoch != "e1" {
		t.Errorf("second auth %+v, want a resume after 9 in e1 without a start", second)
	}
	var order []string
	for _, ev := range h.rec.all() {
		switch ev.Kind {
		case EventNotification:
			order = append(order, fmt.Sprint(ev.Frame.Seq))
		case EventCaughtUp:
			order = append(order, fmt.Sprint("caught_up@", ev.Frame.Cursor))
		}
	}
	if want := []string{"8", "9", "caught_up@9", "caught_up@9", "10"}; !slices.Equal(order, want) {
		t.Errorf("events %v, want %v", order, want)
	}
	if st := h.c.Stats(); st.CaughtUps != 2 {
		t.Errorf("%d caught_ups counted, want 2", st.CaughtUps)
	}
}

// The configured cursor is sent, and hello is authoritative: a gateway that
// starts the client over is followed even within the same epoch.
func TestHelloIsAuthoritative(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		s.gap("e1", 7, 3)
		s.notify(3, 4)
	})
	h := start(t, Config{URL: gw.url, Since: 7, Epoch: "e1"}, nil)
	waitFor(t, waitLong, "two notifications", func() bool { return len(h.rec.seqs()) == 2 })
	if a := gw.socket(0).auth; a.Since != 7 || a.Epoch != "e1" || a.Ring != "" {
		t.Errorf("auth %+v, want since 7 epoch e1 and no ring (Config.URL)", a)
	}
	if epoch, seq := h.c.Cursor(); epoch != "e1" || seq != 4 {
		t.Errorf("cursor (%q, %d), want (e1, 4)", epoch, seq)
	}
}

// 4001 goes straight to the moved URL: no dispatcher call, no backoff.
func TestMovedGoesToURL(t *testing.T) {
	b := newGateway(t, "gw-b", func(s *socket) { s.hello("e1", s.auth.Since); s.notify(2) })
	a := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		s.notify(1)
		s.moved(b.url)
		s.close(wire.CloseMoved)
	})
	d := newDispatcher(t, routeTo(a))
	h := start(t, Config{Dispatcher: d.url}, nil)
	waitFor(t, waitLong, "notification 2 from gw-b", func() bool { return len(h.rec.seqs()) == 2 })

	if got := len(d.calls()); got != 1 {
		t.Errorf("%d /v1/connect calls, want 1", got)
	}
	if au := b.socket(0).auth; au.Since != 1 || au.Epoch != "e1" || au.Ring != "" || au.Token != "tok-1" {
		t.Errorf("auth at the moved URL %+v, want since 1 epoch e1, no ring, tok-1", au)
	}
	downs := h.rec.downs()
	if len(downs) != 1 || downs[0].CloseCode != wire.CloseMoved || downs[0].Backoff != 0 || downs[0].Gateway != "gw-a" {
		t.Errorf("down statuses %+v, want one: 4001 from gw-a, no backoff", downs)
	}
	if st := h.c.Stats(); st.Moves != 1 || st.Backoffs != 0 || st.MovesViaDispatcher != 0 || st.Gateway != "gw-b" {
		t.Errorf("stats %+v, want 1 move, no backoff, on gw-b", st)
	}
}

// Moved twice within the window: back through /v1/connect with backoff,
// not to the second moved URL.
func TestMovedTwiceGoesBackToDispatcher(t *testing.T) {
	var a, b *gateway
	c := newGateway(t, "gw-c", func(s *socket) { s.hello("e1", 0) })
	a = newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0); s.moved(b.url); s.close(wire.CloseMoved) })
	b = newGateway(t, "gw-b", func(s *socket) { s.hello("e1", 0); s.moved(a.url); s.close(wire.CloseMoved) })
	d := newDispatcher(t, routeTo(a, c))
	h := start(t, Config{Dispatcher: d.url}, nil)
	waitFor(t, waitLong, "a socket at gw-c", func() bool { return c.count() == 1 })

	if got := len(d.calls()); got != 2 {
		t.Errorf("%d /v1/connect calls, want 2", got)
	}
	if a.count() != 1 || b.count() != 1 {
		t.Errorf("gw-a has %d sockets, gw-b %d, want 1 each (no bouncing)", a.count(), b.count())
	}
	downs := h.rec.downs()
	if len(downs) != 2 || downs[0].Backoff != 0 || downs[1].CloseCode != wire.CloseMoved {
		t.Errorf("down statuses %+v, want a direct move, then a move that backs off", downs)
	}
	if st := h.c.Stats(); st.Moves != 2 || st.MovesViaDispatcher != 1 || st.Backoffs != 1 {
		t.Errorf("stats %+v, want 2 moves, 1 via the dispatcher, 1 backoff", st)
	}
}

// The window is what sends the client back: moves further apart than it
// are followed directly.
func TestMovesOutsideWindowFollowed(t *testing.T) {
	var a, b *gateway
	a = newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		if s.n == 0 {
			s.moved(b.url)
			s.close(wire.CloseMoved)
		}
	})
	b = newGateway(t, "gw-b", func(s *socket) { s.hello("e1", 0); s.moved(a.url); s.close(wire.CloseMoved) })
	d := newDispatcher(t, routeTo(a))
	h := start(t, Config{Dispatcher: d.url}, func(c *Client) { c.moveWindow = time.Nanosecond })
	waitFor(t, waitLong, "a second socket at gw-a", func() bool { return a.count() == 2 })
	if got := len(d.calls()); got != 1 {
		t.Errorf("%d /v1/connect calls, want 1", got)
	}
	if st := h.c.Stats(); st.Moves != 2 || st.MovesViaDispatcher != 0 || st.Backoffs != 0 {
		t.Errorf("stats %+v, want 2 direct moves", st)
	}
}

func TestUnauthorizedStops(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) { s.close(wire.CloseUnauthorized) })
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url}, nil)
	if err := h.wait(t, waitLong); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Run returned %v, want ErrUnauthorized", err)
	}
	if gw.count() != 1 || len(d.calls()) != 1 || h.tokens.n.Load() != 1 {
		t.Errorf("%d sockets, %d dispatcher calls, %d tokens, want 1 each (no retry)", gw.count(), len(d.calls()), h.tokens.n.Load())
	}
	if downs := h.rec.downs(); len(downs) != 1 || downs[0].CloseCode != wire.CloseUnauthorized {
		t.Errorf("down statuses %+v, want one with 4003", downs)
	}
}

// 4004 after hello: a new token and an immediate reconnect that resumes.
// 4004 straight after auth (the fresh token was already expired): the new
// token comes after a backoff, so a bad Token func cannot make it spin.
func TestTokenExpired(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hello    bool
		backoffs uint64
	}{
		{"after hello", true, 0},
		{"before hello", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := newGateway(t, "gw-a", func(s *socket) {
				if s.n > 0 {
					s.hello("e1", s.auth.Since)
					return
				}
				if tc.hello {
					s.hello("e1", 0)
					s.notify(1)
				}
				s.close(wire.CloseTokenExpired)
			})
			d := newDispatcher(t, routeTo(gw))
			h := start(t, Config{Dispatcher: d.url}, nil)
			waitFor(t, waitLong, "the second connection", func() bool { return h.rec.connected() == 1+boolInt(tc.hello) })

			if got := h.tokens.n.Load(); got != 2 {
				t.Errorf("Token called %d times, want 2", got)
			}
			if au := gw.socket(1).auth; au.Token != "tok-2" || au.Since != uint64(boolInt(tc.hello)) {
				t.Errorf("second auth %+v, want tok-2 resuming from the cursor", au)
			}
			if calls := d.calls(); len(calls) != 2 || calls[1] != "Bearer tok-2" {
				t.Errorf("dispatcher calls %q, want the second with Bearer tok-2", calls)
			}
			if st := h.c.Stats(); st.Backoffs != tc.backoffs {
				t.Errorf("%d backoffs, want %d", st.Backoffs, tc.backoffs)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestTooManySocketsWaits(t *testing.T) {
	const floor = 150 * time.Millisecond
	var closedAt atomic.Int64
	gw := newGateway(t, "gw-a", func(s *socket) {
		if s.n == 0 {
			closedAt.Store(time.Now().UnixNano())
			s.close(wire.CloseTooManySockets)
			return
		}
		s.hello("e1", 0)
	})
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url, TooManySocketsBackoff: floor}, nil)
	waitFor(t, waitLong, "the second socket", func() bool { return gw.count() == 2 })

	if waited := gw.socket(1).at.Sub(time.Unix(0, closedAt.Load())); waited < floor {
		t.Errorf("reconnected %v after 4009, want at least %v", waited, floor)
	}
	downs := h.rec.downs()
	if len(downs) != 1 || downs[0].CloseCode != wire.CloseTooManySockets || downs[0].Backoff < floor {
		t.Errorf("down statuses %+v, want one 4009 with a backoff of at least %v", downs, floor)
	}
	if len(d.calls()) != 2 {
		t.Errorf("%d dispatcher calls, want 2", len(d.calls()))
	}
}

// Every other way a socket ends backs off and asks the dispatcher again,
// resuming from the cursor.
func TestOtherClosesBackOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(s *socket)
		code int
	}{
		{"1012 service restart", func(s *socket) { s.close(wire.CloseServiceRestart) }, wire.CloseServiceRestart},
		{"1013 try again later", func(s *socket) { s.close(wire.CloseTryAgainLater) }, wire.CloseTryAgainLater},
		{"4002 auth timeout", func(s *socket) { s.close(wire.CloseAuthTimeout) }, wire.CloseAuthTimeout},
		{"4008 slow consumer", func(s *socket) { s.close(wire.CloseSlowConsumer) }, wire.CloseSlowConsumer},
		{"1011 internal error", func(s *socket) { s.close(1011) }, 1011},
		{"1000 normal", func(s *socket) { s.close(wire.CloseNormal) }, wire.CloseNormal},
		{"dropped", func(s *socket) { s.conn.CloseNow() }, 0},
		{"bad frame", func(s *socket) { s.write([]byte(`{"type":"notification","id":"n"}`)); s.hold(waitLong) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := newGateway(t, "gw-a", func(s *socket) {
				if s.n > 0 {
					s.hello("e1", s.auth.Since)
					return
				}
				s.hello("e1", 0)
				s.notify(1)
				tc.end(s)
			})
			d := newDispatcher(t, routeTo(gw))
			h := start(t, Config{Dispatcher: d.url}, nil)
			waitFor(t, waitLong, "the second connection", func() bool { return h.rec.connected() == 2 })

			downs := h.rec.downs()
			if len(downs) != 1 || downs[0].CloseCode != tc.code || downs[0].Err == nil || downs[0].Attempt != 0 {
				t.Fatalf("down statuses %+v, want one with close code %d, an error, attempt 0", downs, tc.code)
			}
			if downs[0].Backoff > backoffCap(0, h.c.cfg.BackoffBase, h.c.cfg.BackoffMax) {
				t.Errorf("backoff %v above the first cap", downs[0].Backoff)
			}
			if len(d.calls()) != 2 {
				t.Errorf("%d dispatcher calls, want 2 (reconnects ask the dispatcher)", len(d.calls()))
			}
			// Without a close frame the gateway may be dead: the dispatcher
			// is told, so it can hold the answer until the ring changes.
			if q, want := d.queryOf(1), map[bool]string{true: "unreachable=gw-a", false: ""}[tc.code == 0]; q != want {
				t.Errorf("second /v1/connect query %q, want %q", q, want)
			}
			if au := gw.socket(1).auth; au.Since != 1 || au.Epoch != "e1" {
				t.Errorf("resume auth since %d epoch %q, want 1 e1", au.Since, au.Epoch)
			}
			st := h.c.Stats()
			if st.Backoffs != 1 || st.LastCloseCode != tc.code {
				t.Errorf("stats %+v, want 1 backoff, last close code %d", st, tc.code)
			}
			if tc.name == "bad frame" && st.BadFrames != 1 {
				t.Errorf("%d bad frames, want 1", st.BadFrames)
			}
		})
	}
}

func TestDispatcherAnswers(t *testing.T) {
	t.Run("401 gets a new token once", func(t *testing.T) {
		gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0) })
		d := newDispatcher(t, func(n int) (int, any) {
			if n == 0 {
				return apiError(http.StatusUnauthorized, "unauthorized")
			}
			return routeTo(gw)(n)
		})
		h := start(t, Config{Dispatcher: d.url}, nil)
		waitFor(t, waitLong, "a connection", func() bool { return h.rec.connected() == 1 })
		if calls := d.calls(); !slices.Equal(calls, []string{"Bearer tok-1", "Bearer tok-2"}) {
			t.Errorf("dispatcher calls %q, want tok-1 then tok-2", calls)
		}
		if au := gw.socket(0).auth; au.Token != "tok-2" {
			t.Errorf("auth token %q, want tok-2", au.Token)
		}
		if st := h.c.Stats(); st.Backoffs != 0 || st.TokenFetches != 2 {
			t.Errorf("stats %+v, want no backoff, 2 token fetches", st)
		}
	})
	t.Run("401 to a fresh token stops", func(t *testing.T) {
		d := newDispatcher(t, func(int) (int, any) { return apiError(http.StatusUnauthorized, "unauthorized") })
		h := start(t, Config{Dispatcher: d.url}, nil)
		if err := h.wait(t, waitLong); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Run returned %v, want ErrUnauthorized", err)
		}
		if calls := d.calls(); len(calls) != 2 || h.tokens.n.Load() != 2 {
			t.Errorf("dispatcher calls %q and %d tokens, want 2 each", calls, h.tokens.n.Load())
		}
	})
	t.Run("errors back off and retry", func(t *testing.T) {
		gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0) })
		d := newDispatcher(t, func(n int) (int, any) {
			switch n {
			case 0:
				return apiError(http.StatusServiceUnavailable, "no_ring")
			case 1:
				return apiError(http.StatusInternalServerError, "internal")
			case 2:
				return http.StatusOK, map[string]string{"gateway": "gw-a"} // no url
			case 3:
				return apiError(http.StatusForbidden, "forbidden")
			}
			return routeTo(gw)(n)
		})
		h := start(t, Config{Dispatcher: d.url}, nil)
		waitFor(t, waitLong, "a connection", func() bool { return h.rec.connected() == 1 })
		st := h.c.Stats()
		if st.Backoffs != 4 || st.ResolveFailures != 4 || st.Resolves != 5 || st.TokenFetches != 1 {
			t.Errorf("stats %+v, want 4 backoffs and failures of 5 resolves, 1 token", st)
		}
		var attempts []int
		for _, s := range h.rec.downs() {
			attempts = append(attempts, s.Attempt)
		}
		if want := []int{0, 1, 2, 3}; !slices.Equal(attempts, want) {
			t.Errorf("backoff attempts %v, want %v", attempts, want)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		h := start(t, Config{Dispatcher: url}, nil)
		waitFor(t, waitLong, "three backoffs", func() bool { return h.c.Stats().Backoffs >= 3 })
		if err := h.stop(t); err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

func TestTokenErrors(t *testing.T) {
	t.Run("retried with backoff", func(t *testing.T) {
		gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0) })
		var calls atomic.Int64
		tok := func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return "", errors.New("auth server down")
			}
			return "tok", nil
		}
		h := start(t, Config{URL: gw.url, Token: tok}, nil)
		waitFor(t, waitLong, "a connection", func() bool { return h.rec.connected() == 1 })
		if st := h.c.Stats(); st.Backoffs != 1 || st.TokenFetches != 2 {
			t.Errorf("stats %+v, want 1 backoff, 2 token fetches", st)
		}
	})
	t.Run("ErrUnauthorized stops", func(t *testing.T) {
		tok := func(context.Context) (string, error) { return "", ErrUnauthorized }
		h := start(t, Config{URL: "ws://127.0.0.1:1/ws", Token: tok}, nil)
		if err := h.wait(t, waitLong); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Run returned %v, want ErrUnauthorized", err)
		}
	})
}

// Without a dispatcher every connect uses Config.URL.
func TestFixedURL(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		if s.n == 0 {
			s.close(wire.CloseServiceRestart)
		}
	})
	h := start(t, Config{URL: gw.url}, nil)
	waitFor(t, waitLong, "two connections", func() bool { return h.rec.connected() == 2 })
	if st := h.c.Stats(); st.Resolves != 0 || st.Dials != 2 {
		t.Errorf("stats %+v, want no resolves, 2 dials", st)
	}
}

// Pings go out every PingInterval; a gateway that answers them keeps the
// socket well past 2×PingInterval.
func TestPing(t *testing.T) {
	const interval = 80 * time.Millisecond
	gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0) })
	h := start(t, Config{URL: gw.url, PingInterval: interval}, nil)
	// The client counts a ping after writing it, so wait for both sides.
	waitFor(t, waitLong, "five pings", func() bool {
		return gw.count() > 0 && gw.socket(0).pings() >= 5 && h.c.Stats().Pings >= 5
	})
	if gw.count() != 1 {
		t.Errorf("%d sockets, want 1: answered pings keep it alive", gw.count())
	}
	if st := h.c.Stats(); st.DeadSockets != 0 || st.Pings < 5 || st.Pongs < 4 {
		t.Errorf("stats %+v, want no dead socket, at least 5 pings and 4 pongs", st)
	}
}

// A socket on which nothing arrives for 2×PingInterval is dropped and
// reconnected with backoff, even though the TCP connection is fine.
func TestDeadSocketReconnects(t *testing.T) {
	const interval = 40 * time.Millisecond
	gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0) })
	gw.noPong = func(n int) bool { return n == 0 }
	d := newDispatcher(t, routeTo(gw))
	h := start(t, Config{Dispatcher: d.url, PingInterval: interval}, nil)
	waitFor(t, waitLong, "a second socket", func() bool { return gw.count() >= 2 })

	if p := gw.socket(0).pings(); p < 1 {
		t.Errorf("the silent gateway got %d pings, want at least 1", p)
	}
	downs := h.rec.downs()
	if len(downs) == 0 || !errors.Is(downs[0].Err, errDeadSocket) || downs[0].Gateway != "gw-a" {
		t.Fatalf("down statuses %+v, want the first for a dead socket", downs)
	}
	if st := h.c.Stats(); st.DeadSockets < 1 || st.Backoffs < 1 || len(d.calls()) < 2 {
		t.Errorf("stats %+v, %d dispatcher calls: want a dead socket, a backoff and a new /v1/connect", st, len(d.calls()))
	}
}

// Cancelling Run closes the socket with 1000 and returns promptly.
func TestCancelClosesNormally(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0); s.notify(1) })
	h := start(t, Config{URL: gw.url}, nil)
	waitFor(t, waitLong, "notification 1", func() bool { return len(h.rec.seqs()) == 1 })
	begin := time.Now()
	if err := h.stop(t); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("Run took %v to return", took)
	}
	s := gw.socket(0)
	waitFor(t, waitLong, "the socket to end", s.isEnded)
	if code := s.clientCloseCode(); code != wire.CloseNormal {
		t.Errorf("client closed with %d, want 1000", code)
	}
	if epoch, seq := h.c.Cursor(); epoch != "e1" || seq != 1 {
		t.Errorf("cursor after Run (%q, %d), want (e1, 1)", epoch, seq)
	}

	// A later Run resumes from the cursor.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.c.Run(ctx) }()
	waitFor(t, waitLong, "a second socket", func() bool { return gw.count() == 2 })
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("second Run returned %v", err)
	}
	if au := gw.socket(1).auth; au.Since != 1 || au.Epoch != "e1" {
		t.Errorf("second Run's auth since %d epoch %q, want 1 e1", au.Since, au.Epoch)
	}
}

// A gateway that never answers the close does not hold Run for
// coder/websocket's 5 s wait: the connection is dropped after the grace.
// Whether the read loop is waiting for a frame when Run is cancelled, or
// busy in OnEvent (so coder/websocket's Close does the reading), is
// different code; both are bounded.
func TestCancelWithUnresponsiveGateway(t *testing.T) {
	for _, tc := range []struct {
		name    string
		onEvent func(Event)
	}{
		{"while reading", nil},
		{"while in OnEvent", func(e Event) {
			if e.Kind == EventNotification {
				// Long enough for the close to start while the read loop
				// is here.
				time.Sleep(100 * time.Millisecond)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0); s.notify(1) })
			gw.noRead = true
			cfg := Config{URL: gw.url, OnEvent: tc.onEvent}
			h := start(t, cfg, func(c *Client) { c.closeGrace = 100 * time.Millisecond })
			waitFor(t, waitLong, "notification 1", func() bool { return len(h.rec.seqs()) == 1 })
			begin := time.Now()
			if err := h.stop(t); err != nil {
				t.Fatalf("Run returned %v, want nil", err)
			}
			if took := time.Since(begin); took < 100*time.Millisecond || took > 2*time.Second {
				t.Errorf("Run took %v to return, want about the 100ms grace", took)
			}
		})
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	d := newDispatcher(t, func(int) (int, any) { return apiError(http.StatusServiceUnavailable, "no_ring") })
	h := start(t, Config{Dispatcher: d.url, BackoffBase: time.Hour, BackoffMax: time.Hour}, nil)
	waitFor(t, waitLong, "a backoff", func() bool { return h.c.Stats().Backoffs == 1 })
	begin := time.Now()
	if err := h.stop(t); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("Run took %v to return from a backoff", took)
	}
}

func TestRunOnceAtATime(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) { s.hello("e1", 0) })
	h := start(t, Config{URL: gw.url}, nil)
	waitFor(t, waitLong, "a connection", func() bool { return h.rec.connected() == 1 })
	if err := h.c.Run(context.Background()); err == nil {
		t.Fatal("a second concurrent Run succeeded, want an error")
	}
}

// After Run returns nothing it started is left, not even idle connections
// to the dispatcher, while the servers are still up (goleak.VerifyTestMain
// only looks once they are gone).
func TestRunLeavesNothingBehind(t *testing.T) {
	gw := newGateway(t, "gw-a", func(s *socket) {
		s.hello("e1", 0)
		if s.n == 0 {
			s.close(wire.CloseServiceRestart)
		}
	})
	d := newDispatcher(t, routeTo(gw))
	before := goleak.IgnoreCurrent()
	h := start(t, Config{Dispatcher: d.url, PingInterval: time.Second}, nil)
	waitFor(t, waitLong, "a second connection", func() bool { return h.rec.connected() == 2 })
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	goleak.VerifyNone(t, before)
}
