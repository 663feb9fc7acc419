package consul

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/nats-io/nats.go"
)

func TestLiveReplyDecode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want LiveReply
		ok   bool
	}{
		{string(LiveReply{Instance: "abc", Healthy: true}.Encode()), LiveReply{Instance: "abc", Healthy: true}, true},
		{string(LiveReply{Instance: "abc", Reason: "JetStream not answering"}.Encode()), LiveReply{Instance: "abc", Reason: "JetStream not answering"}, true},
		{"abc", LiveReply{Instance: "abc", Healthy: true}, true}, // an older gateway's bare nonce
		{"", LiveReply{}, false},
		{"{not json", LiveReply{}, false},
		{`{"healthy":true}`, LiveReply{}, false}, // no instance
		{`{"instance":7}`, LiveReply{}, false},
	} {
		got, ok := decodeLiveReply([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("decodeLiveReply(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func liveSubject(id string) string { return "test.live." + id }

// TestNATSProbe runs the probe against a real NATS server: what each kind of
// answer means, that "no responders" is Dead only once the link has been up
// for MinUptime, and that a restart of the server starts that wait again.
func TestNATSProbe(t *testing.T) {
	t.Parallel()
	srv := inboxtest.Run(t)
	fast := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.ReconnectJitter(0, 0)}
	gw := inboxtest.Connect(t, srv.URL(), fast...)
	for subj, reply := range map[string][]byte{
		liveSubject("gw-ok"):      LiveReply{Instance: "i-ok", Healthy: true}.Encode(),
		liveSubject("gw-sick"):    LiveReply{Instance: "i-sick", Reason: "JetStream not answering"}.Encode(),
		liveSubject("gw-old"):     []byte("i-old"),
		liveSubject("gw-garbage"): []byte("{"),
	} {
		if _, err := gw.Subscribe(subj, func(m *nats.Msg) { m.Respond(reply) }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gw.Subscribe(liveSubject("gw-mute"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}

	nc := inboxtest.Connect(t, srv.URL(), fast...)
	link := NewLink(nc)
	lazy := NewLink(nc) // never Run: learns of changes only when asked
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { link.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	probe := NATSProbe(link, liveSubject)
	ask := func(id string) Liveness {
		pctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return probe(pctx, id)
	}
	// noRespondersTooSoon checks that "no responders" right after the link
	// came up is not taken for dead.
	noRespondersTooSoon := func(when string) {
		t.Helper()
		if got := ask("gw-gone"); got.State != Unknown {
			t.Fatalf("%s: no responders with the link up %v: %v, want unknown", when, link.Up(), got.State)
		}
		if up := link.Up(); up >= MinUptime {
			t.Fatalf("%s: the link has been up %v already; the check above proved nothing", when, up)
		}
	}

	noRespondersTooSoon("just connected")
	for _, tc := range []struct {
		id   string
		want Liveness
	}{
		{"gw-ok", Liveness{State: Alive, Instance: "i-ok", Healthy: true}},
		{"gw-sick", Liveness{State: Alive, Instance: "i-sick", Reason: "JetStream not answering"}},
		{"gw-old", Liveness{State: Alive, Instance: "i-old", Healthy: true}},
		{"gw-garbage", Liveness{State: Alive, Reason: "unreadable liveness reply"}},
		{"gw-mute", Liveness{State: Silent}},
	} {
		if got := ask(tc.id); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.id, got, tc.want)
		}
	}
	waitFor(t, MinUptime+2*time.Second, "the link to be up for MinUptime", func() bool { return link.Up() >= MinUptime })
	if got := ask("gw-gone"); got.State != Dead {
		t.Fatalf("no responders with the link up %v: %v, want dead", link.Up(), got.State)
	}
	if link.Down() != 0 {
		t.Fatalf("Down() = %v while connected", link.Down())
	}

	srv.Stop()
	waitFor(t, 5*time.Second, "the link to see NATS down", func() bool { return link.Up() == 0 && link.Down() > 0 })
	for _, id := range []string{"gw-ok", "gw-gone", "gw-mute"} {
		if got := ask(id); got.State != Unknown {
			t.Fatalf("%s with NATS down: %v, want unknown", id, got.State)
		}
	}

	srv.Start()
	waitFor(t, 5*time.Second, "both connections back", func() bool { return nc.IsConnected() && gw.IsConnected() })
	waitFor(t, 5*time.Second, "the link to see NATS up", func() bool { return link.Up() > 0 })
	if up := lazy.Up(); up == 0 || up > time.Second {
		t.Fatalf("a link never Run reports up %v after a reconnect; want the time since the reconnect it noticed", up)
	}
	noRespondersTooSoon("reconnected")
	waitFor(t, 5*time.Second, "gw-ok to answer again", func() bool { return ask("gw-ok").State == Alive })
	waitFor(t, MinUptime+2*time.Second, "the link to be up for MinUptime again", func() bool { return link.Up() >= MinUptime })
	if got := ask("gw-gone"); got.State != Dead {
		t.Fatalf("no responders %v after the reconnect: %v, want dead", link.Up(), got.State)
	}
}
