package dispatcher

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
)

// The /v1/connect hold. A gateway that crashed stays in the ring until its
// Consul check's TTL expires; meanwhile its clients can only retry blindly
// and then wait out a backoff that has grown. A client that names the
// gateway it could not reach (?unreachable=<id>) is instead held until the
// ring names another owner, and reaches it as soon as the ring converges.
const (
	// holdProbe is how often a held request's owner is probed (one probe
	// per gateway, shared by every request held for it).
	holdProbe = time.Second
	// holdSpread spreads the answers one ring change releases, so the
	// clients do not all reach their new owners in the same instant.
	holdSpread = 500 * time.Millisecond
	// maxHeld bounds the requests held at once; beyond it they are answered
	// at once, as without the hint.
	maxHeld = 20000
)

// holdConnect answers a client that could not reach owner id, the user's
// owner in the current ring. It returns the ring and owner to answer with:
// a new owner as soon as the ring names one; the same one when it answers
// its liveness probe (it restarted, or only this client cannot reach it),
// when the dispatcher cannot probe (its NATS connection is down: the probe
// cannot tell, and DESIGN.md counts that as alive), after ConnectHold, and
// when the dispatcher shuts down.
func (d *Dispatcher) holdConnect(ctx context.Context, user, id string) (*ring.Ring, ring.Member, bool) {
	if d.held.Add(1) > maxHeld {
		d.held.Add(-1)
		d.metrics.connectHolds.WithLabelValues("full").Inc()
		rg := d.Ring()
		m, ok := rg.Owner(user)
		return rg, m, ok
	}
	outcome := "timeout"
	defer func() {
		d.held.Add(-1)
		d.metrics.connectHolds.WithLabelValues(outcome).Inc()
	}()
	hctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectHold)
	defer cancel()
	for {
		rg, changed := d.watcher.Ring()
		m, ok := rg.Owner(user)
		if !ok || m.ID != id {
			outcome = "moved"
			select {
			case <-time.After(rand.N(holdSpread)):
			case <-hctx.Done():
			case <-d.closing:
			}
			return rg, m, ok
		}
		switch d.probes.state(hctx, id) {
		case consul.Alive:
			outcome = "alive"
			return rg, m, ok
		case consul.Unknown:
			if !d.cfg.NATS.IsConnected() {
				outcome = "unknown"
				return rg, m, ok
			}
		}
		t := time.NewTimer(holdProbe)
		select {
		case <-changed:
		case <-t.C:
		case <-hctx.Done():
			if ctx.Err() != nil {
				outcome = "gone" // the client left
			}
			return rg, m, ok
		case <-d.closing:
			outcome = "closing"
			return rg, m, ok
		}
		t.Stop()
	}
}

// probes shares liveness probes among held requests: when a gateway
// crashes most of its clients are held at once, and one probe a second
// answers all of them. An "alive" is shared only with the requests that
// waited for it: the next request probes again, since a gateway alive a
// moment ago may be the one its client just lost.
type probes struct {
	probe consul.Probe
	mu    sync.Mutex // guards last
	last  map[string]*probeResult
}

type probeResult struct {
	done  chan struct{} // closed when state is set
	state consul.State
	at    time.Time // when the probe was sent
}

// state returns the gateway's liveness from a probe sent less than
// holdProbe ago, waiting for one in flight, or probes now.
func (p *probes) state(ctx context.Context, id string) consul.State {
	p.mu.Lock()
	r := p.last[id]
	if r == nil || time.Since(r.at) >= holdProbe {
		r = &probeResult{done: make(chan struct{}), at: time.Now()}
		p.last[id] = r
		p.mu.Unlock()
		// Not on ctx: the result is shared with requests that outlive it.
		pctx, cancel := context.WithTimeout(context.Background(), holdProbe)
		r.state = p.probe(pctx, id).State
		cancel()
		close(r.done)
		if r.state == consul.Alive {
			p.mu.Lock()
			if p.last[id] == r {
				delete(p.last, id)
			}
			p.mu.Unlock()
		}
		return r.state
	}
	p.mu.Unlock()
	select {
	case <-r.done:
		return r.state
	case <-ctx.Done():
		return consul.Unknown
	}
}
