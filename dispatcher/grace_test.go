package dispatcher

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/nats-io/nats.go"
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

// TestGraceExtension drives the grace state by hand: a previous owner that
// reports moves pending stays rung past its base window, until graceSlack
// after it reports none, never beyond maxGraceExtension; "no responders"
// ends its extension at once; a missed answer only stops renewing it.
func TestGraceExtension(t *testing.T) {
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
	// Users that moved from gw-a and from gw-b to gw-c.
	var fromA, fromB string
	for i := 0; fromA == "" || fromB == ""; i++ {
		u := "user-" + strconv.Itoa(i)
		was, _ := before.Owner(u)
		is, _ := after.Owner(u)
		if is.ID == "gw-c" && was.ID == "gw-a" {
			fromA = u
		} else if is.ID == "gw-c" && was.ID == "gw-b" {
			fromB = u
		}
	}
	const moveWindow = 3 * time.Second
	base := moveWindow + graceSlack
	t0 := time.Unix(1_900_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	newState := func() *graceState {
		s := &graceState{moveWindow: moveWindow, ext: map[string]extension{}}
		s.setRing(before, t0.Add(-time.Hour))
		s.setRing(after, t0)
		return s
	}
	rung := func(s *graceState, user string, now time.Time) []string {
		s.prune(now)
		_, _, prev := s.publish().owners(user, now)
		return prev
	}
	pending := func(n int) statsAnswer { return statsAnswer{stats: wire.GatewayStats{MovesPending: n}} }

	// Nobody reports anything: the base window only.
	s := newState()
	if got := s.toPoll(at(time.Second)); !slices.Equal(got, []string{"gw-a", "gw-b"}) {
		t.Fatalf("polled %v in the base window, want the previous ring's members [gw-a gw-b]", got)
	}
	if got := rung(s, fromA, at(base-time.Millisecond)); !slices.Equal(got, []string{"gw-a"}) {
		t.Fatalf("in the base window: %v, want [gw-a]", got)
	}
	if got := rung(s, fromA, at(base)); got != nil || len(s.prev) != 0 || s.toPoll(at(base)) != nil {
		t.Fatalf("after the base window: rung %v, %d rings kept, polling %v", got, len(s.prev), s.toPoll(at(base)))
	}

	// gw-a reports moves pending every second for 20s; gw-b has none.
	s = newState()
	for sec := 1; sec <= 20; sec++ {
		now := at(time.Duration(sec) * time.Second)
		if got := s.toPoll(now); !slices.Contains(got, "gw-a") {
			t.Fatalf("at %ds gw-a is not polled: %v", sec, got)
		}
		s.report("gw-a", pending(100), now)
		s.report("gw-b", pending(0), now)
		if got := rung(s, fromA, now.Add(900*time.Millisecond)); !slices.Equal(got, []string{"gw-a"}) {
			t.Fatalf("at %ds, with moves pending: %v, want [gw-a]", sec, got)
		}
		if got := rung(s, fromB, now.Add(900*time.Millisecond)); sec >= 5 && got != nil {
			t.Fatalf("at %ds, past the base window, gw-b (nothing pending) still rung: %v", sec, got)
		}
	}
	if got := s.toPoll(at(20*time.Second + 900*time.Millisecond)); !slices.Equal(got, []string{"gw-a"}) {
		t.Fatalf("past the base window, polled %v, want only the extended [gw-a]", got)
	}
	done := at(21 * time.Second)
	s.report("gw-a", pending(0), done)
	s.report("gw-a", pending(0), done.Add(time.Second)) // a second report of none extends nothing
	if got := rung(s, fromA, done.Add(graceSlack-time.Millisecond)); !slices.Equal(got, []string{"gw-a"}) {
		t.Fatalf("within the slack after moves pending reached 0: %v, want [gw-a]", got)
	}
	if got := rung(s, fromA, done.Add(graceSlack)); got != nil || len(s.prev) != 0 {
		t.Fatalf("after the slack: rung %v, %d rings kept", got, len(s.prev))
	}

	// A count that never drops is cut off at maxGraceExtension.
	s = newState()
	for now := at(time.Second); now.Before(at(maxGraceExtension + 10*time.Second)); now = now.Add(time.Second) {
		s.report("gw-a", pending(1), now)
		got := rung(s, fromA, now.Add(500*time.Millisecond))
		if want := now.Add(500 * time.Millisecond).Before(at(maxGraceExtension)); (got != nil) != want {
			t.Fatalf("at %v after the change: rung %v, want rung %v (cap %v)", now.Sub(t0), got, want, maxGraceExtension)
		}
	}
	if got := s.toPoll(at(maxGraceExtension)); got != nil {
		t.Fatalf("polling %v past the cap", got)
	}

	// No responders ends the extension at once; a missed answer only
	// stops renewing it.
	s = newState()
	s.report("gw-a", pending(5), at(4*time.Second))
	s.report("gw-a", statsAnswer{err: nats.ErrNoResponders}, at(6*time.Second))
	if got := rung(s, fromA, at(6*time.Second)); got != nil {
		t.Fatalf("after no responders: %v", got)
	}
	s = newState()
	s.report("gw-a", pending(5), at(4*time.Second))
	s.report("gw-a", statsAnswer{err: nats.ErrTimeout}, at(5*time.Second))
	s.report("gw-a", statsAnswer{err: nats.ErrTimeout}, at(6*time.Second))
	if got := rung(s, fromA, at(4*time.Second+graceProbe+graceSlack-time.Millisecond)); !slices.Equal(got, []string{"gw-a"}) {
		t.Fatalf("after missed answers, within the last grant: %v, want [gw-a]", got)
	}
	if got := rung(s, fromA, at(4*time.Second+graceProbe+graceSlack)); got != nil {
		t.Fatalf("after missed answers, past the last grant: %v", got)
	}

	// A report of none without an extension grants nothing.
	s = newState()
	s.report("gw-a", pending(0), at(4*time.Second))
	if got := rung(s, fromA, at(base)); got != nil {
		t.Fatalf("a report of 0 extended the window: %v", got)
	}
}

// TestGraceExtendedByMovesPending: after a ring change, the previous owner
// of a moved user keeps getting its doorbells, past MoveWindow + 2s, while
// it reports moves pending, and stops getting them graceSlack after it
// reports none; a previous owner with nothing pending is not extended.
func TestGraceExtendedByMovesPending(t *testing.T) {
	e := newEnv(t)
	gws := map[string]*testGateway{}
	for _, id := range []string{"gw-a", "gw-b"} {
		gws[id] = e.gateway(id, gatewayOpts{stats: &wire.GatewayStats{Gateway: id}})
	}
	const moveWindow = 500 * time.Millisecond // the base window is 2.5s
	td := e.dispatcher(func(c *Config) { c.MoveWindow = moveWindow })
	td.waitRing("gw-a", "gw-b")
	before := td.Ring()

	draining := "gw-a" // the one with moves pending
	gws[draining].setMovesPending(500)
	gws["gw-c"] = e.gateway("gw-c", gatewayOpts{stats: &wire.GatewayStats{Gateway: "gw-c"}})
	td.waitRing("gw-a", "gw-b", "gw-c")
	changed := time.Now()
	after := td.Ring()
	var moved, idle string // users that moved off the draining gateway, and off the other
	for i := 0; moved == "" || idle == ""; i++ {
		u := "user-" + strconv.Itoa(i)
		was, _ := before.Owner(u)
		is, _ := after.Owner(u)
		switch {
		case was.ID == draining && is.ID != draining && moved == "":
			moved = u
		case was.ID != draining && is.ID != was.ID && idle == "":
			idle = u
		}
	}
	newOwner, _ := after.Owner(moved)
	idleWas, _ := before.Owner(idle)
	idleIs, _ := after.Owner(idle)

	// ringsPrevious notifies user and reports whether its previous owner
	// prev got the doorbell, once the new owner has it and a marker sent
	// after it (to a user prev owns now, on the same connection) has
	// reached prev, so a missing doorbell is one that was never sent.
	ringsPrevious := func(user, prev, now string) (bool, time.Time) {
		seq := td.notify(`{"user":"` + user + `","data":1}`).Seq
		answered := time.Now()
		mk := td.ownedBy(prev)
		mseq := td.notify(`{"user":"` + mk + `","data":0}`).Seq
		got := func(g *testGateway, u string, s uint64) bool {
			return slices.ContainsFunc(g.doorbellsFor(u), func(d wire.Doorbell) bool { return d.Seq == s })
		}
		waitFor(t, 5*time.Second, "the doorbell on the new owner and the marker", func() bool {
			return got(gws[now], user, seq) && got(gws[prev], mk, mseq)
		})
		return got(gws[prev], user, seq), answered
	}

	// Past the base window, with moves pending: still rung, for seconds.
	for i := range 3 {
		at := moveWindow + graceSlack + time.Second + time.Duration(i)*700*time.Millisecond
		waitFor(t, 10*time.Second, "the next check's time", func() bool { return time.Since(changed) > at })
		if ok, _ := ringsPrevious(moved, draining, newOwner.ID); !ok {
			t.Fatalf("notification %d, %v after the ring change, with moves pending: %s's previous owner %s not rung",
				i, time.Since(changed).Round(time.Millisecond), moved, draining)
		}
	}
	if ok, _ := ringsPrevious(idle, idleWas.ID, idleIs.ID); ok {
		t.Errorf("%s's previous owner %s, with nothing pending, rung past the base window", idle, idleWas.ID)
	}
	if got := td.metric("herald_grace_extended_gateways"); got != 1 {
		t.Errorf("herald_grace_extended_gateways = %v, want 1", got)
	}

	// Done moving: rung for the slack after the report, then no more.
	reported := time.Now()
	gws[draining].setMovesPending(0)
	var stopped time.Time
	waitFor(t, 15*time.Second, "the previous owner to stop being rung", func() bool {
		ok, answered := ringsPrevious(moved, draining, newOwner.ID)
		if !ok {
			stopped = answered
		}
		return !ok
	})
	if stopped.Before(reported.Add(graceSlack)) {
		t.Fatalf("the previous owner stopped being rung %v after it reported no moves pending, before the %v slack",
			stopped.Sub(reported), graceSlack)
	}
	waitFor(t, 5*time.Second, "herald_grace_extended_gateways to drop", func() bool { return td.metric("herald_grace_extended_gateways") == 0 })
}
