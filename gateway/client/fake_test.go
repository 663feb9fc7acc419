package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/wire"
)

// The fakes here play a dispatcher's /v1/connect and gateways that send
// scripted frames and close codes, over real HTTP and real WebSockets.

const testUser = "alice"

// gateway is a fake gateway: each socket that authenticates runs script in
// the handler's goroutine; when script returns without closing, the socket
// is held open until the client or the test ends it. A reader goroutine
// records what the client sends and answers pings.
type gateway struct {
	tb     testing.TB
	id     string
	url    string
	script func(s *socket)
	// Set before the client starts.
	noPong func(n int) bool // don't answer pings on connection n
	noRead bool             // never read after auth, so never answer a close

	ctx    context.Context // ends at cleanup
	wg     sync.WaitGroup  // handlers and readers
	mu     sync.Mutex      // guards sockets
	socks  []*socket
	closed atomic.Bool
}

// socket is one connection to a fake gateway.
type socket struct {
	gw    *gateway
	n     int // index of the connection at its gateway
	conn  *websocket.Conn
	auth  wire.ClientFrame
	at    time.Time     // when the auth frame arrived
	ended chan struct{} // closed when the reader ends

	mu        sync.Mutex // guards the following
	frames    []wire.ClientFrame
	closeCode int // what the client's side of the close said (-1: nothing)
}

func newGateway(tb testing.TB, id string, script func(s *socket)) *gateway {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{tb: tb, id: id, script: script, ctx: ctx, noPong: func(int) bool { return false }}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	g.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	tb.Cleanup(func() {
		g.closed.Store(true)
		cancel()
		srv.Close()
		g.wg.Wait()
	})
	return g
}

func (g *gateway) serve(w http.ResponseWriter, r *http.Request) {
	if g.closed.Load() {
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	g.wg.Add(1)
	defer g.wg.Done()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	_, b, err := conn.Read(ctx)
	cancel()
	if err != nil {
		return
	}
	auth, err := wire.DecodeClientFrame(b)
	if err != nil || auth.Type != wire.TypeAuth {
		g.tb.Errorf("gateway %s: first frame %s: %v", g.id, b, err)
		return
	}
	s := &socket{gw: g, conn: conn, auth: auth, at: time.Now(), ended: make(chan struct{}), closeCode: -1}
	g.mu.Lock()
	s.n = len(g.socks)
	g.socks = append(g.socks, s)
	g.mu.Unlock()
	if !g.noRead {
		g.wg.Go(s.readLoop)
	}
	g.script(s)
	select {
	case <-s.ended:
	case <-g.ctx.Done():
	}
}

func (s *socket) readLoop() {
	defer close(s.ended)
	for {
		_, b, err := s.conn.Read(s.gw.ctx)
		if err != nil {
			s.mu.Lock()
			s.closeCode = int(websocket.CloseStatus(err))
			s.mu.Unlock()
			return
		}
		f, err := wire.DecodeClientFrame(b)
		if err != nil {
			s.gw.tb.Errorf("gateway %s: bad frame from the client: %s: %v", s.gw.id, b, err)
			return
		}
		s.mu.Lock()
		s.frames = append(s.frames, f)
		s.mu.Unlock()
		if f.Type == wire.TypePing && !s.gw.noPong(s.n) {
			s.write(wire.PongFrame)
		}
	}
}

// count is the number of sockets that have authenticated.
func (g *gateway) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.socks)
}

// socket returns connection n, failing the test if it has not come.
func (g *gateway) socket(n int) *socket {
	g.tb.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if n >= len(g.socks) {
		g.tb.Fatalf("gateway %s has %d sockets, want socket %d", g.id, len(g.socks), n)
	}
	return g.socks[n]
}

func (s *socket) received() []wire.ClientFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.ClientFrame(nil), s.frames...)
}

func (s *socket) acks() []uint64 {
	var seqs []uint64
	for _, f := range s.received() {
		if f.Type == wire.TypeAck {
			seqs = append(seqs, f.Seq)
		}
	}
	return seqs
}

func (s *socket) pings() int {
	n := 0
	for _, f := range s.received() {
		if f.Type == wire.TypePing {
			n++
		}
	}
	return n
}

// clientCloseCode is the close code the client sent or echoed; -1 while the
// socket is open or if it ended without one.
func (s *socket) clientCloseCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCode
}

func (s *socket) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

// Script steps. They run in the handler's goroutine; a failed write only
// means the client has gone, which the test's own assertions will show.

func (s *socket) write(b []byte) {
	ctx, cancel := context.WithTimeout(s.gw.ctx, 5*time.Second)
	defer cancel()
	_ = s.conn.Write(ctx, websocket.MessageText, b)
}

func (s *socket) send(v any) { s.write(wire.Encode(v)) }

func (s *socket) hello(epoch string, cursor uint64) {
	s.send(wire.Hello{Type: wire.TypeHello, Gateway: s.gw.id, User: testUser, Epoch: epoch, Cursor: cursor})
}

func (s *socket) notify(seqs ...uint64) {
	for _, seq := range seqs {
		b, _ := wire.EncodeNotification(seq, fmt.Sprintf("n%d", seq), fmt.Appendf(nil, `{"n":%d}`, seq), time.Now())
		s.write(b)
	}
}

func (s *socket) gap(epoch string, after, next uint64) {
	s.send(wire.Gap{Type: wire.TypeGap, Epoch: epoch, After: after, Next: next})
}

func (s *socket) moved(url string) { s.send(wire.Moved{Type: wire.TypeMoved, URL: url}) }

