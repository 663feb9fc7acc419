package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
)

// Config configures a Gateway. Zero fields take the defaults given.
type Config struct {
	// ID is the gateway ID: [A-Za-z0-9_-]{1,64}, unique in the cluster.
	// Required.
	ID string
	// Listener serves /ws, /healthz and /readyz. If nil, Run listens on
	// Addr.
	Listener net.Listener
	Addr     string
	// AdminListener serves operators: /metrics, /healthz, /readyz, and
	// /debug/pprof/ when Pprof is set. If nil, Run listens on AdminAddr; if
	// that is empty too, there is no admin listener.
	AdminListener net.Listener
	AdminAddr     string
	// Pprof serves the runtime profiles on the admin listener. Off by
	// default: profiles cost CPU and show internals.
	Pprof bool
	// PublicURL is the WebSocket URL clients use to reach this gateway, as
	// registered in Consul (meta ws_url). Required.
	PublicURL string
	// Weight in the ring, 1..16. If zero, 1.
	Weight int
	// Version is recorded in Consul meta.
	Version string
	// Deployment scopes the NATS subjects, the log's stream (unless
	// Log.Stream names one) and the Consul service name; empty is the
	// default deployment, with herald's historical names.
	Deployment wire.Deployment

	// NATS carries doorbells, liveness and log reads. Required.
	NATS *nats.Conn
	// Log names the stream (only Stream matters: dispatchers create it).
	Log inbox.Config
	// Consul is the gateway's local agent. Required.
	Consul *api.Client
	// TTL of the Consul check. If zero, 6s.
	TTL time.Duration
	// Watch overrides the ring watcher's settings (Hold, Debounce, VNodes,
	// ...); Client, Probe and Logger are filled in.
	Watch consul.WatchConfig

	// TokenSecrets verify user tokens; any of them may have signed one.
	// Required.
	TokenSecrets [][]byte
	// TokenAudience and TokenIssuer, if set, are required in every user
	// token's aud and iss claims.
	TokenAudience, TokenIssuer string
	// OriginPatterns are the browser origins allowed to open sockets
	// (coder/websocket AcceptOptions.OriginPatterns). Same-host requests
	// are always allowed.
	OriginPatterns []string

	// AuthTimeout is how long a socket may take to send its auth frame.
	// If zero, 5s.
	AuthTimeout time.Duration
	// WriteTimeout: a write that takes longer closes the socket with 4008.
	// If zero, 10s.
	WriteTimeout time.Duration
	// PingInterval between WebSocket pings that detect dead peers. If zero,
	// 30s.
	PingInterval time.Duration
	// MaxSocketsPerUser; one more is closed with 4009, before any work on
	// the log. If zero, 8.
	MaxSocketsPerUser int
	// ConnectsPerUser and ConnectBurst are each user's connect budget on
	// this gateway: a token bucket of ConnectBurst refilled at
	// ConnectsPerUser a second; a connect over it is closed with 4009. If
	// zero, 1 a second with a burst of twice MaxSocketsPerUser, so a user's
	// devices all coming back after a ring change are never refused.
	ConnectsPerUser float64
	ConnectBurst    int
	// MaxUnauthenticated bounds the sockets that have not sent their auth
	// frame yet, and MaxUnauthenticatedPerAddr those from one client
	// address; one more is closed with 1013 at once. If zero, 2000 and 200.
	MaxUnauthenticated        int
	MaxUnauthenticatedPerAddr int
	// TrustedProxies are the addresses or CIDRs of proxies in front of the
	// gateway whose X-Forwarded-For names the client's address; from any
	// other peer the header is ignored.
	TrustedProxies []string
	// MaxSockets on this gateway; one more is closed with 1013. If zero,
	// 19,000 (the process's file limit here is 20,000).
	MaxSockets int
	// MaxFrameBytes is the largest frame a client may send. If zero, 4 KiB.
	MaxFrameBytes int64
	// BufferSize is how many recent frames each hub keeps. If zero, 64.
	BufferSize int
	// BufferBytes bounds the bytes of those frames, so large payloads do
	// not make every connected user expensive; sessions behind the buffer
	// read the log. If zero, 256 KiB.
	BufferBytes int
	// ReadBatch is how many messages one log read fetches. If zero, 100.
	ReadBatch int
	// MaxReplays bounds concurrent log reads for sessions catching up. If
	// zero, 64.
	MaxReplays int
	// AntiEntropy is the period of the full head re-read. If zero, 10s.
	AntiEntropy time.Duration
	// MoveWindow spreads the moves a ring change calls for (moved + 4001)
	// with jitter over this long. Dispatchers ring both owners for the
	// window plus 2s, so give them the same value. If zero, 5s.
	MoveWindow time.Duration
	// MovesPerSecond caps moves. If zero, 1000.
	MovesPerSecond int
	// DrainConverge is how long a draining gateway waits, after leaving
	// Consul, for the other components' rings to drop it before it moves
	// its users. If zero, 2s.
	DrainConverge time.Duration
	// DrainTimeout bounds a drain from start to exit. If zero, 30s.
	DrainTimeout time.Duration

	// DoorbellHook, if set, wraps doorbell handling: tests use it to drop,
	// duplicate, delay and reorder doorbells.
	DoorbellHook func(next func(*nats.Msg)) func(*nats.Msg)
	// Registry receives the gateway's metrics. If nil, a new one.
	Registry *prometheus.Registry
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
}

