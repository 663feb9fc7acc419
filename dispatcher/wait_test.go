package dispatcher

import (
	"net/http"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
)

// TestWaitDelivered: with wait=delivered the doorbell is a request and the
// answer carries the owner's outcome: delivered, offline (from the gateway,
// or because nobody serves its subject), or timeout, capped at MaxWait.
func TestWaitDelivered(t *testing.T) {
	e := newEnv(t)
	delivering := e.gateway("gw-a", gatewayOpts{reply: wire.Delivered})
	e.gateway("gw-b", gatewayOpts{reply: wire.Offline})
	e.gateway("gw-c", gatewayOpts{noDoorbells: true})
	e.gateway("gw-d", gatewayOpts{}) // subscribed, never answers
	const maxWait = 1500 * time.Millisecond
	td := e.dispatcher(func(c *Config) { c.MaxWait = maxWait })
	td.waitRing("gw-a", "gw-b", "gw-c", "gw-d")

	for _, tc := range []struct {
		gateway, query, want string
		min, max             time.Duration
	}{
		{"gw-a", "?wait=delivered", wire.Delivered, 0, time.Second},
		{"gw-b", "?wait=delivered&timeout=10s", wire.Offline, 0, time.Second},
		{"gw-c", "?wait=delivered&timeout=10s", wire.Offline, 0, time.Second},
		{"gw-d", "?wait=delivered&timeout=300ms", wire.Timeout, 300 * time.Millisecond, maxWait},
		{"gw-d", "?wait=delivered&timeout=1h", wire.Timeout, maxWait, maxWait + 2*time.Second},
	} {
		user := td.ownedBy(tc.gateway)
		start := time.Now()
		r := td.publish("/v1/notify"+tc.query, `{"user":"`+user+`","data":{"x":1}}`)
		took := time.Since(start)
		if r.status != http.StatusAccepted {
			t.Fatalf("%s%s: %d %s", tc.gateway, tc.query, r.status, r.body)
		}
		got := decodeAs[notified](t, r)
		if got.Delivery != tc.want || got.Gateway != tc.gateway || got.Status != StatusRouted || got.Seq == 0 {
			t.Errorf("%s%s: %+v, want delivery %s", tc.gateway, tc.query, got, tc.want)
		}
		if took < tc.min || took > tc.max {
			t.Errorf("%s%s took %v, want between %v and %v", tc.gateway, tc.query, took, tc.min, tc.max)
		}
	}
	// The request carried the whole message, as a plain doorbell does.
	user := td.ownedBy("gw-a")
	dbs := delivering.doorbellsFor(user)
	if len(dbs) != 1 || !dbs[0].HasContent || string(dbs[0].Data) != `{"x":1}` {
		t.Fatalf("gw-a's doorbells for %s: %+v", user, dbs)
	}
	if got := td.metric("herald_delivery_waits_total", "outcome", wire.Timeout); got != 2 {
		t.Errorf("herald_delivery_waits_total{outcome=timeout} = %v, want 2", got)
	}
}

// TestShutdownLetsRequestsFinish: ending Run's context lets a request in
// flight finish and answer, and Run returns once it has.
func TestShutdownLetsRequestsFinish(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{}) // never answers doorbell requests
	td := e.dispatcher()
	td.waitRing("gw-a")

	type answer struct {
		r   response
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		r, err := td.try("POST", "/v1/notify?wait=delivered&timeout=1s", `{"user":"alice","data":1}`,
			"Authorization", "Bearer "+testKey, "Content-Type", "application/json")
		answered <- answer{r, err}
	}()
	// In flight once its append has landed: it now waits for delivery.
	waitFor(t, 5*time.Second, "the request to be in flight", func() bool { return e.streamMsgs() == 1 })
	if err := td.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Had the shutdown cut the request off, the client would see its
	// connection closed instead of an answer.
	a := <-answered
	if a.err != nil || a.r.status != http.StatusAccepted || decodeAs[notified](t, a.r).Delivery != wire.Timeout {
		t.Fatalf("request in flight at shutdown: %d %s %v, want 202 with delivery timeout", a.r.status, a.r.body, a.err)
	}
}
