package inboxtest

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/ring/consul/consultest"
	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster whose nodes can crash. A node that is
// merely stopped (Server.Stop) shuts down gracefully, and nats-server
// then hands the leaderships it holds to another node first, so the
// cluster never waits out an election; a node that crashes hands nothing
// over, and the others elect new leaders once they miss its heartbeats.
// Here every route between two nodes runs through a proxy of its own, so
// Crash can cut a node's routes before stopping it: its hand-over is lost,
// as a killed process's would be, while its clients see their connections
// close and reconnect to the other nodes.
type Cluster struct {
	Nodes []*Server
	// URLs lists every node's client URL, comma-separated.
	URLs string
	// routes[i][j] carries the route node i dials to node j.
	routes [][]*Proxy
}

// RunCrashableCluster starts an n-node JetStream cluster whose nodes can
// Crash, and waits as RunCluster does until its meta leader sees every
// peer online.
func RunCrashableCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	ports := make([]*consultest.Ports, n)
	for i := range ports {
		ports[i] = consultest.Reserve(tb, 30900, 32700, 1, false)
	}
	c := &Cluster{routes: make([][]*Proxy, n)}
	for i := range n {
		c.routes[i] = make([]*Proxy, n)
		for j := range n {
			if i != j {
				c.routes[i][j] = NewProxy(tb, "127.0.0.1:"+strconv.Itoa(ports[j].Nums[0]))
			}
		}
	}
	for i := range n {
		var routes []*url.URL
		for j, p := range c.routes[i] {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: p.ln.Addr().String()})
			}
		}
		s := run(tb, ports[i], func(o *server.Options) {
			o.ServerName = "herald-test-" + strconv.Itoa(i)
			o.Cluster = server.ClusterOpts{
				Name: "herald-test", Host: "127.0.0.1", Port: ports[i].Nums[0],
				// Gossiped to the other nodes, which would dial it
				// directly, around the proxies: nothing listens there,
				// so every route is one of the configured ones.
				Advertise: "127.0.0.1:1",
			}
			o.Routes = routes
		})
		c.Nodes = append(c.Nodes, s)
		if c.URLs != "" {
			c.URLs += ","
		}
		c.URLs += s.URL()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range c.Nodes {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == n {
				return c
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("inboxtest: the %d-node cluster has no meta leader seeing every peer", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Crash cuts node i off from the other nodes, then stops it: what the
// others see is a killed process.
func (c *Cluster) Crash(i int) {
	for j := range c.Nodes {
		if j != i {
			c.routes[i][j].Cut()
			c.routes[j][i].Cut()
		}
	}
	c.Nodes[i].Stop()
}

// Restart starts a crashed node again, on its port and store, connected to
// the others.
func (c *Cluster) Restart(i int) {
	for j := range c.Nodes {
		if j != i {
			c.routes[i][j].Resume()
			c.routes[j][i].Resume()
		}
	}
	c.Nodes[i].Start()
}
