package dispatcher

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// Dispatcher is herald's stateless HTTP API. Create it with New and serve
// with Run.
type Dispatcher struct {
	cfg      Config
	log      *slog.Logger
	watcher  *consul.Watcher
	verifier *token.Verifier
	keys     []apiKey // read-only after New
	registry *prometheus.Registry
	metrics  *metrics
	handler  http.Handler
	stats    statsCache
	link     *consul.Link // the NATS connection's uptime, for the watcher's probe

	// inbox is nil until Run has ensured the stream; then set once.
	inbox   atomic.Pointer[inbox.Log]
	rings   atomic.Pointer[rings] // the current ring and, in a grace window, the previous
	running atomic.Bool
	flight  inflight
	probes  probes        // liveness over NATS, shared by /v1/connect's holds
	held    atomic.Int64  // /v1/connect requests being held
	closing chan struct{} // closed when shutdown begins: holds answer at once
}

// apiKey is an accepted API key, kept only as its hash (compared in
// constant time), with its own rate limiter.
type apiKey struct {
	sum     [sha256.Size]byte
	limiter *rate.Limiter
}

// shutdownGrace is how long Run lets requests in flight finish once its
// context ends, before it cancels them: an append's whole deadline (the
// log's AppendTimeout, 15s by default, long enough to ride out a leader
// election) and room to answer, so no append in flight is cut off from its
// answer. Only long wait=delivered requests are cut short, and answer
// "timeout".
func (d *Dispatcher) shutdownGrace() time.Duration { return d.cfg.Log.AppendTimeout + 5*time.Second }

// writeTimeout bounds the writing of an API answer: it must outlast the
// longest request, or its client gets a broken connection instead of its
// answer, which for an append is the one thing it needs. A single
// notification takes at most a delivery wait and an append; a batch, its
// users in rounds of batchConcurrency, each at most an append deadline
// (a user's later items are not tried once one fails).
func (d *Dispatcher) writeTimeout() time.Duration {
	rounds := time.Duration((d.cfg.MaxBatch + batchConcurrency - 1) / batchConcurrency)
	return max(d.cfg.MaxWait+d.cfg.Log.AppendTimeout, rounds*d.cfg.Log.AppendTimeout) + 30*time.Second
}

// New checks cfg, fills its defaults and builds a dispatcher. It does no
// I/O: Run connects the pieces.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	v, err := token.NewVerifierWith(token.Options{Secrets: cfg.TokenSecrets, Audience: cfg.TokenAudience, Issuer: cfg.TokenIssuer})
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	d := &Dispatcher{log: cfg.Logger, verifier: v}
	if cfg.Dev && len(cfg.APIKeys) == 0 {
		key := "dev-" + crand.Text()
		cfg.APIKeys = []string{key}
		d.log.Warn("dev mode: no API key configured; generated one (also served by GET /v1/dev/config)", "api_key", key)
	}
	if cfg.Dev {
		d.log.Warn("dev mode: /v1/dev/token and /v1/dev/config hand out user tokens and the API key to anyone")
	}
	if cfg.NATS.Opts.ReconnectBufSize != -1 {
		d.log.Warn("the NATS connection buffers while reconnecting; create it with nats.ReconnectBufSize(-1) so an append during an outage fails at once rather than after its timeout")
	}
	seen := map[[sha256.Size]byte]bool{}
	for _, k := range cfg.APIKeys {
		sum := sha256.Sum256([]byte(k))
		if seen[sum] {
			continue
		}
		seen[sum] = true
		d.keys = append(d.keys, apiKey{sum: sum, limiter: rate.NewLimiter(cfg.RateLimit, cfg.RateBurst)})
	}
	d.cfg = cfg

	wc := cfg.Watch
	wc.Client = cfg.Consul
	d.link = consul.NewLink(cfg.NATS)
	if d.cfg.Log.DownFor == nil {
		d.cfg.Log.DownFor = d.link.Down
	}
	wc.Probe = consul.NATSProbe(d.link, cfg.Deployment.Live)
	wc.Service = cmp.Or(wc.Service, cfg.Deployment.Service())
	d.probes = probes{probe: wc.Probe, last: map[string]*probeResult{}}
	d.closing = make(chan struct{})
	wc.Logger = cfg.Logger.With("component", "watcher")
	if d.watcher, err = consul.NewWatcher(wc); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	d.registry = cfg.Registry
	if d.registry == nil {
		d.registry = newRegistry()
	}
	if d.metrics, err = newMetrics(d, d.registry); err != nil {
		return nil, err
	}
	d.handler = d.routes()
	return d, nil
}

// Ring returns the dispatcher's current ring: nil until the watcher has
// built the first one, empty while no gateway passes.
func (d *Dispatcher) Ring() *ring.Ring {
	r, _ := d.watcher.Ring()
	return r
}

