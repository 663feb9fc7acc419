package gateway_test

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
)

// publisher posts numbered notifications round-robin over users and
// dispatchers at a steady rate until stopped, retrying an unknown outcome
// with the same id until it is definite, and remembers what was accepted.
type publisher struct {
	t        *testing.T
	ds       []*disp
	users    []string
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	accepted map[string]map[uint64]string // user → seq → id
	failed   atomic.Int64
}

func startPublisher(t *testing.T, ds []*disp, users []string, every time.Duration) *publisher {
	p := &publisher{t: t, ds: ds, users: users, stop: make(chan struct{}), done: make(chan struct{}), accepted: map[string]map[uint64]string{}}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			user, id := users[i%len(users)], "p-"+strconv.Itoa(i)
			for attempt := 0; ; attempt++ {
				res, err := ds[(i+attempt)%len(ds)].notify(user, id, strconv.Itoa(i), "")
				if err == nil && res.Status == http.StatusAccepted {
					p.mu.Lock()
					if p.accepted[user] == nil {
						p.accepted[user] = map[uint64]string{}
					}
					p.accepted[user][res.Seq] = id
					p.mu.Unlock()
					break
				}
				if err == nil && res.Error.Code == "unavailable" {
					p.failed.Add(1) // certainly not stored: a real caller would retry too, but need not
					break
				}
				select { // unknown outcome or a transport error: retry with the same id
				case <-p.stop:
					if attempt > 50 {
						return
					}
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	return p
}

func (p *publisher) finish() {
	close(p.stop)
	<-p.done
}

func (p *publisher) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.accepted {
		n += len(m)
	}
	return n
}

// checkDelivered waits until every device has every accepted notification of
// its user, and fails unless each got exactly those, once each, in seq order.
func checkDelivered(t *testing.T, p *publisher, devices map[string]*device, within time.Duration) {
	t.Helper()
	want := map[string][]uint64{}
	p.mu.Lock()
	for u, m := range p.accepted {
		for seq := range m {
			want[u] = append(want[u], seq)
		}
		slices.Sort(want[u])
	}
	p.mu.Unlock()
	waitFor(t, within, "every accepted notification on every device", func() bool {
		for u, d := range devices {
			if len(d.seqs()) < len(want[u]) {
				return false
			}
		}
		return true
	})
	for u, d := range devices {
		if got := d.seqs(); !slices.Equal(got, want[u]) {
			t.Fatalf("%s received %v, want exactly %v (nothing lost, nothing twice, in order)", u, got, want[u])
		}
		for _, f := range d.raw() {
			if f.f.Type == wire.TypeGap {
				t.Fatalf("%s got a gap: %+v", u, f.f)
			}
		}
	}
}

func usersN(n int) []string {
	us := make([]string, n)
	for i := range us {
		us[i] = "user-" + strconv.Itoa(i)
	}
	return us
}

func connectAll(t *testing.T, c *cluster, ds []*disp, users []string) map[string]*device {
	devices := map[string]*device{}
	for i, u := range users {
		devices[u] = c.connect(ds[i%len(ds)], u)
	}
	waitFor(t, 60*time.Second, "every user's hello", func() bool {
		for _, d := range devices {
			if len(d.hellos()) == 0 {
				return false
			}
		}
		return true
	})
	return devices
}

// onGateway is the gateway of the device's latest hello.
func (d *device) onGateway() string {
	hs := d.hellos()
	if len(hs) == 0 {
		return ""
	}
	return hs[len(hs)-1].f.Gateway
}

// waitOnOwners waits until every device's latest hello is from the owner
// r names for its user.
func waitOnOwners(t *testing.T, within time.Duration, r *ring.Ring, devices map[string]*device) {
	t.Helper()
	waitFor(t, within, "every user on the owner the new ring names", func() bool {
		for u, d := range devices {
			if owner, _ := r.Owner(u); d.onGateway() != owner.ID {
				return false
			}
		}
		return true
	})
}

func TestScaleOutMovesExactlyTheUsersWhoseOwnerChanged(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	fast := func(cfg *gateway.Config) { cfg.MoveWindow = 2 * time.Second }
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		c.startGateway(id, fast)
	}
	ds := []*disp{c.startDispatcher(), c.startDispatcher()}
	users := usersN(1000)
	devices := connectAll(t, c, ds, users)
	before := c.ring()
	p := startPublisher(t, ds, users, 5*time.Millisecond)

	c.startGateway("gw-4", fast)
	after := c.ring()
	expected := map[string]bool{}
	for _, u := range users {
		was, _ := before.Owner(u)
		is, _ := after.Owner(u)
		if was.ID != is.ID {
			if is.ID != "gw-4" {
				t.Fatalf("%s: %s → %s, not to the new member", u, was.ID, is.ID)
			}
			expected[u] = true
		}
	}
	waitOnOwners(t, 30*time.Second, after, devices)
	p.finish()
	checkDelivered(t, p, devices, 20*time.Second)
	moved := 0
	for _, u := range users {
		hs := devices[u].hellos()
		switch {
		case expected[u] && (len(hs) != 2 || hs[1].f.Gateway != "gw-4"):
			t.Fatalf("%s should have moved once to gw-4; its hellos: %+v", u, hs)
		case !expected[u] && len(hs) != 1:
			t.Fatalf("%s's owner did not change but it connected %d times", u, len(hs))
		}
		if expected[u] {
			moved++
		}
	}
	t.Logf("%d of %d users moved to gw-4 (ideal 1/4); %d notifications delivered, %d refused", moved, len(users), p.total(), p.failed.Load())
}

