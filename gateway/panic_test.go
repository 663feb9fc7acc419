package gateway_test

import (
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
)

// TestPanicInADoorbellCallback: a panic while a doorbell is handled is
// recovered and counted; the gateway goes on serving everyone, and the
// message the lost doorbell announced arrives through anti-entropy.
func TestPanicInADoorbellCallback(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1", func(cfg *gateway.Config) {
		cfg.DoorbellHook = func(next func(*nats.Msg)) func(*nats.Msg) {
			return func(m *nats.Msg) {
				if d, err := wire.DecodeDoorbell(m.Header, m.Data); err == nil && d.User == "alice" {
					panic("a bug in doorbell handling")
				}
				next(m)
			}
		}
	})
	url := c.gws["gw-1"].url
	alice := dial(t, url, auth(t, "alice"))
	alice.hello()
	bob := dial(t, url, auth(t, "bob"))
	bob.hello()
	a := c.publish("alice", "a1", `1`)
	b := c.publish("bob", "b1", `2`)
	waitFor(t, 5*time.Second, "bob's notification", func() bool { return len(bob.notifications()) == 1 })
	waitFor(t, 10*time.Second, "alice's, by anti-entropy", func() bool { return len(alice.notifications()) == 1 })
	if alice.notifications()[0] != a.Seq || bob.notifications()[0] != b.Seq {
		t.Fatalf("alice got %v, bob %v", alice.notifications(), bob.notifications())
	}
	if n := metric(t, url, `herald_panics_total{where="nats_doorbell"}`); n != 1 {
		t.Fatalf("herald_panics_total{where=nats_doorbell} = %v, want 1", n)
	}
	if alice.isClosed() || bob.isClosed() || !ready(url) {
		t.Fatal("a recovered panic in a doorbell callback closed sockets or stopped the gateway")
	}
}
