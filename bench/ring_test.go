package bench

import (
	"strings"
	"testing"
)

// TestRingScenario: on a small run the figures are what the ring promises —
// a join moves about 1/(N+1) of the keys, a leave about 1/N, the spread is
// moderate — so a broken simulation (keys not moved, counts miscounted)
// shows.
func TestRingScenario(t *testing.T) {
	var r Report
	if err := Ring(RingConfig{Sizes: []int{10}, Keys: 200_000}, &r); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range r.Figures {
		got[strings.TrimPrefix(f.Name, "10 gateways: ")] = f.Value
	}
	if j := got["keys moved by a join"]; j < 7 || j > 11 { // ideal 9.09%
		t.Errorf("a join moved %.2f%% of the keys, want about 9.1%%", j)
	}
	if l := got["keys moved by a leave"]; l < 8 || l > 12 { // ideal 10%
		t.Errorf("a leave moved %.2f%% of the keys, want about 10%%", l)
	}
	if cv := got["balance CoV"]; cv <= 0 || cv > 15 {
		t.Errorf("balance CoV %.2f%%, want a few percent", cv)
	}
	if mm := got["max/mean keys"]; mm < 1 || mm > 1.3 {
		t.Errorf("max/mean %.2f, want just above 1", mm)
	}
	if ns := got["lookup"]; ns <= 0 {
		t.Errorf("lookup %v ns", ns)
	}
}
