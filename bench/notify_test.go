package bench

import (
	"strings"
	"testing"
	"time"
)

// TestSustainable: a step counts only if the generator kept its schedule,
// errors are rare, nearly everything was delivered and the p99 held; each
// failure says which.
func TestSustainable(t *testing.T) {
	good := Step{Offered: 1000, Accepted: 1000, Delivered: 995, OnSchedule: 0.995, P99: 20 * time.Millisecond}
	if ok, why := good.sustainable(100 * time.Millisecond); !ok {
		t.Fatalf("a good step is not sustainable: %s", why)
	}
	for _, c := range []struct {
		change func(*Step)
		want   string
	}{
		{func(s *Step) { s.OnSchedule = 0.9 }, "generator"},
		{func(s *Step) { s.Errors = 50 }, "errors"},
		{func(s *Step) { s.Delivered = 900 }, "delivered"},
		{func(s *Step) { s.P99 = time.Second }, "p99"},
	} {
		s := good
		c.change(&s)
		if ok, why := s.sustainable(100 * time.Millisecond); ok || !strings.Contains(why, c.want) {
			t.Errorf("step %+v: sustainable %v (%q), want refused for %q", s, ok, why, c.want)
		}
	}
}
