package main

// herald demo is the demo page's own backend, for a real cluster: it does
// what an application's backend does when it integrates herald. It signs
// user tokens with a secret the browser never sees, publishes through the
// dispatchers with an API key the browser never sees, and proxies the
// WebSockets, so gateways on a private network are reachable through one
// published port. It is never a --dev dispatcher: it refuses to start
// without a real secret and key.
//
// Goroutines: Run owns the HTTP server's Serve goroutine; net/http owns one
// per request. A proxied socket is its request's goroutine (gateway →
// browser) plus two it starts and waits for: browser → gateway, and the
// keepalive that pings both peers and closes both on shutdown. Every
// request, socket or not, is counted in demoServer.flight, and Run returns
// only after the last has ended.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/web"
)

// demoPlaceholderKey is what GET /v1/dev/config answers instead of the API
// key: the page sends it back with its notify and broadcast calls, and the
// demo replaces it with the real key on the way to a dispatcher.
const demoPlaceholderKey = "added-by-herald-demo"

// Bounds of the demo's work. Each is small enough that a misbehaving page
// or peer costs little, and large enough for the page and herald's frames.
const (
	demoTokenBody     = 4 << 10   // POST /v1/dev/token
	demoPublishBody   = 128 << 10 // notify, broadcast: the dispatcher's 64 KiB of data plus its JSON
	demoUpstreamBody  = 8 << 20   // a dispatcher's answer (/v1/cluster lists every arc of the ring)
	demoBrowserFrame  = 64 << 10  // a frame from the browser; the gateway enforces its own, lower, limit
	demoGatewayFrame  = 4 << 20   // a frame from a gateway: one notification, whatever --max-payload is
	demoPublishWait   = 20 * time.Second
	demoConnectWait   = 10 * time.Second // herald.js gives up on /v1/connect after 10s
	demoClusterWait   = 5 * time.Second
	demoReadyWait     = 2 * time.Second
	demoReadyCache    = time.Second
	demoDialTimeout   = 2 * time.Second // one TCP connect to a dispatcher or gateway
	demoWSHandshake   = 10 * time.Second
	demoWriteTimeout  = 10 * time.Second
	demoPingInterval  = 30 * time.Second
	demoPingTimeout   = 10 * time.Second
	demoDownFor       = 5 * time.Second // a dispatcher that failed is tried last for this long
	demoRefreshEvery  = time.Second     // unknown gateway IDs refresh the directory at most this often
	demoShutdownGrace = 10 * time.Second
)

