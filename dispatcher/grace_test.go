package dispatcher

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
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

// After a ring change, a notification for a user whose owner changed rings
// both owners until the grace window (MoveWindow + 2 s) ends, and only the
// new owner after it; users whose owner stayed get one doorbell throughout.
func TestGraceWindowRingsBothOwners(t *testing.T) {
	e := newEnv(t)
	gws := map[string]*testGateway{"gw-a": e.gateway("gw-a", gatewayOpts{}), "gw-b": e.gateway("gw-b", gatewayOpts{})}
	const moveWindow = 3 * time.Second // the grace window is 5 s
	td := e.dispatcher(func(c *Config) { c.MoveWindow = moveWindow })
	td.waitRing("gw-a", "gw-b")
	before := td.Ring()

	gws["gw-c"] = e.gateway("gw-c", gatewayOpts{})
	td.waitRing("gw-a", "gw-b", "gw-c")
	changed := time.Now() // at or after the dispatcher's ring change
	after := td.Ring()

	type sent struct {
		user     string
		seq      uint64
		was, now string
	}
	var moved, stayed []sent
	for i := 0; len(moved) < 3 || len(stayed) < 3; i++ {
		u := "user-" + strconv.Itoa(i)
		was, _ := before.Owner(u)
		now, _ := after.Owner(u)
		s := sent{user: u, was: was.ID, now: now.ID}
		if was.ID != now.ID && len(moved) < 3 {
			s.seq = td.notify(`{"user":"` + u + `","data":1}`).Seq
			moved = append(moved, s)
		} else if was.ID == now.ID && len(stayed) < 3 {
			s.seq = td.notify(`{"user":"` + u + `","data":1}`).Seq
			stayed = append(stayed, s)
		}
	}
	if time.Since(changed) >= moveWindow+graceSlack {
		t.Fatalf("six appends took %v, past the grace window: the test cannot check it", time.Since(changed))
	}
	rung := func(g *testGateway, s sent) bool {
		return slices.ContainsFunc(g.doorbellsFor(s.user), func(d wire.Doorbell) bool { return d.Seq == s.seq })
	}
	for _, s := range moved {
		waitFor(t, 5*time.Second, s.user+"'s doorbell on its new and previous owner", func() bool {
			return rung(gws[s.now], s) && rung(gws[s.was], s)
		})
	}
	for _, s := range stayed {
		waitFor(t, 5*time.Second, s.user+"'s doorbell on its owner", func() bool { return rung(gws[s.now], s) })
		if n := len(gws[s.now].doorbellsFor(s.user)); n != 1 {
			t.Errorf("%s's owner got %d doorbells, want 1", s.user, n)
		}
	}
	if got := td.metric("herald_grace_doorbells_total"); got != float64(len(moved)) {
		t.Errorf("herald_grace_doorbells_total = %v, want %d", got, len(moved))
	}

	// After the window only the new owner is rung. A marker for a user the
	// previous owner still owns, notified afterwards on the same NATS
	// connection, reaches it after any doorbell it would have been sent.
	waitFor(t, 10*time.Second, "the grace window to end", func() bool { return time.Since(changed) > moveWindow+graceSlack+time.Second })
	s := moved[0]
	s.seq = td.notify(`{"user":"` + s.user + `","data":2}`).Seq
	var marker sent
	for _, st := range stayed {
		if st.now == s.was {
			marker = st
		}
	}
	if marker.user == "" {
		marker = sent{user: td.ownedBy(s.was), now: s.was}
	}
	marker.seq = td.notify(`{"user":"` + marker.user + `","data":2}`).Seq
	waitFor(t, 5*time.Second, "the new owner's doorbell and the marker", func() bool {
		return rung(gws[s.now], s) && rung(gws[marker.now], marker)
	})
	if rung(gws[s.was], s) {
		t.Errorf("%s's previous owner %s was rung after the grace window", s.user, s.was)
	}
}