func (c *Config) fill() error {
	if err := ring.ValidateID(c.ID); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := consul.ValidateURL(c.PublicURL); err != nil {
		return fmt.Errorf("gateway: public URL: %w", err)
	}
	if err := c.Deployment.Validate(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	c.Log.Deployment = c.Deployment
	c.Log.Stream = cmp.Or(c.Log.Stream, c.Deployment.Stream())
	c.Watch.Service = cmp.Or(c.Watch.Service, c.Deployment.Service())
	switch {
	case c.NATS == nil:
		return errors.New("gateway: no NATS connection")
	case c.Consul == nil:
		return errors.New("gateway: no Consul client")
	case c.Listener == nil && c.Addr == "":
		return errors.New("gateway: no listener or address")
	}
	c.Weight = cmp.Or(c.Weight, 1)
	for name, v := range map[string]int64{
		"TTL": int64(c.TTL), "AuthTimeout": int64(c.AuthTimeout), "WriteTimeout": int64(c.WriteTimeout),
		"PingInterval": int64(c.PingInterval), "AntiEntropy": int64(c.AntiEntropy), "MoveWindow": int64(c.MoveWindow),
		"DrainConverge": int64(c.DrainConverge), "DrainTimeout": int64(c.DrainTimeout), "MaxSocketsPerUser": int64(c.MaxSocketsPerUser),
		"MaxSockets": int64(c.MaxSockets), "BufferSize": int64(c.BufferSize), "BufferBytes": int64(c.BufferBytes), "ReadBatch": int64(c.ReadBatch),
		"MaxReplays": int64(c.MaxReplays), "MovesPerSecond": int64(c.MovesPerSecond), "MaxFrameBytes": c.MaxFrameBytes,
		"ConnectBurst": int64(c.ConnectBurst), "MaxUnauthenticated": int64(c.MaxUnauthenticated),
		"MaxUnauthenticatedPerAddr": int64(c.MaxUnauthenticatedPerAddr),
	} {
		if v < 0 {
			return fmt.Errorf("gateway: %s is negative", name)
		}
	}
	if c.ConnectsPerUser < 0 {
		return errors.New("gateway: ConnectsPerUser is negative")
	}
	c.fillLimits()
	if c.Registry == nil {
		// A registry of its own also carries the Go runtime's and the
		// process's metrics (heap, goroutines, RSS, open files), which
		// say what each socket costs; a caller's registry may hold them
		// already.
		c.Registry = prometheus.NewRegistry()
		c.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// fillLimits fills the zero durations and limits with their defaults.
func (c *Config) fillLimits() {
	c.TTL = cmp.Or(c.TTL, 6*time.Second)
	c.AuthTimeout = cmp.Or(c.AuthTimeout, 5*time.Second)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, 10*time.Second)
	c.PingInterval = cmp.Or(c.PingInterval, 30*time.Second)
	c.AntiEntropy = cmp.Or(c.AntiEntropy, 10*time.Second)
	c.MoveWindow = cmp.Or(c.MoveWindow, 5*time.Second)
	c.DrainConverge = cmp.Or(c.DrainConverge, 2*time.Second)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 30*time.Second)
	c.MaxSocketsPerUser = cmp.Or(c.MaxSocketsPerUser, 8)
	c.ConnectsPerUser = cmp.Or(c.ConnectsPerUser, 1)
	c.ConnectBurst = cmp.Or(c.ConnectBurst, 2*c.MaxSocketsPerUser)
	c.MaxUnauthenticated = cmp.Or(c.MaxUnauthenticated, 2000)
	c.MaxUnauthenticatedPerAddr = cmp.Or(c.MaxUnauthenticatedPerAddr, 200)
	c.MaxSockets = cmp.Or(c.MaxSockets, 19_000)
	c.BufferSize = cmp.Or(c.BufferSize, 64)
	c.BufferBytes = cmp.Or(c.BufferBytes, 256<<10)
	c.ReadBatch = cmp.Or(c.ReadBatch, 100)
	c.MaxReplays = cmp.Or(c.MaxReplays, 64)
	c.MovesPerSecond = cmp.Or(c.MovesPerSecond, 1000)
	c.MaxFrameBytes = cmp.Or(c.MaxFrameBytes, 4<<10)
}

// Gateway is one socket server.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	verifier *token.Verifier
	instance string
	watcher  *consul.Watcher
	link     *consul.Link // the NATS connection's uptime and downtime
	probe    consul.Probe
	m        *metrics
	users    *users
	place    *placement
	edge     *edge
	tasks    *tasks
	epochs   epochGate

	inbox atomic.Pointer[inbox.Log] // nil until the stream exists
	epoch atomic.Pointer[string]
	jsOK  atomic.Bool // the last epoch check succeeded
	reg   atomic.Pointer[consul.Registration]
	live  atomic.Pointer[nats.Subscription] // the liveness responder
	serve atomic.Bool                       // accepting sockets
	wake  chan struct{}                     // asks the monitor for an epoch check now

	drainReq  chan struct{} // closed by Drain
	drainOnce sync.Once

	mu       sync.Mutex // guards the following
	open     map[conn]struct{}
	stopping bool
}

