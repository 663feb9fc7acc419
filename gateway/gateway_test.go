package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go/jetstream"
)

func TestDeliversInOrderOverEverySocket(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	alice := dial(t, c.gws["gw-1"].url, auth(t, "alice"))
	phone := dial(t, c.gws["gw-1"].url, auth(t, "alice"))
	bob := dial(t, c.gws["gw-1"].url, auth(t, "bob"))
	h := alice.hello()
	if h.Gateway != "gw-1" || h.User != "alice" || h.Epoch != c.log.Epoch() || h.Cursor != 0 {
		t.Fatalf("hello = %+v", h)
	}
	phone.hello()
	bob.hello()
	var want []uint64
	for i := range 20 {
		want = append(want, c.publish("alice", "n"+strconv.Itoa(i), fmt.Sprintf(`{"i":%d}`, i)).Seq)
		c.publish("bob", "b"+strconv.Itoa(i), `"for bob"`)
	}
	for _, s := range []*socket{alice, phone} {
		waitFor(t, 5*time.Second, "alice's notifications", func() bool { return len(s.notifications()) >= len(want) })
		if got := s.notifications(); !equalSeqs(got, want) {
			t.Fatalf("alice's socket got %v, want %v", got, want)
		}
	}
	for i, f := range alice.got()[1:] {
		if f.ID != "n"+strconv.Itoa(i) || string(f.Data) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("frame %d = %+v", i, f)
		}
		if _, err := wire.ParseTS(f.TS); err != nil {
			t.Fatalf("frame %d: ts %q: %v", i, f.TS, err)
		}
	}
	waitFor(t, 5*time.Second, "bob's notifications", func() bool { return len(bob.notifications()) == 20 })
	for _, f := range bob.got() {
		if f.Type == wire.TypeNotification && !strings.HasPrefix(f.ID, "b") {
			t.Fatalf("bob received alice's %+v", f)
		}
	}
	// Every delivery took the doorbell fast path: no log reads but the
	// hubs' initial head reads.
	if reads := metric(t, c.gws["gw-1"].url, `herald_log_reads_total{reason="repair"}`); reads != 0 {
		t.Fatalf("%v repair reads; the fast path should need none", reads)
	}
}

// aliceGetsFive connects alice to the gateway at url, publishes five
// notifications (ids prefix0…prefix4) and waits until her socket has them;
// it returns the socket and the last seq.
func aliceGetsFive(t *testing.T, c *cluster, url, prefix string) (*socket, uint64) {
	t.Helper()
	s := dial(t, url, auth(t, "alice"))
	s.hello()
	for i := range 5 {
		c.publish("alice", prefix+strconv.Itoa(i), `1`)
	}
	waitFor(t, 5*time.Second, "five notifications", func() bool { return len(s.notifications()) == 5 })
	return s, s.notifications()[4]
}

func TestResumeAfterOffline(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	s, cursor := aliceGetsFive(t, c, url, "a")
	s.c.Close(websocket.StatusNormalClosure, "")
	s.waitClosed(5 * time.Second)

	var offline []uint64
	for i := range 50 {
		offline = append(offline, c.publish("alice", "b"+strconv.Itoa(i), `2`).Seq)
	}
	a := auth(t, "alice")
	a.Since, a.Epoch = cursor, c.log.Epoch()
	back := dial(t, url, a)
	if h := back.hello(); h.Cursor != cursor {
		t.Fatalf("hello cursor %d, want %d", h.Cursor, cursor)
	}
	waitFor(t, 5*time.Second, "the 50 sent while offline", func() bool { return len(back.notifications()) >= 50 })
	if got := back.notifications(); !equalSeqs(got, offline) {
		t.Fatalf("after resume got %v, want exactly %v", got, offline)
	}
	fresh := dial(t, url, auth(t, "alice"))
	waitFor(t, 5*time.Second, "the whole history", func() bool { return len(fresh.notifications()) >= 55 })
	if got := fresh.notifications(); len(got) != 55 || got[5] != offline[0] {
		t.Fatalf("a fresh device got %d notifications: %v", len(got), got)
	}
	for _, f := range append(back.got(), fresh.got()...) {
		if f.Type == wire.TypeGap {
			t.Fatalf("a device that lost nothing got %+v", f)
		}
	}
}

