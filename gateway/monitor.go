package gateway

import (
	"context"
	"sync"
	"time"
)

// tick is the monitor's period: how often it checks health, the epoch, slow
// writes, NATS reconnects and ring changes. linkTick is how often it looks
// at the NATS connection, for fencing and for telling Consul at once.
const (
	tick     = time.Second
	linkTick = 100 * time.Millisecond
)

// watchLink follows the NATS connection until ctx ends: it tells Consul at
// once when the connection drops or returns, rather than at the next
// heartbeat, so that the others see this gateway fail (or pass) within a
// moment — a gateway that lost NATS alone must not take a shared outage for
// its own — and decides about fencing. It runs apart from the monitor,
// whose rounds can wait seconds on an unreachable JetStream.
func (g *Gateway) watchLink(ctx context.Context) {
	t := time.NewTicker(linkTick)
	defer t.Stop()
	connected := g.cfg.NATS.IsConnected()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		func() {
			defer g.tasks.recover("monitor", nil)
			if c := g.cfg.NATS.IsConnected(); c != connected {
				connected = c
				if reg := g.reg.Load(); reg != nil {
					reg.Check()
				}
			}
			g.place.fence(g.reg.Load() != nil)
		}()
	}
}

// monitor runs the gateway's periodic work until ctx ends: the epoch and
// JetStream health, anti-entropy (every AntiEntropy, and at once after a
// NATS reconnect, a ring change or an epoch check request), the slow-write
// watchdog, and the expiry of delivery waiters and connect
// budgets. A panic in one round is recovered; the next round runs.
func (g *Gateway) monitor(ctx context.Context) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var (
		reconnects  = g.cfg.NATS.Stats().Reconnects
		ring, _     = g.watcher.Ring()
		nextPass    = time.Now().Add(g.cfg.AntiEntropy)
		passDone    = make(chan struct{}, 1)
		passRunning bool
		passAgain   string // a trigger that came during a pass: run another after it
	)
	pass := func(why string) {
		if passRunning {
			passAgain = why
			return
		}
		if g.users.reader() == nil {
			return
		}
		if g.tasks.goNamed("anti_entropy", func() {
			defer func() { passDone <- struct{}{} }()
			g.antiEntropy(ctx, why)
		}) {
			passRunning = true
			nextPass = time.Now().Add(g.cfg.AntiEntropy)
		}
	}
	round := func(f func()) {
		defer g.tasks.recover("monitor", nil)
		f()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-passDone:
			passRunning = false
			if passAgain != "" {
				why := passAgain
				passAgain = ""
				pass(why)
			}
			continue
		case <-g.wake:
			round(func() { g.checkEpoch(ctx) })
			continue
		case <-t.C:
		}
		round(func() {
			now := time.Now()
			g.checkEpoch(ctx)
			g.watchdog(now)
			if r := g.cfg.NATS.Stats().Reconnects; r != reconnects {
				reconnects = r
				pass("nats reconnect")
			}
			if r, _ := g.watcher.Ring(); r != ring {
				ring = r
				pass("ring change")
				g.place.plan("ring change")
			}
			if now.After(nextPass) {
				pass("periodic")
				for _, h := range g.users.list() {
					h.expireWaiters(now)
				}
				g.edge.sweep(now)
			}
		})
	}
}

// checkEpoch reads the stream's epoch; this is also the JetStream health
// check. A new epoch closes every socket with 1012: their clients come back
// with their old cursors and get a gap.
func (g *Gateway) checkEpoch(ctx context.Context) {
	if g.inbox.Load() == nil {
		return
	}
	e, err := g.epochs.check(ctx)
	g.jsOK.Store(err == nil)
	if err != nil || e == g.currentEpoch() {
		return
	}
	g.log.Warn("the log has a new epoch; closing every socket", "epoch", e)
	g.epoch.Store(&e)
	g.users.closeEpoch()
}

