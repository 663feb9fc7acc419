package gateway

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// TestAttachRefusesAHubClosedByANewEpoch: a socket between join and attach
// when the epoch changes must not attach to the closed hub, which nothing
// would ever wake or close again.
func TestAttachRefusesAHubClosedByANewEpoch(t *testing.T) {
	srv := inboxtest.Run(t)
	nc := inboxtest.Connect(t, srv.URL())
	l, err := inbox.Ensure(context.Background(), nc, inbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := api.NewClient(api.DefaultConfig())
	g, err := New(Config{ID: "gw-1", PublicURL: "ws://127.0.0.1:1/ws", NATS: nc, Consul: cc, Addr: ":0",
		TokenSecrets: [][]byte{[]byte("herald test secret: at least thirty-two bytes")},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.runCtx = ctx
	g.inbox.Store(l)
	e := l.Epoch()
	g.epoch.Store(&e)

	h, err := g.join(ctx, "alice") // joined, not attached yet
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, l.Config().Stream); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := inbox.Ensure(ctx, nc, inbox.Config{}); err != nil {
			t.Fatal(err)
		}
		if g.checkEpoch(ctx); g.currentEpoch() != e {
			break // creation times can tie within a clock tick: recreate until they differ
		}
		js.DeleteStream(ctx, l.Config().Stream)
	}
	s := &session{h: h, wake: make(chan struct{}, 1), ctrl: make(chan []byte, 16), closed: make(chan struct{})}
	if code := h.attach(s); code != wire.CloseServiceRestart {
		t.Fatalf("attach to a hub closed by a new epoch: %d, want refused with 1012", code)
	}
	g.leave(h, nil)
	if n := g.stats().Sockets; n != 0 {
		t.Fatalf("%d sockets counted after the refusal", n)
	}
}
