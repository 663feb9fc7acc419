package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/dispatcher"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const apiKey = "test-api-key"

type disp struct {
	*dispatcher.Dispatcher
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startDispatcher starts a dispatcher and waits until it is ready and its
// ring agrees with the gateways'.
func (c *cluster) startDispatcher(edit ...func(*dispatcher.Config)) *disp {
	c.tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.tb.Fatal(err)
	}
	nc := inboxtest.Connect(c.tb, c.urls, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	cfg := dispatcher.Config{
		Listener: ln, NATS: nc, Log: c.log.Config(), Consul: c.consul,
		Watch:   consul.WatchConfig{QueryInterval: 50 * time.Millisecond, Debounce: 50 * time.Millisecond},
		APIKeys: []string{apiKey}, TokenSecrets: [][]byte{secret}, Logger: logger(c.tb),
	}
	for _, e := range edit {
		e(&cfg)
	}
	d, err := dispatcher.New(cfg)
	if err != nil {
		c.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &disp{Dispatcher: d, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- d.Run(ctx) }()
	c.tb.Cleanup(func() {
		cancel()
		select {
		case err := <-w.done:
			if err != nil {
				c.tb.Errorf("dispatcher: Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			c.tb.Errorf("dispatcher: Run did not return")
		}
	})
	waitFor(c.tb, 10*time.Second, "the dispatcher ready on the gateways' ring", func() bool {
		r := d.Ring()
		gr := c.ringOf(cfg.Deployment)
		return r != nil && gr != nil && r.Fingerprint() == gr.Fingerprint() && httpOK(w.url+"/readyz")
	})
	return w
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// notifyResult is a /v1/notify answer.
type notifyResult struct {
	Status    int
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Gateway   string `json:"gateway"`
	Routed    string `json:"status"`
	Duplicate bool   `json:"duplicate"`
	Delivery  string `json:"delivery"`
	Error     struct {
		Code string `json:"code"`
		ID   string `json:"id"`
	} `json:"error"`
}

func (d *disp) notify(user, id, data, query string) (notifyResult, error) {
	return d.notifyBody(map[string]any{"user": user, "id": id, "data": json.RawMessage(data)}, query)
}

// notifyBody posts any notify body.
func (d *disp) notifyBody(fields map[string]any, query string) (notifyResult, error) {
	body, _ := json.Marshal(fields)
	req, _ := http.NewRequest(http.MethodPost, d.url+"/v1/notify"+query, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return notifyResult{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := notifyResult{Status: resp.StatusCode}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("status %d, body %q: %w", resp.StatusCode, b, err)
	}
	return r, nil
}

// device is a user's device running the Go client, recording every raw
// frame it receives.
type device struct {
	c      *client.Client
	mu     sync.Mutex
	frames []rawFrame
}

type rawFrame struct {
	gateway string
	f       wire.ServerFrame
	at      time.Time
}

func (c *cluster) connect(d *disp, user string, edit ...func(*client.Config)) *device {
	c.tb.Helper()
	dev := &device{}
	cfg := client.Config{
		Dispatcher:  d.url,
		Token:       func(context.Context) (string, error) { return userToken(c.tb, user, time.Hour), nil },
		BackoffBase: 50 * time.Millisecond, BackoffMax: time.Second,
		OnFrame: func(gw string, f wire.ServerFrame) {
			dev.mu.Lock()
			dev.frames = append(dev.frames, rawFrame{gw, f, time.Now()})
			dev.mu.Unlock()
		},
	}
	for _, e := range edit {
		e(&cfg)
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.tb.Fatal(err)
	}
	dev.c = cl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	c.tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			c.tb.Errorf("client %s: Run: %v", user, err)
		}
	})
	return dev
}

func (d *device) raw() []rawFrame {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.frames)
}

func (d *device) seqs() []uint64 {
	var out []uint64
	for _, r := range d.raw() {
		if r.f.Type == wire.TypeNotification {
			out = append(out, r.f.Seq)
		}
	}
	return out
}

func (d *device) hellos() []rawFrame {
	var out []rawFrame
	for _, r := range d.raw() {
		if r.f.Type == wire.TypeHello {
			out = append(out, r)
		}
	}
	return out
}

// logReads sums the gateways' reads of the log beyond the hubs' first read
// of a user's head.
func (c *cluster) logReads() float64 {
	var n float64
	for _, g := range c.gws {
		for _, reason := range []string{"repair", "replay", "leader", "heads"} {
			n += metric(c.tb.(*testing.T), g.url, `herald_log_reads_total{reason="`+reason+`"}`)
		}
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestEndToEnd is the delivery path whole: three gateways, two dispatchers,
// 300 users on the Go client, 3000 notifications posted alternately to both
// dispatchers.
func TestEndToEnd(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		c.startGateway(id)
	}
	ds := []*disp{c.startDispatcher(), c.startDispatcher()}
	const users, total = 300, 3000
	devices := make([]*device, users)
	for i := range devices {
		devices[i] = c.connect(ds[i%2], "user-"+strconv.Itoa(i))
	}
	waitFor(t, 30*time.Second, "every user's hello", func() bool {
		for _, d := range devices {
			if len(d.hellos()) == 0 {
				return false
			}
		}
		return true
	})
	r := c.ring()
	for i, d := range devices {
		owner, _ := r.Owner("user-" + strconv.Itoa(i))
		for _, h := range d.hellos() {
			if h.f.Gateway != owner.ID {
				t.Fatalf("user-%d's socket is on %s; the ring names %s", i, h.f.Gateway, owner.ID)
			}
		}
	}

	readsBefore := c.logReads()
	want := make([][]uint64, users)
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				u := i % users
				res, err := ds[i%2].notify("user-"+strconv.Itoa(u), "n-"+strconv.Itoa(i), `{"n":`+strconv.Itoa(i)+`}`, "")
				if err != nil || res.Status != http.StatusAccepted || res.Routed != "routed" {
					t.Errorf("notify %d: %+v, %v", i, res, err)
					continue
				}
				mu.Lock()
				want[u] = append(want[u], res.Seq)
				mu.Unlock()
			}
		})
	}
	for i := range total {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	posted := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, 30*time.Second, "every notification", func() bool {
		for u, d := range devices {
			if len(d.seqs()) < len(want[u]) {
				return false
			}
		}
		return true
	})
	reads := c.logReads() - readsBefore

	var lat []time.Duration
	for u, d := range devices {
		sort.Slice(want[u], func(i, j int) bool { return want[u][i] < want[u][j] })
		if got := d.seqs(); !slices.Equal(got, want[u]) {
			t.Fatalf("user-%d received %v, want exactly %v in chain order", u, got, want[u])
		}
		for _, f := range d.raw() {
			if f.f.Type == wire.TypeNotification {
				ts, _ := wire.ParseTS(f.f.TS)
				lat = append(lat, f.at.Sub(ts))
			}
			if f.f.Type == wire.TypeGap {
				t.Fatalf("user-%d got a gap: %+v", u, f.f)
			}
		}
		if n := len(d.hellos()); n != 1 {
			t.Fatalf("user-%d connected %d times; nothing should have moved it", u, n)
		}
	}
	t.Logf("%d notifications to %d users over 3 gateways posted in %v (%.0f/s); latency from publish to client: p50 %v, p99 %v, max %v",
		total, users, posted.Round(time.Millisecond), float64(total)/posted.Seconds(),
		percentile(lat, .5).Round(10*time.Microsecond), percentile(lat, .99).Round(10*time.Microsecond), percentile(lat, 1).Round(10*time.Microsecond))
	t.Logf("gateway log reads while publishing: %.0f for %d deliveries (%.2f%%)", reads, total, 100*reads/total)
	if reads >= 0.05*total {
		t.Fatalf("%.0f log reads for %d deliveries: the doorbell fast path is not working", reads, total)
	}
}

