package consul

import (
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/consul/api"
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
		if m := s.members["gw-1"]; m.URL != "ws://n1/ws" || m.Weight != 2 {
			t.Fatalf("kept %+v for gw-1, want the instance on n1", m)
		}
		if len(s.members) != 2 || s.duplicates != 2 || s.skipped != 2 {
			t.Fatalf("members %v, duplicates %d, skipped %d; want 2, 2, 2", s.members, s.duplicates, s.skipped)
		}
	}
}