func TestDrainMovesEveryUserAndLosesNothing(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	fast := func(cfg *gateway.Config) { cfg.MoveWindow = time.Second; cfg.DrainConverge = time.Second }
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		c.startGateway(id, fast)
	}
	ds := []*disp{c.startDispatcher(), c.startDispatcher()}
	users := usersN(300)
	devices := connectAll(t, c, ds, users)
	p := startPublisher(t, ds, users, 5*time.Millisecond)

	gw := c.gws["gw-2"]
	start := time.Now()
	gw.Drain()
	select {
	case err := <-gw.done:
		if err != nil {
			t.Fatalf("Run after drain: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the drained gateway did not exit")
	}
	delete(c.gws, "gw-2")
	t.Logf("gw-2 drained and exited in %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the others' rings without gw-2", func() bool {
		_, in := c.ring().Member("gw-2")
		return !in && c.ring().Len() == 2
	})
	after := c.ring()
	waitOnOwners(t, 20*time.Second, after, devices)
	p.finish()
	checkDelivered(t, p, devices, 20*time.Second)
	for _, u := range users {
		for _, h := range devices[u].hellos()[1:] {
			if h.f.Gateway == "gw-2" {
				t.Fatalf("%s reconnected to the draining gateway", u)
			}
		}
	}
}

