package consul

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the membership rule (DESIGN.md, "Who is in the ring"), each
// against a real Consul dev agent with a fake probe whose answers per
// gateway the test sets. Gateways stop passing through their health
// function and Registration.Check, so Consul marks them critical at a known
// moment instead of when a TTL runs out.

const testProbeInterval = 100 * time.Millisecond

// ruleWatch starts a watcher for the rule tests.
func ruleWatch(tb testing.TB, cfg WatchConfig) *Watcher {
	tb.Helper()
	cfg.ProbeInterval = testProbeInterval
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 200 * time.Millisecond
	}
	return watch(tb, cfg)
}

// confirmedTwice checks that a member left on two "no responders" at least
// DeadGap apart: every answer it got was Dead (no other rule removed it),
// there were at least two, and the first and the last were DeadGap apart.
// The probe stamps a call slightly after the watcher's own clock reading,
// hence the small allowance.
func confirmedTwice(tb testing.TB, calls []probeCall) time.Duration {
	tb.Helper()
	if len(calls) < 2 {
		tb.Fatalf("the member left after %d probe(s); two \"no responders\" are needed", len(calls))
	}
	for _, c := range calls {
		if c.answer.State != Dead {
			tb.Fatalf("probe answered %v; this test only answers dead", c.answer.State)
		}
	}
	span := calls[len(calls)-1].at.Sub(calls[0].at)
	if span < DeadGap-50*time.Millisecond {
		tb.Fatalf("the member left %v after its first \"no responders\"; the two deciding probes must be %v apart", span, DeadGap)
	}
	return span
}

// TestPassingMembersAdmittedAtOnce: a gateway that passes joins the ring
// after the debounce, with no probe.
func TestPassingMembersAdmittedAtOnce(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	gateway(t, c, probe, "gw-a", 1)
	w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: time.Minute})
	waitFor(t, 5*time.Second, "a ring of one", hasMembers(w, "gw-a"))
	start := time.Now()
	gateway(t, c, probe, "gw-b", 1)
	waitFor(t, 5*time.Second, "the new member", hasMembers(w, "gw-a", "gw-b"))
	t.Logf("a passing gateway joined %v after it registered (debounce 200ms)", time.Since(start).Round(time.Millisecond))
	if s := w.Status(); s.Probes != 0 || !slices.Equal(s.Passing, []string{"gw-a", "gw-b"}) || len(s.Held) != 0 {
		t.Fatalf("status %+v; want 0 probes, both passing, none held", s)
	}
}

// TestDeadMembersLeave: a member that is not passing and gets "no
// responders" leaves on the second such answer DeadGap after the first —
// crashed (its TTL runs out) or drained (deregistered) alike — and not on
// the first, even with a hold period of a minute.
func TestDeadMembersLeave(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	gateway(t, c, probe, "gw-a", 1)
	crashed := gateway(t, c, probe, "gw-b", 1)
	drained := gateway(t, c, probe, "gw-c", 1)
	w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: time.Minute})
	waitFor(t, 5*time.Second, "a ring of three", hasMembers(w, "gw-a", "gw-b", "gw-c"))

	// Killed: the heartbeat stops, Consul marks it critical after the TTL,
	// and nobody answers for it.
	probe.set("gw-b", Liveness{State: Dead})
	crashed.crash()
	at := criticalAt(t, c, "gw-b", testTTL+2*time.Second)
	waitFor(t, 5*time.Second, "the crashed member to leave", hasMembers(w, "gw-a", "gw-c"))
	left := time.Since(at)
	span := confirmedTwice(t, probe.callsOf("gw-b"))
	t.Logf("crashed member left %v after it stopped passing (%d probes, first to last %v)",
		left.Round(time.Millisecond), probe.callCount("gw-b"), span.Round(time.Millisecond))

	// Drained: it stops answering and deregisters.
	probe.set("gw-c", Liveness{State: Dead})
	if err := drained.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "the drained member to leave", hasMembers(w, "gw-a"))
	left = time.Since(start)
	span = confirmedTwice(t, probe.callsOf("gw-c"))
	t.Logf("drained member left %v after it deregistered (%d probes, first to last %v)",
		left.Round(time.Millisecond), probe.callCount("gw-c"), span.Round(time.Millisecond))
	if s := w.Status(); len(s.Held) != 0 || len(s.HeldMembers) != 0 {
		t.Fatalf("status %+v after they left; want none held", s)
	}
}

