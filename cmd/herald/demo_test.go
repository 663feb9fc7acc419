package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"github.com/heraldpush/herald/dispatcher"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/heraldpush/herald/ring/consul/consultest"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// The demo tests run a real cluster in-process: a Consul dev agent, NATS
// with JetStream, a dispatcher and two gateways as libraries, and the demo
// in front of them, reached as a browser would reach it.

const demoTestKey = "demo-test-api-key"

var demoTestSecret = []byte("demo test secret, at least thirty-two bytes")

func demoLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("HERALD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// demoCluster is the cluster and the demo in front of it.
type demoCluster struct {
	t        *testing.T
	natsURL  string
	consul   *consultest.Agent
	dispURL  string            // the dispatcher itself
	gateways map[string]string // id → real ws URL
	gws      map[string]*gateway.Gateway
	tap      *tap // between the demo and the dispatcher: what the dispatcher got
	demo     *runningDemo
}

// tap records the Authorization header of every request the dispatcher
// gets from the demo, and forwards it.
type tap struct {
	url string
	mu  sync.Mutex
	got []string // "path Authorization"
}

func (tp *tap) seen() []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]string(nil), tp.got...)
}

type runningDemo struct {
	*demoServer
	url  string // http://host:port
	ws   string // ws://host:port
	stop func() error
}

