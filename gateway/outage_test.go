package gateway_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/dispatcher"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
)

// Outages of NATS and Consul, each longer than the hold period, with the
// default TTL (6 s) and hold (30 s): shared failures move no one, and a
// gateway that cannot deliver does not keep its users. Every test runs its
// own Consul agent and NATS server, in parallel with the others.

const (
	defaultHold = 30 * time.Second
	outageFor   = defaultHold + 15*time.Second
)

// outageCluster is a cluster whose every process reaches NATS through a
// proxy of its own, and each gateway Consul through an agent proxy that can
// be made to answer errors.
type outageCluster struct {
	*cluster
	proxies map[string]*inboxtest.Proxy // by process: gw-1…, disp-1…
	agents  map[string]*agentProxy      // by gateway
	ds      []*disp
}

func newOutageCluster(t *testing.T, gateways int) *outageCluster {
	oc := &outageCluster{cluster: newCluster(t, inbox.Config{MaxMsgsPerUser: 1000}),
		proxies: map[string]*inboxtest.Proxy{}, agents: map[string]*agentProxy{}}
	target := strings.TrimPrefix(oc.nats.URL(), "nats://")
	connect := func(name string, opts ...nats.Option) *nats.Conn {
		p := inboxtest.NewProxy(t, target)
		oc.proxies[name] = p
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
			nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2))
		return inboxtest.Connect(t, p.URL(), opts...)
	}
	for i := 1; i <= gateways; i++ {
		id := fmt.Sprintf("gw-%d", i)
		ap := newAgentProxy(t, oc.agent.HTTPAddr)
		oc.agents[id] = ap
		oc.startGateway(id, func(cfg *gateway.Config) {
			cfg.NATS = connect(id)
			cfg.Consul = ap.client(t)
			cfg.TTL, cfg.Watch.Hold = 0, 0 // the defaults: 6 s, 30 s
		})
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("disp-%d", i)
		oc.ds = append(oc.ds, oc.startDispatcher(func(cfg *dispatcher.Config) {
			cfg.NATS = connect(name, nats.ReconnectBufSize(-1))
		}))
	}
	return oc
}

// rings returns every process's ring fingerprint.
func (oc *outageCluster) rings() map[string]string {
	fps := map[string]string{}
	for id, g := range oc.gws {
		fps[id] = g.Ring().Fingerprint()
	}
	for i, d := range oc.ds {
		fps[fmt.Sprintf("disp-%d", i+1)] = d.Ring().Fingerprint()
	}
	return fps
}

// watchRings samples every ring until stop, and reports the first that
// differed from want.
func (oc *outageCluster) watchRings(want string) (stop func() string) {
	done := make(chan struct{})
	var (
		mu      sync.Mutex
		changed string
	)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for who, fp := range oc.rings() {
				if fp != want {
					mu.Lock()
					if changed == "" {
						changed = fmt.Sprintf("%s's ring became %s at %s", who, fp, time.Now().Format(time.TimeOnly))
					}
					mu.Unlock()
				}
			}
		}
	})
	return func() string {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return changed
	}
}

// passing counts the gateways passing in Consul.
func (oc *outageCluster) passing() int {
	es, _, err := oc.consul.Health().Service(consul.Service, "", true, nil)
	if err != nil {
		return -1
	}
	return len(es)
}

// agentProxy stands between a gateway and the Consul agent; broken, it
// answers every request with 500, as a sick local agent would.
type agentProxy struct {
	srv    *httptest.Server
	broken atomic.Bool
}