func runDemo(ctx context.Context, args []string) error {
	fs := newFlagSet("demo", "Serve the demo page for a real cluster, the way an application's backend integrates herald:\n"+
		"it signs user tokens and publishes with the API key itself (neither reaches the browser),\n"+
		"and proxies the gateways' WebSockets under /ws/<gateway>, so only its own port need be\n"+
		"reachable. Anyone who reaches it can sign in as any user and publish: keep it private.")
	var c common
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	listen := fs.String("listen", "127.0.0.1:8090", "HTTP listen address of the page, its API and the WebSocket proxy")
	dispatchers := fs.String("dispatchers", "http://127.0.0.1:8080", "comma-separated dispatcher base URLs, used round-robin; one that fails is skipped")
	apiKey := fs.String("api-key", "", "the API key the demo publishes and reads /v1/cluster with (local use; prefer --api-key-file)")
	apiKeyFile := fs.String("api-key-file", "", "file holding the API key (e.g. a mounted secret); surrounding whitespace is ignored")
	secret := fs.String("token-secret", "", "the secret (≥ 32 bytes) user tokens are signed with, one of the gateways' --token-secrets (local use; prefer --token-secret-file)")
	secretFile := fs.String("token-secret-file", "", "file holding the token secret; surrounding whitespace is ignored")
	ttl := fs.Duration("token-ttl", time.Hour, "lifetime of the user tokens the demo signs")
	audience := fs.String("token-audience", "", `"aud" of the tokens the demo signs (the gateways' and dispatchers' --token-audience)`)
	issuer := fs.String("token-issuer", "", `"iss" of the tokens the demo signs (the gateways' and dispatchers' --token-issuer)`)
	publicWS := fs.String("public-ws", "", "base URL under which browsers reach this process's WebSocket proxy, e.g. ws://127.0.0.1:8090 (default: ws:// and the host the browser's request named)")
	maxSockets := fs.Int("max-sockets", 1000, "WebSockets proxied at once; one more is closed with 1013 (try again later)")
	if err := parse(fs, args); err != nil {
		return err
	}
	key, err := readSecret("api-key", *apiKey, *apiKeyFile)
	if err != nil {
		return err
	}
	sec, err := readSecret("token-secret", *secret, *secretFile)
	if err != nil {
		return err
	}
	// Both are published in herald's source: a cluster that accepts them
	// is open to anyone, and the demo would only hide that.
	if key == devAPIKey {
		return errors.New("--api-key is herald dev's well-known key; give the demo the key of a real deployment")
	}
	if sec == devSecret {
		return errors.New("--token-secret is herald dev's well-known secret; give the demo the secret of a real deployment")
	}
	log, err := c.logger("demo")
	if err != nil {
		return err
	}
	cfg := demoConfig{
		Dispatchers: splitList(*dispatchers), APIKey: key, TokenSecret: []byte(sec), TokenTTL: *ttl,
		TokenAudience: *audience, TokenIssuer: *issuer, PublicWS: *publicWS, MaxSockets: *maxSockets, Logger: log,
	}
	if err := cfg.check(); err != nil { // before listening: a bad flag is not a bound port
		return err
	}
	if cfg.Listener, err = net.Listen("tcp", *listen); err != nil {
		return err
	}
	d, err := newDemo(cfg)
	if err != nil {
		cfg.Listener.Close()
		return err
	}
	if !loopback(*listen) {
		log.Warn("the demo hands user tokens for any user to whoever reaches it, and publishes for them: keep it on a private network", "listen", *listen)
	}
	log.Info("demo starting", "listen", cfg.Listener.Addr().String(), "dispatchers", cfg.Dispatchers, "public_ws", cmpOr(cfg.PublicWS, "(the request's host)"))
	return d.Run(ctx)
}