// TestConcurrentPublishersOneUser: twenty publishers through both
// dispatchers for one user never fork the chain, and the socket sees it in
// chain order, on a single server (R1) and a three-node cluster (R3).
func TestConcurrentPublishersOneUser(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run("R"+strconv.Itoa(replicas), func(t *testing.T) {
			c := newClusterN(t, inbox.Config{Replicas: replicas, MaxMsgsPerUser: 1000}, replicas)
			c.startGateway("gw-1")
			ds := []*disp{c.startDispatcher(), c.startDispatcher()}
			dev := c.connect(ds[0], "hot")
			waitFor(t, 10*time.Second, "hello", func() bool { return len(dev.hellos()) == 1 })
			var wg sync.WaitGroup
			var mu sync.Mutex
			var seqs []uint64
			for p := range 20 {
				wg.Go(func() {
					for i := range 10 {
						res, err := ds[p%2].notify("hot", fmt.Sprintf("p%d-%d", p, i), `1`, "")
						if err != nil || res.Status != http.StatusAccepted {
							t.Errorf("notify: %+v, %v", res, err)
							return
						}
						mu.Lock()
						seqs = append(seqs, res.Seq)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			slices.Sort(seqs)
			waitFor(t, 10*time.Second, "all 200", func() bool { return len(dev.seqs()) >= 200 })
			if got := dev.seqs(); !slices.Equal(got, seqs) {
				t.Fatalf("the socket saw %v, want %v", got, seqs)
			}
			// The chain: every message's prev is the seq before it.
			var msgs []inbox.Message
			after := uint64(0)
			for {
				ms, err := c.log.ReadAfter(context.Background(), "hot", after, 100)
				if err != nil {
					t.Fatal(err)
				}
				if len(ms) == 0 {
					break
				}
				msgs, after = append(msgs, ms...), ms[len(ms)-1].Seq
			}
			prev := uint64(0)
			for _, m := range msgs {
				if m.Prev != prev {
					t.Fatalf("message %d has prev %d, want %d: the chain forked", m.Seq, m.Prev, prev)
				}
				prev = m.Seq
			}
			if len(msgs) != 200 {
				t.Fatalf("the log holds %d messages, want 200", len(msgs))
			}
		})
	}
}

// TestIdempotencyEndToEnd: an id is scoped to its user and delivered once.
func TestIdempotencyEndToEnd(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run("R"+strconv.Itoa(replicas), func(t *testing.T) {
			c := newClusterN(t, inbox.Config{Replicas: replicas}, replicas)
			c.startGateway("gw-1")
			ds := []*disp{c.startDispatcher(), c.startDispatcher()}
			alice, bob := c.connect(ds[0], "alice"), c.connect(ds[1], "bob")
			waitFor(t, 10*time.Second, "hellos", func() bool { return len(alice.hellos()) == 1 && len(bob.hellos()) == 1 })
			first, err := ds[0].notify("alice", "order-1", `"a"`, "")
			if err != nil || first.Status != http.StatusAccepted || first.Duplicate {
				t.Fatalf("first: %+v, %v", first, err)
			}
			again, err := ds[1].notify("alice", "order-1", `"a"`, "")
			if err != nil || again.Seq != first.Seq || !again.Duplicate {
				t.Fatalf("repeat through the other dispatcher: %+v, %v; want duplicate of seq %d", again, err, first.Seq)
			}
			other, err := ds[0].notify("bob", "order-1", `"b"`, "")
			if err != nil || other.Duplicate || other.Seq == first.Seq {
				t.Fatalf("bob's order-1: %+v, %v", other, err)
			}
			marker, _ := ds[0].notify("alice", "marker", `"m"`, "")
			waitFor(t, 10*time.Second, "alice's marker", func() bool { return slices.Contains(alice.seqs(), marker.Seq) })
			waitFor(t, 10*time.Second, "bob's", func() bool { return len(bob.seqs()) == 1 })
			if got := alice.seqs(); !slices.Equal(got, []uint64{first.Seq, marker.Seq}) {
				t.Fatalf("alice received %v, want %v once each", got, []uint64{first.Seq, marker.Seq})
			}
		})
	}
}

// TestNATSOutageDuringPosts: while NATS restarts, every POST's answer is the
// truth: 202 is delivered, 503 unavailable never appears, and 503
// unknown_outcome retried with its id leaves exactly one copy.
func TestNATSOutageDuringPosts(t *testing.T) {
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: 1000})
	c.startGateway("gw-1")
	d := c.startDispatcher()
	dev := c.connect(d, "alice")
	waitFor(t, 10*time.Second, "hello", func() bool { return len(dev.hellos()) == 1 })

	type outcome struct {
		id   string
		res  notifyResult
		err  error
		when time.Time
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		pubs     sync.WaitGroup
	)
	stop := make(chan struct{})
	for p := range 4 {
		pubs.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("o-%d-%d", p, i)
				res, err := d.notify("alice", id, strconv.Itoa(i), "")
				mu.Lock()
				outcomes = append(outcomes, outcome{id, res, err, time.Now()})
				mu.Unlock()
				time.Sleep(5 * time.Millisecond) // a steady publisher, not synchronization
			}
		})
	}
	waitFor(t, 10*time.Second, "some accepted posts", func() bool { return len(dev.seqs()) > 5 })
	c.nats.Stop()
	// Appends retry for up to 2s (inbox.Config.AppendTimeout): an outage
	// longer than that makes some posts fail.
	time.Sleep(3 * time.Second)
	c.nats.Start()
	waitFor(t, 20*time.Second, "posts accepted again", func() bool {
		return httpOK(d.url+"/readyz") && len(dev.seqs()) > 0
	})
	time.Sleep(500 * time.Millisecond) // a little more traffic after the outage
	close(stop)
	pubs.Wait()

	accepted, unavailable, unknown := map[string]uint64{}, map[string]bool{}, map[string]bool{}
	for _, o := range outcomes {
		switch {
		case o.err == nil && o.res.Status == http.StatusAccepted:
			accepted[o.id] = o.res.Seq
		case o.err == nil && o.res.Status == http.StatusServiceUnavailable && o.res.Error.Code == "unavailable":
			unavailable[o.id] = true
		case o.err == nil && o.res.Status == http.StatusServiceUnavailable && o.res.Error.Code == "unknown_outcome":
			if o.res.Error.ID != o.id {
				t.Fatalf("unknown_outcome for %s names id %q", o.id, o.res.Error.ID)
			}
			unknown[o.id] = true
		default:
			t.Fatalf("post %s: %+v, %v", o.id, o.res, o.err)
		}
	}
	if len(unavailable)+len(unknown) == 0 {
		t.Fatalf("no post failed during a NATS outage of 3s (%d accepted)", len(accepted))
	}
	// The callers retry the unknown ones with their ids.
	for id := range unknown {
		res, err := d.notify("alice", id, `"retry"`, "")
		if err != nil || res.Status != http.StatusAccepted {
			t.Fatalf("retry of %s: %+v, %v", id, res, err)
		}
		accepted[id] = res.Seq
	}
	waitFor(t, 20*time.Second, "every accepted notification", func() bool { return len(dev.seqs()) >= len(accepted) })
	ids := map[string]int{}
	for _, r := range dev.raw() {
		if r.f.Type == wire.TypeNotification {
			ids[r.f.ID]++
		}
	}
	for id := range accepted {
		if ids[id] != 1 {
			t.Fatalf("accepted %s received %d times, want once", id, ids[id])
		}
	}
	for id := range unavailable {
		if ids[id] != 0 {
			t.Fatalf("%s was answered unavailable but was delivered", id)
		}
	}
	got := dev.seqs()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("seqs not strictly increasing: %v", got)
		}
	}
	t.Logf("%d accepted, %d unavailable, %d unknown (retried once each)", len(accepted)-len(unknown), len(unavailable), len(unknown))
}

