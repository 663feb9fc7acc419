package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
)

// Config configures a Client. Only Token and one of Dispatcher or URL are
// required; every other zero field gets the default it names.
type Config struct {
	// Dispatcher is a dispatcher's base URL (http://host:port). Before each
	// connect the client asks it where the user's socket goes (POST
	// /v1/connect), so it lands on the owner the ring names. A 401 gets a
	// new token once, then Run returns ErrUnauthorized; other errors are
	// retried with backoff. If empty, every connect uses URL.
	Dispatcher string
	// URL, if set, is a gateway WebSocket URL for the first connect instead
	// of asking the dispatcher (the ring fingerprint is then empty).
	URL string
	// Token returns a user token. It is called before the first connect,
	// after close 4004 and after a 401 from the dispatcher. Errors are
	// retried with backoff, except one wrapping ErrUnauthorized, which makes
	// Run return it. Required.
	Token func(ctx context.Context) (string, error)
	// Since and Epoch are the cursor to start from. Zero: the whole
	// retained log.
	Since uint64
	Epoch string
	// Start and Last choose where a device without a cursor (no Epoch)
	// starts: wire.StartAll (the default), wire.StartLive (only what comes
	// after it connects) or wire.StartLast with the last Last messages
	// (1..wire.MaxLast). The choice is made once: the gateway's hello gives
	// the client its cursor, and every reconnect resumes from it.
	Start string
	Last  int
	// OnFrame, if set, is called with every frame exactly as received
	// (before dedupe), with the ID of the gateway that sent it (from its
	// hello, the hello included; "" for frames before it), so tests can
	// assert on the wire itself. It is called from the same goroutine as
	// OnEvent, before the frame is acted on.
	OnFrame func(gateway string, f wire.ServerFrame)
	// OnEvent, if set, receives notifications (after dedupe by seq), gaps,
	// broadcasts and status changes, in order, from one goroutine. It should
	// not block for long: reading and acking wait for it.
	OnEvent func(Event)
	// NoAck turns acks off (for tests of wait=delivered timeouts). By
	// default each notification is acked after OnEvent returns.
	NoAck bool
	// HTTPClient is used for /v1/connect and the WebSocket dials; its
	// Timeout bounds each. If nil, a client of its own with a 10s timeout,
	// whose idle connections Run closes when it returns.
	HTTPClient *http.Client
	// BackoffBase is the full-jitter backoff base: a retry waits a random
	// time in [0, min(BackoffMax, BackoffBase·2^attempt)]. If zero, 250ms.
	BackoffBase time.Duration
	// BackoffMax caps the backoff. If zero, 10s: the cap bounds how long a
	// device whose gateway died waits, once the ring has dropped it, before
	// it lands on the new owner.
	BackoffMax time.Duration
	// StableAfter is how long a connection must last to reset the backoff
	// attempt counter. If zero, 10s.
	StableAfter time.Duration
	// TooManySocketsBackoff is the minimum wait after close 4009 (the user
	// has too many sockets; a quick retry would only be refused again). If
	// zero, 5s.
	TooManySocketsBackoff time.Duration
	// PingInterval is how often the client sends {"type":"ping"}. A socket
	// on which no frame at all arrives for 2×PingInterval is considered dead
	// and is reconnected with backoff. If zero, 25s.
	PingInterval time.Duration
	// Logger receives the client's logs. If nil, they are discarded.
	Logger *slog.Logger
}

// Defaults for zero Config fields, and fixed parameters of the protocol.
const (
	defaultHTTPTimeout           = 10 * time.Second
	defaultBackoffBase           = 250 * time.Millisecond
	defaultBackoffMax            = 10 * time.Second
	defaultStableAfter           = 10 * time.Second
	defaultTooManySocketsBackoff = 5 * time.Second
	defaultPingInterval          = 25 * time.Second

	// moveWindow: a client moved twice within it goes back through
	// /v1/connect with backoff, so two gateways with different views of
	// the ring cannot bounce it forever (DESIGN.md).
	moveWindow = 10 * time.Second
	// closeGrace is how long a closing client waits for the gateway to
	// answer its close frame before dropping the connection.
	closeGrace = 2 * time.Second
	// writeTimeout bounds each frame the client writes; a write that times
	// out ends the socket (coder/websocket closes it).
	writeTimeout = 10 * time.Second
	// maxFrameBytes bounds one frame from a gateway: a 64 KiB payload with
	// its envelope fits with room to spare.
	maxFrameBytes = 1 << 20
)

// ErrUnauthorized is returned by Run when a gateway closed with 4003 or the
// dispatcher answered 401 to a fresh token: retrying cannot help, the
// caller must fix its credentials. Token may return it (wrapped or not) to
// make Run stop.
var ErrUnauthorized = errors.New("client: unauthorized")

