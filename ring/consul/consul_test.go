package consul

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestWatchSeesRegisteredMembers(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	for _, id := range []string{"gw-a", "gw-b", "gw-c"} {
		gateway(t, c, probe, id, 1)
	}
	start := time.Now()
	w := watch(t, WatchConfig{Client: c, Probe: probe.probe})
	waitFor(t, 2*time.Second, "a ring of three", hasMembers(w, "gw-a", "gw-b", "gw-c"))
	t.Logf("ring of three after %v", time.Since(start).Round(time.Millisecond))
	r, _ := w.Ring()
	if got, want := r.Fingerprint(), expectedFingerprint(t, map[string]int{"gw-a": 1, "gw-b": 1, "gw-c": 1}); got != want {
		t.Fatalf("fingerprint %s, want %s", got, want)
	}
	if s := w.Status(); s.Degraded || s.Changes != 1 || len(s.Held) != 0 || !slices.Equal(s.Passing, []string{"gw-a", "gw-b", "gw-c"}) {
		t.Fatalf("status %+v, want healthy with exactly one ring published and all three passing", s)
	}
}

func TestConsulRestartKeepsRing(t *testing.T) {
	t.Parallel()
	agent, c := startAgent(t)
	probe := newTestProbe()
	regs := []*testGateway{
		gateway(t, c, probe, "gw-a", 1),
		gateway(t, c, probe, "gw-b", 2),
		gateway(t, c, probe, "gw-c", 1),
	}
	w := watch(t, WatchConfig{Client: c, Probe: probe.probe})
	waitFor(t, 2*time.Second, "a ring of three", hasMembers(w, "gw-a", "gw-b", "gw-c"))
	before, _ := w.Ring()
	changes := w.Status().Changes

	restarted := time.Now() // any contact after this is with the new agent
	agent.Restart()         // a dev agent forgets every registration
	waitFor(t, 2*testTTL, "members to register again by themselves", func() bool {
		return strings.Join(passing(t, c), ",") == "gw-a,gw-b,gw-c"
	})
	for _, r := range regs {
		if r.Reregistered() == 0 {
			t.Errorf("%s: Reregistered() = 0", r.cfg.ID)
		}
	}
	// Give the watcher time to see the new agent (empty, perhaps) and the
	// re-registrations. Meanwhile the members, absent from the catalog,
	// answered healthy.
	waitFor(t, 5*time.Second, "the watcher to reach the new agent", func() bool {
		s := w.Status()
		return !s.Degraded && s.LastContact.After(restarted) && len(s.Held) == 0 &&
			slices.Equal(s.Passing, []string{"gw-a", "gw-b", "gw-c"})
	})
	after, _ := w.Ring()
	if got := w.Status().Changes; got != changes || after.Fingerprint() != before.Fingerprint() {
		t.Fatalf("the ring changed across the agent restart (%d → %d rings published, %v); members alive throughout must stay",
			changes, got, ids(w))
	}
}

