package dispatcher

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/ring"
	"github.com/nats-io/nats.go"
)

// The grace window. After a ring change, gateways move the users they no
// longer own; until a user has moved, its socket is still on the previous
// owner while converged dispatchers already ring the new one. So after a
// change, doorbells for a user whose owner changed go to both: the gateway
// holding the socket delivers, the other has no hub for the user and drops
// the doorbell (a socket's cursor makes any double delivery harmless).
//
// How long: at least MoveWindow plus graceSlack after the change, the time
// a move takes when the gateway paces it over its window. A gateway can
// take longer (a drain of 19k sockets at 1000 moves/s takes 19s), so while
// a previous owner's window is open the dispatcher asks it, about once a
// graceProbe, how many moves it still has pending (wire.GatewayStats, on
// its stats subject), and keeps ringing it while it reports some, plus
// graceSlack after it reports none. An owner that answers "no responders"
// holds no sockets: its extension ends at once. One that does not answer,
// or answers nonsense, is not extended further: what it was granted runs
// out within graceProbe + graceSlack. And no extension lasts beyond
// maxGraceExtension after the change, whatever the gateway reports.

// graceSlack is added to MoveWindow, and to the last report of moves
// pending: moves in flight at the window's end and watchers a little
// behind.
const graceSlack = 2 * time.Second

// graceProbe is how often a previous owner whose window is open is asked
// for its moves pending.
const graceProbe = time.Second

// maxGraceExtension bounds how long after a ring change a previous owner is
// rung, however long it reports moves pending: a gateway whose count never
// drops (a bug, a move stuck) must not be rung twice forever. Two minutes
// cover a full gateway (19k sockets) moving at a sixth of the default 1000
// moves/s; users still on it afterwards get their messages from the
// gateway's anti-entropy instead (within 10s).
const maxGraceExtension = 2 * time.Minute

// rings is the current ring and the previous ones still within their
// grace windows: a user may sit on the owner of any of them while moves are
// under way, even across two quick changes. It is read-only once published.
type rings struct {
	cur  *ring.Ring
	prev []graceRing // newest first
	// extended is, per gateway, when the extension its reports of moves
	// pending earned ends.
	extended map[string]time.Time
}

type graceRing struct {
	ring  *ring.Ring
	until time.Time // end of its base window: MoveWindow + graceSlack after the change
	limit time.Time // end of any extension: maxGraceExtension after the change
}

// inGrace reports whether a gateway, an owner in p whose extension lasts
// until extended, is still rung as a previous owner at now.
func inGrace(p graceRing, extended, now time.Time) bool {
	return now.Before(p.until) || (now.Before(p.limit) && now.Before(extended))
}

// owners returns the user's owner in the current ring (ok false if it is
// empty) and the distinct other owners of the rings still in grace.
func (r *rings) owners(user string, now time.Time) (owner ring.Member, ok bool, others []string) {
	owner, ok = r.cur.Owner(user)
	for _, p := range r.prev {
		m, had := p.ring.Owner(user)
		if !had || (ok && m.ID == owner.ID) || slices.Contains(others, m.ID) || !inGrace(p, r.extended[m.ID], now) {
			continue
		}
		others = append(others, m.ID)
	}
	return owner, ok, others
}

// extendedCount is how many gateways are rung beyond their base window at
// now, for the metric.
func (r *rings) extendedCount(now time.Time) int {
	n := 0
	for _, until := range r.extended {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// graceState is what followRings builds the published rings from. It is
// owned by followRings's goroutine; its methods take the time so tests can
// drive it.
type graceState struct {
	moveWindow time.Duration
	cur        *ring.Ring
	prev       []graceRing // newest first
	ext        map[string]extension
}

// extension is a previous owner's window beyond the base one.
type extension struct {
	until time.Time
	done  bool // it reported no moves pending: until is the slack after that report
}

// setRing makes r the current ring; the one it replaces enters its grace
// window.
func (s *graceState) setRing(r *ring.Ring, now time.Time) {
	if s.cur != nil && r != s.cur {
		base := s.moveWindow + graceSlack
		s.prev = slices.Insert(s.prev, 0, graceRing{ring: s.cur, until: now.Add(base), limit: now.Add(max(base, maxGraceExtension))})
	}
	s.cur = r
}

// toPoll lists the gateways to ask for their moves pending at now: the
// members of the previous rings whose windows are open. (Every member, not
// only those that lost users: which ones did is a question about arcs the
// ring does not answer cheaply, and a member that moves nobody answers 0.)
func (s *graceState) toPoll(now time.Time) []string {
	var ids []string
	for _, p := range s.prev {
		for _, m := range p.ring.Members() {
			if !slices.Contains(ids, m.ID) && inGrace(p, s.ext[m.ID].until, now) {
				ids = append(ids, m.ID)
			}
		}
	}
	return ids
}

// report takes gateway id's answer to a poll, received at now.
func (s *graceState) report(id string, a statsAnswer, now time.Time) {
	switch {
	case errors.Is(a.err, nats.ErrNoResponders):
		delete(s.ext, id) // nobody serves its subject: it holds no sockets
	case a.err != nil:
		// No answer: not extended further; the last grant runs out.
	case a.stats.MovesPending > 0:
		// Until the next poll can renew it, and the slack after.
		s.ext[id] = extension{until: now.Add(graceProbe + graceSlack)}
	default:
		// Done moving: the slack, from the first report of none.
		if e, ok := s.ext[id]; ok && !e.done && now.Before(e.until) {
			s.ext[id] = extension{until: now.Add(graceSlack), done: true}
		}
	}
}

// prune drops what can no longer ring anyone at now: previous rings none
// of whose members is in grace, and extensions that have run out.
func (s *graceState) prune(now time.Time) {
	s.prev = slices.DeleteFunc(s.prev, func(p graceRing) bool {
		return !slices.ContainsFunc(p.ring.Members(), func(m ring.Member) bool { return inGrace(p, s.ext[m.ID].until, now) })
	})
	maps.DeleteFunc(s.ext, func(_ string, e extension) bool { return !now.Before(e.until) })
}

// publish returns the rings to route with, sharing nothing with s.
func (s *graceState) publish() *rings {
	r := &rings{cur: s.cur, prev: slices.Clone(s.prev), extended: make(map[string]time.Time, len(s.ext))}
	for id, e := range s.ext {
		r.extended[id] = e.until
	}
	return r
}

// followRings keeps dst up to date with the watcher, and with the previous
// owners' reports of moves pending, until ctx ends. It polls in a goroutine
// of its own, one round at a time, so a slow gateway never delays a ring
// change; it waits for that goroutine before returning.
func (d *Dispatcher) followRings(ctx context.Context, dst *atomic.Pointer[rings]) {
	s := graceState{moveWindow: d.cfg.MoveWindow, ext: map[string]extension{}}
	r, changed := d.watcher.Ring()
	s.setRing(r, time.Now())
	dst.Store(s.publish())

	tick := time.NewTicker(graceProbe)
	defer tick.Stop()
	answers := make(chan map[string]statsAnswer, 1) // one round in flight at most
	var wg sync.WaitGroup
	defer wg.Wait()
	polling := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			r, changed = d.watcher.Ring()
			s.setRing(r, time.Now())
		case <-tick.C:
			if ids := s.toPoll(time.Now()); !polling && len(ids) > 0 {
				polling = true
				wg.Go(func() { answers <- d.requestStats(ctx, ids) })
			}
		case got := <-answers:
			polling = false
			now := time.Now()
			for id, a := range got {
				s.report(id, a, now)
			}
		}
		s.prune(time.Now())
		dst.Store(s.publish())
	}
}
