package wire_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
)

func TestLivenessProbe(t *testing.T) {
	s := inboxtest.Run(t)
	nc := inboxtest.Connect(t, s.URL())
	gw := inboxtest.Connect(t, s.URL())
	sub, err := gw.Subscribe(wire.LiveSubject("gw-1"), func(m *nats.Msg) { m.Respond([]byte("nonce-1")) })
	if err != nil {
		t.Fatal(err)
	}
	gw.Flush()
	probe := wire.LivenessProbe(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if got := probe(ctx, "gw-1"); got != (consul.Liveness{State: consul.Alive, Instance: "nonce-1"}) {
		t.Fatalf("live gateway: %+v", got)
	}
	if got := probe(ctx, "gw-2"); got.State != consul.Dead {
		t.Fatalf("nobody answers for gw-2: %+v, want dead", got)
	}
	sub.Unsubscribe()
	gw.Flush()
	if got := probe(ctx, "gw-1"); got.State != consul.Dead {
		t.Fatalf("after unsubscribing: %+v, want dead", got)
	}
	s.Stop() // NATS unreachable: the probe cannot tell
	if got := probe(ctx, "gw-1"); got.State != consul.Unknown {
		t.Fatalf("with NATS down: %+v, want unknown", got)
	}
}