func TestConsulDownKeepsLastRing(t *testing.T) {
	t.Parallel()
	agent, c := startAgent(t)
	probe := newTestProbe()
	reg := gateway(t, c, probe, "gw-a", 1)
	gateway(t, c, probe, "gw-b", 1)
	w := watch(t, WatchConfig{Client: c, Probe: probe.probe})
	waitFor(t, 2*time.Second, "a ring of two", hasMembers(w, "gw-a", "gw-b"))
	// Push the service's Consul index far above where a fresh agent starts,
	// so a watcher that kept its old WaitIndex would block on the new agent.
	for i := range 100 {
		err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: "noise", Name: Service, Meta: map[string]string{MetaWeight: "bad", "n": strconv.Itoa(i)},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Agent().ServiceDeregister("noise"); err != nil {
		t.Fatal(err)
	}
	before, _ := w.Ring()

	agent.Stop()
	waitFor(t, 3*time.Second, "the watcher to report degraded", func() bool { return w.Status().Degraded })
	waitFor(t, 3*time.Second, "the registration to report Consul unreachable", func() bool { return reg.Unreachable() > 0 })
	if r, _ := w.Ring(); r != before {
		t.Fatalf("ring replaced while Consul was down: %v", ids(w))
	}
	if s := w.Status(); s.Err == nil || s.DegradedSince.IsZero() || time.Since(s.DegradedSince) > 3*time.Second {
		t.Fatalf("degraded status without an error or a plausible DegradedSince: %+v", s)
	}
	time.Sleep(testTTL) // let an outage longer than the TTL pass: nothing may change
	if r, _ := w.Ring(); r != before {
		t.Fatalf("ring replaced while Consul was down: %v", ids(w))
	}
	if d := reg.Unreachable(); d < testTTL {
		t.Fatalf("Unreachable() = %v after more than %v down", d, testTTL)
	}

	agent.Restart()
	waitFor(t, 5*time.Second, "the watcher to recover", func() bool { return !w.Status().Degraded })
	if s := w.Status(); !s.DegradedSince.IsZero() {
		t.Fatalf("DegradedSince = %v after recovering", s.DegradedSince)
	}
	waitFor(t, 2*testTTL, "the registration to reach Consul again", func() bool { return reg.Unreachable() == 0 })
	gateway(t, c, probe, "gw-new", 1)
	waitFor(t, 3*time.Second, "a member registered after the outage", hasMembers(w, "gw-a", "gw-b", "gw-new"))
}

func TestWatchersAgree(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	w1 := watch(t, WatchConfig{Client: c, Probe: probe.probe})
	w2 := watch(t, WatchConfig{Client: c, Probe: probe.probe, Debounce: 50 * time.Millisecond})
	want := map[string]int{}
	agree := func(step string) {
		t.Helper()
		fp := expectedFingerprint(t, want)
		waitFor(t, testTTL+3*time.Second, step+": both watchers on the expected ring", func() bool {
			r1, _ := w1.Ring()
			r2, _ := w2.Ring()
			return r1 != nil && r2 != nil && r1.Fingerprint() == fp && r2.Fingerprint() == fp
		})
	}
	agree("empty")
	regs := map[string]*testGateway{}
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		regs[id] = gateway(t, c, probe, id, 1)
		want[id] = 1
		agree("join " + id)
	}
	// A weight change is a new registration under the same ID.
	regs["gw-2"].Close()
	probe.set("gw-2", Liveness{State: Dead})
	regs["gw-2"] = gateway(t, c, probe, "gw-2", 3)
	want["gw-2"] = 3
	agree("reweight gw-2")

	regs["gw-1"].crash()
	probe.set("gw-1", Liveness{State: Dead})
	delete(want, "gw-1")
	agree("crash gw-1")

	regs["gw-3"].Close()
	probe.set("gw-3", Liveness{State: Dead})
	delete(want, "gw-3")
	agree("leave gw-3")
}

