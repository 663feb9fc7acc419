package dispatcher

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/ring"
)

// The grace window. After a ring change, gateways move the users they no
// longer own over MoveWindow; until a user has moved, its socket is still
// on the previous owner while converged dispatchers already ring the new
// one. So for MoveWindow plus 2s after a change, doorbells for a user whose
// owner changed go to both: the gateway holding the socket delivers, the
// other has no hub for the user and drops the doorbell (a socket's cursor
// makes any double delivery harmless).

// graceSlack is added to MoveWindow: moves in flight at the window's end
// and watchers a little behind.
const graceSlack = 2 * time.Second

// rings is the current ring and the previous ones still within their
// grace windows: a user may sit on the owner of any of them while moves are
// under way, even across two quick changes.
type rings struct {
	cur  *ring.Ring
	prev []graceRing // newest first
}

type graceRing struct {
	ring  *ring.Ring
	until time.Time // end of its grace window
}

// owners returns the user's owner in the current ring (ok false if it is
// empty) and the distinct other owners of the rings still in grace.
func (r *rings) owners(user string, now time.Time) (owner ring.Member, ok bool, others []string) {
	owner, ok = r.cur.Owner(user)
	for _, p := range r.prev {
		if now.After(p.until) {
			continue
		}
		if m, had := p.ring.Owner(user); had && (!ok || m.ID != owner.ID) && !slices.Contains(others, m.ID) {
			others = append(others, m.ID)
		}
	}
	return owner, ok, others
}

// followRings keeps dst up to date with the watcher until ctx ends.
func (d *Dispatcher) followRings(ctx context.Context, dst *atomic.Pointer[rings]) {
	for {
		r, changed := d.watcher.Ring()
		now := time.Now()
		next := &rings{cur: r}
		if old := dst.Load(); old != nil {
			if old.cur != nil && r != old.cur {
				next.prev = append(next.prev, graceRing{ring: old.cur, until: now.Add(d.cfg.MoveWindow + graceSlack)})
			}
			for _, p := range old.prev {
				if now.Before(p.until) {
					next.prev = append(next.prev, p)
				}
			}
		}
		dst.Store(next)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
