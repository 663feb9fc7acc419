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
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Config configures a Gateway. Zero fields take the defaults given.
type Config struct {
	// ID is the gateway ID: [A-Za-z0-9_-]{1,64}, unique in the cluster.
	// Required.
	ID string
	// Listener serves /ws and the health endpoints. If nil, Run listens on
	// Addr.
	Listener net.Listener
	Addr     string
	// PublicURL is the WebSocket URL clients use to reach this gateway, as
	// registered in Consul (meta ws_url). Required.
	PublicURL string
	// Weight in the ring, 1..16. If zero, 1.
	Weight int
	// Version is recorded in Consul meta.
	Version string

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
	// MaxSocketsPerUser; one more is closed with 4009. If zero, 8.
	MaxSocketsPerUser int
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
	} {
		if v < 0 {
			return fmt.Errorf("gateway: %s is negative", name)
		}
	}
	c.TTL = cmp.Or(c.TTL, 6*time.Second)
	c.AuthTimeout = cmp.Or(c.AuthTimeout, 5*time.Second)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, 10*time.Second)
	c.PingInterval = cmp.Or(c.PingInterval, 30*time.Second)
	c.AntiEntropy = cmp.Or(c.AntiEntropy, 10*time.Second)
	c.MoveWindow = cmp.Or(c.MoveWindow, 5*time.Second)
	c.DrainConverge = cmp.Or(c.DrainConverge, 2*time.Second)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 30*time.Second)
	c.MaxSocketsPerUser = cmp.Or(c.MaxSocketsPerUser, 8)
	c.MaxSockets = cmp.Or(c.MaxSockets, 19_000)
	c.BufferSize = cmp.Or(c.BufferSize, 64)
	c.BufferBytes = cmp.Or(c.BufferBytes, 256<<10)
	c.ReadBatch = cmp.Or(c.ReadBatch, 100)
	c.MaxReplays = cmp.Or(c.MaxReplays, 64)
	c.MovesPerSecond = cmp.Or(c.MovesPerSecond, 1000)
	c.MaxFrameBytes = cmp.Or(c.MaxFrameBytes, 4<<10)
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
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
	replays  chan struct{} // semaphore of concurrent session log reads

	inbox atomic.Pointer[inbox.Log] // nil until the stream exists
	epoch atomic.Pointer[string]
	jsOK  atomic.Bool // the last JetStream call of the monitor succeeded
	reg   atomic.Pointer[consul.Registration]
	live  atomic.Pointer[nats.Subscription] // the liveness responder
	serve atomic.Bool                       // accepting sockets
	wake  chan struct{}                     // asks the monitor for an epoch check now

	draining  atomic.Bool   // leaving: placement excludes this gateway
	fenced    atomic.Bool   // cut off from Consul for longer than the hold
	drainReq  chan struct{} // closed by Drain
	drainOnce sync.Once

	moveMu  sync.Mutex           // guards due and without
	due     map[string]time.Time // user → when to move it
	without struct{ from, ring *ring.Ring }

	conns sync.WaitGroup // socket handlers and the closes they start

	mu       sync.Mutex // guards the following
	hubs     map[string]*hub
	sockets  int
	runCtx   context.Context // ends when Run is stopping
	open     map[*websocket.Conn]struct{}
	stopping bool
}

