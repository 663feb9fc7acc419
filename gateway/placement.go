package gateway

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
)

// Placement: which users this gateway should hold, and sending away the
// ones it should not.
//
// When the ring changes, each local user the gateway no longer owns is sent
// to its new owner: a moved frame, then close 4001. Moves are spread with
// jitter over MoveWindow, so a ring change does not make every client
// reconnect in the same instant, and capped at MovesPerSecond. Each is
// re-checked against the current ring right before it is sent and dropped
// if the ring no longer calls for it (a member that flapped back).
//
// The same pacing serves drain (the ring is then read without this
// gateway) and self-fencing (sockets are closed with 1013 instead: a
// gateway cut off from NATS cannot deliver, and does not know who can).

// moveTick is how often the mover looks for due moves.
const moveTick = 50 * time.Millisecond

// fenceAfter is how long the gateway's NATS connection must have been down
// before it fences itself. A reconnect within it fences nothing.
const fenceAfter = 3 * time.Second

// placement is the ring ownership is judged by: the current ring, or while
// draining the current ring without this gateway, which the others will
// converge on.
func (g *Gateway) placement() *ring.Ring { return g.placementOf(g.Ring()) }

func (g *Gateway) placementOf(r *ring.Ring) *ring.Ring {
	if !g.draining.Load() {
		return r
	}
	if _, in := r.Member(g.cfg.ID); !in {
		return r
	}
	g.moveMu.Lock()
	defer g.moveMu.Unlock()
	if g.without.from != r {
		var ms []ring.Member
		for _, m := range r.Members() {
			if m.ID != g.cfg.ID {
				ms = append(ms, m)
			}
		}
		w, err := ring.New(r.VNodes(), ms)
		if err != nil { // members of a valid ring: cannot happen
			g.log.Error("ring without this gateway", "error", err)
			return r
		}
		g.without.from, g.without.ring = r, w
	}
	return g.without.ring
}

// planMoves schedules a move, somewhere within MoveWindow, for every local
// user this gateway does not own under the current placement (every user,
// while fenced). A user already scheduled keeps its earlier time.
func (g *Gateway) planMoves(why string) {
	now := time.Now()
	users := g.users.names()
	placement := g.placement()
	fenced := g.fenced.Load()
	g.moveMu.Lock()
	defer g.moveMu.Unlock()
	n := 0
	for _, u := range users {
		if !fenced {
			if owner, ok := placement.Owner(u); ok && owner.ID == g.cfg.ID {
				continue
			}
		}
		at := now.Add(time.Duration(rand.Int64N(int64(g.cfg.MoveWindow) + 1)))
		if old, ok := g.due[u]; !ok || at.Before(old) {
			g.due[u] = at
		}
		n++
	}
	if n > 0 {
		g.log.Info("moving users", "why", why, "users", n, "window", g.cfg.MoveWindow)
	}
}

// mover sends due moves until ctx ends, at most MovesPerSecond.
func (g *Gateway) mover(ctx context.Context) {
	t := time.NewTicker(moveTick)
	defer t.Stop()
	perTick := max(1, int(float64(g.cfg.MovesPerSecond)*moveTick.Seconds()))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var batch []string
		g.moveMu.Lock()
		for u, at := range g.due {
			if len(batch) == perTick {
				break
			}
			if !at.After(now) {
				batch = append(batch, u)
				delete(g.due, u)
			}
		}
		g.moveMu.Unlock()
		for _, u := range batch {
			g.moveNow(u)
		}
	}
}

// moveNow re-checks the user's owner and, if it is still another gateway,
// moves the user's sockets there; while fenced it closes them with 1013.
func (g *Gateway) moveNow(user string) {
	defer g.tasks.recover("mover", nil)
	h := g.users.hub(user)
	if h == nil {
		return // gone already
	}
	if g.fenced.Load() {
		g.m.moves.WithLabelValues("fence").Inc()
		h.closeAll(nil, closeFenced)
		return
	}
	owner, ok := g.placement().Owner(user)
	switch {
	case ok && owner.ID == g.cfg.ID:
		g.m.movesCancelled.Inc() // the ring changed back
		return
	case !ok:
		// Nobody to move to: the clients retry through /v1/connect.
		h.closeAll(nil, closeNoOwner)
		return
	}
	cause := "ring"
	if g.draining.Load() {
		cause = "drain"
	}
	g.m.moves.WithLabelValues(cause).Inc()
	h.closeAll(moved(owner.URL))
}

// pendingMoves is how many moves are scheduled and not yet sent.
func (g *Gateway) pendingMoves() int {
	g.moveMu.Lock()
	defer g.moveMu.Unlock()
	return len(g.due)
}

// fence decides whether the gateway fences itself: its NATS connection has
// been down for fenceAfter while more than half of the other members pass
// in Consul (as its watcher sees it, and only while it can see: a watcher
// cut off from Consul knows nothing new). Then the others can deliver, and
// will route its users elsewhere once their watchers find it gone, so its
// sockets are closed with 1013, paced, and it accepts none. When NATS is
// down everywhere the others fail too and nobody fences; Consul alone being
// unreachable never fences. It unfences as soon as NATS is back.
func (g *Gateway) fence() {
	if g.reg.Load() == nil || g.draining.Load() {
		return
	}
	down := g.link.Down()
	cut := g.fenced.Load() && down > 0 // stays fenced until NATS is back
	if !cut && down >= fenceAfter {
		cut = g.othersPass()
	}
	if cut == g.fenced.Load() {
		return
	}
	g.fenced.Store(cut)
	if cut {
		g.log.Warn("NATS unreachable while the other gateways pass; closing every socket", "down_for", down.Round(time.Millisecond))
		g.planMoves("fenced")
	} else {
		g.log.Info("NATS reachable again; accepting sockets")
	}
}

// othersPass reports whether more than half of the ring's other members
// pass in Consul, by a watcher that can currently reach Consul.
func (g *Gateway) othersPass() bool {
	st := g.watcher.Status()
	if st.Degraded {
		return false
	}
	return othersPassing(g.Ring(), g.cfg.ID, st)
}

func othersPassing(r *ring.Ring, self string, st consul.Status) bool {
	others, passing := 0, 0
	for _, m := range r.Members() {
		if m.ID == self {
			continue
		}
		others++
		if slices.Contains(st.Passing, m.ID) {
			passing++
		}
	}
	return 2*passing > others
}