// TestFencedGatewayClosesSockets: a gateway cut off from NATS while the
// other gateway passes fences itself after fenceAfter (3 s): its sockets
// are closed with 1013 and it accepts none, until NATS is back. A cut
// shorter than that fences nothing.
func TestFencedGatewayClosesSockets(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	proxy := inboxtest.NewProxy(t, strings.TrimPrefix(c.nats.URL(), "nats://"))
	c.startGateway("gw-1", func(cfg *gateway.Config) {
		cfg.NATS = inboxtest.Connect(t, proxy.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		cfg.MoveWindow = 500 * time.Millisecond
	})
	c.startGateway("gw-2")
	url := c.gws["gw-1"].url
	user := ownedBy(t, c.ring(), "gw-1")
	s := dial(t, url, auth(t, user))
	s.hello()

	proxy.Cut() // shorter than fenceAfter: nothing happens
	time.Sleep(time.Second)
	proxy.Resume()
	waitFor(t, 10*time.Second, "gw-1 back on NATS", func() bool { return ready(url) })
	if s.isClosed() {
		t.Fatalf("a 1 s NATS cut closed the socket with %d", s.status)
	}

	proxy.Cut()
	cut := time.Now()
	if code := s.waitClosed(15 * time.Second); code != wire.CloseTryAgainLater {
		t.Fatalf("socket closed with %d, want 1013", code)
	}
	if d := time.Since(cut); d < 3*time.Second {
		t.Fatalf("closed %v after NATS went away, before the fence delay (3 s)", d)
	}
	t.Logf("fenced: the socket closed %v after the cut", time.Since(cut).Round(time.Millisecond))
	refused := dial(t, url, auth(t, user))
	if code := refused.waitClosed(5 * time.Second); code != wire.CloseTryAgainLater {
		t.Fatalf("a new socket while fenced closed with %d, want 1013", code)
	}
	proxy.Resume()
	waitFor(t, 15*time.Second, "the gateway to accept sockets again", func() bool { return ready(url) })
	waitFor(t, 15*time.Second, "gw-1 in the ring again", func() bool {
		_, in := c.gws["gw-2"].Ring().Member("gw-1")
		return in
	})
	back := dial(t, url, auth(t, user))
	back.hello()
}

// ownedBy returns a user the ring places on gateway id.
func ownedBy(t *testing.T, r *ring.Ring, id string) string {
	t.Helper()
	for i := range 10000 {
		u := "user-" + strconv.Itoa(i)
		if m, _ := r.Owner(u); m.ID == id {
			return u
		}
	}
	t.Fatalf("no user owned by %s", id)
	return ""
}

// TestNATSRestartUnderLoad: NATS restarts (JetStream on disk) while
// notifications flow. Nothing accepted is lost, components reconnect, and
// nobody is moved: the liveness rule holds every gateway.
func TestNATSRestartUnderLoad(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	for _, id := range []string{"gw-1", "gw-2"} {
		c.startGateway(id)
	}
	ds := []*disp{c.startDispatcher()}
	users := usersN(50)
	devices := connectAll(t, c, ds, users)
	p := startPublisher(t, ds, users, 5*time.Millisecond)
	waitFor(t, 10*time.Second, "traffic", func() bool { return p.total() > 50 })
	c.nats.Stop()
	time.Sleep(time.Second) // the outage
	c.nats.Start()
	waitFor(t, 20*time.Second, "traffic again", func() bool {
		n := p.total()
		time.Sleep(200 * time.Millisecond)
		return p.total() > n
	})
	p.finish()
	checkDelivered(t, p, devices, 30*time.Second)
	for _, u := range users {
		if n := len(devices[u].hellos()); n != 1 {
			t.Fatalf("%s connected %d times; a NATS restart must move no one", u, n)
		}
	}
	t.Logf("%d notifications delivered across the restart, %d refused while NATS was down", p.total(), p.failed.Load())
}

// TestConsulRestartUnderLoad: the Consul agent restarts and forgets every
// registration. Gateways register again, the ring never changes, nobody is
// moved, nothing is lost.
func TestConsulRestartUnderLoad(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	for _, id := range []string{"gw-1", "gw-2"} {
		c.startGateway(id)
	}
	ds := []*disp{c.startDispatcher()}
	users := usersN(50)
	devices := connectAll(t, c, ds, users)
	fp := c.ring().Fingerprint()
	p := startPublisher(t, ds, users, 5*time.Millisecond)
	c.agent.Restart()
	waitFor(t, 20*time.Second, "the gateways registered again", func() bool {
		es, _, err := c.consul.Health().Service(consul.Service, "", true, nil)
		return err == nil && len(es) == 2
	})
	time.Sleep(time.Second) // traffic after the restart
	p.finish()
	checkDelivered(t, p, devices, 20*time.Second)
	for _, g := range c.gws {
		if g.Ring().Fingerprint() != fp {
			t.Fatalf("a gateway's ring changed across the Consul restart: %v", g.Ring().Members())
		}
	}
	if ds[0].Ring().Fingerprint() != fp {
		t.Fatal("the dispatcher's ring changed across the Consul restart")
	}
	for _, u := range users {
		if n := len(devices[u].hellos()); n != 1 {
			t.Fatalf("%s connected %d times; a Consul restart must move no one", u, n)
		}
	}
}