// Client keeps one user's socket open. Create it with New and drive it with
// Run; Cursor and Stats may be called from any goroutine.
type Client struct {
	cfg      Config
	hc       *http.Client // for /v1/connect
	wsClient *http.Client // hc for WebSocket dials, recording raw streams
	ownHC    bool         // hc is ours: Run closes its idle connections
	log      *slog.Logger

	// Tests shorten these.
	moveWindow time.Duration
	closeGrace time.Duration

	running atomic.Bool // a Run is active

	mu    sync.Mutex // guards the following
	epoch string     // cursor: the log epoch...
	seq   uint64     // ...and the last seq delivered in it
	stats Stats
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Client, error) {
	if cfg.Token == nil {
		return nil, errors.New("client: Config.Token is required")
	}
	if cfg.Dispatcher == "" && cfg.URL == "" {
		return nil, errors.New("client: Config.Dispatcher or Config.URL is required")
	}
	if cfg.Dispatcher != "" {
		if err := checkURL(cfg.Dispatcher, "http", "https"); err != nil {
			return nil, fmt.Errorf("client: Config.Dispatcher: %w", err)
		}
		cfg.Dispatcher = strings.TrimRight(cfg.Dispatcher, "/")
	}
	if cfg.URL != "" {
		if err := checkURL(cfg.URL, "ws", "wss", "http", "https"); err != nil {
			return nil, fmt.Errorf("client: Config.URL: %w", err)
		}
	}
	start, err := wire.CheckStart(cfg.Start, cfg.Last)
	if err != nil {
		return nil, fmt.Errorf("client: Config.Start: %w", err)
	}
	cfg.Start = start
	if len(cfg.Epoch) > wire.MaxEpochBytes {
		return nil, fmt.Errorf("client: Config.Epoch over %d bytes", wire.MaxEpochBytes)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"BackoffBase", &cfg.BackoffBase, defaultBackoffBase},
		{"BackoffMax", &cfg.BackoffMax, defaultBackoffMax},
		{"StableAfter", &cfg.StableAfter, defaultStableAfter},
		{"TooManySocketsBackoff", &cfg.TooManySocketsBackoff, defaultTooManySocketsBackoff},
		{"PingInterval", &cfg.PingInterval, defaultPingInterval},
	} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("client: Config.%s is negative", d.name)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		return nil, fmt.Errorf("client: Config.BackoffMax %v is below BackoffBase %v", cfg.BackoffMax, cfg.BackoffBase)
	}
	c := &Client{
		cfg:        cfg,
		hc:         cfg.HTTPClient,
		log:        cfg.Logger,
		moveWindow: moveWindow,
		closeGrace: closeGrace,
		epoch:      cfg.Epoch,
		seq:        cfg.Since,
	}
	if c.hc == nil {
		// A transport of our own, so Run can close its idle connections
		// and leave no goroutine behind.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		c.hc = &http.Client{Timeout: defaultHTTPTimeout, Transport: tr}
		c.ownHC = true
	}
	base := c.hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	ws := *c.hc
	ws.Transport = recordRaw{base: base}
	c.wsClient = &ws
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

func checkURL(s string, schemes ...string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	for _, sc := range schemes {
		if u.Scheme == sc && u.Host != "" {
			return nil
		}
	}
	return fmt.Errorf("%q is not a %s URL with a host", s, strings.Join(schemes, " or "))
}

