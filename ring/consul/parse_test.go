package consul

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/ring"
)

func entry(node, id, url, weight string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node},
		Service: &api.AgentService{ID: id, Service: Service, Meta: map[string]string{MetaURL: url, MetaWeight: weight}},
	}
}

// TestParseIsOrderIndependent shuffles Consul's listing: the instance kept for
// a duplicate ID, and so the ring, must not depend on it.
func TestParseIsOrderIndependent(t *testing.T) {
	w, err := NewWatcher(WatchConfig{Client: &api.Client{}, Probe: newTestProbe().probe, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	base := []*api.ServiceEntry{
		entry("n3", "gw-1", "ws://n3/ws", "1"),
		entry("n1", "gw-1", "ws://n1/ws", "2"),
		entry("n2", "gw-1", "ws://n2/ws", "1"),
		entry("n2", "gw-2", "ws://gw2/ws", "1"),
		entry("n9", "gw-3", "ws://gw3/ws", "x"), // bad weight
		{Node: &api.Node{Node: "n0"}},           // no service at all
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		es := append([]*api.ServiceEntry(nil), base...)
		r.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
		s := w.parse(es)
		if m := s.instances["gw-1"].member; m.URL != "ws://n1/ws" || m.Weight != 2 {
			t.Fatalf("kept %+v for gw-1, want the instance on n1", m)
		}
		if len(s.instances) != 2 || s.duplicates != 2 || s.skipped != 2 {
			t.Fatalf("instances %v, duplicates %d, skipped %d; want 2, 2, 2", s.instances, s.duplicates, s.skipped)
		}
	}
}

func check(node, id, status string) *api.HealthCheck {
	return &api.HealthCheck{Node: node, CheckID: id, ServiceID: id, Status: status}
}

// TestParsePassing checks that passing is judged from every check of an
// entry, the node's included, and that a duplicate ID resolves to a passing
// instance before the node-name order applies.
func TestParsePassing(t *testing.T) {
	w, err := NewWatcher(WatchConfig{Client: &api.Client{}, Probe: newTestProbe().probe, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	withChecks := func(e *api.ServiceEntry, nonce string, cs ...*api.HealthCheck) *api.ServiceEntry {
		e.Checks = cs
		e.Service.Meta[MetaInstance] = nonce
		return e
	}
	base := []*api.ServiceEntry{
		// gw-1: critical on n1, passing on n5 and n7: n5 wins over the lower n1.
		withChecks(entry("n1", "gw-1", "ws://n1/ws", "1"), "i1", check("n1", "gw-1", api.HealthCritical)),
		withChecks(entry("n7", "gw-1", "ws://n7/ws", "1"), "i7", check("n7", "gw-1", api.HealthPassing)),
		withChecks(entry("n5", "gw-1", "ws://n5/ws", "1"), "i5", check("n5", "gw-1", api.HealthPassing), check("n5", "serfHealth", api.HealthPassing)),
		// gw-2: its own check passes but its node's serfHealth does not.
		withChecks(entry("n2", "gw-2", "ws://n2/ws", "1"), "i2", check("n2", "gw-2", api.HealthPassing), check("n2", "serfHealth", api.HealthCritical)),
		// gw-3: warning is not passing; two non-passing instances: lowest node.
		withChecks(entry("n9", "gw-3", "ws://n9/ws", "1"), "i9", check("n9", "gw-3", api.HealthWarning)),
		withChecks(entry("n8", "gw-3", "ws://n8/ws", "1"), "i8", check("n8", "gw-3", api.HealthCritical)),
		// gw-4: in maintenance.
		withChecks(entry("n4", "gw-4", "ws://n4/ws", "1"), "", check("n4", "gw-4", api.HealthPassing), check("n4", api.NodeMaint, api.HealthCritical)),
		// gw-5: no checks at all passes, as in Consul.
		withChecks(entry("n3", "gw-5", "ws://n3/ws", "1"), "i3"),
	}
	want := map[string]instance{
		"gw-1": {member: ringMember("gw-1", "ws://n5/ws"), passing: true, nonce: "i5"},
		"gw-2": {member: ringMember("gw-2", "ws://n2/ws"), nonce: "i2"},
		"gw-3": {member: ringMember("gw-3", "ws://n8/ws"), nonce: "i8"},
		"gw-4": {member: ringMember("gw-4", "ws://n4/ws")},
		"gw-5": {member: ringMember("gw-5", "ws://n3/ws"), passing: true, nonce: "i3"},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		es := append([]*api.ServiceEntry(nil), base...)
		r.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
		s := w.parse(es)
		if len(s.instances) != len(want) || s.duplicates != 3 || s.skipped != 0 {
			t.Fatalf("instances %v, duplicates %d, skipped %d; want %d, 3, 0", s.instances, s.duplicates, s.skipped, len(want))
		}
		for id, in := range want {
			if got := s.instances[id]; got != in {
				t.Fatalf("%s: got %+v, want %+v", id, got, in)
			}
		}
		if got := s.passing(); !slices.Equal(got, []string{"gw-1", "gw-5"}) {
			t.Fatalf("passing() = %v, want [gw-1 gw-5]", got)
		}
	}
}

func ringMember(id, url string) ring.Member { return ring.Member{ID: id, Weight: 1, URL: url} }