// TestWaitDeliveredEndToEnd asks for delivery through a dispatcher.
func TestWaitDeliveredEndToEnd(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	c.startGateway("gw-2")
	d := c.startDispatcher()
	acking := c.connect(d, "alice")
	silent := c.connect(d, "carol", func(cfg *client.Config) { cfg.NoAck = true })
	waitFor(t, 10*time.Second, "hellos", func() bool { return len(acking.hellos()) == 1 && len(silent.hellos()) == 1 })
	for _, tc := range []struct{ user, want string }{
		{"alice", wire.Delivered}, {"nobody", wire.Offline}, {"carol", wire.Timeout},
	} {
		res, err := d.notify(tc.user, "w", `1`, "?wait=delivered&timeout=1s")
		if err != nil || res.Status != http.StatusAccepted || res.Delivery != tc.want {
			t.Fatalf("%s: %+v, %v; want delivery %s", tc.user, res, err, tc.want)
		}
	}
}

// TestLostTailBecomesANewEpoch: JetStream loses acknowledged messages (the
// tail of a single replica's disk), so new appends reuse seqs a device has
// already seen. The dispatcher records a new epoch; the gateway closes the
// device's socket, the device comes back with its old cursor, gets a gap,
// and receives every notification accepted after the loss — none is
// dropped as already seen.
func TestLostTailBecomesANewEpoch(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	d := c.startDispatcher(func(cfg *dispatcher.Config) { cfg.EpochRefresh = 500 * time.Millisecond })
	dev := c.connect(d, "alice")
	post := func(id string) {
		t.Helper()
		waitFor(t, 20*time.Second, "notification "+id+" accepted", func() bool {
			r, err := d.notify("alice", id, `1`, "")
			return err == nil && r.Status == http.StatusAccepted
		})
	}
	for i := range 10 {
		post("a" + strconv.Itoa(i))
	}
	waitFor(t, 10*time.Second, "the first ten", func() bool { return len(dev.seqs()) == 10 })
	oldEpoch, _ := dev.c.Cursor()
	before, after := c.nats.LoseTail(c.log.Config().Stream)
	var want []string
	for i := range 10 {
		want = append(want, "b"+strconv.Itoa(i))
		post(want[i])
	}
	waitFor(t, 30*time.Second, "every notification accepted after the loss", func() bool {
		got := map[string]bool{}
		for _, f := range dev.raw() {
			got[f.f.ID] = true
		}
		for _, id := range want {
			if !got[id] {
				return false
			}
		}
		return true
	})
	gaps := 0
	for _, f := range dev.raw() {
		if f.f.Type == wire.TypeGap {
			gaps++
		}
	}
	if epoch, _ := dev.c.Cursor(); epoch == oldEpoch || gaps == 0 {
		t.Fatalf("the device ends in epoch %q (was %q) with %d gaps: the loss must be a new epoch, and said", epoch, oldEpoch, gaps)
	}
	t.Logf("the stream's last seq went from %d to %d; the ten accepted after the loss all arrived, after %d gap(s)", before, after, gaps)
}

