package dispatcher

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Config configures a Dispatcher. Zero fields take the defaults their
// comments name.
type Config struct {
	// Listener serves the API. If nil, Run listens on Addr.
	Listener net.Listener
	// Addr is where Run listens when Listener is nil, e.g. "127.0.0.1:8080".
	Addr string
	// AdminListener serves the operators' endpoints: /metrics, /healthz,
	// /readyz and, with Pprof, /debug/pprof/. If nil, Run listens on
	// AdminAddr; if that is empty too, there is no admin listener (and no
	// /metrics). Keep it off the public network: metrics and profiles are
	// for the operators, not for whoever reaches the API.
	AdminListener net.Listener
	// AdminAddr is where Run listens when AdminListener is nil, e.g.
	// "127.0.0.1:9080".
	AdminAddr string
	// Pprof serves net/http/pprof's profiles under /debug/pprof/ on the
	// admin listener. Off by default: a profile costs CPU while it runs.
	Pprof bool

	// NATS carries appends, doorbells, broadcasts, liveness probes and
	// stats requests. Required. Create it with nats.ReconnectBufSize(-1):
	// a publish while reconnecting must fail at once rather than sit in a
	// buffer, so an append can be answered "certainly not stored".
	NATS *nats.Conn
	// Deployment scopes the NATS subjects, the log's stream (unless
	// Log.Stream names one) and the gateways' Consul service name; empty is
	// the default deployment, with herald's historical names. Give every
	// dispatcher and gateway of a deployment the same.
	Deployment wire.Deployment

	// Log is the per-user log's stream. Run creates it, or checks the live
	// one (inbox.Ensure), retrying until it succeeds or Run's context
	// ends; Run fails if the live stream has a setting otherwise than Log
	// gives it (an *inbox.MismatchError): the settings Log leaves zero are
	// the stream's, and only herald stream apply (inbox.Apply) changes a
	// live stream. Log.MinMsgSize is set to fit MaxPayload, and
	// Log.DownFor to the NATS connection's downtime, so that appends fail
	// at once once it has been down for Log.MaxDown.
	Log inbox.Config

	// Consul is the client the ring is watched with. Required.
	Consul *api.Client
	// Watch overrides the watcher's settings (Hold, Debounce, VNodes...).
	// Its Client, Probe and Logger are filled in by the dispatcher: the
	// probe asks gateways over NATS (consul.NATSProbe).
	Watch consul.WatchConfig

	// APIKeys are the keys the publishing endpoints accept
	// (Authorization: Bearer <key>). New refuses an empty list unless Dev,
	// where a random key is generated and logged.
	APIKeys []string
	// TokenSecrets verify user tokens for /v1/connect; several allow
	// rotation. Each must be at least 32 bytes. In dev mode the first one
	// signs the dev tokens. Required.
	TokenSecrets [][]byte
	// TokenAudience, if not empty, must be among a user token's "aud"
	// values; TokenIssuer, if not empty, must be its "iss". Give the
	// gateways the same: a token /v1/connect accepts must open a socket.
	// Dev tokens carry both.
	TokenAudience string
	TokenIssuer   string
	// Dev enables POST /v1/dev/token and GET /v1/dev/config, which hand out
	// user tokens and the first API key to anyone who asks. Never in
	// production.
	Dev bool
	// Page, in dev mode, serves the demo page at PagePaths (for example
	// "/", "/app.js"). The web package provides both; the dispatcher only
	// routes to them.
	Page      http.Handler
	PagePaths []string

	// RateLimit is each API key's sustained rate of notifications per
	// second (a batch counts each item). If zero, defaults to 1000.
	RateLimit rate.Limit
	// RateBurst is each API key's burst. If zero, defaults to 2000.
	RateBurst int
	// MaxPayload bounds the bytes of a notification's or broadcast's data,
	// as sent. If zero, defaults to 64 KiB.
	MaxPayload int
	// MaxBatch bounds the notifications in one batch. If zero, defaults to
	// 100.
	MaxBatch int
	// MaxWait caps ?timeout= of wait=delivered. If zero, defaults to 30s.
	MaxWait time.Duration
	// EpochRefresh is how often the log's epoch is re-read, so doorbells
	// carry the current one after the stream is recreated. If zero,
	// defaults to 10s.
	EpochRefresh time.Duration
	// StaleAfter is how long /readyz stays ready while Consul is
	// unreachable (the last ring is kept meanwhile). If zero, defaults to
	// 5m.
	StaleAfter time.Duration
	// MoveWindow is the gateways' move window (gateway.Config.MoveWindow):
	// for it plus 2s after a ring change, doorbells for a user whose owner
	// changed ring both owners, and longer while the previous owner
	// reports moves still pending (see grace.go). If zero, 5s.
	MoveWindow time.Duration
	// ConnectHold bounds how long /v1/connect?unreachable=<owner> waits for
	// the ring to name another owner (or for the owner to answer its
	// liveness probe). It must stay below the clients' /v1/connect timeout
	// (10s in both clients), so at most 9s. If zero, 8s: a crashed
	// gateway's 6s TTL, the watcher's debounce and a probe fit in it. If
	// negative, nothing is held.
	ConnectHold time.Duration

	// Registry is where the metrics are registered and what the admin
	// listener's /metrics serves. If nil, a new one with the Go and process collectors.
	Registry *prometheus.Registry
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
}