// TestOneNoRespondersIsNotEnough: "no responders" answers a second and more
// apart, but with any other answer between them, never remove a member.
func TestOneNoRespondersIsNotEnough(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	gateway(t, c, probe, "gw-a", 1)
	gateway(t, c, probe, "gw-c", 1)
	between := map[string]Liveness{
		"gw-healthy": healthyAs("inst-gw-healthy"),
		"gw-unknown": {State: Unknown},
		"gw-silent":  {State: Silent},
	}
	gws := map[string]*testGateway{}
	for id := range between {
		gws[id] = gateway(t, c, probe, id, 1)
	}
	all := []string{"gw-a", "gw-c", "gw-healthy", "gw-silent", "gw-unknown"}
	w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: time.Minute})
	waitFor(t, 5*time.Second, "a ring of five", hasMembers(w, all...))

	for id, l := range between {
		probe.set(id, Liveness{State: Dead}, l)
		gws[id].fail()
	}
	for id := range between {
		criticalAt(t, c, id, 5*time.Second)
	}
	ids := slices.Collect(maps.Keys(between))
	stays(t, w, probe.probedOver(2*DeadGap+500*time.Millisecond, ids...), 15*time.Second, all...)
	for id := range between {
		calls := probe.callsOf(id)
		var deads []time.Time
		for _, c := range calls {
			if c.answer.State == Dead {
				deads = append(deads, c.at)
			}
		}
		if len(deads) < 2 || deads[len(deads)-1].Sub(deads[0]) < DeadGap {
			t.Fatalf("%s: %d dead answers in %d probes; the test needs dead answers %v apart", id, len(deads), len(calls), DeadGap)
		}
		t.Logf("%s kept through %d probes, dead and %v by turns, over %v", id, len(calls), between[id].State,
			calls[len(calls)-1].at.Sub(calls[0].at).Round(time.Millisecond))
	}
	if s := w.Status(); !slices.Equal(s.Held, []string{"gw-healthy", "gw-silent", "gw-unknown"}) {
		t.Fatalf("Status().Held = %v, want the three", s.Held)
	}
}

// TestAnsweringMembersStay: a member that is not passing — critical, or
// gone from the catalog altogether — stays well past the hold period while
// it answers healthy, or while its probe cannot tell.
func TestAnsweringMembersStay(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	gateway(t, c, probe, "gw-a", 1)
	gateway(t, c, probe, "gw-c", 1)
	cases := []struct {
		id         string
		answer     Liveness
		deregister bool
		verdict    string
	}{
		{"gw-healthy", healthyAs("inst-gw-healthy"), false, "healthy"},
		{"gw-healthy-gone", healthyAs("inst-gw-healthy-gone"), true, "healthy"},
		{"gw-unknown", Liveness{State: Unknown}, false, "unknown"},
		{"gw-unknown-gone", Liveness{State: Unknown}, true, "unknown"},
	}
	gws := map[string]*testGateway{}
	for _, tc := range cases {
		gws[tc.id] = gateway(t, c, probe, tc.id, 1)
	}
	all := []string{"gw-a", "gw-c", "gw-healthy", "gw-healthy-gone", "gw-unknown", "gw-unknown-gone"}
	const hold = time.Second
	w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: hold})
	waitFor(t, 5*time.Second, "a ring of six", hasMembers(w, all...))

	for _, tc := range cases {
		probe.set(tc.id, tc.answer)
		if tc.deregister {
			// As a restarted agent that forgot it: the process lives on.
			gws[tc.id].crash()
			if err := c.Agent().ServiceDeregister(tc.id); err != nil {
				t.Fatal(err)
			}
		} else {
			gws[tc.id].fail()
		}
	}
	for _, tc := range cases {
		criticalAt(t, c, tc.id, 3*time.Second)
	}
	at := time.Now()
	stays(t, w, probe.probedOver(2*hold+DeadGap, all[2:]...), 15*time.Second, all...)
	s := w.Status()
	if !slices.Equal(s.Held, all[2:]) || !slices.Equal(s.Passing, []string{"gw-a", "gw-c"}) {
		t.Fatalf("Held %v, Passing %v; want %v, [gw-a gw-c]", s.Held, s.Passing, all[2:])
	}
	for i, tc := range cases {
		h := s.HeldMembers[i]
		if h.ID != tc.id || h.Verdict != tc.verdict || h.InCatalog == tc.deregister || h.Failing != 0 || h.Since.Before(at.Add(-2*time.Second)) {
			t.Fatalf("HeldMembers[%d] = %+v; want %s, verdict %s, in catalog %v, no failing time", i, h, tc.id, tc.verdict, !tc.deregister)
		}
	}
}