// TestDeploymentsShareNATSAndConsul: two deployments on one NATS account
// and one Consul datacenter see nothing of each other: each has its own
// ring, stream and subjects, and alice of one is not alice of the other.
func TestDeploymentsShareNATSAndConsul(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	in := func(d wire.Deployment) func(*gateway.Config) {
		return func(cfg *gateway.Config) { cfg.Deployment, cfg.Log = d, inbox.Config{} }
	}
	for _, d := range []wire.Deployment{"acme", "bolt"} { // the gateways wait for their streams
		if _, err := inbox.Ensure(context.Background(), c.nc, inbox.Config{Deployment: d}); err != nil {
			t.Fatal(err)
		}
	}
	c.startGateway("a-1", in("acme"))
	c.startGateway("b-1", in("bolt"))
	da := c.startDispatcher(func(cfg *dispatcher.Config) { cfg.Deployment, cfg.Log = "acme", inbox.Config{} })
	db := c.startDispatcher(func(cfg *dispatcher.Config) { cfg.Deployment, cfg.Log = "bolt", inbox.Config{} })
	for d, want := range map[*disp]string{da: "a-1", db: "b-1"} {
		if r := d.Ring(); r.Len() != 1 || r.Members()[0].ID != want {
			t.Fatalf("a dispatcher's ring is %v, want only %s", r.Members(), want)
		}
	}
	alice := c.connect(da, "alice")
	other := c.connect(db, "alice")
	waitFor(t, 10*time.Second, "both alices connected", func() bool { return len(alice.hellos()) == 1 && len(other.hellos()) == 1 })
	if alice.onGateway() != "a-1" || other.onGateway() != "b-1" {
		t.Fatalf("alice on %s and %s, want a-1 and b-1", alice.onGateway(), other.onGateway())
	}
	r, err := da.notify("alice", "n1", `"for acme's alice"`, "")
	if err != nil || r.Status != http.StatusAccepted {
		t.Fatalf("notify: %+v, %v", r, err)
	}
	waitFor(t, 5*time.Second, "acme's alice's notification", func() bool { return len(alice.seqs()) == 1 })
	if _, err := db.notify("bob", "n1", `1`, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // what bolt's alice would get, she would have by now
	if n := len(other.seqs()); n != 0 {
		t.Fatalf("bolt's alice got %d notifications of acme's", n)
	}
	js, _ := jetstream.New(c.nc)
	for _, name := range []string{"HERALD_ACME_INBOX", "HERALD_BOLT_INBOX"} {
		if _, err := js.Stream(context.Background(), name); err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
	}
}