// New checks cfg and returns a gateway ready to Run.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	v, err := token.NewVerifierWith(token.Options{Secrets: cfg.TokenSecrets, Audience: cfg.TokenAudience, Issuer: cfg.TokenIssuer})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("gateway", cfg.ID),
		verifier: v,
		instance: hex.EncodeToString(b),
		wake:     make(chan struct{}, 1),
		open:     make(map[conn]struct{}),
		drainReq: make(chan struct{}),
	}
	g.link = consul.NewLink(cfg.NATS)
	g.probe = consul.NATSProbe(g.link, cfg.Deployment.Live)
	wc := cfg.Watch
	wc.Client, wc.Probe, wc.Logger = cfg.Consul, g.probe, g.log
	if g.watcher, err = consul.NewWatcher(wc); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.m = newMetrics(cfg.Registry)
	g.registerGauges()
	g.tasks = &tasks{onPanic: g.panicked}
	if g.edge, err = newEdge(&g.cfg, g.m); err != nil {
		return nil, fmt.Errorf("gateway: trusted proxies: %w", err)
	}
	g.epochs.refresh = func(ctx context.Context) (string, error) {
		l := g.inbox.Load()
		if l == nil {
			return "", errNotReady
		}
		return l.Refresh(ctx)
	}
	u := newUsers(&g.cfg, g.log, g.m, g.tasks)
	u.epoch, u.confirm, u.epochChanged, u.respond = g.currentEpoch, g.epochs.check, g.checkEpochSoon, g.respond
	g.users = u
	g.place = &placement{cfg: &g.cfg, log: g.log, m: g.m, users: u, watcher: g.watcher, link: g.link, tasks: g.tasks,
		due: make(map[string]time.Time)}
	return g, nil
}

// panicked reports a recovered panic: logged with its stack, counted by
// where it happened.
func (g *Gateway) panicked(where string, v any, stack []byte) {
	g.m.panics.WithLabelValues(where).Inc()
	g.log.Error("recovered a panic", "where", where, "panic", fmt.Sprint(v), "stack", string(stack))
}