// checkEpochSoon asks the monitor for an epoch check now.
func (g *Gateway) checkEpochSoon() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *Gateway) currentEpoch() string {
	if e := g.epoch.Load(); e != nil {
		return *e
	}
	return ""
}

// antiEntropy re-reads the log head of every local user, in batches paced
// over a tenth of the period, and repairs the hubs that fell behind. Each
// batch's heads are confirmed to come from the hubs' epoch.
func (g *Gateway) antiEntropy(ctx context.Context, why string) {
	l := g.inbox.Load()
	users := g.users.names()
	if len(users) == 0 || l == nil {
		return
	}
	g.m.antiEntropyPasses.WithLabelValues(why).Inc()
	const batch = 256
	batches := (len(users) + batch - 1) / batch
	pace := g.cfg.AntiEntropy / 10 / time.Duration(batches)
	for i := 0; i < len(users); i += batch {
		chunk := users[i:min(i+batch, len(users))]
		g.m.logReads.WithLabelValues("heads").Inc()
		heads, err := l.Heads(ctx, chunk)
		var epoch string
		if err == nil {
			epoch, err = g.epochs.check(ctx)
		}
		if err != nil {
			g.log.Warn("anti-entropy: reading heads", "error", err)
			return
		}
		for _, u := range chunk {
			if h := g.users.hub(u); h != nil {
				h.sync(heads[u], epoch)
			}
		}
		if i+batch < len(users) && !sleep(ctx, pace) {
			return
		}
	}
}

// watchdog marks sessions whose write has outlived WriteTimeout as slow.
// The writer closes a slow session with 4008 as soon as its write returns;
// one still stuck after a grace period (the write timeout, at least 5s) is
// dropped without ceremony: its peer is gone or will not read.
func (g *Gateway) watchdog(now time.Time) {
	limit := now.Add(-g.cfg.WriteTimeout).UnixNano()
	g.users.forSessions(func(s *session) {
		if w := s.writing.Load(); w != 0 && w < limit && !s.slow.Swap(true) {
			g.m.slowDetected.Inc()
			g.log.Info("slow consumer", "user", s.h.user)
			g.tasks.afterFunc(max(g.cfg.WriteTimeout, 5*time.Second), "watchdog", func() {
				if s.writing.Load() != 0 {
					s.c.CloseNow()
				}
			})
		}
	})
}

// epochGate refreshes the stream's epoch for readers that must know their
// read came from their hub's epoch. check returns the result of a refresh
// that began after check was called, so anything the caller read before
// calling came from the stream whose epoch it returns; concurrent callers
// share refreshes, so a burst of readers costs a few requests, not one each.
// The callers run the refreshes themselves: no goroutine of its own.
type epochGate struct {
	refresh func(ctx context.Context) (string, error)

	mu      sync.Mutex // guards the following
	started uint64     // refreshes begun
	cur     *epochRound
}

type epochRound struct {
	n     uint64
	done  chan struct{}
	epoch string
	err   error
}

// epochTimeout bounds one refresh.
const epochTimeout = 2 * time.Second

// run runs round r and ends it, whatever the refresh does: a refresh that
// panicked must not leave every reader waiting for a round that never ends.
func (e *epochGate) run(ctx context.Context, r *epochRound) {
	defer func() {
		e.mu.Lock()
		e.cur = nil
		e.mu.Unlock()
		close(r.done)
	}()
	r.err = errNotReady // if the refresh panics
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), epochTimeout)
	defer cancel()
	r.epoch, r.err = e.refresh(rctx)
}

func (e *epochGate) check(ctx context.Context) (string, error) {
	e.mu.Lock()
	after := e.started // a round numbered above this began after the call
	for {
		if e.cur == nil {
			e.started++
			r := &epochRound{n: e.started, done: make(chan struct{})}
			e.cur = r
			e.mu.Unlock()
			e.run(ctx, r)
			return r.epoch, r.err
		}
		r := e.cur
		e.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if r.n > after {
			return r.epoch, r.err
		}
		e.mu.Lock()
	}
}