// close closes with code and waits for the client's answer. Frames the
// client sends after our close frame are discarded (coder/websocket's close
// handshake), so tests that assert on what the client sent let it close.
func (s *socket) close(code int) { _ = s.conn.Close(websocket.StatusCode(code), "") }

// hold keeps the socket up for d (simulated uptime), or until it ends.
func (s *socket) hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ended:
	case <-s.gw.ctx.Done():
	}
}

// dispatcher is a fake dispatcher serving POST /v1/connect. answer gets the
// 0-based index of the call and returns a status and a JSON body.
type dispatcher struct {
	url     string
	answer  func(n int) (int, any)
	mu      sync.Mutex // guards auths and queries
	auths   []string   // Authorization headers, in order
	queries []string   // URL queries, in order
}

func newDispatcher(tb testing.TB, answer func(n int) (int, any)) *dispatcher {
	tb.Helper()
	d := &dispatcher{answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/connect" {
			tb.Errorf("dispatcher: unexpected %s %s", r.Method, r.URL.Path)
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		d.mu.Lock()
		n := len(d.auths)
		d.auths = append(d.auths, r.Header.Get("Authorization"))
		d.queries = append(d.queries, r.URL.RawQuery)
		d.mu.Unlock()
		status, body := d.answer(n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}))
	d.url = srv.URL
	tb.Cleanup(srv.Close)
	return d
}

// queryOf returns the query of call n; "<none>" if there was no call n.
func (d *dispatcher) queryOf(n int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n >= len(d.queries) {
		return "<none>"
	}
	return d.queries[n]
}

func (d *dispatcher) calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.auths...)
}

// routeTo answers call n with gws[n], or the last one after that.
func routeTo(gws ...*gateway) func(n int) (int, any) {
	return func(n int) (int, any) {
		g := gws[min(n, len(gws)-1)]
		return http.StatusOK, route{Gateway: g.id, URL: g.url, Ring: "ring-1"}
	}
}

func apiError(status int, code string) (int, any) {
	return status, map[string]any{"error": map[string]string{"code": code, "message": "test says " + code}}
}

// tokens is a Token func that returns tok-1, tok-2, ... and counts calls.
type tokens struct{ n atomic.Int64 }

func (t *tokens) get(context.Context) (string, error) {
	return fmt.Sprintf("tok-%d", t.n.Add(1)), nil
}

// recorder keeps what the client hands the application.
type recorder struct {
	mu     sync.Mutex
	events []Event
	frames []rawFrame
}

type rawFrame struct {
	gateway string
	frame   wire.ServerFrame
}

func (r *recorder) onEvent(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) onFrame(gateway string, f wire.ServerFrame) {
	r.mu.Lock()
	r.frames = append(r.frames, rawFrame{gateway, f})
	r.mu.Unlock()
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) raw() []rawFrame {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rawFrame(nil), r.frames...)
}

// seqs lists the notifications delivered, in order.
func (r *recorder) seqs() []uint64 {
	var seqs []uint64
	for _, e := range r.all() {
		if e.Kind == EventNotification {
			seqs = append(seqs, e.Frame.Seq)
		}
	}
	return seqs
}

func (r *recorder) kinds(k EventKind) []Event {
	var out []Event
	for _, e := range r.all() {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// downs lists the statuses that report a socket ending or failing.
func (r *recorder) downs() []Status {
	var out []Status
	for _, e := range r.kinds(EventStatus) {
		if !e.Status.Connected {
			out = append(out, e.Status)
		}
	}
	return out
}

func (r *recorder) connected() int {
	n := 0
	for _, e := range r.kinds(EventStatus) {
		if e.Status.Connected {
			n++
		}
	}
	return n
}

// harness runs a Client in the background.
type harness struct {
	c      *Client
	rec    *recorder
	tokens *tokens
	cancel context.CancelFunc
	errc   chan error

	once sync.Once
	err  error
}

// start makes a client from cfg with test-sized defaults (fast backoff,
// pings rare enough not to matter, no stable resets), lets tweak adjust the
// client, and runs it until the test ends.
func start(tb testing.TB, cfg Config, tweak func(*Client)) *harness {
	tb.Helper()
	h := &harness{rec: &recorder{}, tokens: &tokens{}, errc: make(chan error, 1)}
	if cfg.Token == nil {
		cfg.Token = h.tokens.get
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 20 * time.Millisecond
	}
	if cfg.StableAfter == 0 {
		cfg.StableAfter = time.Hour
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 10 * time.Second
	}
	onEvent := cfg.OnEvent
	cfg.OnEvent = func(e Event) {
		h.rec.onEvent(e)
		if onEvent != nil {
			onEvent(e)
		}
	}
	cfg.OnFrame = h.rec.onFrame
	cfg.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if tweak != nil {
		tweak(c)
	}
	h.c = c
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.errc <- c.Run(ctx) }()
	tb.Cleanup(func() {
		if err := h.stop(tb); err != nil && !errors.Is(err, ErrUnauthorized) {
			tb.Errorf("Run: %v", err)
		}
	})
	return h
}

// stop cancels Run and returns its result, failing if it does not return
// promptly.
func (h *harness) stop(tb testing.TB) error {
	tb.Helper()
	h.cancel()
	return h.wait(tb, 3*time.Second)
}

// wait waits for Run to return by itself.
func (h *harness) wait(tb testing.TB, timeout time.Duration) error {
	tb.Helper()
	h.once.Do(func() {
		select {
		case h.err = <-h.errc:
		case <-time.After(timeout):
			tb.Fatalf("Run did not return within %v", timeout)
		}
	})
	return h.err
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const waitLong = 5 * time.Second
