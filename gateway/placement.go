package gateway

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
)

// placement decides which users this gateway should hold, and sends away
// the ones it should not.
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
type placement struct {
	cfg     *Config // read-only
	log     *slog.Logger
	m       *metrics
	users   *users
	watcher *consul.Watcher
	link    *consul.Link
	tasks   *tasks

	draining atomic.Bool // leaving: the ring is read without this gateway
	fenced   atomic.Bool // cut off from NATS while the others pass

	// cutSince is when the gateway was last seen cut off while the others
	// passed; zero while it is not. Owned by fence's caller (watchLink).
	cutSince time.Time

	mu      sync.Mutex           // guards due and without
	due     map[string]time.Time // user → when to move it
	without struct{ from, ring *ring.Ring }
}

// moveTick is how often the mover looks for due moves.
const moveTick = 50 * time.Millisecond

// fenceAfter is how long the gateway's NATS connection must have been down
// before it fences itself. A reconnect within it fences nothing.
const fenceAfter = 3 * time.Second

// current is the ring ownership is judged by: the watcher's ring, or while
// draining that ring without this gateway, which the others will converge
// on.
func (p *placement) current() *ring.Ring {
	r, _ := p.watcher.Ring()
	return p.of(r)
}

// of is r as ownership is judged by it.
func (p *placement) of(r *ring.Ring) *ring.Ring {
	if !p.draining.Load() {
		return r
	}
	if _, in := r.Member(p.cfg.ID); !in {
		return r
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.without.from != r {
		var ms []ring.Member
		for _, m := range r.Members() {
			if m.ID != p.cfg.ID {
				ms = append(ms, m)
			}
		}
		w, err := ring.New(r.VNodes(), ms)
		if err != nil { // members of a valid ring: cannot happen
			p.log.Error("ring without this gateway", "error", err)
			return r
		}
		p.without.from, p.without.ring = r, w
	}
	return p.without.ring
}

// plan schedules a move, somewhere within MoveWindow, for every local user
// this gateway does not own under the current ring (every user, while
// fenced). A user already scheduled keeps its earlier time.
func (p *placement) plan(why string) {
	now := time.Now()
	users := p.users.names()
	r := p.current()
	fenced := p.fenced.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, u := range users {
		if !fenced {
			if owner, ok := r.Owner(u); ok && owner.ID == p.cfg.ID {
				continue
			}
		}
		at := now.Add(time.Duration(rand.Int64N(int64(p.cfg.MoveWindow) + 1)))
		if old, ok := p.due[u]; !ok || at.Before(old) {
			p.due[u] = at
		}
		n++
	}
	if n > 0 {
		p.log.Info("moving users", "why", why, "users", n, "window", p.cfg.MoveWindow)
	}
}

// run sends due moves until ctx ends, at most MovesPerSecond.
func (p *placement) run(ctx context.Context) {
	t := time.NewTicker(moveTick)
	defer t.Stop()
	perTick := max(1, int(float64(p.cfg.MovesPerSecond)*moveTick.Seconds()))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var batch []string
		p.mu.Lock()
		for u, at := range p.due {
			if len(batch) == perTick {
				break
			}
			if !at.After(now) {
				batch = append(batch, u)
				delete(p.due, u)
			}
		}
		p.mu.Unlock()
		for _, u := range batch {
			p.moveNow(u)
		}
	}
}

// moveNow re-checks the user's owner and, if it is still another gateway,
// moves the user's sockets there; while fenced it closes them with 1013.
func (p *placement) moveNow(user string) {
	defer p.tasks.recover("mover", nil)
	h := p.users.hub(user)
	if h == nil {
		return // gone already
	}
	if p.fenced.Load() {
		p.m.moves.WithLabelValues("fence").Inc()
		h.closeAll(nil, closeFenced)
		return
	}
	owner, ok := p.current().Owner(user)
	switch {
	case ok && owner.ID == p.cfg.ID:
		p.m.movesCancelled.Inc() // the ring changed back
		return
	case !ok:
		// Nobody to move to: the clients retry through /v1/connect.
		h.closeAll(nil, closeNoOwner)
		return
	}
	cause := "ring"
	if p.draining.Load() {
		cause = "drain"
	}
	p.m.moves.WithLabelValues(cause).Inc()
	h.closeAll(moved(owner.URL))
}

// pending is how many moves are scheduled and not yet sent.
func (p *placement) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.due)
}

// fence decides whether the gateway fences itself: its NATS connection has
// been down, and more than half of the other members have passed in Consul
// (as its watcher sees it, and only while it can see: a watcher cut off
// from Consul knows nothing new), both for fenceAfter. Both: after an
// outage of NATS everywhere, the others may come back a second or two
// before this gateway does, and its NATS has then been down for long, but
// it has been alone in that for a moment only. Then the others can deliver, and
// will route its users elsewhere once their watchers find it gone, so its
// sockets are closed with 1013, paced, and it accepts none. When NATS is
// down everywhere the others fail too and nobody fences; Consul alone being
// unreachable never fences. It unfences as soon as NATS is back. A gateway
// not registered yet, or draining, does not fence.
func (p *placement) fence(registered bool) {
	if !registered || p.draining.Load() {
		return
	}
	down := p.link.Down()
	cut := p.fenced.Load() && down > 0 // stays fenced until NATS is back
	switch {
	case down == 0 || !p.othersPass():
		p.cutSince = time.Time{}
	case p.cutSince.IsZero():
		p.cutSince = time.Now()
	}
	if !cut && down >= fenceAfter && !p.cutSince.IsZero() {
		cut = time.Since(p.cutSince) >= fenceAfter
	}
	if cut == p.fenced.Load() {
		return
	}
	p.fenced.Store(cut)
	if cut {
		p.log.Warn("NATS unreachable while the other gateways pass; closing every socket", "down_for", down.Round(time.Millisecond))
		p.plan("fenced")
	} else {
		p.log.Info("NATS reachable again; accepting sockets")
	}
}

// othersPass reports whether more than half of the ring's other members
// pass in Consul, by a watcher that can currently reach Consul.
func (p *placement) othersPass() bool {
	st := p.watcher.Status()
	if st.Degraded {
		return false
	}
	r, _ := p.watcher.Ring()
	others, passing := 0, 0
	for _, m := range r.Members() {
		if m.ID == p.cfg.ID {
			continue
		}
		others++
		if slices.Contains(st.Passing, m.ID) {
			passing++
		}
	}
	return 2*passing > others
}