func newAgentProxy(t *testing.T, agentAddr string) *agentProxy {
	u, _ := url.Parse("http://" + agentAddr)
	rp := httputil.NewSingleHostReverseProxy(u)
	// Its errors while the agent is down are expected, and would bury a
	// failing test's own output.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	ap := &agentProxy{}
	ap.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap.broken.Load() {
			http.Error(w, "agent sick", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ap.srv.Close)
	return ap
}

func (ap *agentProxy) client(t *testing.T) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = strings.TrimPrefix(ap.srv.URL, "http://")
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sharedOutage runs traffic, breaks something for outageFor, mends it, and
// checks that nobody was moved or disconnected, every ring stayed as it
// was, and every accepted notification arrived once, in order.
func sharedOutage(t *testing.T, oc *outageCluster, brk, mend func()) {
	users := usersN(30)
	devices := connectAll(t, oc.cluster, oc.ds, users)
	p := startPublisher(t, oc.ds, users, 20*time.Millisecond)
	waitFor(t, 10*time.Second, "traffic", func() bool { return p.total() > 30 })
	want := oc.ring().Fingerprint()
	stopRings := oc.watchRings(want)
	brk()
	broke := time.Now()
	time.Sleep(outageFor) // the outage itself: a duration, not a synchronization
	mend()
	waitFor(t, 30*time.Second, "traffic again", func() bool {
		n := p.total()
		time.Sleep(500 * time.Millisecond)
		return p.total() > n
	})
	p.finish()
	if changed := stopRings(); changed != "" {
		t.Errorf("a ring changed during the outage: %s", changed)
	}
	checkDelivered(t, p, devices, 30*time.Second)
	for _, u := range users {
		if n := len(devices[u].hellos()); n != 1 {
			t.Errorf("%s connected %d times: the outage must close no socket", u, n)
		}
	}
	t.Logf("outage of %v: %d notifications accepted and delivered, %d refused as unavailable, no socket closed, ring unchanged",
		time.Since(broke).Round(time.Second), p.total(), p.failed.Load())
}

// TestNATSDownEverywhere: NATS stops for longer than the hold period, and
// comes back so that the processes reconnect 0–2 s apart.
func TestNATSDownEverywhere(t *testing.T) {
	t.Parallel()
	oc := newOutageCluster(t, 3)
	sharedOutage(t, oc, func() {
		for _, p := range oc.proxies {
			p.Cut()
		}
		oc.nats.Stop()
	}, func() {
		oc.nats.Start()
		i := 0
		for _, p := range oc.proxies {
			time.AfterFunc(time.Duration(i)*2*time.Second/time.Duration(len(oc.proxies)), p.Resume)
			i++
		}
	})
}

// TestConsulDownEverywhere: the Consul agent is gone for longer than the
// hold period, and comes back having forgotten every registration.
func TestConsulDownEverywhere(t *testing.T) {
	t.Parallel()
	oc := newOutageCluster(t, 3)
	sharedOutage(t, oc, oc.agent.Stop, oc.agent.Restart)
}

// TestNATSAndConsulDown: both at once.
func TestNATSAndConsulDown(t *testing.T) {
	t.Parallel()
	oc := newOutageCluster(t, 3)
	sharedOutage(t, oc, func() {
		for _, p := range oc.proxies {
			p.Cut()
		}
		oc.nats.Stop()
		oc.agent.Stop()
	}, func() {
		oc.agent.Restart()
		oc.nats.Start()
		for _, p := range oc.proxies {
			p.Resume()
		}
	})
}

// TestOneGatewaysConsulAgentFails: one gateway's local agent answers only
// errors. The gateway still delivers, so it keeps its users: it never
// fences for Consul, and the others keep it while it answers healthy.
func TestOneGatewaysConsulAgentFails(t *testing.T) {
	t.Parallel()
	oc := newOutageCluster(t, 3)
	ap := oc.agents["gw-1"]
	sharedOutage(t, oc, func() { ap.broken.Store(true) }, func() { ap.broken.Store(false) })
}

// TestOneGatewayLosesNATSSilently: one gateway's NATS packets are dropped
// silently (the proxy stops forwarding; nothing closes). It cannot deliver,
// so its users must go elsewhere before the hold period ends: it fences
// itself, the others find it gone, and its users land on their new owners.
func TestOneGatewayLosesNATSSilently(t *testing.T) {
	t.Parallel()
	oc := newOutageCluster(t, 3)
	users := usersN(30)
	devices := connectAll(t, oc.cluster, oc.ds, users)
	var onGW1 []string
	for _, u := range users {
		if devices[u].onGateway() == "gw-1" {
			onGW1 = append(onGW1, u)
		}
	}
	if len(onGW1) == 0 {
		t.Fatal("no user on gw-1")
	}
	p := startPublisher(t, oc.ds, users, 20*time.Millisecond)
	waitFor(t, 10*time.Second, "traffic", func() bool { return p.total() > 30 })
	oc.proxies["gw-1"].Freeze()
	frozen := time.Now()
	waitFor(t, defaultHold, "gw-1's users on other gateways", func() bool {
		for _, u := range onGW1 {
			if g := devices[u].onGateway(); g == "gw-1" || g == "" {
				return false
			}
		}
		return true
	})
	rehomed := time.Since(frozen)
	for id, g := range oc.gws {
		if _, in := g.Ring().Member("gw-1"); in && id != "gw-1" {
			t.Errorf("%s's ring still has gw-1 after its users moved", id)
		}
	}
	oc.proxies["gw-1"].Resume()
	waitFor(t, 30*time.Second, "gw-1 back in every ring", func() bool {
		for _, g := range oc.gws {
			if _, in := g.Ring().Member("gw-1"); !in {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * time.Second) // traffic after gw-1 is back, its users moving home
	p.finish()
	checkDelivered(t, p, devices, 30*time.Second)
	t.Logf("gw-1 cut off from NATS silently: its %d users were on other gateways %v later (hold %v); %d notifications accepted, all delivered once, in order",
		len(onGW1), rehomed.Round(100*time.Millisecond), defaultHold, p.total())
}

// TestLateReconnectDoesNotFence: after NATS was down everywhere, one
// gateway reconnects 2 s after the others. Its NATS has been down for
// long, but it was alone in that for less than the fence delay: it must
// not fence.
func TestLateReconnectDoesNotFence(t *testing.T) {
	t.Parallel()
	oc := newOutageCluster(t, 3)
	users := usersN(30)
	devices := connectAll(t, oc.cluster, oc.ds, users)
	for _, p := range oc.proxies {
		p.Cut()
	}
	waitFor(t, 10*time.Second, "every gateway failing in Consul", func() bool { return oc.passing() == 0 })
	time.Sleep(5 * time.Second) // all down: a duration, not a synchronization
	for name, p := range oc.proxies {
		if name != "gw-1" {
			p.Resume()
		}
	}
	waitFor(t, 10*time.Second, "the others passing again", func() bool { return oc.passing() == 2 })
	time.Sleep(2 * time.Second) // gw-1 alone cut off, for less than the fence delay
	oc.proxies["gw-1"].Resume()
	waitFor(t, 10*time.Second, "gw-1 ready", func() bool { return ready(oc.gws["gw-1"].url) })
	time.Sleep(6 * time.Second) // a move window: what a fence would have closed
	for _, u := range users {
		if n := len(devices[u].hellos()); n != 1 {
			t.Errorf("%s connected %d times: a late reconnect must fence nothing", u, n)
		}
	}
}
