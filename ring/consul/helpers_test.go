package consul

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
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

// testProbe answers from a table; IDs not in it are dead.
type testProbe struct {
	mu    sync.Mutex
	state map[string]Liveness
	calls map[string]int
}

func newTestProbe() *testProbe {
	return &testProbe{state: map[string]Liveness{}, calls: map[string]int{}}
}

func (p *testProbe) set(id string, l Liveness) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state[id] = l
}

func (p *testProbe) probe(ctx context.Context, id string) Liveness {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[id]++
	if l, ok := p.state[id]; ok {
		return l
	}
	return Liveness{State: Dead}
}

func (p *testProbe) callCount(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[id]
}

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

// gateway registers a gateway whose probe answers alive with its instance.
func gateway(tb testing.TB, client *api.Client, probe *testProbe, id string, weight int) *Registration {
	tb.Helper()
	inst := "inst-" + id
	probe.set(id, Liveness{State: Alive, Instance: inst})
	r, err := Register(context.Background(), RegisterConfig{
		Client: client, ID: id, Address: "127.0.0.1", Port: 7000,
		URL: "ws://127.0.0.1:7000/" + id, Weight: weight, Version: "test",
		Instance: inst, TTL: testTTL, Probe: probe.probe, Logger: testLogger(tb),
	})
	if err != nil {
		tb.Fatalf("Register %s: %v", id, err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
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

// passing returns the IDs Consul lists as passing.
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