// New checks cfg and returns a gateway ready to Run.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	v, err := token.NewVerifier(cfg.TokenSecrets...)
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
		replays:  make(chan struct{}, cfg.MaxReplays),
		wake:     make(chan struct{}, 1),
		hubs:     make(map[string]*hub),
		open:     make(map[*websocket.Conn]struct{}),
		drainReq: make(chan struct{}),
		due:      make(map[string]time.Time),
	}
	wc := cfg.Watch
	g.link = consul.NewLink(cfg.NATS)
	g.probe = consul.NATSProbe(g.link, wire.LiveSubject)
	wc.Client, wc.Probe, wc.Logger = cfg.Consul, g.probe, g.log
	if g.watcher, err = consul.NewWatcher(wc); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.m = newMetrics(g)
	return g, nil
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
	ln := g.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", g.cfg.Addr); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	subs, err := g.subscribe()
	if err != nil {
		ln.Close()
		return err
	}
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()

	srv := &http.Server{Handler: g.routes(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	eg, ctx := errgroup.WithContext(ctx)
	g.mu.Lock()
	g.runCtx = ctx
	g.mu.Unlock()
	eg.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("gateway: serve: %w", err)
		}
		return nil
	})
	eg.Go(func() error { g.link.Run(ctx); return nil })
	eg.Go(func() error { return g.watcher.Run(ctx) })
	eg.Go(func() error { return g.start(ctx) })
	eg.Go(func() error { g.monitor(ctx); return nil })
	eg.Go(func() error { g.mover(ctx); return nil })

	select {
	case <-ctx.Done():
	case <-g.drainReq:
		g.drain(ctx)
	}
	g.shutdown(srv)
	stop() // stops the goroutines of a gateway that drained
	return eg.Wait()
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
	g.draining.Store(true)
	if reg := g.reg.Load(); reg != nil {
		if err := reg.Close(); err != nil {
			g.log.Warn("deregister", "error", err)
		}
	}
	if s := g.live.Load(); s != nil {
		s.Unsubscribe()
	}
	if !sleep(ctx, g.cfg.DrainConverge) {
		return
	}
	g.planMoves("drain")
	for g.stats().Sockets > 0 {
		if !sleep(ctx, 50*time.Millisecond) {
			g.log.Warn("drain timed out; closing the rest", "sockets", g.stats().Sockets)
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
	}
	for g.inbox.Load() == nil {
		l, err := inbox.Open(ctx, g.cfg.NATS, g.cfg.Log)
		if err == nil {
			g.inbox.Store(l)
			e := l.Epoch()
			g.epoch.Store(&e)
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
			Client: g.cfg.Consul, ID: g.cfg.ID, Address: host, Port: port,
			URL: g.cfg.PublicURL, Weight: g.cfg.Weight, Version: g.cfg.Version, Instance: g.instance,
			TTL: g.cfg.TTL, Health: g.health, Probe: g.probe, Logger: g.log,
		})
		if errors.Is(err, consul.ErrIDInUse) {
			return fmt.Errorf("gateway: %w", err)
		}
		if err == nil {
			g.reg.Store(reg)
			break
		}
		g.log.Warn("cannot register in Consul yet", "error", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
	live, err := g.cfg.NATS.Subscribe(wire.LiveSubject(g.cfg.ID), g.answerLiveness)
	if err != nil {
		return fmt.Errorf("gateway: subscribe liveness: %w", err)
	}
	g.live.Store(live)
	g.serve.Store(true)
	g.log.Info("gateway serving", "url", g.cfg.PublicURL, "instance", g.instance)
	<-ctx.Done()
	live.Unsubscribe()
	return nil
}

// health gates the Consul heartbeat: a gateway passes only while it can
// deliver (NATS connected, JetStream answering) and has a ring.
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

// answerLiveness answers a liveness probe with this process's nonce and
// health.
func (g *Gateway) answerLiveness(m *nats.Msg) {
	r := consul.LiveReply{Instance: g.instance, Healthy: true}
	if err := g.health(); err != nil {
		r.Healthy, r.Reason = false, err.Error()
	}
	m.Respond(r.Encode())
}

// subscribe listens for doorbells, broadcasts and stats requests.
func (g *Gateway) subscribe() ([]*nats.Subscription, error) {
	nc := g.cfg.NATS
	handle := g.onDoorbell
	if g.cfg.DoorbellHook != nil {
		handle = g.cfg.DoorbellHook(handle)
	}
	var subs []*nats.Subscription
	for subj, h := range map[string]nats.MsgHandler{
		wire.GatewaySubject(g.cfg.ID): handle,
		wire.BroadcastSubject:         g.onBroadcast,
		wire.StatsSubject(g.cfg.ID):   g.onStats,
	} {
		s, err := nc.Subscribe(subj, h)
		if err != nil {
			for _, s := range subs {
				s.Unsubscribe()
			}
			return nil, fmt.Errorf("gateway: subscribe %s: %w", subj, err)
		}
		s.SetPendingLimits(-1, 256<<20) // doorbells are small; never drop them for count
		subs = append(subs, s)
	}
	return subs, nil
}

// shutdown deregisters, closes every socket and stops the HTTP server.
func (g *Gateway) shutdown(srv *http.Server) {
	g.serve.Store(false)
	if reg := g.reg.Load(); reg != nil {
		if err := reg.Close(); err != nil {
			g.log.Warn("deregister", "error", err)
		}
	}
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	for _, h := range g.hubList() {
		h.closeAll(wire.CloseServiceRestart, "gateway shutting down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	// Shutdown does not wait for hijacked (WebSocket) connections. Give
	// the closing handshakes a moment, then cut whatever is left, such as
	// sockets that never sent their auth frame.
	done := make(chan struct{})
	go func() { g.conns.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(2 * time.Second):
	}
	g.mu.Lock()
	for c := range g.open {
		c.CloseNow()
	}
	g.mu.Unlock()
	<-done
}

// track remembers an accepted connection so shutdown can close it; false
// if the gateway is stopping.
func (g *Gateway) track(c *websocket.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return false
	}
	g.open[c] = struct{}{}
	return true
}

func (g *Gateway) untrack(c *websocket.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.open, c)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