// TestFailingMemberLeavesAfterHold: a member that is not passing and whose
// probe times out, answers unhealthy, or is answered by another instance,
// leaves once it has failed for the hold period while the others pass.
func TestFailingMemberLeavesAfterHold(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(*testProbe)
		reason string
	}{
		{"times out", func(p *testProbe) { p.hangOn("gw-b") }, ""},
		{"answers unhealthy", func(p *testProbe) {
			p.set("gw-b", Liveness{State: Alive, Instance: "inst-gw-b", Reason: "JetStream not answering"})
		}, "JetStream not answering"},
		{"another instance answers", func(p *testProbe) { p.set("gw-b", healthyAs("someone-else")) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := startAgent(t)
			probe := newTestProbe()
			gateway(t, c, probe, "gw-a", 1)
			b := gateway(t, c, probe, "gw-b", 1)
			gateway(t, c, probe, "gw-c", 1)
			const hold = 2 * time.Second
			w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: hold})
			waitFor(t, 5*time.Second, "a ring of three", hasMembers(w, "gw-a", "gw-b", "gw-c"))

			tc.answer(probe)
			at := time.Now() // it cannot stop passing before this
			b.fail()
			criticalAt(t, c, "gw-b", 5*time.Second)
			waitFor(t, 5*time.Second, "gw-b's failing time to count", func() bool {
				s := w.Status()
				return len(s.HeldMembers) == 1 && s.HeldMembers[0].Failing > 0
			})
			stays(t, w, elapsed(at, hold-100*time.Millisecond), hold, "gw-a", "gw-b", "gw-c")
			s := w.Status()
			if len(s.HeldMembers) != 1 {
				t.Fatalf("HeldMembers = %+v, want gw-b", s.HeldMembers)
			}
			if h := s.HeldMembers[0]; h.Verdict != "failing" || h.Paused || h.Liveness.Reason != tc.reason {
				t.Fatalf("HeldMembers[0] = %+v; want failing, counting, reason %q", h, tc.reason)
			}
			if !slices.Equal(s.Passing, []string{"gw-a", "gw-c"}) {
				t.Fatalf("Passing = %v, want [gw-a gw-c]", s.Passing)
			}
			waitFor(t, 5*time.Second, "the failing member to leave after the hold", hasMembers(w, "gw-a", "gw-c"))
			t.Logf("left %v after it stopped passing (hold %v)", time.Since(at).Round(time.Millisecond), hold)
		})
	}
}