func TestEvictionGivesExactGap(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 5})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	s := dial(t, url, auth(t, "alice"))
	s.hello()
	first := c.publish("alice", "first", `0`)
	waitFor(t, 5*time.Second, "the first", func() bool { return len(s.notifications()) == 1 })
	s.c.Close(websocket.StatusNormalClosure, "")
	s.waitClosed(5 * time.Second)

	var seqs []uint64
	for i := range 12 {
		seqs = append(seqs, c.publish("alice", "a"+strconv.Itoa(i), `1`).Seq)
		c.publish("bob", "b"+strconv.Itoa(i), `2`)
	}
	a := auth(t, "alice")
	a.Since, a.Epoch = first.Seq, c.log.Epoch()
	back := dial(t, url, a)
	back.hello()
	waitFor(t, 5*time.Second, "the last five", func() bool { return len(back.notifications()) >= 5 })
	frames := back.got()
	if len(frames) != 7 || frames[1].Type != wire.TypeGap {
		t.Fatalf("frames after resume: %+v; want hello, gap, five notifications", frames)
	}
	if g := frames[1]; g.After != first.Seq || g.Next != seqs[7] || g.Epoch != c.log.Epoch() {
		t.Fatalf("gap = %+v, want after %d next %d", g, first.Seq, seqs[7])
	}
	if got := back.notifications(); !equalSeqs(got, seqs[7:]) {
		t.Fatalf("got %v, want the last five %v", got, seqs[7:])
	}
	// bob never connected: a fresh device gets the retained five, no gap.
	bob := dial(t, url, auth(t, "bob"))
	waitFor(t, 5*time.Second, "bob's five", func() bool { return len(bob.notifications()) == 5 })
	for _, f := range bob.got() {
		if f.Type == wire.TypeGap {
			t.Fatalf("a fresh device got %+v", f)
		}
	}
}

func TestWrongGatewayMoves(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	c.startGateway("gw-2")
	r := c.ring()
	for i := range 20 {
		user := "user-" + strconv.Itoa(i)
		owner, _ := r.Owner(user)
		other := "gw-1"
		if owner.ID == "gw-1" {
			other = "gw-2"
		}
		s := dial(t, c.gws[other].url, auth(t, user))
		if code := s.waitClosed(5 * time.Second); code != wire.CloseMoved {
			t.Fatalf("%s at the wrong gateway closed with %d, want 4001", user, code)
		}
		if f := s.got(); len(f) != 1 || f[0].Type != wire.TypeMoved || f[0].URL != owner.URL {
			t.Fatalf("%s: frames %+v, want moved to %s", user, f, owner.URL)
		}
	}
}

