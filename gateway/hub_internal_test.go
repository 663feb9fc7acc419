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

// TestBufferBounds: the hub keeps at most twice BufferSize entries and
// BufferBytes bytes, always the newest, and base always names the entry
// before the first kept.
func TestBufferBounds(t *testing.T) {
	g := &Gateway{cfg: Config{BufferSize: 8, BufferBytes: 1000}}
	h := &hub{g: g, sessions: map[*session]struct{}{}}
	frame := func(n int) []byte { return make([]byte, n) }
	var seq uint64
	for i := range 500 {
		size := 10 + (i%7)*60 // 10..370 bytes
		seq += 3
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
		case h.buf[0].hubPrev != h.base:
			t.Fatalf("push %d: base %d, but the first entry follows %d", i, h.base, h.buf[0].hubPrev)
		}
	}
	// One frame larger than the whole bound is still kept: it is the head.
	h.push(entry{seq: seq + 3, prev: seq, frame: frame(5000)})
	if len(h.buf) != 1 || h.buf[0].seq != seq+3 || h.base != seq {
		t.Fatalf("after a huge frame: %d entries, base %d", len(h.buf), h.base)
	}
}
