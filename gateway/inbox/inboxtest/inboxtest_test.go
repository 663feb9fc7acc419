package inboxtest

import (
	"bufio"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestKeepalive: the test servers, single or clustered, ping their clients
// every second and drop one that leaves two pings unanswered; Connect's
// clients do the same to the server, unless the test asks otherwise.
func TestKeepalive(t *testing.T) {
	single := Run(t)
	nodes, urls := RunCluster(t, 3)
	for _, s := range append([]*Server{single}, nodes...) {
		v, err := s.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		if v.PingInterval != time.Second || v.MaxPingsOut != 2 {
			t.Errorf("server %s: ping interval %v, max pings out %d; want 1s and 2", s.Name(), v.PingInterval, v.MaxPingsOut)
		}
	}
	for _, url := range []string{single.URL(), urls} {
		nc := Connect(t, url)
		if nc.Opts.PingInterval != time.Second || nc.Opts.MaxPingsOut != 2 {
			t.Errorf("client of %s: ping interval %v, max pings out %d; want 1s and 2", url, nc.Opts.PingInterval, nc.Opts.MaxPingsOut)
		}
	}
	if nc := Connect(t, single.URL(), nats.PingInterval(time.Minute)); nc.Opts.PingInterval != time.Minute {
		t.Errorf("a test's own ping interval was overridden: %v", nc.Opts.PingInterval)
	}
	// A test's own server options still win.
	slow := Run(t, func(o *server.Options) { o.PingInterval = time.Minute })
	if v, _ := slow.Varz(nil); v.PingInterval != time.Minute {
		t.Errorf("a test's own server ping interval was overridden: %v", v.PingInterval)
	}
}

// TestFrozenClientDropped: a client that stops answering pings (frozen, or
// cut off without a FIN) is disconnected by the server within seconds.
func TestFrozenClientDropped(t *testing.T) {
	s := Run(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(15 * time.Second))
	var lines []string
	for { // read, never answer: the server's PINGs go unanswered
		line, err := r.ReadString('\n')
		if err != nil {
			if time.Since(start) >= 15*time.Second {
				t.Fatalf("still connected after %v, having read %q", time.Since(start).Round(time.Millisecond), lines)
			}
			break // closed by the server
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "Stale Connection") }) {
		t.Fatalf("closed after %v with %q, want a Stale Connection error", time.Since(start).Round(time.Millisecond), lines)
	}
}