// Cursor returns the position the client would resume from: the log epoch
// and the last seq delivered in it.
func (c *Client) Cursor() (epoch string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.seq
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// count applies f to the counters under the lock.
func (c *Client) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

func (c *Client) setCursor(epoch string, seq uint64) {
	c.mu.Lock()
	c.epoch, c.seq = epoch, seq
	c.mu.Unlock()
}

func (c *Client) emit(e Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}

// Run connects and keeps the user's socket open until ctx ends, then closes
// the socket with 1000, waits for every goroutine it started and returns
// nil. It returns ErrUnauthorized after close 4003 or a 401 that a fresh
// token does not fix. Only one Run may be active at a time; a later Run
// resumes from the cursor.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("client: Run is already running")
	}
	defer c.running.Store(false)
	if c.ownHC {
		defer c.hc.CloseIdleConnections()
	}
	r := &run{c: c, next: c.cfg.URL}
	err := r.loop(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// run is the state of one Run, owned by its goroutine.
type run struct {
	c     *Client
	token string
	next  string // URL to dial without asking the dispatcher; "" to ask
	// unreachable is the gateway the last socket ended on without a close
	// frame (a failed dial, a dropped or dead socket), named in the next
	// /v1/connect; "" otherwise.
	unreachable string
	attempt     int       // backoffs since the last stable connection
	lastMove    time.Time // when the last 4001 came
}

func (r *run) loop(ctx context.Context) error {
	if err := r.fetchToken(ctx); err != nil {
		return err
	}
	for {
		rt := route{URL: r.next}
		r.next = ""
		if rt.URL == "" {
			var err error
			if rt, err = r.resolve(ctx, r.unreachable); err != nil {
				if errors.Is(err, ErrUnauthorized) || ctx.Err() != nil {
					return err
				}
				r.backoff(ctx, Status{Err: err}, 0)
				continue
			}
		}
		out := r.c.session(ctx, rt.URL, rt.Ring, r.token, r.attempt)
		if ctx.Err() != nil {
			return nil
		}
		r.unreachable = ""
		if out.code == 0 {
			r.unreachable = cmp.Or(out.gateway, rt.Gateway)
		}
		if out.stable {
			r.attempt = 0
		}
		if err := r.afterSocket(ctx, out); err != nil {
			return err
		}
	}
}

// afterSocket decides, from how a socket ended, what the next connect is.
func (r *run) afterSocket(ctx context.Context, out outcome) error {
	s := Status{Gateway: out.gateway, URL: out.url, CloseCode: out.code, Err: out.err}
	log := r.c.log.With("gateway", out.gateway, "url", out.url, "code", out.code, "err", out.err)
	if out.code == wire.CloseUnauthorized {
		log.Warn("unauthorized; stopping")
		r.c.emit(Event{Kind: EventStatus, Status: s})
		return ErrUnauthorized
	}
	r.c.count(func(st *Stats) { st.Reconnects++ })
	switch out.code {
	case wire.CloseMoved:
		now := time.Now()
		recent := !r.lastMove.IsZero() && now.Sub(r.lastMove) < r.c.moveWindow
		r.lastMove = now
		r.c.count(func(st *Stats) { st.Moves++ })
		if out.moved != "" && !recent {
			log.Info("moved", "to", out.moved)
			r.next = out.moved
			s.Attempt = r.attempt
			r.c.emit(Event{Kind: EventStatus, Status: s})
			return nil
		}
		// Moved again so soon (or not told where): two gateways may
		// disagree on the ring. The dispatcher's view, after a pause,
		// settles it.
		log.Info("moved again within the move window; asking the dispatcher", "to", out.moved, "window", r.c.moveWindow)
		r.c.count(func(st *Stats) { st.MovesViaDispatcher++ })
		r.backoff(ctx, s, 0)
	case wire.CloseTokenExpired:
		if out.hello {
			log.Info("token expired; getting a new one")
			s.Attempt = r.attempt
			r.c.emit(Event{Kind: EventStatus, Status: s})
		} else {
			// The token was already expired when we sent it: without a
			// pause a Token func that keeps returning it would spin.
			r.backoff(ctx, s, 0)
			if ctx.Err() != nil {
				return nil
			}
		}
		return r.fetchToken(ctx)
	case wire.CloseTooManySockets:
		r.backoff(ctx, s, r.c.cfg.TooManySocketsBackoff)
	default:
		// 1012, 1013, 4002, 4008, a dead socket, a network error, anything
		// else: back off, then ask the dispatcher again.
		r.backoff(ctx, s, 0)
	}
	return nil
}

// backoff reports s with a full-jitter delay of at least floor, advances
// the attempt counter, and waits out the delay or ctx.
func (r *run) backoff(ctx context.Context, s Status, floor time.Duration) {
	d := floor + fullJitter(r.attempt, r.c.cfg.BackoffBase, r.c.cfg.BackoffMax)
	s.Attempt, s.Backoff = r.attempt, d
	if r.attempt < maxAttempt {
		r.attempt++
	}
	r.c.count(func(st *Stats) { st.Backoffs++ })
	r.c.log.Debug("backing off", "attempt", s.Attempt, "delay", d, "code", s.CloseCode, "err", s.Err)
	r.c.emit(Event{Kind: EventStatus, Status: s})
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// fetchToken gets a token, retrying with backoff until it has one, ctx
// ends, or Token says ErrUnauthorized.
func (r *run) fetchToken(ctx context.Context) error {
	for {
		r.c.count(func(st *Stats) { st.TokenFetches++ })
		tok, err := r.c.cfg.Token(ctx)
		if err == nil && tok != "" {
			r.token = tok
			return nil
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnauthorized):
			return err
		case err == nil:
			err = errors.New("empty token")
		}
		r.c.log.Warn("getting a token", "err", err)
		r.backoff(ctx, Status{Err: fmt.Errorf("getting a token: %w", err)}, 0)
	}
}