// TestFailingTimeResets: a failing member's counted time starts again from
// zero once it answers healthy or passes: two short failures do not add up
// to one hold.
func TestFailingTimeResets(t *testing.T) {
	unhealthy := Liveness{State: Alive, Instance: "inst-gw-b", Reason: "JetStream not answering"}
	for _, tc := range []struct {
		name    string
		between func(*testGateway)
		reset   func(Status) bool
	}{
		{"answers healthy between", func(*testGateway) {}, func(s Status) bool {
			return len(s.HeldMembers) == 1 && s.HeldMembers[0].Verdict == "healthy" && s.HeldMembers[0].Failing == 0
		}},
		{"passes between", (*testGateway).heal, func(s Status) bool {
			return len(s.Held) == 0 && slices.Contains(s.Passing, "gw-b")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := startAgent(t)
			probe := newTestProbe()
			gateway(t, c, probe, "gw-a", 1)
			b := gateway(t, c, probe, "gw-b", 1)
			gateway(t, c, probe, "gw-c", 1)
			const hold = 2 * time.Second
			w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: hold})
			all := []string{"gw-a", "gw-b", "gw-c"}
			waitFor(t, 5*time.Second, "a ring of three", hasMembers(w, all...))

			probe.set("gw-b", unhealthy)
			b.fail()
			waitFor(t, 5*time.Second, "most of the hold counted", func() bool {
				s := w.Status()
				return len(s.HeldMembers) == 1 && s.HeldMembers[0].Failing >= hold/2
			})
			probe.set("gw-b", healthyAs("inst-gw-b"))
			tc.between(b)
			waitFor(t, 5*time.Second, "the counted time to reset", func() bool { return tc.reset(w.Status()) })

			again := time.Now()
			probe.set("gw-b", unhealthy)
			b.fail()
			stays(t, w, elapsed(again, hold-100*time.Millisecond), 2*hold, all...)
			waitFor(t, 5*time.Second, "gw-b to leave a hold after it failed again", hasMembers(w, "gw-a", "gw-c"))
			t.Logf("left %v after failing again (hold %v)", time.Since(again).Round(time.Millisecond), hold)
		})
	}
}

// TestSharedFailureKeepsEveryone: while most members fail together (NATS or
// JetStream down for everyone, say), failing time does not count and no one
// leaves, however long it lasts. Once most of the others are fine again, the
// hold starts counting from then, not from when the member began failing.
func TestSharedFailureKeepsEveryone(t *testing.T) {
	unhealthy := func(p *testProbe, id string) {
		p.set(id, Liveness{State: Alive, Instance: "inst-" + id, Reason: "JetStream not answering"})
	}
	for _, tc := range []struct {
		name    string
		failing []string // gw-b first
		answer  func(p *testProbe, id string)
	}{
		{"two of three time out", []string{"gw-b", "gw-c"}, (*testProbe).hangOn},
		{"two of three answer unhealthy", []string{"gw-b", "gw-c"}, unhealthy},
		{"all three answer unhealthy", []string{"gw-b", "gw-a", "gw-c"}, unhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := startAgent(t)
			probe := newTestProbe()
			gws := map[string]*testGateway{}
			for _, id := range []string{"gw-a", "gw-b", "gw-c"} {
				gws[id] = gateway(t, c, probe, id, 1)
			}
			const hold = time.Second
			w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: hold})
			all := []string{"gw-a", "gw-b", "gw-c"}
			waitFor(t, 5*time.Second, "a ring of three", hasMembers(w, all...))

			for _, id := range tc.failing {
				tc.answer(probe, id)
				gws[id].fail()
			}
			for _, id := range tc.failing {
				criticalAt(t, c, id, 5*time.Second)
			}
			at := time.Now()
			stays(t, w, probe.probedOver(2*hold+DeadGap, tc.failing...), 15*time.Second, all...)
			s := w.Status()
			if !slices.Equal(s.Held, slices.Sorted(slices.Values(tc.failing))) {
				t.Fatalf("Held = %v, want %v", s.Held, tc.failing)
			}
			for _, h := range s.HeldMembers {
				if h.Verdict != "failing" || !h.Paused || h.Failing != 0 {
					t.Fatalf("HeldMember %+v; want failing, paused, no failing time counted", h)
				}
			}

			// The others recover: gw-b now fails on its own. Its time counts
			// from the first evaluation at which they are fine, answering
			// healthy or passing, whichever the watcher sees first.
			healed := time.Now()
			for _, id := range tc.failing[1:] {
				probe.set(id, healthyAs("inst-"+id))
				gws[id].heal()
			}
			waitFor(t, 5*time.Second, "the others to pass again", func() bool {
				return strings.Join(passing(t, c), ",") == "gw-a,gw-c"
			})
			stays(t, w, elapsed(healed, hold-100*time.Millisecond), hold, all...)
			waitFor(t, 5*time.Second, "gw-b to leave after the hold, counted from the others' recovery", hasMembers(w, "gw-a", "gw-c"))
			t.Logf("kept %v while most failed; left %v after the others recovered (hold %v)",
				healed.Sub(at).Round(time.Millisecond), time.Since(healed).Round(time.Millisecond), hold)
		})
	}
}