func TestRegisterClaimsID(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	cfg := func(instance string) RegisterConfig {
		return RegisterConfig{Client: c, ID: "gw-x", URL: "ws://127.0.0.1:7000/ws", Instance: instance,
			TTL: testTTL, Probe: probe.probe, Logger: testLogger(t)}
	}
	first, err := Register(context.Background(), cfg("one"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	probe.set("gw-x", Liveness{State: Alive, Instance: "one"})

	if r, err := Register(context.Background(), cfg("two")); !errors.Is(err, ErrIDInUse) {
		if r != nil {
			r.Close()
		}
		t.Fatalf("Register of a live instance's ID: err = %v, want ErrIDInUse", err)
	}
	// The probe cannot tell and Consul shows the holder passing: refuse.
	probe.set("gw-x", Liveness{State: Unknown})
	if _, err := Register(context.Background(), cfg("two")); !errors.Is(err, ErrIDInUse) {
		t.Fatalf("Register while the holder passes and liveness is unknown: err = %v, want ErrIDInUse", err)
	}
	if inst := instanceIn(t, c, "gw-x"); inst != "one" {
		t.Fatalf("refused registrations changed Consul: instance %q", inst)
	}

	// The holder dies (no deregistration) and the new process's probe
	// cannot tell at first (its NATS connection too young to believe "no
	// responders"), though Consul still shows the dead holder passing: the
	// claim asks again, and takes the ID over once nobody answers.
	first.crash()
	probe.set("gw-x", Liveness{State: Unknown})
	time.AfterFunc(time.Second, func() { probe.set("gw-x", Liveness{State: Dead}) })
	second, err := Register(context.Background(), cfg("two"))
	if err != nil {
		t.Fatalf("Register over a dead holder: %v", err)
	}
	defer second.Close()
	if inst := instanceIn(t, c, "gw-x"); inst != "two" {
		t.Fatalf("after takeover Consul lists instance %q, want two", inst)
	}
	if second.Instance() != "two" {
		t.Fatalf("Instance() = %q", second.Instance())
	}
}

func instanceIn(tb testing.TB, c *api.Client, id string) string {
	tb.Helper()
	s, _, err := c.Agent().Service(id, nil)
	if err != nil {
		tb.Fatalf("agent service %s: %v", id, err)
	}
	return s.Meta[MetaInstance]
}

func TestRegisterRejectsBadInput(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	good := RegisterConfig{Client: c, ID: "gw-ok", URL: "wss://push.example.com/ws", Weight: 2, Probe: probe.probe, Logger: testLogger(t)}
	for _, tc := range []struct {
		name string
		edit func(*RegisterConfig)
		want string
	}{
		{"empty ID", func(c *RegisterConfig) { c.ID = "" }, "invalid gateway ID"},
		{"dot in ID", func(c *RegisterConfig) { c.ID = "gw.1" }, "invalid gateway ID"},
		{"long ID", func(c *RegisterConfig) { c.ID = strings.Repeat("g", 65) }, "invalid gateway ID"},
		{"weight 17", func(c *RegisterConfig) { c.Weight = 17 }, "invalid weight"},
		{"negative weight", func(c *RegisterConfig) { c.Weight = -1 }, "invalid weight"},
		{"http URL", func(c *RegisterConfig) { c.URL = "http://push.example.com/ws" }, "scheme must be ws or wss"},
		{"no host", func(c *RegisterConfig) { c.URL = "ws:///ws" }, "no host"},
		{"not a URL", func(c *RegisterConfig) { c.URL = "ws://[::1" }, "invalid ws_url"},
		{"empty URL", func(c *RegisterConfig) { c.URL = "" }, "invalid ws_url"},
		{"user info", func(c *RegisterConfig) { c.URL = "ws://u:p@host/ws" }, "no user info"},
		{"no probe", func(c *RegisterConfig) { c.Probe = nil }, "no liveness probe"},
		{"bad port", func(c *RegisterConfig) { c.Port = 70000 }, "invalid port"},
	} {
		cfg := good
		tc.edit(&cfg)
		r, err := Register(context.Background(), cfg)
		if err == nil {
			r.Close()
			t.Errorf("%s: Register accepted it", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
		}
	}
	if svcs, err := c.Agent().Services(); err != nil || len(svcs) != 0 {
		t.Fatalf("rejected registrations left services behind: %v, %v", svcs, err)
	}
}

// TestWatchSkipsBadRegistrations writes registrations herald would never make
// straight into Consul: the watcher must skip them, count them and go on.
func TestWatchSkipsBadRegistrations(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	gateway(t, c, probe, "gw-good", 1)
	for i, meta := range []map[string]string{
		{MetaURL: "ws://x/ws", MetaWeight: "abc"},
		{MetaURL: "ws://x/ws", MetaWeight: "0"},
		{MetaURL: "not a url", MetaWeight: "1"},
		{MetaWeight: "1"},
	} {
		err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: "bad-" + string(rune('a'+i)), Name: Service, Meta: meta,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "bad.id", Name: Service, Meta: map[string]string{MetaURL: "ws://x/ws"},
	}); err != nil {
		t.Fatal(err)
	}
	w := watch(t, WatchConfig{Client: c, Probe: probe.probe})
	waitFor(t, 2*time.Second, "a ring of the good member", hasMembers(w, "gw-good"))
	if s := w.Status(); s.Skipped != 5 {
		t.Fatalf("Status().Skipped = %d, want 5", s.Skipped)
	}
	// And the watcher still follows changes.
	gateway(t, c, probe, "gw-later", 1)
	waitFor(t, 2*time.Second, "a later member", hasMembers(w, "gw-good", "gw-later"))
}

// TestWatchResolvesDuplicateIDs registers one ID on four catalog nodes: a
// passing instance wins over a critical one, then the lowest node name,
// whatever order Consul lists them in.
func TestWatchResolvesDuplicateIDs(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	probe.set("gw-dup", Liveness{State: Alive})
	for _, node := range []string{"node-b", "node-a", "node-0", "node-c"} {
		reg := &api.CatalogRegistration{
			Node: node, Address: "127.0.0.1",
			Service: &api.AgentService{ID: "gw-dup", Service: Service, Port: 7000,
				Meta: map[string]string{MetaURL: "ws://" + node + "/ws", MetaWeight: "1"}},
		}
		if node == "node-0" { // the lowest node name, but not passing: a passing instance wins
			reg.Check = &api.AgentCheck{Node: node, CheckID: "gw-dup", Name: "test", Status: api.HealthCritical, ServiceID: "gw-dup"}
		}
		if _, err := c.Catalog().Register(reg, nil); err != nil {
			t.Fatal(err)
		}
	}
	w := watch(t, WatchConfig{Client: c, Probe: probe.probe})
	waitFor(t, 2*time.Second, "a ring with the duplicate", hasMembers(w, "gw-dup"))
	r, _ := w.Ring()
	if m, _ := r.Member("gw-dup"); m.URL != "ws://node-a/ws" {
		t.Fatalf("kept %s, want the instance on node-a", m.URL)
	}
	if s := w.Status(); s.Duplicates != 3 || !slices.Equal(s.Passing, []string{"gw-dup"}) {
		t.Fatalf("Status().Duplicates = %d, Passing %v; want 3, [gw-dup]", s.Duplicates, s.Passing)
	}
}

func TestNewWatcherRejectsBadConfig(t *testing.T) {
	c, _ := api.NewClient(api.DefaultConfig())
	for name, cfg := range map[string]WatchConfig{
		"no client": {Probe: newTestProbe().probe},
		"no probe":  {Client: c},
		"vnodes":    {Client: c, Probe: newTestProbe().probe, VNodes: -5},
	} {
		if _, err := NewWatcher(cfg); err == nil {
			t.Errorf("%s: NewWatcher accepted it", name)
		}
	}
}

// checked registers gateway id with a 30 s TTL (its next heartbeat tick is
// 10 s away) and the given health function.
func checked(tb testing.TB, c *api.Client, id string, health func() error) *Registration {
	tb.Helper()
	r, err := Register(context.Background(), RegisterConfig{
		Client: c, ID: id, URL: "ws://127.0.0.1:7000/" + id, TTL: 30 * time.Second, Health: health,
		Probe: func(context.Context, string) Liveness { return Liveness{State: Dead} }, Logger: testLogger(tb),
	})
	if err != nil {
		tb.Fatalf("Register %s: %v", id, err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// TestRegistrationCheckIsPrompt: Check heartbeats at once, so a gateway
// whose health fails is critical in Consul (and out of every watcher's
// passing list) long before the next TTL/3 tick, and passing again as soon
// as it heals.
func TestRegistrationCheckIsPrompt(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	var sick atomic.Bool
	r := checked(t, c, "gw-a", func() error {
		if sick.Load() {
			return errors.New("test: NATS disconnected")
		}
		return nil
	})
	w := watch(t, WatchConfig{Client: c, Probe: newTestProbe().probe})
	waitFor(t, 3*time.Second, "gw-a passing", func() bool { return slices.Equal(w.Status().Passing, []string{"gw-a"}) })

	start := time.Now()
	sick.Store(true)
	r.Check()
	criticalAt(t, c, "gw-a", 5*time.Second)
	t.Logf("critical in Consul %v after Check (TTL 30s)", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "the watcher to see it not passing", func() bool { return len(w.Status().Passing) == 0 })
	t.Logf("out of the watcher's passing list %v after Check", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	sick.Store(false)
	r.Check()
	waitFor(t, 5*time.Second, "gw-a passing again", func() bool { return slices.Equal(passing(t, c), []string{"gw-a"}) })
	t.Logf("passing again %v after Check", time.Since(start).Round(time.Millisecond))
}

// TestRegistrationCheckCoalesces: Check never blocks, and any number of
// calls while a beat runs make exactly one more beat.
func TestRegistrationCheckCoalesces(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	var (
		beats    atomic.Int32
		blocking atomic.Bool
		entered  = make(chan struct{}, 1)
		gate     = make(chan struct{})
	)
	r := checked(t, c, "gw-a", func() error {
		beats.Add(1)
		if blocking.Load() {
			entered <- struct{}{}
			<-gate
		}
		return nil
	})
	var release sync.Once
	open := func() { release.Do(func() { blocking.Store(false); close(gate) }) }
	t.Cleanup(open)      // before Close, which waits for the beat
	base := beats.Load() // Register asked once
	blocking.Store(true)
	r.Check()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("Check did not start a beat")
	}
	var returned atomic.Bool
	go func() {
		for range 10 {
			r.Check()
		}
		returned.Store(true)
	}()
	waitFor(t, time.Second, "ten Checks during a beat to return", returned.Load)
	open()
	waitFor(t, 5*time.Second, "the coalesced beat", func() bool { return beats.Load() >= base+2 })
	// Absence can only be seen over a window; the next tick is 10 s away.
	time.Sleep(300 * time.Millisecond)
	if got := beats.Load() - base; got != 2 {
		t.Fatalf("%d beats for one Check plus ten during it; want 2", got)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	returned.Store(false)
	go func() { r.Check(); r.Check(); returned.Store(true) }()
	waitFor(t, time.Second, "Check after Close to return", returned.Load)
}