func newDemoCluster(t *testing.T, gatewayIDs ...string) *demoCluster {
	t.Helper()
	c := &demoCluster{t: t, consul: consultest.Start(t), gateways: map[string]string{}, gws: map[string]*gateway.Gateway{}}
	ns := inboxtest.Run(t)
	c.natsURL = ns.URL()
	cc := c.consul.Client()
	watch := consul.WatchConfig{QueryInterval: 50 * time.Millisecond, Debounce: 50 * time.Millisecond}

	ln := listen(t)
	c.dispURL = "http://" + ln.Addr().String()
	d, err := dispatcher.New(dispatcher.Config{
		Listener: ln, NATS: inboxtest.Connect(t, c.natsURL, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1)),
		Consul: cc, Watch: watch, APIKeys: []string{demoTestKey}, TokenSecrets: [][]byte{demoTestSecret},
		Registry: prometheus.NewRegistry(), Logger: demoLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, "dispatcher", d.Run)
	waitFor(t, 20*time.Second, "the dispatcher ready", func() bool { return status(c.dispURL+"/readyz") == http.StatusOK })

	for _, id := range gatewayIDs {
		ln := listen(t)
		u := "ws://" + ln.Addr().String() + "/ws"
		g, err := gateway.New(gateway.Config{
			ID: id, Listener: ln, PublicURL: u, NATS: inboxtest.Connect(t, c.natsURL, nats.MaxReconnects(-1)),
			Consul: cc, TTL: 2 * time.Second, Watch: watch, TokenSecrets: [][]byte{demoTestSecret}, Logger: demoLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		runUntilCleanup(t, "gateway "+id, g.Run)
		c.gws[id] = g
		c.gateways[id] = u
		waitFor(t, 20*time.Second, id+" ready", func() bool {
			return status(strings.Replace(strings.TrimSuffix(u, "/ws"), "ws://", "http://", 1)+"/readyz") == http.StatusOK
		})
	}
	waitFor(t, 20*time.Second, "the dispatcher's and the gateways' rings to hold every gateway", func() bool {
		v := c.directCluster()
		for _, g := range c.gws {
			if g.Ring().Fingerprint() != v.Ring {
				return false
			}
		}
		return len(v.Members) == len(gatewayIDs)
	})

	target, _ := url.Parse(c.dispURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	c.tap = &tap{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.tap.mu.Lock()
		c.tap.got = append(c.tap.got, r.URL.Path+" "+strings.Join(r.Header.Values("Authorization"), ","))
		c.tap.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	c.tap.url = ts.URL
	// A dispatcher that cannot be reached comes first: the demo must skip it.
	c.demo = c.startDemo(func(cfg *demoConfig) { cfg.Dispatchers = []string{deadURL(t), c.tap.url} })
	return c
}

// startDemo runs a demo in front of the cluster's dispatcher until the test
// ends (or stop).
func (c *demoCluster) startDemo(edit ...func(*demoConfig)) *runningDemo {
	c.t.Helper()
	cfg := demoConfig{
		Listener: listen(c.t), Dispatchers: []string{c.dispURL}, APIKey: demoTestKey,
		TokenSecret: demoTestSecret, Logger: demoLogger(c.t),
	}
	for _, e := range edit {
		e(&cfg)
	}
	d, err := newDemo(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	addr := cfg.Listener.Addr().String()
	return &runningDemo{demoServer: d, url: "http://" + addr, ws: "ws://" + addr, stop: runUntilCleanup(c.t, "demo", d.Run)}
}

// runUntilCleanup runs run in a goroutine until stop is called or the test
// ends, and checks that it returns nil, in time.
func runUntilCleanup(t *testing.T, what string, run func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New(what + ": Run did not return within 30s")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%s: Run: %v", what, err)
		}
	})
	return stop
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// deadURL is the URL of a port nothing listens on.
func deadURL(t *testing.T) string {
	ln := listen(t)
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func status(u string) int {
	resp, err := http.Get(u)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

type memberView struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

type clusterAnswer struct {
	Ring    string       `json:"ring"`
	Members []memberView `json:"members"`
	User    *struct {
		ID    string `json:"id"`
		Owner string `json:"owner"`
	} `json:"user"`
}

// directCluster asks the dispatcher itself, with the key.
func (c *demoCluster) directCluster() clusterAnswer {
	c.t.Helper()
	code, b := call(c.t, "GET", c.dispURL+"/v1/cluster", "", "Bearer "+demoTestKey)
	var v clusterAnswer
	if code != http.StatusOK || json.Unmarshal(b, &v) != nil {
		c.t.Fatalf("dispatcher /v1/cluster: %d %s", code, b)
	}
	return v
}

// call makes one request; body, if not empty, is sent as JSON.
func call(t *testing.T, method, u, body, auth string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// demoToken gets a token from the demo, as the page does.
func (d *runningDemo) token(t *testing.T, user string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"user": user})
	code, body := call(t, "POST", d.url+"/v1/dev/token", string(b), "")
	var tok struct{ Token, Expires string }
	if code != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.Token == "" {
		t.Fatalf("POST /v1/dev/token: %d %s", code, body)
	}
	return tok.Token
}

type connectAnswer struct{ Gateway, URL, Ring string }

func (d *runningDemo) connect(t *testing.T, tok string) connectAnswer {
	t.Helper()
	code, body := call(t, "POST", d.url+"/v1/connect", "", "Bearer "+tok)
	var a connectAnswer
	if code != http.StatusOK || json.Unmarshal(body, &a) != nil {
		t.Fatalf("POST /v1/connect: %d %s", code, body)
	}
	return a
}

// wsClient is a socket as the browser holds it: it records every frame.
type wsClient struct {
	t      *testing.T
	c      *websocket.Conn
	mu     sync.Mutex
	frames []wire.ServerFrame
	raw    []string
	closed chan struct{}
	close  websocket.CloseError // once closed; Code -1 when no close frame came
}

func dialWS(t *testing.T, u string, auth *wire.ClientFrame) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	c.SetReadLimit(1 << 20)
	s := &wsClient{t: t, c: c, closed: make(chan struct{})}
	go s.read()
	t.Cleanup(func() {
		c.CloseNow()
		<-s.closed
	})
	if auth != nil {
		s.send(*auth)
	}
	return s
}

func (s *wsClient) send(f any) {
	b, _ := json.Marshal(f)
	s.c.Write(context.Background(), websocket.MessageText, b)
}

func (s *wsClient) read() {
	defer close(s.closed)
	for {
		_, b, err := s.c.Read(context.Background())
		if err != nil {
			s.mu.Lock()
			if !errors.As(err, &s.close) {
				s.close.Code = -1
			}
			s.mu.Unlock()
			return
		}
		f, err := wire.DecodeServerFrame(b)
		if err != nil {
			s.t.Errorf("undecodable frame %s: %v", b, err)
			continue
		}
		s.mu.Lock()
		s.frames = append(s.frames, f)
		s.raw = append(s.raw, string(b))
		s.mu.Unlock()
	}
}

// waitFrame waits for a frame of type typ for which ok holds, and returns it.
func (s *wsClient) waitFrame(typ string, ok func(wire.ServerFrame) bool) wire.ServerFrame {
	s.t.Helper()
	var got wire.ServerFrame
	waitFor(s.t, 15*time.Second, "a "+typ+" frame", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, f := range s.frames {
			if f.Type == typ && (ok == nil || ok(f)) {
				got = f
				return true
			}
		}
		return false
	})
	return got
}

func (s *wsClient) waitClosed() websocket.CloseError {
	s.t.Helper()
	select {
	case <-s.closed:
	case <-time.After(15 * time.Second):
		s.t.Fatal("socket not closed within 15s")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.close
}

// TestDemoPageFlow walks the page's calls through the demo: a token for
// alice, /v1/connect answering a socket URL of the demo's, the socket to
// alice's gateway through the demo, and notifications and a broadcast
// posted through the demo with whatever key the page sends, which the demo
// replaces with its own. The first dispatcher in the demo's list cannot be
// reached: it is skipped.
func TestDemoPageFlow(t *testing.T) {
	c := newDemoCluster(t, "gw-1", "gw-2")
	d := c.demo

	if code, body := call(t, "GET", d.url+"/", "", ""); code != http.StatusOK || !bytes.Contains(body, []byte("herald")) {
		t.Errorf("GET /: %d, want the page", code)
	}
	if code, body := call(t, "GET", d.url+"/app.js", "", ""); code != http.StatusOK || !bytes.Contains(body, []byte("/v1/dev/config")) {
		t.Errorf("GET /app.js: %d, want the page's script", code)
	}
	if code, _ := call(t, "GET", d.url+"/healthz", "", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := call(t, "GET", d.url+"/readyz", "", ""); code != http.StatusOK {
		t.Errorf("/readyz: %d %s, want 200 (the dispatcher is ready)", code, body)
	}

	// The config the page publishes with holds no real key.
	code, body := call(t, "GET", d.url+"/v1/dev/config", "", "")
	var cfg struct {
		APIKey string `json:"api_key"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &cfg) != nil || cfg.APIKey == "" {
		t.Fatalf("/v1/dev/config: %d %s, want an api_key for the page to send", code, body)
	}
	if bytes.Contains(body, []byte(demoTestKey)) {
		t.Fatalf("/v1/dev/config hands out the real API key: %s", body)
	}

	tok := d.token(t, "alice")
	v, _ := token.NewVerifier(demoTestSecret)
	if claims, err := v.Verify(tok); err != nil || claims.User != "alice" || time.Until(claims.Expires) < 50*time.Minute {
		t.Errorf("the demo's token: %+v, %v; want alice's, for about an hour", claims, err)
	}

	direct := c.directCluster()
	a := d.connect(t, tok)
	if a.URL != d.ws+"/ws/"+a.Gateway {
		t.Errorf("/v1/connect url %q, want the demo's %s/ws/%s", a.URL, d.ws, a.Gateway)
	}
	if a.Ring != direct.Ring {
		t.Errorf("/v1/connect ring %q, want the dispatcher's %q", a.Ring, direct.Ring)
	}
	s := dialWS(t, a.URL, &wire.ClientFrame{Type: wire.TypeAuth, Token: tok, Ring: a.Ring})
	hello := s.waitFrame(wire.TypeHello, nil)
	if hello.Gateway != a.Gateway || hello.User != "alice" {
		t.Fatalf("hello %+v, want alice on %s", hello, a.Gateway)
	}

	before := len(c.tap.seen())
	for i, auth := range []string{"Bearer " + cfg.APIKey, "Bearer wrong-key", ""} {
		data := `{"text":"hello ` + string(rune('a'+i)) + `"}`
		code, body := call(t, "POST", d.url+"/v1/notify", `{"user":"alice","data":`+data+`}`, auth)
		var n struct {
			Seq     uint64 `json:"seq"`
			Gateway string `json:"gateway"`
		}
		if code != http.StatusAccepted || json.Unmarshal(body, &n) != nil || n.Gateway != a.Gateway {
			t.Fatalf("notify through the demo with %q: %d %s, want 202 routed to %s", auth, code, body, a.Gateway)
		}
		f := s.waitFrame(wire.TypeNotification, func(f wire.ServerFrame) bool { return f.Seq == n.Seq })
		if string(f.Data) != data {
			t.Errorf("notification %d data %s, want %s", n.Seq, f.Data, data)
		}
	}
	// The dispatcher saw the demo's key, and only it, on every request.
	for _, line := range c.tap.seen()[before:] {
		if line != "/v1/notify Bearer "+demoTestKey {
			t.Errorf("the dispatcher got %q, want the demo's key", line)
		}
	}
	if n := len(c.tap.seen()) - before; n != 3 {
		t.Errorf("the dispatcher got %d notify requests, want 3", n)
	}
	// The dead dispatcher was tried, and skipped.
	if c.demo.disp.down[0].Load() == 0 {
		t.Error("the unreachable dispatcher was never marked down: was it ever tried?")
	}
	// Without the demo's key, the same request is refused: the 202s above
	// are the demo's doing.
	if code, _ := call(t, "POST", c.dispURL+"/v1/notify", `{"user":"alice","data":1}`, "Bearer "+cfg.APIKey); code != http.StatusUnauthorized {
		t.Errorf("the dispatcher with the page's key: %d, want 401", code)
	}

	if code, body := call(t, "POST", d.url+"/v1/broadcast", `{"data":{"text":"to everyone"}}`, "Bearer "+cfg.APIKey); code != http.StatusAccepted {
		t.Errorf("broadcast through the demo: %d %s", code, body)
	}
	s.waitFrame(wire.TypeBroadcast, func(f wire.ServerFrame) bool { return string(f.Data) == `{"text":"to everyone"}` })

	// The cluster view: the members' URLs are the demo's.
	code, body = call(t, "GET", d.url+"/v1/cluster?user=alice", "", "")
	var view clusterAnswer
	if code != http.StatusOK || json.Unmarshal(body, &view) != nil {
		t.Fatalf("/v1/cluster through the demo: %d %s", code, body)
	}
	if len(view.Members) != 2 || view.Ring != direct.Ring || view.User == nil || view.User.Owner != a.Gateway {
		t.Errorf("/v1/cluster through the demo: %s; want both gateways, ring %s, alice on %s", body, direct.Ring, a.Gateway)
	}
	for _, m := range view.Members {
		if m.URL != d.ws+"/ws/"+m.ID {
			t.Errorf("member %s url %q, want %s/ws/%s", m.ID, m.URL, d.ws, m.ID)
		}
	}
	for _, real := range c.gateways {
		if bytes.Contains(body, []byte(real)) {
			t.Errorf("/v1/cluster through the demo shows a gateway's real URL %s", real)
		}
	}
	if last := c.tap.seen(); last[len(last)-1] != "/v1/cluster Bearer "+demoTestKey {
		t.Errorf("the dispatcher got %q for /v1/cluster, want the demo's key", last[len(last)-1])
	}
}

// TestDemoBadRequests: what the page can get wrong gets a clear error from
// the demo, as from a dispatcher.
func TestDemoBadRequests(t *testing.T) {
	c := newDemoCluster(t, "gw-1")
	d := c.demo
	for _, tc := range []struct {
		method, path, ctype, body string
		want                      int
		code                      string
	}{
		{"POST", "/v1/dev/token", "application/json", `{"user":""}`, 400, "invalid_user"},
		{"POST", "/v1/dev/token", "application/json", `{"user":"a\u0001b"}`, 400, "invalid_user"},
		{"POST", "/v1/dev/token", "application/json", `{}`, 400, "invalid_user"},
		{"POST", "/v1/dev/token", "application/json", `{"user":"bob","x":1}`, 400, "invalid_json"},
		{"POST", "/v1/dev/token", "application/json", `{"user":"bob"} {}`, 400, "invalid_json"},
		{"POST", "/v1/dev/token", "text/plain", `{"user":"bob"}`, 415, "unsupported_media_type"},
		{"POST", "/v1/dev/token", "application/json", `{"user":"` + strings.Repeat("x", 5000) + `"}`, 413, "payload_too_large"},
		{"POST", "/v1/notify", "text/plain", `{"user":"bob","data":1}`, 415, "unsupported_media_type"},
		{"POST", "/v1/notify", "application/json", `{"user":"bob","data":"` + strings.Repeat("x", 200<<10) + `"}`, 413, "payload_too_large"},
		{"POST", "/v1/notify", "application/json", `{"user":"bob"}`, 400, "invalid_data"}, // the dispatcher's answer, passed on
		{"POST", "/v1/connect", "", ``, 401, "unauthorized"},
		{"GET", "/v1/cluster?user=%01", "", ``, 400, "invalid_user"},
		{"GET", "/ws/gw-9", "", ``, 404, "not_found"},
		{"GET", "/ws/bad%20id", "", ``, 404, "not_found"},
	} {
		req, _ := http.NewRequest(tc.method, d.url+tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(b, &e)
		if resp.StatusCode != tc.want || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s %s %.60s: %d %s; want %d %s", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.want, tc.code)
		}
	}
	// The demo has no /v1/dev route but these two: in particular none that
	// hands out the key.
	if code, _ := call(t, "GET", d.url+"/v1/notify/batch", "", ""); code != http.StatusNotFound {
		t.Errorf("/v1/notify/batch: %d, want 404 (the page does not call it)", code)
	}
}

// TestDemoMovedRewritten: a socket that reaches a gateway that does not own
// its user, through the demo, gets a moved frame naming the owner's socket
// URL on the demo, not the owner's real URL, and the 4001 close; following
// it lands on the owner.
func TestDemoMovedRewritten(t *testing.T) {
	c := newDemoCluster(t, "gw-1", "gw-2")
	d := c.demo
	tok := d.token(t, "carol")
	a := d.connect(t, tok)
	other := "gw-1"
	if a.Gateway == other {
		other = "gw-2"
	}
	s := dialWS(t, d.ws+"/ws/"+other, &wire.ClientFrame{Type: wire.TypeAuth, Token: tok, Ring: a.Ring})
	moved := s.waitFrame(wire.TypeMoved, nil)
	if want := d.ws + "/ws/" + a.Gateway; moved.URL != want {
		t.Errorf("moved url %q, want the demo's %q (the gateway's real one is %s)", moved.URL, want, c.gateways[a.Gateway])
	}
	if ce := s.waitClosed(); ce.Code != wire.CloseMoved {
		t.Errorf("close %d %q after moved, want %d", ce.Code, ce.Reason, wire.CloseMoved)
	}
	s2 := dialWS(t, moved.URL, &wire.ClientFrame{Type: wire.TypeAuth, Token: tok, Ring: a.Ring})
	if h := s2.waitFrame(wire.TypeHello, nil); h.Gateway != a.Gateway {
		t.Errorf("after the move: hello from %s, want %s", h.Gateway, a.Gateway)
	}

	// A moved frame naming a gateway nobody knows is dropped; the 4001
	// close still comes, and sends the client back to /v1/connect.
	b, keep := d.rewriteMoved(httptest.NewRequest("GET", "/ws/gw-1", nil), wire.Encode(wire.Moved{Type: wire.TypeMoved, URL: "ws://10.9.9.9:1/ws"}))
	if keep {
		t.Errorf("a moved frame naming an unknown gateway was passed on as %s", b)
	}
}

// TestDemoCloseCodes: the gateway's close codes reach the browser through
// the demo, and the demo's own refusals use the codes herald.js acts on.
func TestDemoCloseCodes(t *testing.T) {
	c := newDemoCluster(t, "gw-1")
	d := c.demo
	u := d.ws + "/ws/gw-1"

	bad, _ := token.Sign([]byte("another secret, also thirty-two bytes long"), "dave", time.Hour)
	s := dialWS(t, u, &wire.ClientFrame{Type: wire.TypeAuth, Token: bad})
	if ce := s.waitClosed(); ce.Code != wire.CloseUnauthorized || ce.Reason == "" {
		t.Errorf("a token the gateway refuses: close %d %q, want %d and the gateway's reason", ce.Code, ce.Reason, wire.CloseUnauthorized)
	}
	expired, _ := token.Sign(demoTestSecret, "dave", -time.Minute)
	s = dialWS(t, u, &wire.ClientFrame{Type: wire.TypeAuth, Token: expired})
	if ce := s.waitClosed(); ce.Code != wire.CloseTokenExpired {
		t.Errorf("an expired token: close %d %q, want %d", ce.Code, ce.Reason, wire.CloseTokenExpired)
	}

	// A demo that proxies one socket at a time refuses the second with
	// 1013, and closes the first with 1012 when it stops.
	small := c.startDemo(func(cfg *demoConfig) { cfg.MaxSockets = 1 })
	tok := small.token(t, "erin")
	first := dialWS(t, small.ws+"/ws/gw-1", &wire.ClientFrame{Type: wire.TypeAuth, Token: tok})
	first.waitFrame(wire.TypeHello, nil)
	second := dialWS(t, small.ws+"/ws/gw-1", &wire.ClientFrame{Type: wire.TypeAuth, Token: tok})
	if ce := second.waitClosed(); ce.Code != wire.CloseTryAgainLater {
		t.Errorf("a socket over the demo's cap: close %d %q, want %d", ce.Code, ce.Reason, wire.CloseTryAgainLater)
	}
	if err := small.stop(); err != nil {
		t.Errorf("stopping the demo: %v", err)
	}
	if ce := first.waitClosed(); ce.Code != wire.CloseServiceRestart {
		t.Errorf("a socket when the demo stops: close %d %q, want %d", ce.Code, ce.Reason, wire.CloseServiceRestart)
	}

	// The browser's close reaches the gateway: its socket count drops.
	tok = d.token(t, "frank")
	s = dialWS(t, u, &wire.ClientFrame{Type: wire.TypeAuth, Token: tok})
	s.waitFrame(wire.TypeHello, nil)
	waitFor(t, 10*time.Second, "the gateway to count frank's socket", func() bool { return c.sockets(t, "gw-1") == 1 })
	s.c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 10*time.Second, "the gateway to drop frank's socket", func() bool { return c.sockets(t, "gw-1") == 0 })
}

// sockets is gateway id's socket count, as the dispatcher reports it.
func (c *demoCluster) sockets(t *testing.T, id string) int {
	code, b := call(t, "GET", c.dispURL+"/v1/cluster", "", "Bearer "+demoTestKey)
	var v struct {
		Members []struct {
			ID      string `json:"id"`
			Sockets *int   `json:"sockets"`
		} `json:"members"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &v) != nil {
		return -1
	}
	for _, m := range v.Members {
		if m.ID == id && m.Sockets != nil {
			return *m.Sockets
		}
	}
	return -1
}

// TestDemoNoDispatcher: with no dispatcher reachable the demo says so, and
// is not ready.
func TestDemoNoDispatcher(t *testing.T) {
	cfg := demoConfig{Listener: listen(t), Dispatchers: []string{deadURL(t)}, APIKey: demoTestKey, TokenSecret: demoTestSecret, Logger: demoLogger(t)}
	d, err := newDemo(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, "demo", d.Run)
	base := "http://" + cfg.Listener.Addr().String()
	if code, _ := call(t, "GET", base+"/readyz", "", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz: %d, want 503", code)
	}
	if code, _ := call(t, "GET", base+"/healthz", "", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", code)
	}
	for _, path := range []string{"/v1/notify", "/v1/connect"} {
		code, b := call(t, "POST", base+path, `{"user":"a","data":1}`, "")
		if code != http.StatusServiceUnavailable || !bytes.Contains(b, []byte(`"unavailable"`)) {
			t.Errorf("%s: %d %s, want 503 unavailable", path, code, b)
		}
	}
}

// TestDemoRefusesToStart: no secret or key, no default for either, the
// well-known dev ones refused, and no --dev.
func TestDemoRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte(demoTestKey+"\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	secret := string(demoTestSecret)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-secret", secret}, "no --api-key or --api-key-file"},
		{[]string{"--api-key", "k"}, "no --token-secret or --token-secret-file"},
		{[]string{"--api-key-file", keyFile}, "no --token-secret"},
		{[]string{"--api-key-file", empty, "--token-secret", secret}, "is empty"},
		{[]string{"--api-key-file", filepath.Join(dir, "missing"), "--token-secret", secret}, "--api-key-file"},
		{[]string{"--api-key", "k", "--api-key-file", keyFile, "--token-secret", secret}, "give one"},
		{[]string{"--api-key", "k", "--token-secret", "short"}, "at least 32"},
		{[]string{"--api-key", devAPIKey, "--token-secret", secret}, "well-known key"},
		{[]string{"--api-key", "k", "--token-secret", devSecret}, "well-known secret"},
		{[]string{"--dev", "--api-key", "k", "--token-secret", secret}, "flag provided but not defined: -dev"},
		{[]string{"--api-key", "k", "--token-secret", secret, "--dispatchers", "nats://x"}, "want an http"},
		{[]string{"--api-key", "k", "--token-secret", secret, "--public-ws", "http://x"}, "want a ws://"},
		{[]string{"--api-key", "k", "--token-secret", secret, "--token-ttl", "10s"}, "under a minute"},
	} {
		args := append([]string{"--listen", "127.0.0.1:0", "--log-level", "error"}, tc.args...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := runDemo(ctx, args)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("herald demo %s: %v, want a refusal saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// From files, as from a mounted secret, whitespace trimmed; and from
	// the environment.
	t.Setenv("HERALD_TOKEN_SECRET", secret)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run returns at once: this checks only that it would start
	if err := runDemo(ctx, []string{"--listen", "127.0.0.1:0", "--api-key-file", keyFile, "--log-level", "error"}); err != nil {
		t.Errorf("herald demo with --api-key-file and HERALD_TOKEN_SECRET: %v", err)
	}
	if k, err := readSecret("api-key", "", keyFile); err != nil || k != demoTestKey {
		t.Errorf("readSecret: %q, %v; want %q", k, err, demoTestKey)
	}
}

// TestDemoDispatcherFailover: a dispatcher that cannot be connected to is
// skipped, for every request; one that took a notification and hung up is
// not retried elsewhere (that could store it twice): the page is told the
// outcome is unknown.
func TestDemoDispatcherFailover(t *testing.T) {
	c := newDemoCluster(t, "gw-1")
	notifies := func() int {
		n := 0
		for _, line := range c.tap.seen() {
			if strings.HasPrefix(line, "/v1/notify ") {
				n++
			}
		}
		return n
	}

	// Two requests: round-robin starts one of them at the dead dispatcher.
	dead := c.startDemo(func(cfg *demoConfig) { cfg.Dispatchers = []string{c.tap.url, deadURL(t)} })
	for range 2 {
		if code, b := call(t, "POST", dead.url+"/v1/notify", `{"user":"gina","data":1}`, ""); code != http.StatusAccepted {
			t.Errorf("notify with a dead dispatcher in the list: %d %s, want 202", code, b)
		}
	}
	if dead.disp.down[1].Load() == 0 {
		t.Error("the dead dispatcher was never tried")
	}
	if n := notifies(); n != 2 {
		t.Errorf("the live dispatcher got %d notifies, want 2", n)
	}

	ln := listen(t)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			io.Copy(io.Discard, conn) // the whole request, then hang up unanswered
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	hangup := c.startDemo(func(cfg *demoConfig) { cfg.Dispatchers = []string{c.tap.url, "http://" + ln.Addr().String()} })
	var codes []string
	for range 2 {
		code, b := call(t, "POST", hangup.url+"/v1/notify", `{"user":"gina","data":2}`, "")
		var e struct{ Error struct{ Code string } }
		json.Unmarshal(b, &e)
		codes = append(codes, http.StatusText(code)+" "+e.Error.Code)
	}
	slices.Sort(codes)
	if want := []string{"Accepted ", "Service Unavailable unknown_outcome"}; !slices.Equal(codes, want) {
		t.Errorf("notifies with a dispatcher that hangs up in the list: %q, want %q", codes, want)
	}
	if n := notifies(); n != 3 {
		t.Errorf("the live dispatcher got %d notifies in all, want 3: the one the other took must not be retried", n)
	}
	// Reads are safe to repeat: they go on to the next dispatcher.
	for range 2 {
		if code, b := call(t, "GET", hangup.url+"/v1/cluster", "", ""); code != http.StatusOK {
			t.Errorf("/v1/cluster with a dispatcher that hangs up in the list: %d %s", code, b)
		}
	}
}

// TestDemoBrowser runs the real page in Chromium against the demo: sign in,
// connect through the demo's proxy, send from the page's form and receive;
// then the owner gateway drains, its moved frame (rewritten by the demo)
// takes the page to the other gateway, still through the demo, and a
// notification sent then arrives there.
func TestDemoBrowser(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("no Chromium at %s (make deps installs it): %v", chromium, err)
	}
	c := newDemoCluster(t, "gw-1", "gw-2")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	do := func(actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("browser: %v", err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? '').trim()`, sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	waitJS := func(timeout time.Duration, what, expr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
			t.Fatalf("waiting %v for %s: %v; status %q %q", timeout, what, err, text("#status"), text("#status-detail"))
		}
	}
	received := func(msg string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#notifications li[data-kind="notification"]')].some(li => li.textContent.includes(%q))`, msg)
	}

	do(chromedp.Navigate(c.demo.url + "/?user=alice"))
	waitJS(30*time.Second, "alice connected", `document.querySelector('#status').dataset.state === 'connected'`)
	gw := text("#gateway")
	if detail := text("#status-detail"); detail != c.demo.ws+"/ws/"+gw {
		t.Errorf("the page's socket is at %q, want the demo's %s/ws/%s", detail, c.demo.ws, gw)
	}
	do(chromedp.SetValue(chromedp.ID("message"), "hello through the demo"), chromedp.Click(chromedp.ID("send")))
	waitJS(10*time.Second, "the notify answer", `document.querySelector('#response').dataset.result === 'ok'`)
	waitJS(10*time.Second, "the notification", received("hello through the demo"))

	// Drain alice's gateway: it moves her to the other one.
	other := "gw-1"
	if gw == other {
		other = "gw-2"
	}
	c.gws[gw].Drain()
	waitJS(30*time.Second, "alice moved to "+other, fmt.Sprintf(
		`document.querySelector('#status').dataset.state === 'connected' && document.querySelector('#gateway').textContent.trim() === %q`, other))
	if detail := text("#status-detail"); detail != c.demo.ws+"/ws/"+other {
		t.Errorf("after the move the page's socket is at %q, want the demo's %s/ws/%s", detail, c.demo.ws, other)
	}
	if moves := text("#moves"); moves == "0" {
		t.Errorf("the page counts %s moves: it should have followed a moved frame; its events, newest first:\n%s", moves, text("#events"))
	}
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	moved, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(window.heraldFrames || []).filter(f => f.type === 'moved').map(f => f.url)`))
	cancel()
	// Under load a gateway whose ring lags may bounce the page once more
	// before it settles: every move must name the demo's URL all the same.
	if err != nil || len(moved) == 0 || moved[0] != c.demo.ws+"/ws/"+other {
		t.Errorf("the page got moved frames naming %q (%v), want first one naming the demo's %s/ws/%s", moved, err, c.demo.ws, other)
	}
	for _, u := range moved {
		if u != c.demo.ws+"/ws/gw-1" && u != c.demo.ws+"/ws/gw-2" {
			t.Errorf("the page got a moved frame naming %q, not a socket URL of the demo's", u)
		}
	}
	do(chromedp.SetValue(chromedp.ID("message"), "after the move"), chromedp.Click(chromedp.ID("send")))
	waitJS(10*time.Second, "the notification after the move", received("after the move"))
}