// Run listens (first, on the API's and the admin address, so "address in
// use" is its error), then serves the API and the admin endpoints, watches
// the ring and ensures the log until ctx ends. It then shuts both HTTP
// servers down, letting requests in flight finish for a grace period, and
// returns after every goroutine it started has ended: nil after ctx ended,
// or the error that stopped it. Run closes the listeners, its own and those
// it was given. Run may be called once.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("dispatcher: Run called more than once")
	}
	ln, adminLn, err := d.listen()
	if err != nil {
		return err
	}
	// Requests run on a context that outlives ctx by the grace period:
	// ending ctx must not cancel an append halfway.
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	listeners := []net.Listener{ln}
	attrs := []any{"addr", ln.Addr().String(), "dev", d.cfg.Dev}
	if adminLn != nil {
		listeners = append(listeners, adminLn)
		attrs = append(attrs, "admin", adminLn.Addr().String(), "pprof", d.cfg.Pprof)
	}
	servers := d.servers(reqCtx, adminLn != nil)
	d.log.Info("dispatcher listening", attrs...)

	g, gctx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("dispatcher: serve %s: %w", listeners[i].Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		d.shutdown(servers, cancelRequests)
		return nil
	})
	g.Go(func() error { d.link.Run(gctx); return nil })
	g.Go(func() error { return d.watcher.Run(gctx) })
	g.Go(func() error { d.followRings(gctx, &d.rings); return nil })
	g.Go(func() error { return d.runLog(gctx) })
	return g.Wait()
}

// servers are the API's HTTP server and, with admin, the admin listener's.
// Their requests run on reqCtx.
func (d *Dispatcher) servers(reqCtx context.Context, admin bool) []*http.Server {
	base := func(net.Listener) context.Context { return reqCtx }
	errorLog := slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)
	servers := []*http.Server{{
		Handler:           d.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      d.writeTimeout(),
		IdleTimeout:       2 * time.Minute,
		BaseContext:       base,
		ErrorLog:          errorLog,
	}}
	if admin {
		servers = append(servers, &http.Server{
			Handler:           d.adminRoutes(),
			ReadHeaderTimeout: adminReadHeaderTimeout,
			ReadTimeout:       adminReadTimeout,
			WriteTimeout:      adminWriteTimeout,
			IdleTimeout:       adminIdleTimeout,
			BaseContext:       base,
			ErrorLog:          errorLog,
		})
	}
	return servers
}

// The admin listener's timeouts. Its requests carry no body, and scrapes
// and probes answer at once; the write timeout leaves room for a CPU
// profile or an execution trace of up to two minutes (pprof refuses a
// ?seconds= at or over it).
const (
	adminReadHeaderTimeout = 5 * time.Second
	adminReadTimeout       = 10 * time.Second
	adminWriteTimeout      = 2 * time.Minute
	adminIdleTimeout       = 2 * time.Minute
)

// listen returns the API's listener and the admin one (nil when there is
// none), listening where none was given. On failure it closes both.
func (d *Dispatcher) listen() (ln, admin net.Listener, err error) {
	ln, admin = d.cfg.Listener, d.cfg.AdminListener
	if ln == nil {
		if ln, err = net.Listen("tcp", d.cfg.Addr); err != nil {
			err = fmt.Errorf("dispatcher: %w", err)
		}
	}
	if err == nil && admin == nil && d.cfg.AdminAddr != "" {
		if admin, err = net.Listen("tcp", d.cfg.AdminAddr); err != nil {
			err = fmt.Errorf("dispatcher: admin listener: %w", err)
		}
	}
	if err != nil {
		for _, l := range []net.Listener{ln, admin} {
			if l != nil {
				l.Close()
			}
		}
		return nil, nil, err
	}
	return ln, admin, nil
}

// shutdown stops the servers gracefully, then by force, and waits for every
// handler to return.
func (d *Dispatcher) shutdown(servers []*http.Server, cancelRequests context.CancelFunc) {
	grace := d.shutdownGrace()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	close(d.closing)
	var wg sync.WaitGroup
	var forced atomic.Bool
	for _, srv := range servers {
		wg.Go(func() {
			if err := srv.Shutdown(ctx); err != nil {
				forced.Store(true)
			}
		})
	}
	wg.Wait()
	if forced.Load() {
		d.log.Warn("requests still running after the grace period; cancelling them", "grace", grace)
		cancelRequests()
		for _, srv := range servers {
			srv.Close()
		}
	}
	d.flight.closeAndWait()
}

// inflight counts the handlers running, so Run can return only after the
// last one, even when the server was closed by force (http.Server does not
// wait for handlers then). A handler that starts after closing has begun
// is refused instead of racing the wait.
type inflight struct {
	mu     sync.Mutex // guards closed and the transitions of wg
	closed bool
	wg     sync.WaitGroup
}

func (f *inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

func (f *inflight) leave() { f.wg.Done() }

func (f *inflight) closeAndWait() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}