// readSecret reads a secret given either directly or in a file, never both.
func readSecret(name, value, file string) (string, error) {
	v, err := valueOrFile(name, value, file)
	if err == nil && v == "" {
		err = fmt.Errorf("no --%s or --%s-file (%s, %s): the demo has no default, so it never runs with a well-known one",
			name, name, envName(name), envName(name+"-file"))
	}
	return v, err
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// demoConfig configures a demoServer. Zero fields take the defaults given.
type demoConfig struct {
	// Listener serves the page, its API and the WebSocket proxy. Required.
	Listener net.Listener
	// Dispatchers are the dispatchers' base URLs (http or https), used
	// round-robin. At least one.
	Dispatchers []string
	// APIKey is sent to the dispatchers with notify, broadcast and cluster
	// requests, in place of whatever the page sent. Required.
	APIKey string
	// TokenSecret signs user tokens (HS256); at least 32 bytes. Required.
	TokenSecret []byte
	// TokenTTL is the lifetime of a token. If zero, 1h.
	TokenTTL time.Duration
	// TokenAudience and TokenIssuer, if set, go into the tokens' aud and iss.
	TokenAudience, TokenIssuer string
	// PublicWS is the base URL (ws:// or wss://) browsers reach the proxy
	// under; /ws/<gateway> is appended. If empty, ws:// and the Host of the
	// request being answered: the host and port the browser itself used,
	// which survives port mapping (a container's 8090 published as
	// 127.0.0.1:18090) where the listen address would not.
	PublicWS string
	// MaxSockets bounds the WebSockets proxied at once. If zero, 1000.
	MaxSockets int
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
}

func (c *demoConfig) check() error {
	if len(c.Dispatchers) == 0 {
		return errors.New("demo: no dispatchers (--dispatchers)")
	}
	for i, d := range c.Dispatchers {
		u, err := url.Parse(d)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("demo: dispatcher %q: want an http:// or https:// base URL without user, query or fragment", d)
		}
		c.Dispatchers[i] = strings.TrimRight(d, "/")
	}
	if c.APIKey == "" || strings.ContainsAny(c.APIKey, " \t\r\n") {
		return errors.New("demo: the API key is empty or has whitespace")
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = time.Hour
	}
	if c.TokenTTL < time.Minute {
		// herald.js fetches a new token when its token is within a
		// minute of expiring: a shorter one would be fetched every time.
		return fmt.Errorf("demo: token TTL %v is under a minute", c.TokenTTL)
	}
	if c.PublicWS != "" {
		u, err := url.Parse(c.PublicWS)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("demo: --public-ws %q: want a ws:// or wss:// base URL without user, query or fragment", c.PublicWS)
		}
		c.PublicWS = strings.TrimRight(c.PublicWS, "/")
	}
	if c.MaxSockets == 0 {
		c.MaxSockets = 1000
	}
	if c.MaxSockets < 0 {
		return errors.New("demo: negative MaxSockets")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// demoServer serves the page and proxies what the page calls.
type demoServer struct {
	cfg      demoConfig
	log      *slog.Logger
	verifier *token.Verifier // reads back the expiry of the tokens signed
	disp     *upstreams
	dir      gatewayDir
	wsClient *http.Client  // dials the gateways
	sockets  chan struct{} // one token per proxied socket
	flight   flight
	ctx      context.Context // Run's: ends the proxied sockets

	readyMu sync.Mutex // guards the following
	readyAt time.Time
	readyOK bool
	readyBy string // the dispatcher that answered, or why none did
}

func newDemo(cfg demoConfig) (*demoServer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Listener == nil {
		return nil, errors.New("demo: no Listener")
	}
	// The verifier checks the secret's length as every herald part does.
	v, err := token.NewVerifierWith(token.Options{Secrets: [][]byte{cfg.TokenSecret}, Audience: cfg.TokenAudience, Issuer: cfg.TokenIssuer})
	if err != nil {
		return nil, fmt.Errorf("demo: token secret: %w", err)
	}
	dialer := &net.Dialer{Timeout: demoDialTimeout, KeepAlive: 30 * time.Second}
	// No Proxy (unlike http.DefaultTransport's HTTP_PROXY): dispatchers
	// and gateways are the cluster's own, on its network.
	api := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}
	ws := &http.Transport{DialContext: dialer.DialContext} // coder/websocket takes each connection over
	return &demoServer{
		cfg: cfg, log: cfg.Logger, verifier: v,
		disp:     newUpstreams(cfg.Dispatchers, &http.Client{Transport: api, CheckRedirect: noRedirects}, cfg.Logger),
		dir:      gatewayDir{byID: map[string]string{}},
		wsClient: &http.Client{Transport: ws, CheckRedirect: noRedirects},
		sockets:  make(chan struct{}, cfg.MaxSockets),
	}, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Run serves until ctx ends, then closes the proxied sockets (1012, so the
// browsers reconnect with jitter) and returns once every request and socket
// has ended.
func (s *demoServer) Run(ctx context.Context) error {
	// The sockets end with this context: when ctx ends, and when Serve
	// fails on its own.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.ctx = ctx
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(s.cfg.Listener) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-served: // the listener failed
		served = nil
	}
	cancel()
	sctx, stop := context.WithTimeout(context.Background(), demoShutdownGrace)
	if srv.Shutdown(sctx) != nil {
		srv.Close() // ends the requests still waiting on a dispatcher
	}
	stop()
	if served != nil {
		if e := <-served; !errors.Is(e, http.ErrServerClosed) {
			err = e
		}
	}
	s.flight.close() // the sockets' keepalives have seen ctx end
	s.disp.client.CloseIdleConnections()
	return err
}

func (s *demoServer) routes() http.Handler {
	mux := http.NewServeMux()
	page := web.Handler()
	for _, p := range web.Paths {
		if p == "/" {
			p = "/{$}"
		}
		mux.Handle("GET "+p, page)
	}
	mux.HandleFunc("POST /v1/dev/token", s.handleToken)
	mux.HandleFunc("GET /v1/dev/config", s.handleConfig)
	mux.HandleFunc("POST /v1/notify", s.handlePublish)
	mux.HandleFunc("POST /v1/broadcast", s.handlePublish)
	mux.HandleFunc("POST /v1/connect", s.handleConnect)
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	mux.HandleFunc("GET /ws/{id}", s.handleWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		demoJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.flight.enter() {
			w.Header().Set("Connection", "close")
			demoError(w, http.StatusServiceUnavailable, "unavailable", "the demo is shutting down")
			return
		}
		defer s.flight.leave()
		defer func() {
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				s.log.Error("recovered a panic in a request handler", "path", r.URL.Path, "panic", fmt.Sprint(v))
			} else if v != nil {
				panic(v)
			}
		}()
		mux.ServeHTTP(w, r)
	})
}

