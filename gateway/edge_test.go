package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// from dials with the given source address (127.0.0.x) and headers.
func from(source string, header http.Header) func(*websocket.DialOptions) {
	return func(o *websocket.DialOptions) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
		o.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		o.HTTPHeader = header
	}
}

// closedAtOnce fails unless s is closed with code at once: within 5 s,
// which a loaded CI machine needs, while a socket let in would stay open
// for the tests' auth timeout of a minute.
func closedAtOnce(t *testing.T, s *socket, code websocket.StatusCode, what string) {
	t.Helper()
	if got := s.waitClosed(5 * time.Second); got != code {
		t.Fatalf("%s: closed with %d, want %d at once", what, got, code)
	}
}

// stillOpen fails if s was closed.
func stillOpen(t *testing.T, s *socket, what string) {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // a refusal is immediate: give it the chance to show
	if s.isClosed() {
		t.Fatalf("%s: closed with %d, want it open", what, s.status)
	}
}

// TestUnauthenticatedSocketsAreCapped: sockets that have not sent their auth
// frame are capped per client address and in total; one over is closed
// with 1013 at once, and authenticating frees the place.
func TestUnauthenticatedSocketsAreCapped(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1", func(cfg *gateway.Config) {
		cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerAddr = 3, 2
		cfg.AuthTimeout = time.Minute
	})
	url := c.gws["gw-1"].url
	none := wire.ClientFrame{}
	a1 := dial(t, url, none, from("127.0.0.1", nil))
	dial(t, url, none, from("127.0.0.1", nil))
	third := dial(t, url, none, from("127.0.0.1", nil))
	closedAtOnce(t, third, wire.CloseTryAgainLater, "a third unauthenticated socket from one address")
	b := dial(t, url, none, from("127.0.0.2", nil))
	stillOpen(t, b, "the first from another address")
	over := dial(t, url, none, from("127.0.0.3", nil))
	closedAtOnce(t, over, wire.CloseTryAgainLater, "a fourth unauthenticated socket in all")
	if v := metric(t, url, `herald_unauthenticated_sockets`); v != 3 {
		t.Fatalf("herald_unauthenticated_sockets = %v, want 3", v)
	}
	a1.send(auth(t, "alice"))
	a1.hello()
	again := dial(t, url, none, from("127.0.0.1", nil))
	stillOpen(t, again, "a socket after one from the address authenticated")
	if v := metric(t, url, `herald_sockets_refused_total{reason="unauthenticated_per_addr"}`); v != 1 {
		t.Fatalf("per-address refusals counted %v, want 1", v)
	}
}

// TestForwardedForOnlyFromTrustedProxies: behind a trusted proxy the
// client's address is the one X-Forwarded-For names; from anyone else the
// header is ignored, so a client cannot dodge its address's cap with it.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	cap1 := func(cfg *gateway.Config) { cfg.MaxUnauthenticatedPerAddr, cfg.AuthTimeout = 1, time.Minute }
	c.startGateway("gw-1", cap1, func(cfg *gateway.Config) { cfg.TrustedProxies = []string{"127.0.0.1/32"} })
	c.startGateway("gw-2", cap1)
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	none := wire.ClientFrame{}

	trusted := c.gws["gw-1"].url
	dial(t, trusted, none, from("127.0.0.1", xff("10.0.0.1")))
	other := dial(t, trusted, none, from("127.0.0.1", xff("203.0.113.9, 10.0.0.2")))
	stillOpen(t, other, "another client behind the trusted proxy")
	same := dial(t, trusted, none, from("127.0.0.1", xff("10.0.0.1")))
	closedAtOnce(t, same, wire.CloseTryAgainLater, "the same forwarded client twice")

	untrusted := c.gws["gw-2"].url
	dial(t, untrusted, none, from("127.0.0.1", xff("10.0.0.1")))
	dodge := dial(t, untrusted, none, from("127.0.0.1", xff("10.0.0.2")))
	closedAtOnce(t, dodge, wire.CloseTryAgainLater, "X-Forwarded-For from an untrusted peer")
}

// TestConnectBudgetPerUser: a user who connects faster than the budget
// allows is closed with 4009, on which clients back off long.
func TestConnectBudgetPerUser(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1", func(cfg *gateway.Config) { cfg.ConnectsPerUser, cfg.ConnectBurst = 0.01, 2 })
	url := c.gws["gw-1"].url
	for range 2 {
		s := dial(t, url, auth(t, "alice"))
		s.hello()
		s.c.Close(websocket.StatusNormalClosure, "")
		s.waitClosed(5 * time.Second)
	}
	s := dial(t, url, auth(t, "alice"))
	if code := s.waitClosed(5 * time.Second); code != wire.CloseTooManySockets {
		t.Fatalf("a third connect within the budget's refill closed with %d, want 4009", code)
	}
	bob := dial(t, url, auth(t, "bob"))
	bob.hello() // another user's budget is his own
}

// TestAdminListener: metrics (with the Go runtime's and the process's) and
// pprof are served on the admin listener only (pprof only when enabled);
// the probes on both.
func TestAdminListener(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	c.startGateway("gw-2", func(cfg *gateway.Config) { cfg.Pprof = true })
	status := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for id, pprof := range map[string]int{"gw-1": 404, "gw-2": 200} {
		public := strings.Replace(strings.TrimSuffix(c.gws[id].url, "/ws"), "ws://", "http://", 1)
		a, _ := adminURLs.Load(c.gws[id].url)
		admin := a.(string)
		for url, want := range map[string]int{
			public + "/metrics": 404, public + "/debug/pprof/": 404, public + "/healthz": 200, public + "/readyz": 200,
			admin + "/metrics": 200, admin + "/debug/pprof/": pprof, admin + "/healthz": 200, admin + "/readyz": 200,
		} {
			if got := status(url); got != want {
				t.Errorf("%s: GET %s = %d, want %d", id, url, got, want)
			}
		}
		// The runtime's and the process's own figures, beside herald's.
		for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"} {
			if v, ok := scrape(c.gws[id].url, name); !ok || v <= 0 {
				t.Errorf("%s: /metrics has %s = %v (found %v), want a positive figure", id, name, v, ok)
			}
		}
	}
}

// TestSilentConnectionsAreDropped: a TCP connection that never finishes
// its HTTP request is closed by the header timeout, on both listeners.
func TestSilentConnectionsAreDropped(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	public := strings.TrimSuffix(strings.TrimPrefix(c.gws["gw-1"].url, "ws://"), "/ws")
	a, _ := adminURLs.Load(c.gws["gw-1"].url)
	admin := strings.TrimPrefix(a.(string), "http://")
	for _, addr := range []string{public, admin} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte("GET /healthz HTTP/1.1\r\n")) // and never the rest
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		_, err = io.Copy(io.Discard, conn)
		if err != nil || time.Since(start) > 15*time.Second {
			t.Fatalf("%s: a silent connection lasted %v (%v); want it closed by the header timeout", addr, time.Since(start), err)
		}
	}
}

var _ = context.Background
