package dispatcher

import (
	"slices"
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
	in := &rings{cur: after, prev: []graceRing{{ring: before, until: now.Add(time.Second)}}}
	moved, stayed := 0, 0
	for i := range 2000 {
		u := "user-" + strconv.Itoa(i)
		was, _ := before.Owner(u)
		is, _ := after.Owner(u)
		owner, ok, prev := in.owners(u, now)
		if !ok || owner.ID != is.ID {
			t.Fatalf("%s: owner %v, want %s", u, owner, is.ID)
		}
		if was.ID != is.ID {
			moved++
			if len(prev) != 1 || prev[0] != was.ID {
				t.Fatalf("%s moved %s → %s: previous owners %v; want both owners rung", u, was.ID, is.ID, prev)
			}
		} else {
			stayed++
			if len(prev) != 0 {
				t.Fatalf("%s stayed on %s but %v would be rung too", u, is.ID, prev)
			}
		}
		if _, _, prev := in.owners(u, now.Add(2*time.Second)); len(prev) != 0 {
			t.Fatalf("%s: previous owners rung after the grace window", u)
		}
	}
	if moved == 0 || stayed == 0 {
		t.Fatalf("moved %d, stayed %d: the test needs both", moved, stayed)
	}
	// A member that left: only its previous owner could hold the socket.
	gone := &rings{cur: mk(), prev: []graceRing{{ring: before, until: now.Add(time.Second)}}}
	if _, ok, prev := gone.owners("alice", now); ok || len(prev) != 1 {
		t.Fatalf("empty ring in the window: ok=%v prev=%v", ok, prev)
	}
	// Two quick changes: a → a,b → a,b,c. A user that went a → b → c is
	// rung on all three while both windows last.
	ab := mk("gw-a", "gw-b")
	two := &rings{cur: after, prev: []graceRing{{ring: ab, until: now.Add(time.Second)}, {ring: mk("gw-a"), until: now.Add(time.Second)}}}
	for i := range 2000 {
		u := "user-" + strconv.Itoa(i)
		o1, _ := ab.Owner(u)
		o2, _ := after.Owner(u)
		if o1.ID == "gw-b" && o2.ID == "gw-c" {
			if _, _, prev := two.owners(u, now); !slices.Equal(prev, []string{"gw-b", "gw-a"}) {
				t.Fatalf("%s went gw-a → gw-b → gw-c: previous owners %v, want [gw-b gw-a]", u, prev)
			}
			return
		}
	}
	t.Fatal("no user moved twice")
}
