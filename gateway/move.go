package gateway

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
)

// Moves. When the ring changes, each local user the gateway no longer owns
// is sent to its new owner: a moved frame, then close 4001. Moves are spread
// with jitter over MoveWindow, so a ring change does not make every client
// reconnect in the same instant, and capped at MovesPerSecond. Each is
// re-checked against the current ring right before it is sent and dropped
// if the ring no longer calls for it (a member that flapped back).
//
// The same pacing serves drain (the ring is then read without this
// gateway) and self-fencing (sockets are closed with 1013 instead: nobody
// here knows who the owner is).

// moveTick is how often the mover looks for due moves.
const moveTick = 50 * time.Millisecond

// planMoves schedules a move, somewhere within MoveWindow, for every local
// user this gateway does not own under the current placement. A user
// already scheduled keeps its earlier time.
func (g *Gateway) planMoves(why string) {
	now := time.Now()
	users := g.userList()
	placement := g.placement()
	g.moveMu.Lock()
	defer g.moveMu.Unlock()
	n := 0
	for _, u := range users {
		if !g.fenced.Load() {
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
	g.mu.Lock()
	h := g.hubs[user]
	g.mu.Unlock()
	if h == nil {
		return // gone already
	}
	if g.fenced.Load() {
		g.m.moves.WithLabelValues("fence").Inc()
		h.closeAll(wire.CloseTryAgainLater, "gateway cut off from Consul")
		return
	}
	owner, ok := g.placement().Owner(user)
	switch {
	case ok && owner.ID == g.cfg.ID:
		g.m.movesCancelled.Inc() // the ring changed back
		return
	case !ok:
		// Nobody to move to: the clients retry through /v1/connect.
		h.closeAll(wire.CloseTryAgainLater, "no gateway owns this user")
		return
	}
	cause := "ring"
	if g.draining.Load() {
		cause = "drain"
	}
	g.m.moves.WithLabelValues(cause).Inc()
	h.closeAllWith(wire.Encode(wire.Moved{Type: wire.TypeMoved, URL: owner.URL}), wire.CloseMoved, "moved")
}

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

// pendingMoves is how many moves are scheduled and not yet sent.
func (g *Gateway) pendingMoves() int {
	g.moveMu.Lock()
	defer g.moveMu.Unlock()
	return len(g.due)
}