// Instance is this process's nonce, the answer to liveness requests.
func (g *Gateway) Instance() string { return g.instance }

// Ring returns the gateway's current ring; nil before the first.
func (g *Gateway) Ring() *ring.Ring {
	r, _ := g.watcher.Ring()
	return r
}

// Run serves until ctx ends, then deregisters, closes every socket with 1012
// (clients reconnect with jitter) and returns once every goroutine it started
// has ended. It returns early with an error if it cannot listen, subscribe,
// or claim its gateway ID.
func (g *Gateway) Run(ctx context.Context) error {
	ln, admin, err := g.listen()
	if err != nil {
		return err
	}
	subs, err := g.subscribe()
	if err != nil {
		ln.Close()
		if admin != nil {
			admin.Close()
		}
		return err
	}
	unsubscribe := func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}
	defer unsubscribe() // Unsubscribe twice is harmless

	srv := g.newServer(g.publicRoutes())
	servers := []*http.Server{srv}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	eg, ctx := errgroup.WithContext(ctx)
	g.users.ctx = ctx
	serve := func(s *http.Server, ln net.Listener) {
		eg.Go(func() error {
			if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("gateway: serve %s: %w", ln.Addr(), err)
			}
			return nil
		})
	}
	serve(srv, ln)
	if admin != nil {
		asrv := g.newServer(g.adminRoutes())
		servers = append(servers, asrv)
		serve(asrv, admin)
	}
	eg.Go(func() error { g.link.Run(ctx); return nil })
	eg.Go(func() error { return g.watcher.Run(ctx) })
	eg.Go(func() error { return g.start(ctx) })
	eg.Go(func() error { g.monitor(ctx); return nil })
	eg.Go(func() error { g.watchLink(ctx); return nil })
	eg.Go(func() error { g.place.run(ctx); return nil })

	select {
	case <-ctx.Done():
	case <-g.drainReq:
		g.drain(ctx)
	}
	g.shutdown(servers)
	stop() // stops the goroutines of a gateway that drained
	err = eg.Wait()
	unsubscribe() // no NATS callback runs once the counted goroutines are waited for
	g.stopSockets()
	return err
}

// listen opens the public and admin listeners, unless given: first, so
// that "address in use" is Run's error.
func (g *Gateway) listen() (public, admin net.Listener, err error) {
	public, admin = g.cfg.Listener, g.cfg.AdminListener
	if public == nil {
		if public, err = net.Listen("tcp", g.cfg.Addr); err != nil {
			return nil, nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if admin == nil && g.cfg.AdminAddr != "" {
		if admin, err = net.Listen("tcp", g.cfg.AdminAddr); err != nil {
			public.Close()
			return nil, nil, fmt.Errorf("gateway: admin listener: %w", err)
		}
	}
	return public, admin, nil
}

// Drain makes Run leave gracefully: deregister from Consul and stop
// answering liveness (so watchers drop this gateway at once rather than
// hold it), wait DrainConverge for them, keep delivering while every user
// is moved to its next owner with pacing, then return, within
// DrainTimeout. Cancelling Run's context still stops it at once.
func (g *Gateway) Drain() {
	g.drainOnce.Do(func() { close(g.drainReq) })
}

func (g *Gateway) drain(ctx context.Context) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, g.cfg.DrainTimeout)
	defer cancel()
	g.log.Info("draining")
	g.leave(func() { g.place.draining.Store(true) })
	if !sleep(ctx, g.cfg.DrainConverge) {
		return
	}
	g.place.plan("drain")
	for sockets, _ := g.users.counts(); sockets > 0; sockets, _ = g.users.counts() {
		if !sleep(ctx, 50*time.Millisecond) {
			g.log.Warn("drain timed out; closing the rest", "sockets", sockets)
			return
		}
	}
	g.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
}

