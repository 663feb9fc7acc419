package consul

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul/consultest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The Consul client's pooled HTTP transport keeps idle connections.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// crash stops the heartbeat as a SIGKILL would: nothing is deregistered.
func (r *Registration) crash() {
	r.closed.Do(func() {
		close(r.stop)
		<-r.done
	})
}

// testProbe answers from a table; IDs not in it are dead. It records every
// call, so a test can tell when the watcher asked and what it heard.
type testProbe struct {
	mu     sync.Mutex
	script map[string][]Liveness // answers given in turn, cycling
	hang   map[string]bool       // wait for the deadline, then answer Silent
	calls  map[string][]probeCall
}

// probeCall is one call of a testProbe.
type probeCall struct {
	at     time.Time
	answer Liveness
}

func newTestProbe() *testProbe {
	return &testProbe{script: map[string][]Liveness{}, hang: map[string]bool{}, calls: map[string][]probeCall{}}
}

// set makes the probe answer for id with answers in turn, cycling.
func (p *testProbe) set(id string, answers ...Liveness) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script[id] = answers
	p.calls[id] = p.calls[id][:0:0]
	delete(p.hang, id)
}

// hangOn makes the probe for id time out: it waits for its deadline and
// answers Silent, as NATSProbe does for a gateway that does not reply.
func (p *testProbe) hangOn(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hang[id] = true
}

func (p *testProbe) probe(ctx context.Context, id string) Liveness {
	p.mu.Lock()
	if p.hang[id] {
		p.mu.Unlock()
		<-ctx.Done()
		p.mu.Lock()
		defer p.mu.Unlock()
		l := Liveness{State: Silent}
		p.calls[id] = append(p.calls[id], probeCall{time.Now(), l})
		return l
	}
	defer p.mu.Unlock()
	l := Liveness{State: Dead}
	if a := p.script[id]; len(a) > 0 {
		l = a[len(p.calls[id])%len(a)]
	}
	p.calls[id] = append(p.calls[id], probeCall{time.Now(), l})
	return l
}

// callsOf returns the calls for id since it was last set.
func (p *testProbe) callsOf(id string) []probeCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls[id])
}

func (p *testProbe) callCount(id string) int { return len(p.callsOf(id)) }

// healthyAs is the answer of a healthy gateway process with nonce inst.
func healthyAs(inst string) Liveness { return Liveness{State: Alive, Instance: inst, Healthy: true} }

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const testTTL = 2 * time.Second

// testGateway is a registered gateway whose health the test controls.
type testGateway struct {
	*Registration
	id   string
	sick atomic.Bool
}

// fail makes the gateway unhealthy and heartbeats at once: Consul marks it
// critical now rather than when the TTL runs out.
func (g *testGateway) fail() { g.sick.Store(true); g.Check() }

// heal makes it healthy again, passing at once.
func (g *testGateway) heal() { g.sick.Store(false); g.Check() }

// gateway registers a gateway whose probe answers alive and healthy with
// its instance "inst-<id>".
func gateway(tb testing.TB, client *api.Client, probe *testProbe, id string, weight int) *testGateway {
	tb.Helper()
	return gatewayWith(tb, client, probe, id, weight, nil)
}

// gatewayWith is gateway with edit applied to the configuration first; a
// gateway g made sick before Register (edit may call g.sick.Store) registers
// critical.
func gatewayWith(tb testing.TB, client *api.Client, probe *testProbe, id string, weight int, edit func(*RegisterConfig, *testGateway)) *testGateway {
	tb.Helper()
	inst := "inst-" + id
	probe.set(id, healthyAs(inst))
	g := &testGateway{id: id}
	cfg := RegisterConfig{
		Client: client, ID: id, Address: "127.0.0.1", Port: 7000,
		URL: "ws://127.0.0.1:7000/" + id, Weight: weight, Version: "test",
		Instance: inst, TTL: testTTL, Probe: probe.probe, Logger: testLogger(tb),
		Health: func() error {
			if g.sick.Load() {
				return errors.New("test: sick")
			}
			return nil
		},
	}
	if edit != nil {
		edit(&cfg, g)
	}
	r, err := Register(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Register %s: %v", id, err)
	}
	g.Registration = r
	tb.Cleanup(func() { r.Close() })
	return g
}

// watch starts a watcher and stops it, checking Run returns, at cleanup.
func watch(tb testing.TB, cfg WatchConfig) *Watcher {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	if cfg.QueryInterval == 0 {
		cfg.QueryInterval = 50 * time.Millisecond
	}
	w, err := NewWatcher(cfg)
	if err != nil {
		tb.Fatalf("NewWatcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			tb.Errorf("Run did not return after its context ended")
		}
	})
	return w
}

// ids returns the member IDs of the watcher's ring, sorted; nil before the first ring.
func ids(w *Watcher) []string {
	r, _ := w.Ring()
	if r == nil {
		return nil
	}
	var out []string
	for _, m := range r.Members() {
		out = append(out, m.ID)
	}
	return out
}

func hasMembers(w *Watcher, want ...string) func() bool {
	return func() bool { return slices.Equal(ids(w), want) }
}

// passing returns the IDs Consul lists as passing; nil if it cannot be asked.
func passing(tb testing.TB, c *api.Client) []string {
	tb.Helper()
	es, _, err := c.Health().Service(Service, "", true, nil)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Service.ID)
	}
	slices.Sort(out)
	return out
}

// expectedFingerprint is the fingerprint of a ring of the gateway helper's members.
func expectedFingerprint(tb testing.TB, weights map[string]int) string {
	tb.Helper()
	var ms []ring.Member
	for id, w := range weights {
		ms = append(ms, ring.Member{ID: id, Weight: w, URL: "ws://127.0.0.1:7000/" + id})
	}
	r, err := ring.New(0, ms)
	if err != nil {
		tb.Fatal(err)
	}
	return r.Fingerprint()
}

func startAgent(tb testing.TB) (*consultest.Agent, *api.Client) {
	a := consultest.Start(tb)
	return a, a.Client()
}

// criticalAt waits until Consul no longer lists id as passing and returns
// when it saw that.
func criticalAt(tb testing.TB, c *api.Client, id string, timeout time.Duration) time.Time {
	tb.Helper()
	waitFor(tb, timeout, "Consul to stop listing "+id+" as passing", func() bool {
		return !slices.Contains(passing(tb, c), id)
	})
	return time.Now()
}

// stays checks, at every poll until until says enough, that the watcher's
// ring is exactly want; it fails if that takes longer than limit.
func stays(tb testing.TB, w *Watcher, until func() bool, limit time.Duration, want ...string) {
	tb.Helper()
	start := time.Now()
	for !until() {
		if got := ids(w); !slices.Equal(got, want) {
			tb.Fatalf("%v into the check the ring is %v; want %v", time.Since(start).Round(time.Millisecond), got, want)
		}
		if time.Since(start) > limit {
			tb.Fatalf("still waiting for the end of the check after %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// elapsed says when d has passed since from.
func elapsed(from time.Time, d time.Duration) func() bool {
	return func() bool { return time.Since(from) >= d }
}

// probedOver says when the watcher has probed every one of ids over a span
// of at least d: the check saw the watcher at work, not a stalled process.
func (p *testProbe) probedOver(d time.Duration, ids ...string) func() bool {
	return func() bool {
		for _, id := range ids {
			c := p.callsOf(id)
			if len(c) < 2 || c[len(c)-1].at.Sub(c[0].at) < d {
				return false
			}
		}
		return true
	}
}
