package dispatcher

import (
	"context"
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

// rings is the current ring and, within the grace window, the one before.
type rings struct {
	cur, prev *ring.Ring
	until     time.Time // end of the grace window
}

// owners returns the user's owner and, within the grace window, its
// previous owner if that differs.
func (r *rings) owners(user string, now time.Time) (owner, previous ring.Member, ok, both bool) {
	owner, ok = r.cur.Owner(user)
	if r.prev == nil || now.After(r.until) {
		return owner, ring.Member{}, ok, false
	}
	previous, had := r.prev.Owner(user)
	return owner, previous, ok, had && (!ok || previous.ID != owner.ID)
}

// followRings keeps d.rings up to date with the watcher until ctx ends.
func (d *Dispatcher) followRings(ctx context.Context, dst *atomic.Pointer[rings]) {
	for {
		r, changed := d.watcher.Ring()
		old := dst.Load()
		next := &rings{cur: r}
		if old != nil && old.cur != nil && r != old.cur {
			next.prev, next.until = old.cur, time.Now().Add(d.cfg.MoveWindow+graceSlack)
		} else if old != nil {
			next.prev, next.until = old.prev, old.until
		}
		dst.Store(next)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