// TestFreshWatcherProbesCatalog: a watcher with no ring admits the passing
// gateways and, in the same first ring, the catalog's non-passing instances
// that answer healthy — not those that answer dead or time out.
func TestFreshWatcherProbesCatalog(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	sick := func(_ *RegisterConfig, g *testGateway) { g.sick.Store(true) }
	gateway(t, c, probe, "gw-a", 1)
	gatewayWith(t, c, probe, "gw-b", 1, sick) // answers healthy
	gatewayWith(t, c, probe, "gw-c", 1, sick)
	gatewayWith(t, c, probe, "gw-d", 1, sick)
	probe.set("gw-c", Liveness{State: Dead})
	probe.hangOn("gw-d")
	waitFor(t, 5*time.Second, "Consul to list all four, gw-a alone passing", func() bool {
		es, _, err := c.Health().Service(Service, "", false, nil)
		return err == nil && len(es) == 4 && slices.Equal(passing(t, c), []string{"gw-a"})
	})
	const probeTimeout = 500 * time.Millisecond
	start := time.Now()
	w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: time.Minute, ProbeTimeout: probeTimeout})
	waitFor(t, 5*time.Second, "a first ring", func() bool { r, _ := w.Ring(); return r != nil })
	t.Logf("first ring after %v (probe timeout %v)", time.Since(start).Round(time.Millisecond), probeTimeout)
	if got := ids(w); !slices.Equal(got, []string{"gw-a", "gw-b"}) {
		t.Fatalf("first ring %v, want [gw-a gw-b]", got)
	}
	s := w.Status()
	if s.Changes != 1 || !slices.Equal(s.Held, []string{"gw-b"}) || !slices.Equal(s.Passing, []string{"gw-a"}) {
		t.Fatalf("status %+v; want one ring, gw-b held, gw-a passing", s)
	}
	for _, id := range []string{"gw-b", "gw-c", "gw-d"} {
		if probe.callCount(id) == 0 {
			t.Fatalf("%s was not probed", id)
		}
	}
	// gw-b is then held like any member that answers healthy.
	stays(t, w, probe.probedOver(time.Second, "gw-b"), 10*time.Second, "gw-a", "gw-b")
}

// TestHeldMemberThatDiesLeaves: a member held because it answered healthy
// leaves once nobody answers for it.
func TestHeldMemberThatDiesLeaves(t *testing.T) {
	t.Parallel()
	_, c := startAgent(t)
	probe := newTestProbe()
	gateway(t, c, probe, "gw-a", 1)
	b := gateway(t, c, probe, "gw-b", 1)
	w := ruleWatch(t, WatchConfig{Client: c, Probe: probe.probe, Hold: time.Minute})
	waitFor(t, 5*time.Second, "a ring of two", hasMembers(w, "gw-a", "gw-b"))
	b.fail()
	waitFor(t, 5*time.Second, "gw-b to be held", func() bool { return len(w.Status().Held) == 1 })
	probe.set("gw-b", Liveness{State: Dead})
	start := time.Now()
	waitFor(t, 5*time.Second, "the held member to leave once nobody answers", hasMembers(w, "gw-a"))
	span := confirmedTwice(t, probe.callsOf("gw-b"))
	t.Logf("left %v after its probe began answering dead (first to last dead %v)", time.Since(start).Round(time.Millisecond), span.Round(time.Millisecond))
}
