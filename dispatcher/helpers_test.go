package dispatcher

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
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/heraldpush/herald/ring/consul/consultest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(coveredRun{m},
		// The Consul client's pooled HTTP transport keeps idle connections.
		// Matching these anywhere in the stack (rather than ignoring every
		// goroutine blocked on the network) still catches a server
		// connection Run left behind.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

// coveredRun runs the tests, then checks that they saw every answer
// docs/openapi.yaml lists (checkCoverage).
type coveredRun struct{ m *testing.M }

func (c coveredRun) Run() int {
	code := c.m.Run()
	if err := checkCoverage(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	return code
}

const (
	testKey  = "test-key-1"
	testKey2 = "test-key-2"
	testKey3 = "test-key-3"
)

var (
	testSecret  = []byte("0123456789abcdef0123456789abcdef")
	otherSecret = []byte("fedcba9876543210fedcba9876543210")
	bg          = context.Background()
)

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond until it holds or the timeout passes.
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

// env is a real NATS server with JetStream and a real Consul dev agent.
type env struct {
	t      *testing.T
	nats   *inboxtest.Server
	consul *consultest.Agent
	cc     *api.Client
	nc     *nats.Conn // the test's own connection, to inspect the stream
}

func newEnv(t *testing.T, natsOpts ...func(*server.Options)) *env {
	t.Helper()
	e := &env{t: t, nats: inboxtest.Run(t, natsOpts...), consul: consultest.Start(t)}
	e.cc = e.consul.Client()
	e.nc = inboxtest.Connect(t, e.nats.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	return e
}

// streamMsgs counts the messages in the log's stream; 0 if it does not exist.
func (e *env) streamMsgs() uint64 {
	e.t.Helper()
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := js.Stream(bg, "HERALD_INBOX")
	if err != nil {
		return 0
	}
	info, err := s.Info(bg)
	if err != nil {
		e.t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// readLog returns user's whole log.
func (e *env) readLog(user string) []inbox.Message {
	e.t.Helper()
	l, err := inbox.Open(bg, e.nc, inbox.Config{})
	if err != nil {
		e.t.Fatalf("inbox.Open: %v", err)
	}
	ms, err := l.ReadAfter(bg, user, 0, 1000)
	if err != nil {
		e.t.Fatalf("ReadAfter: %v", err)
	}
	return ms
}

// epoch is the log's current epoch as a gateway would read it.
func (e *env) epoch() string {
	e.t.Helper()
	l, err := inbox.Open(bg, e.nc, inbox.Config{})
	if err != nil {
		e.t.Fatalf("inbox.Open: %v", err)
	}
	return l.Epoch()
}

// gatewayOpts configures a test gateway.
type gatewayOpts struct {
	// noDoorbells leaves the doorbell subject without a subscriber.
	noDoorbells bool
	// reply answers doorbell requests with this status; empty: never.
	reply string
	// stats answers stats requests; nil: no subscriber.
	stats *wire.GatewayStats
	// ttl of the Consul check; if zero, 2s.
	ttl time.Duration
}

// testGateway plays a gateway: registered in Consul, answering liveness,
// collecting the doorbells and broadcasts it is sent.
type testGateway struct {
	id      string
	nc      *nats.Conn
	reg     *consul.Registration
	healthy atomic.Bool

	mu         sync.Mutex // guards the following
	doorbells  []wire.Doorbell
	requests   int // doorbells that came as requests
	broadcasts []*nats.Msg
	stats      wire.GatewayStats // the answer to stats requests
}

func (e *env) gateway(id string, o gatewayOpts) *testGateway {
	e.t.Helper()
	g := &testGateway{id: id, nc: inboxtest.Connect(e.t, e.nats.URL())}
	g.healthy.Store(true)
	nonce := "nonce-" + id
	sub := func(subject string, h nats.MsgHandler) {
		if _, err := g.nc.Subscribe(subject, h); err != nil {
			e.t.Fatal(err)
		}
	}
	sub(wire.LiveSubject(id), func(m *nats.Msg) { m.Respond([]byte(nonce)) })
	if !o.noDoorbells {
		sub(wire.GatewaySubject(id), func(m *nats.Msg) {
			db, err := wire.DecodeDoorbell(m.Header, m.Data)
			if err != nil {
				e.t.Errorf("gateway %s got a bad doorbell: %v", id, err)
				return
			}
			g.mu.Lock()
			g.doorbells = append(g.doorbells, db)
			if m.Reply != "" {
				g.requests++
			}
			g.mu.Unlock()
			if m.Reply != "" && o.reply != "" {
				b, _ := json.Marshal(wire.DeliveryReply{Status: o.reply})
				m.Respond(b)
			}
		})
	}
	sub(wire.BroadcastSubject, func(m *nats.Msg) {
		g.mu.Lock()
		g.broadcasts = append(g.broadcasts, m)
		g.mu.Unlock()
	})
	if o.stats != nil {
		g.stats = *o.stats
		sub(wire.StatsSubject(id), func(m *nats.Msg) {
			g.mu.Lock()
			b, _ := json.Marshal(g.stats)
			g.mu.Unlock()
			m.Respond(b)
		})
	}
	if err := g.nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	if o.ttl == 0 {
		o.ttl = 2 * time.Second
	}
	reg, err := consul.Register(bg, consul.RegisterConfig{
		Client: e.cc, ID: id, Address: "127.0.0.1", Port: 7000,
		URL: "ws://127.0.0.1:7000/" + id, Instance: nonce, TTL: o.ttl,
		Probe: consul.NATSProbe(consul.NewLink(g.nc), wire.LiveSubject), Logger: testLogger(e.t),
		Health: func() error {
			if !g.healthy.Load() {
				return io.ErrUnexpectedEOF // any error: the check fails
			}
			return nil
		},
	})
	if err != nil {
		e.t.Fatalf("Register %s: %v", id, err)
	}
	g.reg = reg
	e.t.Cleanup(func() { reg.Close() })
	return g
}

// doorbellsFor returns the doorbells the gateway got for user.
func (g *testGateway) doorbellsFor(user string) []wire.Doorbell {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []wire.Doorbell
	for _, d := range g.doorbells {
		if d.User == user {
			out = append(out, d)
		}
	}
	return out
}

// setMovesPending changes what the gateway's stats replies report as its
// moves pending.
func (g *testGateway) setMovesPending(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stats.MovesPending = n
}

func (g *testGateway) doorbellCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.doorbells)
}

func (g *testGateway) broadcastCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.broadcasts)
}

// testDispatcher is a running dispatcher and a client for it.
type testDispatcher struct {
	*Dispatcher
	t        *testing.T
	url      string
	adminURL string // empty when the test's Config has no admin listener
	nc       *nats.Conn
	reg      *prometheus.Registry
	client   *http.Client
	// stop ends Run and returns its error; later calls return the same.
	stop    func() error
	stopped atomic.Bool // stop has been called
}

// dispatcher starts a dispatcher on a loopback port, with an admin listener
// on another; it is stopped, and Run checked to return nil, when the test
// ends.
func (e *env) dispatcher(edit ...func(*Config)) *testDispatcher {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	nc := inboxtest.Connect(e.t, e.nats.URL(), nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	cfg := Config{
		Listener:      ln,
		AdminListener: admin,
		NATS:          nc,
		Consul:        e.cc,
		Watch:         consul.WatchConfig{QueryInterval: 50 * time.Millisecond, Debounce: 20 * time.Millisecond},
		APIKeys:       []string{testKey},
		TokenSecrets:  [][]byte{testSecret},
		Registry:      prometheus.NewRegistry(),
		Logger:        testLogger(e.t),
	}
	for _, f := range edit {
		f(&cfg)
	}
	if cfg.AdminListener != admin {
		admin.Close()
	}
	d, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	td := &testDispatcher{Dispatcher: d, t: e.t, url: "http://" + ln.Addr().String(), nc: nc, reg: cfg.Registry,
		client: &http.Client{Transport: &specCheck{tb: e.t, base: &http.Transport{}, public: ln.Addr().String()}, Timeout: 60 * time.Second}}
	if cfg.AdminListener != nil {
		td.adminURL = "http://" + cfg.AdminListener.Addr().String()
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var (
		once   sync.Once
		runErr error
	)
	td.stop = func() error {
		td.stopped.Store(true)
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = errors.New("Run did not return within 10s of its context ending")
			}
		})
		return runErr
	}
	e.t.Cleanup(func() {
		if err := td.stop(); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	e.t.Cleanup(func() { td.client.Transport.(*specCheck).base.(*http.Transport).CloseIdleConnections() })
	waitFor(e.t, 10*time.Second, "the log to be ensured", func() bool { return d.inbox.Load() != nil })
	return td
}

// waitRing waits until the dispatcher's ring has exactly these members.
func (td *testDispatcher) waitRing(ids ...string) {
	td.t.Helper()
	slices.Sort(ids)
	waitFor(td.t, 10*time.Second, "a ring of "+strings.Join(ids, ","), func() bool {
		r := td.Ring()
		if r == nil {
			return false
		}
		var got []string
		for _, m := range r.Members() {
			got = append(got, m.ID)
		}
		return slices.Equal(got, ids)
	})
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; headers come in name, value pairs.
func (td *testDispatcher) do(method, path, body string, headers ...string) response {
	td.t.Helper()
	r, err := td.try(method, path, body, headers...)
	if err != nil {
		td.t.Fatal(err)
	}
	return r
}

// admin sends a GET to the admin listener.
func (td *testDispatcher) admin(path string) response {
	td.t.Helper()
	if td.adminURL == "" {
		td.t.Fatal("the dispatcher has no admin listener")
	}
	r, err := td.tryURL("GET", td.adminURL+path, "")
	if err != nil {
		td.t.Fatal(err)
	}
	return r
}

// try is do for any goroutine: it returns its error.
func (td *testDispatcher) try(method, path, body string, headers ...string) (response, error) {
	return td.tryURL(method, td.url+path, body, headers...)
}

func (td *testDispatcher) tryURL(method, url, body string, headers ...string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := td.client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the body: %w", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// publish POSTs body to path with the test API key as JSON.
func (td *testDispatcher) publish(path, body string) response {
	td.t.Helper()
	return td.do("POST", path, body, "Authorization", "Bearer "+testKey, "Content-Type", "application/json")
}

// notified is a 202 answer to a notify.
type notified struct {
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Gateway   string `json:"gateway"`
	Status    string `json:"status"`
	Duplicate bool   `json:"duplicate"`
	Delivery  string `json:"delivery"`
}

// notify POSTs a notification and requires a 202.
func (td *testDispatcher) notify(body string) notified {
	td.t.Helper()
	r := td.publish("/v1/notify", body)
	if r.status != http.StatusAccepted {
		td.t.Fatalf("POST /v1/notify %s: %d %s, want 202", body, r.status, r.body)
	}
	return decodeAs[notified](td.t, r)
}

func decodeAs[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	d := json.NewDecoder(bytes.NewReader(r.body))
	d.DisallowUnknownFields()
	if err := d.Decode(&v); err != nil {
		tb.Fatalf("decoding %s as %T: %v", r.body, v, err)
	}
	return v
}

// apiError is the error body every failure has.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		ID      string `json:"id"`
	} `json:"error"`
}

// wantError checks a failure's status, code and body shape.
func wantError(tb testing.TB, r response, status int, code Code) apiError {
	tb.Helper()
	if r.status != status {
		tb.Fatalf("status %d (%s), want %d %s", r.status, r.body, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", ct)
	}
	e := decodeAs[apiError](tb, r)
	if e.Error.Code != string(code) || e.Error.Message == "" {
		tb.Fatalf("error body %s, want code %s and a message", r.body, code)
	}
	return e
}

// metric returns the value of the counter or gauge name with the given
// label pairs, 0 if absent. It reads them as Prometheus does, from the
// admin listener's /metrics; once the dispatcher has stopped, from its
// registry.
func (td *testDispatcher) metric(name string, labels ...string) float64 {
	td.t.Helper()
	if td.stopped.Load() || td.adminURL == "" {
		return td.gathered(name, labels...)
	}
	r := td.admin("/metrics")
	if r.status != http.StatusOK {
		td.t.Fatalf("GET /metrics on the admin listener: %d %s", r.status, r.body)
	}
	samples, err := parseExposition(r.body)
	if err != nil {
		td.t.Fatalf("GET /metrics: %v", err)
	}
next:
	for _, sm := range samples {
		if sm.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if sm.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return sm.value
	}
	return 0
}

// gathered is metric read from the registry.
func (td *testDispatcher) gathered(name string, labels ...string) float64 {
	td.t.Helper()
	mfs, err := td.reg.Gather()
	if err != nil {
		td.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// sample is one line of Prometheus's text exposition format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition reads the text format's samples: name{k="v",...} value.
func parseExposition(body []byte) ([]sample, error) {
	var out []sample
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sm := sample{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			return nil, fmt.Errorf("no value in %q", line)
		}
		sm.name, line = line[:i], line[i:]
		if line[0] == '{' {
			line = line[1:]
			for !strings.HasPrefix(line, "}") {
				k, rest, ok := strings.Cut(line, `="`)
				if !ok {
					return nil, fmt.Errorf("bad labels in %q", line)
				}
				var v strings.Builder
				j := 0
				for ; j < len(rest) && rest[j] != '"'; j++ {
					if rest[j] == '\\' && j+1 < len(rest) {
						j++
						if rest[j] == 'n' {
							v.WriteByte('\n')
							continue
						}
					}
					v.WriteByte(rest[j])
				}
				if j == len(rest) {
					return nil, fmt.Errorf("unterminated label value in %q", line)
				}
				sm.labels[strings.TrimPrefix(k, ",")] = v.String()
				line = rest[j+1:]
			}
			line = line[1:]
		}
		fields := strings.Fields(line) // the value, and perhaps a timestamp
		if len(fields) == 0 {
			return nil, fmt.Errorf("no value for %s", sm.name)
		}
		var err error
		if sm.value, err = strconv.ParseFloat(fields[0], 64); err != nil {
			return nil, fmt.Errorf("value of %s: %w", sm.name, err)
		}
		out = append(out, sm)
	}
	return out, nil
}

// ownedBy finds a user the ring gives to gateway id.
func (td *testDispatcher) ownedBy(id string) string {
	td.t.Helper()
	r := td.Ring()
	for i := range 10000 {
		u := "user-" + strconv.Itoa(i)
		if m, ok := r.Owner(u); ok && m.ID == id {
			return u
		}
	}
	td.t.Fatalf("no user owned by %s", id)
	return ""
}
