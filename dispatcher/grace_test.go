package dispatcher

import (
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/ring"
)

func TestGraceOwners(t *testing.T) {
	mk := func(ids ...string) *ring.Ring {
		var ms []ring.Member
		for _, id := range ids {
			ms = append(ms, ring.Member{ID: id, Weight: 1, URL: "ws://" + id + "/ws"})
		}
		r, err := ring.New(0, ms)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	before, after := mk("gw-a", "gw-b"), mk("gw-a", "gw-b", "gw-c")
	now := time.Now()
	in := &rings{cur: after, prev: before, until: now.Add(time.Second)}
	moved, stayed := 0, 0
	for i := range 2000 {
		u := "user-" + strconv.Itoa(i)
		was, _ := before.Owner(u)
		is, _ := after.Owner(u)
		owner, prev, ok, both := in.owners(u, now)
		if !ok || owner.ID != is.ID {
			t.Fatalf("%s: owner %v, want %s", u, owner, is.ID)
		}
		if was.ID != is.ID {
			moved++
			if !both || prev.ID != was.ID {
				t.Fatalf("%s moved %s → %s: both=%v prev=%s; want both owners rung", u, was.ID, is.ID, both, prev.ID)
			}
		} else {
			stayed++
			if both {
				t.Fatalf("%s stayed on %s but both owners would be rung", u, is.ID)
			}
		}
		if _, _, _, both := in.owners(u, now.Add(2*time.Second)); both {
			t.Fatalf("%s: both owners rung after the grace window", u)
		}
	}
	if moved == 0 || stayed == 0 {
		t.Fatalf("moved %d, stayed %d: the test needs both", moved, stayed)
	}
	// A member that left: only its previous owner could hold the socket.
	gone := &rings{cur: mk(), prev: before, until: now.Add(time.Second)}
	if _, prev, ok, both := gone.owners("alice", now); ok || !both || prev.ID == "" {
		t.Fatalf("empty ring in the window: ok=%v both=%v prev=%v", ok, both, prev)
	}
}
