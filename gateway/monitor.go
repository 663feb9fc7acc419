package gateway

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
)

// tick is the monitor's period: how often it checks health, the epoch, slow
// writes, NATS reconnects and ring changes.
const tick = time.Second

// monitor runs the gateway's periodic work until ctx ends: the epoch and
// JetStream health, anti-entropy (every AntiEntropy, and at once after a
// NATS reconnect, a ring change or an epoch check request), the slow-write
// watchdog and the expiry of delivery waiters.
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
		if g.inbox.Load() == nil {
			return
		}
		passRunning = true
		nextPass = time.Now().Add(g.cfg.AntiEntropy)
		go func() {
			defer func() { passDone <- struct{}{} }()
			g.antiEntropy(ctx, why)
		}()
	}
	defer func() {
		if passRunning {
			<-passDone
		}
	}()
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
			g.checkEpoch(ctx)
			continue
		case <-t.C:
		}
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
			g.planMoves("ring change")
		}
		g.fence()
		if now.After(nextPass) {
			pass("periodic")
			g.expireWaiters(now)
		}
	}
}

// checkEpoch reads the stream's epoch; this is also the JetStream health
// check. A new epoch closes every socket with 1012: their clients come back
// with their old cursors and get a gap.
func (g *Gateway) checkEpoch(ctx context.Context) {
	l := g.inbox.Load()
	if l == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	e, err := l.Refresh(cctx)
	g.jsOK.Store(err == nil)
	if err != nil || e == g.currentEpoch() {
		return
	}
	g.log.Warn("the log has a new epoch; closing every socket", "epoch", e)
	g.epoch.Store(&e)
	g.mu.Lock()
	hubs := make([]*hub, 0, len(g.hubs))
	for user, h := range g.hubs {
		hubs = append(hubs, h)
		delete(g.hubs, user) // new sockets build new hubs in the new epoch
	}
	g.mu.Unlock()
	for _, h := range hubs {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		h.closeAll(wire.CloseServiceRestart, "log recreated")
	}
}

// fence closes every socket, paced, once the gateway has been cut off from
// Consul for longer than the hold period: by then the others have dropped
// it from their rings and route its users elsewhere. While fenced it
// accepts no sockets; it unfences when Consul answers again.
func (g *Gateway) fence() {
	reg := g.reg.Load()
	if reg == nil || g.draining.Load() {
		return
	}
	cut := reg.Unreachable() > g.watcher.Hold()
	if cut == g.fenced.Load() {
		return
	}
	g.fenced.Store(cut)
	if cut {
		g.log.Warn("cut off from Consul for longer than the hold period; closing every socket", "unreachable_for", reg.Unreachable().Round(time.Millisecond))
		g.planMoves("fenced")
	} else {
		g.log.Info("Consul reachable again; accepting sockets")
	}
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
// over a tenth of the period, and repairs the hubs that fell behind.
func (g *Gateway) antiEntropy(ctx context.Context, why string) {
	l := g.inbox.Load()
	users := g.userList()
	if len(users) == 0 {
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
		if err != nil {
			g.log.Warn("anti-entropy: reading heads", "error", err)
			return
		}
		for _, u := range chunk {
			g.mu.Lock()
			h := g.hubs[u]
			g.mu.Unlock()
			if h != nil {
				h.sync(heads[u])
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
	g.forSessions(func(s *session) {
		if w := s.writing.Load(); w != 0 && w < limit && !s.slow.Swap(true) {
			g.m.slowDetected.Inc()
			g.log.Info("slow consumer", "user", s.h.user)
			time.AfterFunc(max(g.cfg.WriteTimeout, 5*time.Second), func() {
				if s.writing.Load() != 0 {
					s.c.CloseNow()
				}
			})
		}
	})
}

func (g *Gateway) expireWaiters(now time.Time) {
	for _, h := range g.hubList() {
		h.expireWaiters(now)
	}
}

// hubList and userList copy the hubs map's values and keys, so callers
// work on them without holding g.mu.
func (g *Gateway) hubList() []*hub {
	g.mu.Lock()
	defer g.mu.Unlock()
	hubs := make([]*hub, 0, len(g.hubs))
	for _, h := range g.hubs {
		hubs = append(hubs, h)
	}
	return hubs
}

func (g *Gateway) userList() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	users := make([]string, 0, len(g.hubs))
	for u := range g.hubs {
		users = append(users, u)
	}
	return users
}

// forSessions calls f for every session, holding no lock during f.
func (g *Gateway) forSessions(f func(*session)) {
	var ss []*session
	g.mu.Lock()
	for _, h := range g.hubs {
		h.mu.Lock()
		for s := range h.sessions {
			ss = append(ss, s)
		}
		h.mu.Unlock()
	}
	g.mu.Unlock()
	for _, s := range ss {
		f(s)
	}
}

// onDoorbell routes a doorbell to its user's hub; a user with no hub here
// has no socket here.
func (g *Gateway) onDoorbell(m *nats.Msg) {
	d, err := wire.DecodeDoorbell(m.Header, m.Data)
	if err != nil {
		g.m.doorbellBad.Inc()
		g.log.Debug("bad doorbell", "error", err)
		return
	}
	g.mu.Lock()
	h := g.hubs[d.User]
	g.mu.Unlock()
	if h == nil {
		g.m.doorbellOffline.Inc()
		if m.Reply != "" {
			g.respond(m.Reply, wire.Offline)
		}
		return
	}
	h.doorbell(d, m.Reply)
}

// onBroadcast hands a broadcast to every session. A session whose control
// queue is full misses it: broadcasts are live-only and best effort.
func (g *Gateway) onBroadcast(m *nats.Msg) {
	frame, err := wire.DecodeBroadcast(m.Header, m.Data)
	if err != nil {
		g.log.Debug("bad broadcast", "error", err)
		return
	}
	var sent, dropped int
	g.forSessions(func(s *session) {
		select {
		case s.ctrl <- frame:
			sent++
		default:
			dropped++
		}
	})
	g.m.broadcastSent.Add(float64(sent))
	g.m.broadcastDropped.Add(float64(dropped))
}

func (g *Gateway) onStats(m *nats.Msg) {
	st := g.stats()
	b, _ := json.Marshal(st)
	m.Respond(b)
}

func (g *Gateway) stats() wire.GatewayStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return wire.GatewayStats{Gateway: g.cfg.ID, Sockets: g.sockets, Users: len(g.hubs)}
}

func (g *Gateway) context() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runCtx
}

// addrOf reads the address to register from the public URL.
func addrOf(u string) (host string, port int) {
	p, err := url.Parse(u)
	if err != nil {
		return "", 0
	}
	if ps := p.Port(); ps != "" {
		port, _ = strconv.Atoi(ps)
	} else if p.Scheme == "wss" {
		port = 443
	} else {
		port = 80
	}
	return p.Hostname(), port
}
