// Package inboxtest runs real NATS servers with JetStream in-process for
// tests: one server, or a cluster for replicated streams.
package inboxtest

import (
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/ring/consul/consultest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The keepalive of the test servers and of Connect's clients, the same as
// herald's (cmd/herald): a ping a second, and a peer that leaves two
// unanswered is cut off, so a frozen or cut-off server or client is noticed
// in 2-3s instead of the libraries' 2 minutes.
const (
	PingInterval = time.Second
	MaxPingsOut  = 2
)

// Server is an in-process NATS server that can be stopped and started again
// on the same port and store, as a restarted nats-server would be.
type Server struct {
	tb    testing.TB
	opts  server.Options
	ports []*consultest.Ports // held by the test whenever the server is down
	*server.Server
}

// Run starts a NATS server with JetStream on a free loopback port and a
// temporary store. edit may change the options first. The server is shut
// down when the test ends.
func Run(tb testing.TB, edit ...func(*server.Options)) *Server {
	tb.Helper()
	return run(tb, nil, edit...)
}

// run is Run with more held ports (a cluster node's route port) to release
// and guard with the client port.
func run(tb testing.TB, extra *consultest.Ports, edit ...func(*server.Options)) *Server {
	tb.Helper()
	client := consultest.Reserve(tb, 30900, 32700, 1, false)
	opts := server.Options{
		ServerName: "herald-test",
		Host:       "127.0.0.1",
		Port:       client.Nums[0],
		JetStream:  true,
		StoreDir:   tb.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		// As herald nats and production servers are configured: a
		// frozen or cut-off client is dropped within seconds.
		PingInterval: PingInterval,
		MaxPingsOut:  MaxPingsOut,
	}
	for _, e := range edit {
		e(&opts)
	}
	s := &Server{tb: tb, opts: opts, ports: []*consultest.Ports{client}}
	if extra != nil {
		s.ports = append(s.ports, extra)
	}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, on the same port and store.
func (s *Server) Start() {
	s.tb.Helper()
	opts := s.opts // the server keeps and changes its copy
	for _, p := range s.ports {
		p.Release()
	}
	ns, err := server.NewServer(&opts)
	if err != nil {
		s.tb.Fatalf("inboxtest: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		s.tb.Fatalf("inboxtest: NATS server %s not ready", s.opts.ServerName)
	}
	s.Server = ns
}

// Stop shuts the server down and waits for it. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	if s.Server == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
	s.Server = nil
	for _, p := range s.ports {
		p.Guard() // until it starts again, or the test ends
	}
}

// URL is the server's client URL; it stays the same across restarts.
func (s *Server) URL() string { return fmt.Sprintf("nats://%s:%d", s.opts.Host, s.opts.Port) }

// RunCluster starts an n-node JetStream cluster and waits until its meta
// leader sees every peer online. URLs lists every node's client URL, comma-separated, as
// nats.Connect takes them.
func RunCluster(tb testing.TB, n int) (nodes []*Server, urls string) {
	tb.Helper()
	routes := make([]*consultest.Ports, n)
	var routeURLs []*url.URL
	for i := range routes {
		routes[i] = consultest.Reserve(tb, 30900, 32700, 1, false)
		routeURLs = append(routeURLs, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(routes[i].Nums[0])})
	}
	for i := range n {
		s := run(tb, routes[i], func(o *server.Options) {
			o.ServerName = "herald-test-" + strconv.Itoa(i)
			o.Cluster = server.ClusterOpts{Name: "herald-test", Host: "127.0.0.1", Port: routes[i].Nums[0]}
			o.Routes = routeURLs
		})
		nodes = append(nodes, s)
		if urls != "" {
			urls += ","
		}
		urls += s.URL()
	}
	// Ready means the meta leader sees every peer online with JetStream:
	// before that, placing a replicated stream fails ("no suitable peers").
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range nodes {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == n {
				return nodes, urls
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("inboxtest: the %d-node cluster has no meta leader seeing every peer", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Connect connects to url with herald's keepalive (PingInterval,
// MaxPingsOut), then opts, and closes the connection when the test ends.
func Connect(tb testing.TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	opts = append([]nats.Option{nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(MaxPingsOut)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("inboxtest: connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Count counts the messages anyone publishes on subject from now on, such as
// JetStream API requests. The count it returns has every message published
// before the call: it flushes its own connection first, and it reads a
// channel subscription, which nats.go fills in its read loop before the PONG
// that ends the flush (a callback would run later, on its own goroutine, so
// a count could miss a message that had already arrived). The connection
// reconnects, so the count survives a server restart.
func Count(tb testing.TB, url, subject string) (*nats.Conn, func() int) {
	tb.Helper()
	msgs := make(chan *nats.Msg, 1<<16)
	spy := Connect(tb, url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if _, err := spy.ChanSubscribe(subject, msgs); err != nil {
		tb.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		tb.Fatal(err)
	}
	var (
		mu sync.Mutex
		n  int
	)
	return spy, func() int {
		tb.Helper()
		if err := spy.Flush(); err != nil {
			tb.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for {
			select {
			case <-msgs:
				n++
			default:
				return n
			}
		}
	}
}