func TestAuthAndBadInput(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1", func(cfg *gateway.Config) {
		cfg.AuthTimeout = 300 * time.Millisecond
		cfg.TokenAudience, cfg.TokenIssuer = "herald", "https://id.example.com"
	})
	url := c.gws["gw-1"].url
	sign := func(ttl time.Duration, opts ...token.SignOption) string {
		tok, err := token.Sign(secret, "alice", ttl, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	aud, iss := token.WithAudience("herald"), token.WithIssuer("https://id.example.com")
	good := sign(time.Hour, aud, iss)
	wrong, _ := signWith("another secret, also thirty-two bytes", "alice", time.Hour)
	wrongExpired, _ := signWith("another secret, also thirty-two bytes", "alice", -time.Minute)
	for _, tc := range []struct {
		name  string
		first string // raw first frame; empty sends nothing
		after func(s *socket)
		want  websocket.StatusCode
	}{
		{"no auth frame", "", nil, wire.CloseAuthTimeout},
		{"garbage", "{not json", nil, wire.CloseUnauthorized},
		{"ping first", `{"type":"ping"}`, nil, wire.CloseUnauthorized},
		{"bad signature", `{"type":"auth","token":"` + good[:60] + `xx"}`, nil, wire.CloseUnauthorized},
		{"wrong secret", `{"type":"auth","token":"` + wrong + `"}`, nil, wire.CloseUnauthorized},
		{"expired", `{"type":"auth","token":"` + sign(-time.Minute, aud, iss) + `"}`, nil, wire.CloseTokenExpired},
		{"not valid yet", `{"type":"auth","token":"` + sign(time.Hour, aud, iss, token.WithNotBefore(time.Now().Add(time.Minute))) + `"}`, nil, wire.CloseTokenExpired},
		{"no audience", `{"type":"auth","token":"` + sign(time.Hour, iss) + `"}`, nil, wire.CloseUnauthorized},
		{"another audience", `{"type":"auth","token":"` + sign(time.Hour, token.WithAudience("other"), iss) + `"}`, nil, wire.CloseUnauthorized},
		{"another issuer", `{"type":"auth","token":"` + sign(time.Hour, aud, token.WithIssuer("https://evil.example.com")) + `"}`, nil, wire.CloseUnauthorized},
		{"expired, wrong secret", `{"type":"auth","token":"` + wrongExpired + `"}`, nil, wire.CloseUnauthorized},
		{"oversized frame", `{"type":"auth","token":"` + strings.Repeat("x", 5000) + `"}`, nil, websocket.StatusMessageTooBig},
		{"garbage after auth", `{"type":"auth","token":"` + good + `"}`,
			func(s *socket) { s.hello(); s.c.Write(context.Background(), websocket.MessageText, []byte("][")) }, wire.CloseBadFrame},
		{"second auth", `{"type":"auth","token":"` + good + `"}`,
			func(s *socket) { s.hello(); s.send(auth(t, "alice")) }, wire.CloseBadFrame},
		{"token expires while open", `{"type":"auth","token":"` + sign(1500*time.Millisecond, aud, iss) + `"}`,
			func(s *socket) { s.hello() }, wire.CloseTokenExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dial(t, url, wire.ClientFrame{})
			if tc.first != "" {
				s.c.Write(context.Background(), websocket.MessageText, []byte(tc.first))
			}
			if tc.after != nil {
				tc.after(s)
			}
			if got := s.waitClosed(5 * time.Second); got != tc.want {
				t.Fatalf("closed with %d, want %d", got, tc.want)
			}
		})
	}
	// None of it reached the log, and the gateway still serves.
	if st, err := storedMessages(c); err != nil || st != 0 {
		t.Fatalf("log holds %d messages (%v), want 0", st, err)
	}
	s := dial(t, url, wire.ClientFrame{Type: wire.TypeAuth, Token: good})
	s.hello()
}