// Defaults of the zero Config fields.
const (
	DefaultRateLimit    rate.Limit = 1000
	DefaultRateBurst               = 2000
	DefaultMaxPayload              = 64 << 10
	DefaultMaxBatch                = 100
	DefaultMaxWait                 = 30 * time.Second
	DefaultEpochRefresh            = 10 * time.Second
	DefaultStaleAfter              = 5 * time.Minute
	DefaultMoveWindow              = 5 * time.Second
	DefaultConnectHold             = 8 * time.Second
	MaxConnectHold                 = 9 * time.Second
)

// msgHeaderRoom is what the log's headers add to a message: Nats-Msg-Id (a
// user key of up to 344 bytes and an id of up to 128), Herald-Id, -Ts,
// -Prev and the expected sequence, with room to spare.
const msgHeaderRoom = 4 << 10

// fill checks cfg and fills its defaults.
func (c *Config) fill() error {
	if err := c.Deployment.Validate(); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	c.Log.Deployment = c.Deployment
	c.Log.Stream = cmp.Or(c.Log.Stream, c.Deployment.Stream())
	switch {
	case c.NATS == nil:
		return errors.New("dispatcher: no NATS connection")
	case c.Consul == nil:
		return errors.New("dispatcher: no Consul client")
	case len(c.TokenSecrets) == 0:
		return errors.New("dispatcher: no token secret: /v1/connect could not verify anyone")
	case len(c.APIKeys) == 0 && !c.Dev:
		return errors.New("dispatcher: no API key: refusing to serve the publishing endpoints to anyone (set API keys, or use dev mode)")
	case c.Listener == nil && c.Addr == "":
		return errors.New("dispatcher: no Listener and no Addr")
	}
	for i, k := range c.APIKeys {
		if k == "" {
			return fmt.Errorf("dispatcher: API key %d is empty", i+1)
		}
	}
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.RateBurst = cmp.Or(c.RateBurst, DefaultRateBurst)
	c.MaxPayload = cmp.Or(c.MaxPayload, DefaultMaxPayload)
	c.MaxBatch = cmp.Or(c.MaxBatch, DefaultMaxBatch)
	c.MaxWait = cmp.Or(c.MaxWait, DefaultMaxWait)
	c.EpochRefresh = cmp.Or(c.EpochRefresh, DefaultEpochRefresh)
	c.StaleAfter = cmp.Or(c.StaleAfter, DefaultStaleAfter)
	c.MoveWindow = cmp.Or(c.MoveWindow, DefaultMoveWindow)
	c.ConnectHold = cmp.Or(c.ConnectHold, DefaultConnectHold)
	switch {
	case c.RateLimit < 0 || c.RateBurst < 0:
		return fmt.Errorf("dispatcher: negative rate limit %v or burst %d", c.RateLimit, c.RateBurst)
	case c.MaxPayload < 0 || c.MaxBatch < 0:
		return fmt.Errorf("dispatcher: negative MaxPayload %d or MaxBatch %d", c.MaxPayload, c.MaxBatch)
	case c.MaxWait < 0 || c.EpochRefresh < 0 || c.StaleAfter < 0:
		return errors.New("dispatcher: negative MaxWait, EpochRefresh or StaleAfter")
	case c.ConnectHold > MaxConnectHold:
		return fmt.Errorf("dispatcher: ConnectHold %v is over %v: clients give up on /v1/connect after 10s", c.ConnectHold, MaxConnectHold)
	}
	// Every append of a large payload would be refused by a stream whose
	// messages are smaller: a configuration error, found at the start
	// (here, or by Ensure in the live stream), not an outage to discover
	// later.
	c.Log.MinMsgSize = int32(min(c.MaxPayload+msgHeaderRoom, 1<<30))
	if c.Log.MaxMsgSize > 0 && c.Log.MaxMsgSize < c.Log.MinMsgSize {
		return fmt.Errorf("dispatcher: the log's MaxMsgSize %d does not fit MaxPayload %d plus %d bytes of headers",
			c.Log.MaxMsgSize, c.MaxPayload, msgHeaderRoom)
	}
	c.Log.AppendTimeout = cmp.Or(c.Log.AppendTimeout, inbox.DefaultAppendTimeout)
	if err := c.Log.Validate(); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