// ---- the page's API ----

// handleToken serves POST /v1/dev/token {user}: a token for that user, as
// a dev dispatcher would sign one, but with the deployment's secret, which
// stays here.
func (s *demoServer) handleToken(w http.ResponseWriter, r *http.Request) {
	body, ok := readJSONRequest(w, r, demoTokenBody)
	if !ok {
		return
	}
	var req struct {
		User *string `json:"user"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		demoError(w, http.StatusBadRequest, "invalid_json", `want {"user": "<user ID>"}`)
		return
	}
	if req.User == nil {
		demoError(w, http.StatusBadRequest, "invalid_user", "user is required")
		return
	}
	if err := wire.ValidateUser(*req.User); err != nil {
		demoError(w, http.StatusBadRequest, "invalid_user", err.Error())
		return
	}
	tok, err := token.Sign(s.cfg.TokenSecret, *req.User, s.cfg.TokenTTL,
		token.WithAudience(s.cfg.TokenAudience), token.WithIssuer(s.cfg.TokenIssuer))
	var claims token.Claims
	if err == nil {
		claims, err = s.verifier.Verify(tok) // the expiry as the token carries it, in seconds
	}
	if err != nil {
		s.log.Error("signing a token failed", "error", err)
		demoError(w, http.StatusInternalServerError, "internal", "signing the token failed")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	demoJSON(w, http.StatusOK, map[string]string{"token": tok, "expires": wire.FormatTS(claims.Expires)})
}

// handleConfig serves GET /v1/dev/config. The page publishes with the
// api_key it answers; here that is a placeholder, which the demo replaces
// with the real key on the way to a dispatcher.
func (s *demoServer) handleConfig(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	demoJSON(w, http.StatusOK, map[string]string{"api_key": demoPlaceholderKey})
}

// handlePublish proxies POST /v1/notify and /v1/broadcast with the real
// API key. The query is not passed (the page sends none: no wait=delivered
// through the demo). Only a dispatcher that could not be connected to is
// skipped for the next: once a request was sent, a retry elsewhere could
// store the notification twice, so a lost answer is reported as such.
func (s *demoServer) handlePublish(w http.ResponseWriter, r *http.Request) {
	body, ok := readJSONRequest(w, r, demoPublishBody)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), demoPublishWait)
	defer cancel()
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + s.cfg.APIKey}}
	resp, err := s.disp.do(ctx, http.MethodPost, r.URL.Path, nil, h, body, false)
	if err != nil {
		s.upstreamError(w, r, err)
		return
	}
	defer resp.Body.Close()
	passThrough(w, resp)
}

// handleConnect proxies POST /v1/connect with the user's own token and
// points the answer's url at this process's proxy for that gateway.
func (s *demoServer) handleConnect(w http.ResponseWriter, r *http.Request) {
	h := http.Header{}
	if a := r.Header.Get("Authorization"); a != "" {
		h.Set("Authorization", a)
	}
	q := url.Values{}
	if u := r.URL.Query().Get("unreachable"); u != "" {
		q.Set("unreachable", u) // the gateway IDs are the same on both sides of the proxy
	}
	ctx, cancel := context.WithTimeout(r.Context(), demoConnectWait)
	defer cancel()
	resp, err := s.disp.do(ctx, http.MethodPost, "/v1/connect", q, h, nil, true)
	if err != nil {
		s.upstreamError(w, r, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		passThrough(w, resp)
		return
	}
	var a map[string]json.RawMessage
	b, err := io.ReadAll(io.LimitReader(resp.Body, demoUpstreamBody))
	if err == nil {
		err = json.Unmarshal(b, &a)
	}
	id, real := jsonString(a["gateway"]), jsonString(a["url"])
	if err != nil || ring.ValidateID(id) != nil || real == "" {
		s.log.Warn("a dispatcher's /v1/connect answer names no gateway", "answer", string(b))
		demoError(w, http.StatusBadGateway, "bad_gateway", "the dispatcher's answer names no gateway")
		return
	}
	s.dir.learn(id, real)
	a["url"], _ = json.Marshal(s.proxyURL(r, id))
	w.Header().Set("Cache-Control", "no-store")
	demoJSON(w, http.StatusOK, a)
}

// handleCluster proxies GET /v1/cluster[?user=] with the API key, pointing
// each member's url at this process's proxy. The answer is also the
// directory of gateways the proxy dials.
func (s *demoServer) handleCluster(w http.ResponseWriter, r *http.Request) {
	q := url.Values{}
	if u := r.URL.Query().Get("user"); u != "" {
		q.Set("user", u) // the dispatcher validates it
	}
	ctx, cancel := context.WithTimeout(r.Context(), demoClusterWait)
	defer cancel()
	view, resp, err := s.fetchCluster(ctx, q)
	if err != nil {
		s.upstreamError(w, r, err)
		return
	}
	if view == nil {
		defer resp.Body.Close()
		passThrough(w, resp)
		return
	}
	if _, ok := view.raw["members"]; ok {
		for _, m := range view.members {
			m["url"], _ = json.Marshal(s.proxyURL(r, jsonString(m["id"])))
		}
		view.raw["members"], _ = json.Marshal(view.members)
	}
	w.Header().Set("Cache-Control", "no-store")
	demoJSON(w, http.StatusOK, view.raw)
}

// clusterView is a /v1/cluster answer, kept as raw JSON so that fields
// this version does not know pass through unchanged.
type clusterView struct {
	raw     map[string]json.RawMessage
	members []map[string]json.RawMessage
}

// fetchCluster asks a dispatcher for /v1/cluster and learns the gateways'
// URLs from a 200 answer, which it returns decoded; any other answer is
// returned as it came (view nil), for the caller to pass on and close.
func (s *demoServer) fetchCluster(ctx context.Context, q url.Values) (*clusterView, *http.Response, error) {
	h := http.Header{"Authorization": {"Bearer " + s.cfg.APIKey}}
	resp, err := s.disp.do(ctx, http.MethodGet, "/v1/cluster", q, h, nil, true)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, demoUpstreamBody))
	if err != nil {
		return nil, nil, fmt.Errorf("reading /v1/cluster: %w", err)
	}
	v := &clusterView{}
	if err := json.Unmarshal(b, &v.raw); err != nil {
		return nil, nil, fmt.Errorf("unreadable /v1/cluster answer: %w", err)
	}
	if m, ok := v.raw["members"]; ok && json.Unmarshal(m, &v.members) != nil {
		return nil, nil, errors.New("unreadable members in the /v1/cluster answer")
	}
	urls := map[string]string{}
	for _, m := range v.members {
		if id, u := jsonString(m["id"]), jsonString(m["url"]); ring.ValidateID(id) == nil && u != "" {
			urls[id] = u
		}
	}
	s.dir.replace(urls)
	return v, nil, nil
}

func (s *demoServer) handleReadyz(w http.ResponseWriter, r *http.Request) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock() // held while asking: a burst of probes costs one round
	if time.Since(s.readyAt) > demoReadyCache {
		s.readyOK, s.readyBy = false, ""
		var errs []string
		for _, i := range s.disp.order() {
			base := s.disp.bases[i]
			// Not the request's context: the answer is shared with the
			// probes that come within demoReadyCache.
			ctx, cancel := context.WithTimeout(s.ctx, demoReadyWait)
			code, err := s.disp.get(ctx, i, "/readyz")
			cancel()
			if err == nil && code == http.StatusOK {
				s.readyOK, s.readyBy = true, base
				break
			}
			if err == nil {
				err = fmt.Errorf("answered %d", code)
			}
			errs = append(errs, fmt.Sprintf("%s: %v", base, err))
		}
		if !s.readyOK {
			s.readyBy = strings.Join(errs, "; ")
		}
		s.readyAt = time.Now()
	}
	if s.readyOK {
		demoJSON(w, http.StatusOK, map[string]any{"ready": true, "dispatcher": s.readyBy})
		return
	}
	demoJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "error": "no dispatcher is ready: " + s.readyBy})
}

// proxyURL is where a browser that made request r opens the socket to
// gateway id.
func (s *demoServer) proxyURL(r *http.Request, id string) string {
	base := s.cfg.PublicWS
	if base == "" {
		host := r.Host
		if host == "" {
			host = s.cfg.Listener.Addr().String()
		}
		base = "ws://" + host
	}
	return base + "/ws/" + url.PathEscape(id)
}

func (s *demoServer) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("no dispatcher answered", "path", r.URL.Path, "error", err)
	if errors.Is(err, errUnknownOutcome) {
		demoError(w, http.StatusServiceUnavailable, "unknown_outcome", "the dispatcher did not answer: the notification may or may not have been stored")
		return
	}
	demoError(w, http.StatusServiceUnavailable, "unavailable", "no dispatcher answered; retry later")
}

// readJSONRequest reads a POST body that must be JSON and at most limit
// bytes. Requiring application/json also keeps other sites' pages from
// publishing through the demo: a cross-origin request with that type needs
// a CORS preflight, which the demo never grants.
func readJSONRequest(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		demoError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json")
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			demoError(w, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the body is over %d bytes", limit))
		} else {
			demoError(w, http.StatusBadRequest, "invalid_json", "reading the body failed")
		}
		return nil, false
	}
	return b, true
}

// passThrough copies a dispatcher's answer: status, the headers the page
// reads, and the body.
func passThrough(w http.ResponseWriter, resp *http.Response) {
	for _, k := range []string{"Content-Type", "Retry-After", "Allow"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, io.LimitReader(resp.Body, demoUpstreamBody))
}

// demoJSON and demoError answer as the dispatcher does, so the page shows
// the demo's own errors like a dispatcher's: {"error":{"code","message"}}.
func demoJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func demoError(w http.ResponseWriter, status int, code, msg string) {
	demoJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// ---- dispatchers ----

// errUnknownOutcome: a request that is not safe to repeat was sent and
// got no answer.
var errUnknownOutcome = errors.New("sent, but no answer came")

// upstreams are the dispatchers, used round-robin. One that fails is
// marked down and tried last until demoDownFor has passed.
type upstreams struct {
	bases  []string
	client *http.Client
	log    *slog.Logger
	next   atomic.Uint64
	down   []atomic.Int64 // per base: unix nanoseconds until which it is tried last
}

func newUpstreams(bases []string, client *http.Client, log *slog.Logger) *upstreams {
	return &upstreams{bases: bases, client: client, log: log, down: make([]atomic.Int64, len(bases))}
}

// order is the round-robin order of this request: the next base first,
// those marked down last.
func (u *upstreams) order() []int {
	n := len(u.bases)
	start := int(u.next.Add(1) % uint64(n))
	now := time.Now().UnixNano()
	up, down := make([]int, 0, n), []int(nil)
	for k := range n {
		i := (start + k) % n
		if u.down[i].Load() > now {
			down = append(down, i)
		} else {
			up = append(up, i)
		}
	}
	return append(up, down...)
}

// do sends the request to the dispatchers in order until one answers.
// After a failure it moves on if the request is idempotent, or if the
// connection was never made (nothing was sent); otherwise it returns
// errUnknownOutcome.
func (u *upstreams) do(ctx context.Context, method, path string, q url.Values, h http.Header, body []byte, idempotent bool) (*http.Response, error) {
	var last error
	for _, i := range u.order() {
		target := u.bases[i] + path
		if len(q) > 0 {
			target += "?" + q.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = h.Clone()
		resp, err := u.client.Do(req)
		if err == nil {
			u.down[i].Store(0)
			return resp, nil
		}
		last = err
		if ctx.Err() != nil {
			break // out of time: the next would fail the same way
		}
		u.down[i].Store(time.Now().Add(demoDownFor).UnixNano())
		u.log.Warn("dispatcher failed", "dispatcher", u.bases[i], "error", err)
		if !idempotent && !neverSent(err) {
			return nil, fmt.Errorf("%w: %s: %v", errUnknownOutcome, u.bases[i], err)
		}
	}
	if !idempotent && last != nil && !neverSent(last) {
		return nil, fmt.Errorf("%w: %v", errUnknownOutcome, last)
	}
	return nil, fmt.Errorf("no dispatcher answered: %w", last)
}

// get makes one GET to dispatcher i and returns the status.
func (u *upstreams) get(ctx context.Context, i int, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.bases[i]+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// neverSent reports whether err is a failure to connect: the request
// cannot have reached the dispatcher.
func neverSent(err error) bool {
	op, ok := errors.AsType[*net.OpError](err)
	return ok && op.Op == "dial"
}

// ---- the gateways' WebSockets ----

// gatewayDir maps gateway IDs to their real WebSocket URLs, as the
// dispatchers name them.
type gatewayDir struct {
	mu   sync.Mutex        // guards byID
	byID map[string]string // id → real ws URL; only what dispatchers answered, so bounded by the cluster

	refreshMu   sync.Mutex // held while refreshing, so concurrent misses share one request
	lastRefresh time.Time  // guarded by refreshMu
}

func (d *gatewayDir) learn(id, u string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byID[id] = u
}

// replace installs the full membership of a /v1/cluster answer.
func (d *gatewayDir) replace(m map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byID = m
}

func (d *gatewayDir) url(id string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.byID[id]
	return u, ok
}

// id is the gateway whose real URL is u.
func (d *gatewayDir) id(u string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, v := range d.byID {
		if v == u {
			return id, true
		}
	}
	return "", false
}

// refresh re-reads the directory from a dispatcher, at most once per
// demoRefreshEvery, however many unknown IDs or URLs are asked for.
func (s *demoServer) refresh(ctx context.Context) {
	d := &s.dir
	d.refreshMu.Lock()
	defer d.refreshMu.Unlock()
	if time.Since(d.lastRefresh) < demoRefreshEvery {
		return
	}
	d.lastRefresh = time.Now()
	ctx, cancel := context.WithTimeout(ctx, demoClusterWait)
	defer cancel()
	view, resp, err := s.fetchCluster(ctx, nil)
	switch {
	case err != nil:
		s.log.Warn("refreshing the gateways from /v1/cluster failed", "error", err)
	case view == nil:
		resp.Body.Close()
		s.log.Warn("refreshing the gateways from /v1/cluster failed", "status", resp.StatusCode)
	}
}

// lookup is the real URL of gateway id, refreshing the directory if it is
// not known.
func (s *demoServer) lookup(ctx context.Context, id string) (string, bool) {
	if u, ok := s.dir.url(id); ok {
		return u, true
	}
	s.refresh(ctx)
	return s.dir.url(id)
}

// handleWS serves GET /ws/{id}: the browser's socket, proxied frame by
// frame to gateway id. The gateway is dialed first, so that the browser's
// socket opens only if the gateway's did: a gateway that cannot be reached
// looks to herald.js exactly as it would without the proxy (1006, no open).
func (s *demoServer) handleWS(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if ring.ValidateID(id) != nil {
		demoError(w, http.StatusNotFound, "not_found", "no such gateway")
		return
	}
	real, ok := s.lookup(r.Context(), id)
	if !ok {
		demoError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no gateway %q in the ring", id))
		return
	}
	select {
	case s.sockets <- struct{}{}:
		defer func() { <-s.sockets }()
	default:
		if c, err := websocket.Accept(w, r, nil); err == nil {
			c.Close(wire.CloseTryAgainLater, "too many sockets through the demo")
		}
		return
	}
	dctx, cancel := context.WithTimeout(r.Context(), demoWSHandshake)
	h := http.Header{}
	// Gateways count unauthenticated sockets per client address; with
	// this demo among their --trusted-proxies they count the browser's.
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h.Set("X-Forwarded-For", host)
	}
	gc, resp, err := websocket.Dial(dctx, real, &websocket.DialOptions{HTTPClient: s.wsClient, HTTPHeader: h})
	cancel()
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		s.log.Info("gateway refused or unreachable", "gateway", id, "url", real, "status", status, "error", err)
		demoError(w, http.StatusBadGateway, "bad_gateway", "the gateway could not be reached")
		return
	}
	gc.SetReadLimit(demoGatewayFrame)
	bc, err := websocket.Accept(w, r, nil) // same-host origins only: the page is served from here
	if err != nil {
		gc.CloseNow()
		return
	}
	bc.SetReadLimit(demoBrowserFrame)
	s.pipe(bc, gc, func(b []byte) ([]byte, bool) { return s.rewriteMoved(r, b) })
}

// pipe relays frames both ways until either side ends, then ends the other
// the same way: a close frame's code and reason are passed on (herald.js
// acts on 4001, 4003, 4004, 4009, 1012, 1013), and a connection that just
// dropped is dropped on the other side too, so the browser sees 1006 as it
// would have. Run's end closes the browser's socket with 1012.
func (s *demoServer) pipe(bc, gc *websocket.Conn, edit func([]byte) ([]byte, bool)) {
	var once sync.Once
	end := func(f func()) { once.Do(f) }
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		rerr, werr := relay(bc, gc, nil)
		end(func() { finish(bc, gc, rerr, werr) })
	})
	wg.Go(func() { s.keepalive(bc, gc, done, end) })
	rerr, werr := relay(gc, bc, edit)
	end(func() { finish(gc, bc, rerr, werr) })
	close(done)
	wg.Wait()
	bc.CloseNow()
	gc.CloseNow()
}

// relay copies messages from src to dst, editing text messages with edit
// (which may drop one), until reading src (rerr) or writing dst (werr)
// fails.
func relay(src, dst *websocket.Conn, edit func([]byte) ([]byte, bool)) (rerr, werr error) {
	for {
		typ, b, err := src.Read(context.Background()) // ended by closing src
		if err != nil {
			return err, nil
		}
		if edit != nil && typ == websocket.MessageText {
			var keep bool
			if b, keep = edit(b); !keep {
				continue
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), demoWriteTimeout)
		err = dst.Write(ctx, typ, b)
		cancel()
		if err != nil {
			return nil, err
		}
	}
}

// finish ends both sockets after relay(src, dst) returned.
func finish(src, dst *websocket.Conn, rerr, werr error) {
	if werr != nil { // dst is gone: drop src as well
		src.CloseNow()
		dst.CloseNow()
		return
	}
	var ce websocket.CloseError
	if !errors.As(rerr, &ce) { // src dropped without a close frame
		dst.CloseNow()
		src.CloseNow()
		return
	}
	dst.Close(ce.Code, ce.Reason) // 1005 (no code) is passed on as a close frame without one
	src.CloseNow()
}

// keepalive pings both peers, so a browser or gateway that vanished
// without a word is noticed (a failed ping closes its connection, which
// ends its relay), and closes both sockets when Run ends.
func (s *demoServer) keepalive(bc, gc *websocket.Conn, done <-chan struct{}, end func(func())) {
	t := time.NewTicker(demoPingInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-s.ctx.Done():
			end(func() {
				gc.CloseNow()
				bc.Close(wire.CloseServiceRestart, "the demo is restarting")
			})
			return
		case <-t.C:
			for _, c := range []*websocket.Conn{bc, gc} {
				// Not Run's context: its end must close with 1012, not
				// with a ping cut short.
				ctx, cancel := context.WithTimeout(context.Background(), demoPingTimeout)
				c.Ping(ctx)
				cancel()
			}
		}
	}
}

// rewriteMoved points a moved frame's URL, another gateway's real one, at
// this process's proxy for that gateway. A moved frame naming a gateway the
// dispatchers do not (yet) know is dropped: the 4001 close that follows
// then sends herald.js back through /v1/connect, which is never wrong.
func (s *demoServer) rewriteMoved(r *http.Request, b []byte) ([]byte, bool) {
	if !bytes.Contains(b, []byte(`"moved"`)) {
		return b, true // the common case, decoded by nobody
	}
	f, err := wire.DecodeServerFrame(b)
	if err != nil || f.Type != wire.TypeMoved {
		return b, true
	}
	id, ok := s.dir.id(f.URL)
	if !ok {
		s.refresh(s.ctx)
		id, ok = s.dir.id(f.URL)
	}
	if !ok {
		s.log.Info("dropped a moved frame naming an unknown gateway", "url", f.URL)
		return nil, false
	}
	return wire.Encode(wire.Moved{Type: wire.TypeMoved, URL: s.proxyURL(r, id)}), true
}

// flight counts the requests being served, so Run can wait for them.
type flight struct {
	mu     sync.Mutex // guards closed and the calls to wg.Add
	closed bool
	wg     sync.WaitGroup
}

func (f *flight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

func (f *flight) leave() { f.wg.Done() }

// close refuses new requests and waits for those being served.
func (f *flight) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}