// start waits for what a gateway needs before it accepts sockets (a ring,
// the stream), then claims its ID in Consul and starts answering liveness.
func (g *Gateway) start(ctx context.Context) error {
	_, changed := g.watcher.Ring()
	for r, _ := g.watcher.Ring(); r == nil; r, _ = g.watcher.Ring() {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		_, changed = g.watcher.Ring()
	}
	for g.inbox.Load() == nil {
		l, err := inbox.Open(ctx, g.cfg.NATS, g.cfg.Log)
		if err == nil {
			e := l.Epoch()
			g.epoch.Store(&e)
			g.inbox.Store(l)
			g.users.src.Store(&logBox{l})
			g.jsOK.Store(true)
			break
		}
		g.log.Warn("waiting for the log stream", "error", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
	host, port := addrOf(g.cfg.PublicURL)
	for {
		reg, err := consul.Register(ctx, consul.RegisterConfig{
			Client: g.cfg.Consul, ID: g.cfg.ID, Service: g.cfg.Watch.Service, Address: host, Port: port,
			URL: g.cfg.PublicURL, Weight: g.cfg.Weight, Version: g.cfg.Version, Instance: g.instance,
			TTL: g.cfg.TTL, Health: g.health, Probe: g.probe, Logger: g.log,
		})
		if errors.Is(err, consul.ErrIDInUse) {
			return fmt.Errorf("gateway: %w", err)
		}
		if err == nil {
			if !g.keep(func() { g.reg.Store(reg) }) {
				reg.Close() // draining or stopping meanwhile: leave at once
				return nil
			}
			break
		}
		g.log.Warn("cannot register in Consul yet", "error", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
	live, err := g.cfg.NATS.Subscribe(g.cfg.Deployment.Live(g.cfg.ID), g.guarded("liveness", g.answerLiveness))
	if err != nil {
		return fmt.Errorf("gateway: subscribe liveness: %w", err)
	}
	if !g.keep(func() { g.live.Store(live) }) {
		live.Unsubscribe()
		return nil
	}
	g.serve.Store(true)
	g.log.Info("gateway serving", "url", g.cfg.PublicURL, "instance", g.instance)
	<-ctx.Done()
	live.Unsubscribe()
	return nil
}

// health gates the Consul heartbeat and the liveness reply: a gateway is
// healthy only while it can deliver (NATS connected, JetStream answering)
// and has a ring.
func (g *Gateway) health() error {
	switch {
	case !g.cfg.NATS.IsConnected():
		return errors.New("NATS disconnected")
	case !g.jsOK.Load():
		return errors.New("JetStream not answering")
	case g.Ring() == nil:
		return errors.New("no ring yet")
	}
	return nil
}

// shutdown deregisters, closes every socket with 1012 and stops the HTTP
// servers.
func (g *Gateway) shutdown(servers []*http.Server) {
	g.serve.Store(false)
	g.leave(func() { g.stopping = true })
	for _, h := range g.users.list() {
		h.closeAll(nil, closeShutdown)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(ctx)
	}
}

// stopSockets waits for the socket handlers and every other counted
// goroutine. Shutdown does not wait for hijacked (WebSocket) connections:
// the closing handshakes get a moment, then whatever is left is cut, such
// as sockets that never sent their auth frame.
func (g *Gateway) stopSockets() {
	g.tasks.close()
	if g.tasks.wait(2 * time.Second) {
		return
	}
	g.mu.Lock()
	for c := range g.open {
		c.CloseNow()
	}
	g.mu.Unlock()
	g.tasks.wait(0)
}

// keep stores what start has claimed (the registration, the liveness
// responder) unless the gateway is leaving: false then, and the caller
// gives it up at once. g.mu orders it against leave, so a registration
// that completes while a drain or shutdown begins is never left behind.
func (g *Gateway) keep(store func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping || g.place.draining.Load() {
		return false
	}
	store()
	return true
}

// leave marks the gateway leaving (mark runs under g.mu), then deregisters
// and stops answering liveness, so that watchers drop it at once rather
// than hold it.
func (g *Gateway) leave(mark func()) {
	g.mu.Lock()
	mark()
	reg, live := g.reg.Load(), g.live.Load()
	g.mu.Unlock()
	if reg != nil {
		if err := reg.Close(); err != nil {
			g.log.Warn("deregister", "error", err)
		}
	}
	if live != nil {
		live.Unsubscribe()
	}
}

// track remembers an accepted connection so shutdown can close it; false
// if the gateway is stopping.
func (g *Gateway) track(c conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return false
	}
	g.open[c] = struct{}{}
	return true
}

func (g *Gateway) untrack(c conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.open, c)
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
