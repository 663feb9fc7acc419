package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/heraldpush/herald/ring/consul/consultest"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

var secret = []byte("herald test secret: at least thirty-two bytes")

func logger(tb testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("HERALD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
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

// adminURLs maps each test gateway's public WebSocket URL to the base URL of
// its admin listener, where its metrics are.
var adminURLs sync.Map

// cluster is real Consul and real NATS with JetStream, the log stream, and
// the gateways a test starts.
type cluster struct {
	tb     testing.TB
	agent  *consultest.Agent
	consul *api.Client
	nats   *inboxtest.Server   // the first NATS node
	nodes  []*inboxtest.Server // every NATS node
	urls   string              // every node's client URL
	log    *inbox.Log          // the test's own appender: it plays the dispatcher
	nc     *nats.Conn
	gws    map[string]*gw
}

type gw struct {
	*gateway.Gateway
	deployment wire.Deployment
	url        string
	cancel     context.CancelFunc
	done       chan error
}

func newCluster(tb testing.TB, logCfg inbox.Config) *cluster {
	return newClusterN(tb, logCfg, 1)
}

// newClusterN runs NATS on natsNodes nodes (1, or 3 for a replicated log).
func newClusterN(tb testing.TB, logCfg inbox.Config, natsNodes int) *cluster {
	tb.Helper()
	a := consultest.Start(tb)
	var nodes []*inboxtest.Server
	var urls string
	if natsNodes == 1 {
		s := inboxtest.Run(tb)
		nodes, urls = []*inboxtest.Server{s}, s.URL()
	} else {
		nodes, urls = inboxtest.RunCluster(tb, natsNodes)
	}
	nc := inboxtest.Connect(tb, urls, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	l, err := inbox.Ensure(context.Background(), nc, logCfg)
	if err != nil {
		tb.Fatal(err)
	}
	return &cluster{tb: tb, agent: a, consul: a.Client(), nats: nodes[0], nodes: nodes, urls: urls, log: l, nc: nc, gws: map[string]*gw{}}
}

// startGateway starts a gateway and waits until it serves and every running
// gateway's ring includes it.
func (c *cluster) startGateway(id string, edit ...func(*gateway.Config)) *gw {
	c.tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.tb.Fatal(err)
	}
	url := "ws://" + ln.Addr().String() + "/ws"
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.tb.Fatal(err)
	}
	adminURLs.Store(url, "http://"+admin.Addr().String())
	nc := inboxtest.Connect(c.tb, c.urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	cfg := gateway.Config{
		ID: id, Listener: ln, AdminListener: admin, PublicURL: url, NATS: nc, Consul: c.consul, TTL: 2 * time.Second,
		Log: c.log.Config(), TokenSecrets: [][]byte{secret}, Logger: logger(c.tb),
		Watch:        consul.WatchConfig{QueryInterval: 50 * time.Millisecond, Debounce: 50 * time.Millisecond},
		WriteTimeout: 2 * time.Second, AntiEntropy: 2 * time.Second,
	}
	for _, e := range edit {
		e(&cfg)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		c.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &gw{Gateway: g, deployment: cfg.Deployment, url: url, cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- g.Run(ctx) }()
	c.gws[id] = w
	c.tb.Cleanup(func() { c.stopGateway(id) })
	waitFor(c.tb, 10*time.Second, id+" in every ring", func() bool {
		for _, o := range c.gws {
			if _, ok := o.Ring().Member(id); !ok && o.deployment == w.deployment {
				return false
			}
		}
		return ready(url)
	})
	return w
}

func (c *cluster) stopGateway(id string) {
	w := c.gws[id]
	if w == nil {
		return
	}
	delete(c.gws, id)
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil {
			c.tb.Errorf("gateway %s: Run: %v", id, err)
		}
	case <-time.After(20 * time.Second):
		c.tb.Errorf("gateway %s: Run did not return", id)
	}
}

func ready(wsURL string) bool {
	resp, err := http.Get(strings.Replace(strings.TrimSuffix(wsURL, "/ws"), "ws://", "http://", 1) + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ring is the ring the gateways agree on.
func (c *cluster) ring() *ring.Ring { return c.ringOf("") }

// ringOf is the ring the gateways of deployment d agree on.
func (c *cluster) ringOf(d wire.Deployment) *ring.Ring {
	for _, g := range c.gws {
		if g.deployment == d {
			return g.Ring()
		}
	}
	return nil
}

// publish appends a notification and rings its owner, as a dispatcher does.
func (c *cluster) publish(user, id string, data string) inbox.Appended {
	c.tb.Helper()
	a, err := c.log.Append(context.Background(), user, id, []byte(data))
	if err != nil {
		c.tb.Fatalf("append: %v", err)
	}
	if owner, ok := c.ring().Owner(user); ok {
		d := wire.Doorbell{User: user, Seq: a.Seq, Epoch: a.Epoch, HasContent: !a.Duplicate, Prev: a.Prev, ID: id, TS: a.TS, Data: []byte(data)}
		if err := c.nc.PublishMsg(doorbellMsg(d, owner.ID)); err != nil {
			c.tb.Fatal(err)
		}
	}
	return a
}

func userToken(tb testing.TB, user string, ttl time.Duration) string {
	tb.Helper()
	t, err := token.Sign(secret, user, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// socket is a raw WebSocket client that records every frame it gets.
type socket struct {
	tb     testing.TB
	c      *websocket.Conn
	mu     sync.Mutex
	frames []wire.ServerFrame
	closed chan struct{}
	status websocket.StatusCode // close code, once closed
}

// dial opens a socket and sends auth; it does not wait for hello.
func dial(tb testing.TB, url string, auth wire.ClientFrame, opts ...func(*websocket.DialOptions)) *socket {
	tb.Helper()
	o := &websocket.DialOptions{}
	for _, f := range opts {
		f(o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, o)
	if err != nil {
		tb.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(1 << 20)
	s := &socket{tb: tb, c: c, closed: make(chan struct{})}
	if auth.Type != "" {
		s.send(auth)
	}
	go s.read()
	tb.Cleanup(func() {
		c.CloseNow()
		<-s.closed
	})
	return s
}

func (s *socket) send(f any) {
	b, _ := json.Marshal(f)
	s.c.Write(context.Background(), websocket.MessageText, b)
}

func (s *socket) read() {
	defer close(s.closed)
	for {
		_, b, err := s.c.Read(context.Background())
		if err != nil {
			s.mu.Lock()
			s.status = websocket.CloseStatus(err)
			s.mu.Unlock()
			return
		}
		f, err := wire.DecodeServerFrame(b)
		if err != nil {
			s.tb.Errorf("undecodable frame %s: %v", b, err)
			continue
		}
		s.mu.Lock()
		s.frames = append(s.frames, f)
		s.mu.Unlock()
	}
}

// got returns the frames received but caught_up, which says where the
// backlog ended and is checked by the tests of where sockets start (all).
func (s *socket) got() []wire.ServerFrame {
	var out []wire.ServerFrame
	for _, f := range s.all() {
		if f.Type != wire.TypeCaughtUp {
			out = append(out, f)
		}
	}
	return out
}

// all returns every frame received.
func (s *socket) all() []wire.ServerFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.ServerFrame(nil), s.frames...)
}

// notifications returns the seqs of the notification frames received.
func (s *socket) notifications() []uint64 {
	var seqs []uint64
	for _, f := range s.got() {
		if f.Type == wire.TypeNotification {
			seqs = append(seqs, f.Seq)
		}
	}
	return seqs
}

func (s *socket) waitClosed(timeout time.Duration) websocket.StatusCode {
	s.tb.Helper()
	select {
	case <-s.closed:
	case <-time.After(timeout):
		s.tb.Fatalf("socket not closed within %v", timeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *socket) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

func (s *socket) hello() wire.ServerFrame {
	s.tb.Helper()
	waitFor(s.tb, 5*time.Second, "hello", func() bool { return len(s.got()) > 0 || s.isClosed() })
	f := s.got()
	if len(f) == 0 || f[0].Type != wire.TypeHello {
		s.tb.Fatalf("first frames %+v (closed: %v, status %d), want hello", f, s.isClosed(), s.status)
	}
	return f[0]
}

// checkStrict fails unless the notification seqs are strictly increasing.
func checkStrict(tb testing.TB, seqs []uint64) {
	tb.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			tb.Fatalf("seq %d after %d: not strictly increasing (%v)", seqs[i], seqs[i-1], seqs)
		}
	}
}

func auth(tb testing.TB, user string) wire.ClientFrame {
	return wire.ClientFrame{Type: wire.TypeAuth, Token: userToken(tb, user, time.Hour)}
}

func equalSeqs(a, b []uint64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func doorbellMsg(d wire.Doorbell, gateway string) *nats.Msg {
	return &nats.Msg{Subject: wire.GatewaySubject(gateway), Header: d.Header(), Data: d.Body()}
}