func TestTooManySockets(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1") // the default: 8 sockets per user
	url := c.gws["gw-1"].url
	var socks []*socket
	for range 8 {
		s := dial(t, url, auth(t, "alice"))
		s.hello()
		socks = append(socks, s)
	}
	extra := dial(t, url, auth(t, "alice"))
	if code := extra.waitClosed(5 * time.Second); code != wire.CloseTooManySockets {
		t.Fatalf("a 9th socket closed with %d, want 4009", code)
	}
	var want []uint64
	for i := range 10 {
		want = append(want, c.publish("alice", strconv.Itoa(i), `1`).Seq)
	}
	for _, s := range socks {
		waitFor(t, 5*time.Second, "every socket to get everything", func() bool { return len(s.notifications()) == len(want) })
		if got := s.notifications(); !equalSeqs(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestWaitDelivered(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	acker := dial(t, c.gws["gw-1"].url, auth(t, "alice"))
	acker.hello()
	silent := dial(t, c.gws["gw-1"].url, auth(t, "carol"))
	silent.hello()
	ask := func(user string, ack bool) string {
		t.Helper()
		a, err := c.log.Append(context.Background(), user, "w-"+user+strconv.FormatBool(ack), []byte(`1`))
		if err != nil {
			t.Fatal(err)
		}
		d := wire.Doorbell{User: user, Seq: a.Seq, Epoch: a.Epoch, HasContent: true, Prev: a.Prev, ID: "w", TS: a.TS, Data: []byte(`1`)}
		done := make(chan string, 1)
		go func() {
			m, err := c.nc.RequestMsg(doorbellMsg(d, "gw-1"), 2*time.Second)
			if err != nil {
				done <- wire.Timeout
				return
			}
			var r wire.DeliveryReply
			json.Unmarshal(m.Data, &r)
			done <- r.Status
		}()
		if ack {
			s := acker
			waitFor(t, 5*time.Second, "the notification", func() bool { return len(s.notifications()) > 0 })
			s.send(wire.ClientFrame{Type: wire.TypeAck, Seq: a.Seq})
		}
		return <-done
	}
	if got := ask("alice", true); got != wire.Delivered {
		t.Fatalf("acked: %s, want delivered", got)
	}
	if got := ask("dave", false); got != wire.Offline {
		t.Fatalf("no socket: %s, want offline", got)
	}
	if got := ask("carol", false); got != wire.Timeout {
		t.Fatalf("never acked: %s, want timeout", got)
	}
}

func TestEpochChangeClosesAndResumes(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	s, cursor := aliceGetsFive(t, c, url, "old")
	oldEpoch := c.log.Epoch()

	js, _ := jetstream.New(c.nc)
	if err := js.DeleteStream(context.Background(), c.log.Config().Stream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a different creation time
	if _, err := inbox.Ensure(context.Background(), c.nc, c.log.Config()); err != nil {
		t.Fatal(err)
	}
	if code := s.waitClosed(10 * time.Second); code != wire.CloseServiceRestart {
		t.Fatalf("socket closed with %d, want 1012", code)
	}
	a := auth(t, "alice")
	a.Since, a.Epoch = cursor, oldEpoch
	back := dial(t, url, a)
	// The hello repeats the client's own cursor; the gap that follows
	// moves it into the new epoch.
	h := back.hello()
	if h.Epoch != oldEpoch || h.Cursor != cursor {
		t.Fatalf("hello after the new epoch: %+v, want the client's own (%s, %d)", h, oldEpoch, cursor)
	}
	var want []uint64
	for i := range 3 {
		want = append(want, c.publish("alice", "new"+strconv.Itoa(i), `2`).Seq)
	}
	waitFor(t, 5*time.Second, "the new notifications", func() bool { return len(back.notifications()) == 3 })
	frames := back.got()
	if frames[1].Type != wire.TypeGap || frames[1].After != cursor || frames[1].Epoch != c.log.Epoch() || frames[1].Epoch == oldEpoch {
		t.Fatalf("frames %+v: want hello, gap after %d in the new epoch", frames, cursor)
	}
	if got := back.notifications(); !equalSeqs(got, want) {
		t.Fatalf("got %v, want %v: new seqs must not be dropped as old", got, want)
	}
}

func TestSlowConsumer(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	c.startGateway("gw-1", func(cfg *gateway.Config) { cfg.WriteTimeout = 500 * time.Millisecond })
	url := c.gws["gw-1"].url
	slow := dial(t, url, auth(t, "slow"))
	slow.hello()
	fast := dial(t, url, auth(t, "fast"))
	fast.hello()
	// The slow client stops reading: its reader blocks on the lock.
	slow.mu.Lock()
	big := `"` + strings.Repeat("x", 60000) + `"`
	var sent []uint64
	for i := range 200 {
		sent = append(sent, c.publish("slow", strconv.Itoa(i), big).Seq)
		c.publish("fast", strconv.Itoa(i), `1`)
	}
	waitFor(t, 10*time.Second, "the fast user's 200", func() bool { return len(fast.notifications()) == 200 })
	waitFor(t, 10*time.Second, "the slow consumer to be noticed", func() bool {
		return metric(t, url, "herald_slow_consumers_total") > 0
	})
	slow.mu.Unlock()
	if code := slow.waitClosed(10 * time.Second); code != wire.CloseSlowConsumer {
		t.Fatalf("slow consumer closed with %d, want 4008", code)
	}
	got := slow.notifications()
	checkStrict(t, got)
	a := auth(t, "slow")
	a.Since, a.Epoch = got[len(got)-1], c.log.Epoch()
	back := dial(t, url, a)
	waitFor(t, 10*time.Second, "the rest after resuming", func() bool { return len(got)+len(back.notifications()) >= len(sent) })
	if all := append(got, back.notifications()...); !equalSeqs(all, sent) {
		t.Fatalf("across the slow close and resume got %d seqs, want all %d in order", len(all), len(sent))
	}
}

func TestDoorbellFaults(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	faults := newFaultyDoorbells(1)
	c.startGateway("gw-1", func(cfg *gateway.Config) {
		cfg.DoorbellHook = faults.wrap
		cfg.AntiEntropy = 2 * time.Second
	})
	url := c.gws["gw-1"].url
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	socks := map[string]*socket{}
	for _, u := range users {
		socks[u] = dial(t, url, auth(t, u))
		socks[u].hello()
	}
	want := map[string][]uint64{}
	for i := range 300 {
		u := users[i%len(users)]
		want[u] = append(want[u], c.publish(u, strconv.Itoa(i), `1`).Seq)
	}
	last := time.Now()
	for _, u := range users {
		s := socks[u]
		waitFor(t, 2*time.Second+2*time.Second+time.Second, u+"'s notifications after the faults", func() bool {
			return len(s.notifications()) >= len(want[u])
		})
		if got := s.notifications(); !equalSeqs(got, want[u]) {
			t.Fatalf("%s got %v, want %v", u, got, want[u])
		}
		if s.isClosed() {
			t.Fatalf("%s's socket closed", u)
		}
	}
	faults.stop()
	t.Logf("dropped %d, duplicated %d, delayed %d doorbells; all delivered %v after the last publish",
		faults.dropped.Load(), faults.duplicated.Load(), faults.delayed.Load(), time.Since(last).Round(time.Millisecond))
}

func metric(t *testing.T, wsURL, name string) float64 {
	t.Helper()
	v, _ := scrape(wsURL, name)
	return v
}

// TestExpiredTailGivesGap: a device offline while retention (MaxAge) drops
// every message of its user, including one it never saw, gets a gap before
// the next message, whose predecessor is then unknown (prev 0).
func TestExpiredTailGivesGap(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxAge: 1500 * time.Millisecond, Duplicates: time.Second})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	s := dial(t, url, auth(t, "alice"))
	s.hello()
	m1 := c.publish("alice", "m1", `1`)
	waitFor(t, 5*time.Second, "m1", func() bool { return len(s.notifications()) == 1 })
	s.c.Close(websocket.StatusNormalClosure, "")
	s.waitClosed(5 * time.Second)

	c.publish("alice", "m2", `2`) // never seen by the device
	waitFor(t, 10*time.Second, "alice's whole log to expire", func() bool {
		_, found, err := c.log.Last(context.Background(), "alice", true)
		return err == nil && !found
	})
	m3 := c.publish("alice", "m3", `3`)
	if m3.Prev != 0 {
		t.Fatalf("m3's prev is %d; the test needs the log empty when it was appended", m3.Prev)
	}
	a := auth(t, "alice")
	a.Since, a.Epoch = m1.Seq, c.log.Epoch()
	back := dial(t, url, a)
	back.hello()
	waitFor(t, 5*time.Second, "m3", func() bool { return len(back.notifications()) == 1 })
	frames := back.got()
	if len(frames) != 3 || frames[1].Type != wire.TypeGap || frames[1].After != m1.Seq || frames[1].Next != m3.Seq {
		t.Fatalf("frames %+v: want hello, gap after %d before %d, then m3", frames, m1.Seq, m3.Seq)
	}
	// A device that stayed connected gets the gap too: a message between
	// b1 and b2 whose doorbell was lost, and that expired before
	// anti-entropy found it, would leave no other trace.
	live := dial(t, url, auth(t, "bob"))
	live.hello()
	b1 := c.publish("bob", "b1", `1`)
	waitFor(t, 5*time.Second, "b1", func() bool { return len(live.notifications()) == 1 })
	waitFor(t, 10*time.Second, "bob's log to expire", func() bool {
		_, found, err := c.log.Last(context.Background(), "bob", true)
		return err == nil && !found
	})
	c.publish("carol", "c1", `1`) // a seq between b1 and b2 that could have been bob's
	b2 := c.publish("bob", "b2", `2`)
	waitFor(t, 5*time.Second, "b2", func() bool { return len(live.notifications()) == 2 })
	if f := live.got(); len(f) != 4 || f[2].Type != wire.TypeGap || f[2].After != b1.Seq || f[2].Next != b2.Seq {
		t.Fatalf("frames %+v: want hello, b1, a gap after %d before %d, b2", f, b1.Seq, b2.Seq)
	}
}

// TestUnansweredPingClosesTheSocket: a peer that stops reading (a suspended
// phone) does not answer pings; its socket must be closed, not left open
// with no writer.
func TestUnansweredPingClosesTheSocket(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1", func(cfg *gateway.Config) {
		cfg.PingInterval = 200 * time.Millisecond
		cfg.WriteTimeout = 400 * time.Millisecond
	})
	url := c.gws["gw-1"].url
	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	b, _ := json.Marshal(auth(t, "alice"))
	conn.Write(ctx, websocket.MessageText, b)
	for range 2 { // hello, caught_up
		if _, _, err := conn.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The client reads nothing more, so it answers no ping.
	waitFor(t, 10*time.Second, "the gateway to drop the silent socket", func() bool {
		return metric(t, url, "herald_sockets") == 0
	})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, _, err := conn.Read(rctx); err == nil || rctx.Err() != nil {
		t.Fatalf("after the gateway dropped it the socket still reads: %v", err)
	}
}
