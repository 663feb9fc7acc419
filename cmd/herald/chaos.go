package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
)

// herald chaos runs users and a publisher against a cluster while it kills,
// drains, adds and removes gateways, then checks on the raw frames every
// device received that every accepted notification arrived exactly once, in
// order. It exits non-zero on any loss, duplicate, reordering or late
// message, or if the ring never changed (a run that proved nothing).

type chaosConfig struct {
	control    string
	spawn      bool
	offset     int
	users      int
	rate       float64
	duration   time.Duration
	faultEvery time.Duration
	settle     time.Duration
	faults     []string
	seed       uint64
	minChanges int
	verbose    bool
	// collapseEvery, if > 0, gives every collapseEvery-th notification its
	// user's collapse key: a device may lack it only if it got a newer one
	// with the key.
	collapseEvery int
}

var allFaults = []string{"kill-quick", "kill-long", "term", "scale-out", "scale-in"}

func runChaos(ctx context.Context, args []string) error {
	fs := newFlagSet("chaos", "Run users and a publisher against a herald dev cluster while faults hit its gateways; check that nothing is lost, duplicated or reordered.")
	var c chaosConfig
	fs.StringVar(&c.control, "control", "127.0.0.1:8079", "the herald dev control endpoint")
	fs.BoolVar(&c.spawn, "start-cluster", false, "start a herald dev cluster for the run (with --port-offset) and stop it after")
	fs.IntVar(&c.offset, "port-offset", 10000, "with --start-cluster, the cluster's port offset")
	fs.IntVar(&c.users, "users", 200, "users, one device each")
	fs.Float64Var(&c.rate, "rate", 100, "notifications per second")
	fs.DurationVar(&c.duration, "duration", 60*time.Second, "how long to publish")
	fs.DurationVar(&c.faultEvery, "fault-every", 6*time.Second, "time between faults")
	fs.DurationVar(&c.settle, "settle", 15*time.Second, "after publishing stops, how long everything has to arrive")
	faults := fs.String("faults", strings.Join(allFaults, ","), "faults to mix: "+strings.Join(allFaults, ", "))
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the fault schedule (0: from the clock)")
	fs.IntVar(&c.minChanges, "min-ring-changes", 1, "fail if the ring changed fewer times")
	fs.BoolVar(&c.verbose, "v", false, "log each fault")
	fs.IntVar(&c.collapseEvery, "collapse-every", 0, "give every Nth notification a collapse key, shared by its user's (0: none); a device may lack one only if it got a newer one with the key")
	compose := fs.Bool("compose", false, "drive the fault suite on every engine of the Compose cluster (deploy/compose) instead of herald dev's gateways; run inside the compose file's chaos service")
	dispatchers := fs.String("dispatchers", "http://disp-1.edge:8080,http://disp-2.edge:8080", "with --compose, the dispatchers' base URLs")
	var cc composeConfig
	cc.register(fs)
	composeFaultList := fs.String("compose-faults", "", "with --compose, the faults to run instead of the suite, in order: "+strings.Join(slices.Sorted(maps.Keys(composeFaults)), ", "))
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	if *compose {
		cc.faults = splitList(*composeFaultList)
		if _, ok := composeSuites[cc.suite]; !ok {
			return fmt.Errorf("--suite %q: want short or full", cc.suite)
		}
		return runComposeChaos(ctx, c, cc, *dispatchers)
	}
	c.faults = splitList(*faults)
	for _, f := range c.faults {
		if !slices.Contains(allFaults, f) {
			return fmt.Errorf("unknown fault %q: want some of %v", f, allFaults)
		}
	}
	if c.spawn {
		stop, err := spawnCluster(ctx, &c)
		if err != nil {
			return err
		}
		defer stop()
	}
	r, err := newChaosRun(ctx, c)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

// spawnCluster starts herald dev for the run, logging to a file.
func spawnCluster(ctx context.Context, c *chaosConfig) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "herald-chaos-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "cluster.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "dev", "--port-offset", strconv.Itoa(c.offset), "--dir", dir, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c.control = fmt.Sprintf("127.0.0.1:%d", devControl+c.offset)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		os.RemoveAll(dir)
	}
	fmt.Printf("chaos: started herald dev (port offset %d, log %s)\n", c.offset, logPath)
	// Up means every child ready: the dev banner names the control endpoint.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte("herald dev is up")) {
			return stop, nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("herald dev exited (%v):\n%s", err, tail(b, 40))
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			stop()
			return nil, fmt.Errorf("herald dev not up within 2 minutes:\n%s", tail(b, 40))
		}
	}
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

// chaosRun is one run's state.
type chaosRun struct {
	cfg   chaosConfig
	state devState
	http  *http.Client
	rng   *rand.Rand

	devices []*chaosDevice

	mu       sync.Mutex                   // guards what follows, and is taken alone
	accepted map[string]map[uint64]string // user → seq → id
	posts    map[string]time.Time         // id → when it was first posted
	keyed    map[string]bool              // ids posted with a collapse key
	refusals []time.Time                  // when posts were refused as unavailable
	unknowns []chaosUnknown               // posts whose first answers left the outcome unknown, by when that answer came
	closes   []chaosClose                 // sockets ended by the servers (or the network)
	rehomes  []chaosRehome
	gaveUp   int // posts retried for 2 minutes without a definite outcome
	pending  int // posts being retried after an unknown outcome

	ringChanges atomic.Int64
	faultsDone  []string
}

type chaosClose struct {
	at   time.Time
	code int // 0: the socket ended without a close frame
}

type chaosRehome struct {
	at   time.Time // when the socket was lost
	took time.Duration
}

type chaosDevice struct {
	user    string
	c       *client.Client
	mu      sync.Mutex
	frames  []chaosFrame
	lostAt  time.Time
	gateway string // of the current or last socket
	done    chan error
}

type chaosFrame struct {
	wire.ServerFrame
	at time.Time
}

func newChaosRun(ctx context.Context, cfg chaosConfig) (*chaosRun, error) {
	r := newRun(cfg, devState{})
	if err := r.control(ctx, http.MethodGet, "/state", &r.state); err != nil {
		return nil, fmt.Errorf("reading the cluster's state from %s (is herald dev running?): %w", cfg.control, err)
	}
	return r, nil
}

func newRun(cfg chaosConfig, state devState) *chaosRun {
	return &chaosRun{cfg: cfg, state: state, http: &http.Client{Timeout: 60 * time.Second}, rng: rand.New(rand.NewPCG(cfg.seed, 1)),
		accepted: map[string]map[uint64]string{}, posts: map[string]time.Time{}, keyed: map[string]bool{}}
}

func (r *chaosRun) control(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+r.cfg.control+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (r *chaosRun) run(ctx context.Context) error {
	runID := strconv.FormatUint(r.cfg.seed%1_000_000, 36)
	fmt.Printf("chaos: %d users, %.0f notifications/s for %v, a fault every %v from %v (seed %d)\n",
		r.cfg.users, r.cfg.rate, r.cfg.duration, r.cfg.faultEvery, r.cfg.faults, r.cfg.seed)
	cctx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	if err := r.connectUsers(ctx, cctx, runID); err != nil {
		return err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { r.watchRing(wctx) })
	pctx, stopPublishing := context.WithTimeout(ctx, r.cfg.duration)
	defer stopPublishing()
	bg.Go(func() { r.injectFaults(pctx) })
	r.publish(pctx, runID)
	late := r.settle()
	stopWatch()
	bg.Wait()
	r.stopUsers(stopClients)
	return r.report(late)
}

// connectUsers starts one device per user, living until cctx ends, and
// waits (bounded by ctx) until every one has had its hello.
func (r *chaosRun) connectUsers(ctx, cctx context.Context, runID string) error {
	start := time.Now()
	for i := range r.cfg.users {
		d, err := r.startDevice(cctx, fmt.Sprintf("chaos-%s-%d", runID, i), i)
		if err != nil {
			return err
		}
		r.devices = append(r.devices, d)
	}
	if err := waitUntil(ctx, 60*time.Second, func() bool {
		for _, d := range r.devices {
			if d.hellos() == 0 {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("users did not all connect: %w", err)
	}
	fmt.Printf("chaos: %d users connected in %v\n", len(r.devices), time.Since(start).Round(time.Millisecond))
	return nil
}

// settle waits up to the settle time for every accepted notification to
// arrive, and reports whether some had not.
func (r *chaosRun) settle() (late bool) {
	fmt.Printf("chaos: publishing stopped: %d accepted (%.0f/s), %d refused; waiting up to %v for delivery\n",
		r.count(), float64(r.count())/r.cfg.duration.Seconds(), r.refusedCount(), r.cfg.settle)
	deadline := time.Now().Add(r.cfg.settle)
	for time.Now().Before(deadline) && !r.allArrived(time.Now()) {
		time.Sleep(100 * time.Millisecond)
	}
	return !r.allArrived(time.Now())
}

// stopUsers ends every device and reports clients that failed.
func (r *chaosRun) stopUsers(stop context.CancelFunc) {
	stop()
	for _, d := range r.devices {
		if err := <-d.done; err != nil && !errors.Is(err, context.Canceled) {
			fmt.Printf("chaos: %s's client: %v\n", d.user, err)
		}
	}
}

func (r *chaosRun) startDevice(ctx context.Context, user string, i int) (*chaosDevice, error) {
	d := &chaosDevice{user: user, done: make(chan error, 1)}
	secret := []byte(r.state.TokenSecret)
	c, err := client.New(client.Config{
		Dispatcher:  r.state.Dispatchers[i%len(r.state.Dispatchers)],
		Token:       func(context.Context) (string, error) { return token.Sign(secret, user, time.Hour) },
		BackoffBase: 100 * time.Millisecond, BackoffMax: 2 * time.Second,
		OnFrame: func(_ string, f wire.ServerFrame) {
			d.mu.Lock()
			d.frames = append(d.frames, chaosFrame{f, time.Now()})
			d.mu.Unlock()
		},
		OnEvent: func(e client.Event) {
			if e.Kind != client.EventStatus {
				return
			}
			now := time.Now()
			var lost, back time.Time
			d.mu.Lock()
			switch {
			case !e.Status.Connected && d.lostAt.IsZero():
				d.lostAt = now
				lost = now
			case e.Status.Connected && !d.lostAt.IsZero():
				back, lost, d.lostAt = now, d.lostAt, time.Time{}
			}
			if e.Status.Connected {
				d.gateway = e.Status.Gateway
			}
			d.mu.Unlock()
			r.mu.Lock() // never nested: d.mu is released
			defer r.mu.Unlock()
			switch {
			case !back.IsZero():
				r.rehomes = append(r.rehomes, chaosRehome{at: lost, took: back.Sub(lost)})
			case !lost.IsZero():
				r.closes = append(r.closes, chaosClose{at: now, code: e.Status.CloseCode})
			}
		},
	})
	if err != nil {
		return nil, err
	}
	d.c = c
	go func() { d.done <- c.Run(ctx) }()
	return d, nil
}

func (d *chaosDevice) hellos() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, f := range d.frames {
		if f.Type == wire.TypeHello {
			n++
		}
	}
	return n
}

// connected is the gateway of the device's socket that had its hello, or
// "" if it has none.
func (d *chaosDevice) connected() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.lostAt.IsZero() || len(d.frames) == 0 {
		return ""
	}
	return d.gateway
}

func (d *chaosDevice) notifications() []chaosFrame {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []chaosFrame
	for _, f := range d.frames {
		if f.Type == wire.TypeNotification || f.Type == wire.TypeGap {
			out = append(out, f)
		}
	}
	return out
}

// publish posts at the configured rate until ctx ends, on an absolute
// schedule (the n-th post is due at start + n/rate), so slow answers during
// faults delay posts but do not lower the rate. A post whose outcome is
// unknown is retried with the same id until it is definite.
func (r *chaosRun) publish(ctx context.Context, runID string) {
	jobs := make(chan int, 1024)
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for n := range jobs {
				r.post(n, runID)
			}
		})
	}
	start := time.Now()
	for n := 0; ; n++ {
		due := start.Add(time.Duration(float64(n) / r.cfg.rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			close(jobs)
			wg.Wait()
			return
		case <-time.After(time.Until(due)):
		}
		select {
		case jobs <- n:
		case <-ctx.Done():
		}
	}
}

func (r *chaosRun) post(n int, runID string) {
	d := r.devices[n%len(r.devices)]
	id := fmt.Sprintf("c-%s-%d", runID, n)
	fields := map[string]any{"user": d.user, "id": id, "data": map[string]int{"n": n}}
	keyed := r.cfg.collapseEvery > 0 && n%r.cfg.collapseEvery == 0
	if keyed {
		fields["collapse"] = "k"
	}
	body, _ := json.Marshal(fields)
	at := time.Now()
	r.mu.Lock()
	r.posts[id] = at
	r.keyed[id] = keyed
	r.mu.Unlock()
	// Until definite, however long an outage lasts (the dispatchers'
	// dedupe window, 2 minutes, keeps a retry from storing it twice).
	for attempt := 0; time.Since(at) < 2*time.Minute; attempt++ {
		base := r.state.Dispatchers[(n+attempt)%len(r.state.Dispatchers)]
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/notify", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+r.state.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := r.http.Do(req)
		why := ""
		if err != nil {
			why = "request failed: " + err.Error()
		} else {
			var res struct {
				Seq   uint64 `json:"seq"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusAccepted:
				r.mu.Lock()
				if r.accepted[d.user] == nil {
					r.accepted[d.user] = map[uint64]string{}
				}
				r.accepted[d.user][res.Seq] = id
				r.mu.Unlock()
				return
			case res.Error.Code == "unavailable" && attempt == 0:
				r.mu.Lock()
				// Certainly not stored; a first refusal is final. Counted
				// when it was answered: a post sent just before a fault
				// and refused because of it is that fault's.
				r.refusals = append(r.refusals, time.Now())
				r.mu.Unlock()
				return
			}
			why = fmt.Sprintf("%d %s", resp.StatusCode, cmp.Or(res.Error.Code, "(no error code)"))
		}
		// Unknown outcome, or the request itself failed: the same id again.
		if attempt == 0 {
			r.mu.Lock()
			r.unknowns = append(r.unknowns, chaosUnknown{at: time.Now(), why: why})
			r.pending++
			r.mu.Unlock()
			defer func() {
				r.mu.Lock()
				r.pending--
				r.mu.Unlock()
			}()
		}
		time.Sleep(min(100*time.Millisecond<<min(attempt, 3), time.Second))
	}
	r.mu.Lock()
	r.gaveUp++
	r.mu.Unlock()
}

// retrying is how many posts are being retried after an unknown outcome.
func (r *chaosRun) retrying() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending
}

// unresolved is how many posts never had a definite outcome.
func (r *chaosRun) unresolved() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gaveUp
}

func (r *chaosRun) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.accepted {
		n += len(m)
	}
	return n
}

func (r *chaosRun) refusedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.refusals)
}

// allArrived reports whether every notification accepted and first posted
// before t has arrived at its device.
func (r *chaosRun) allArrived(t time.Time) bool {
	for _, d := range r.devices {
		r.mu.Lock()
		want := make([]uint64, 0, len(r.accepted[d.user]))
		for seq, id := range r.accepted[d.user] {
			if r.posts[id].Before(t) {
				want = append(want, seq)
			}
		}
		r.mu.Unlock()
		got := map[uint64]bool{}
		var newestKeyed uint64
		frames := d.notifications()
		r.mu.Lock()
		for _, f := range frames {
			got[f.Seq] = true
			if r.keyed[f.ID] {
				newestKeyed = max(newestKeyed, f.Seq)
			}
		}
		for _, seq := range want {
			if !got[seq] && !(r.keyed[r.accepted[d.user][seq]] && seq < newestKeyed) {
				r.mu.Unlock()
				return false
			}
		}
		r.mu.Unlock()
	}
	return true
}

// get GETs a dispatcher URL with the API key.
func (r *chaosRun) get(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.state.APIKey)
	return r.http.Do(req)
}

// watchRing counts ring changes as a dispatcher sees them.
func (r *chaosRun) watchRing(ctx context.Context) {
	last := ""
	for {
		var cl struct {
			Ring string `json:"ring"`
		}
		if resp, err := r.get(r.state.Dispatchers[0] + "/v1/cluster"); err == nil {
			json.NewDecoder(resp.Body).Decode(&cl)
			resp.Body.Close()
			if cl.Ring != "" && last != "" && cl.Ring != last {
				r.ringChanges.Add(1)
			}
			if cl.Ring != "" {
				last = cl.Ring
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// injectFaults runs the fault schedule until ctx ends. Each fault targets a
// gateway that is running; at least one other gateway stays up.
func (r *chaosRun) injectFaults(ctx context.Context) {
	order := slices.Clone(r.cfg.faults)
	r.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	base := map[string]bool{}
	for _, c := range r.state.Children {
		if c.Kind == "gateway" {
			base[c.Name] = true
		}
	}
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.faultEvery):
		}
		fault := order[i%len(order)]
		var st devState
		if err := r.control(ctx, http.MethodGet, "/state", &st); err != nil {
			continue
		}
		var running, added []string
		for _, c := range st.Children {
			if c.Kind == "gateway" && !c.Removed && c.State == "running" {
				running = append(running, c.Name)
				if !base[c.Name] {
					added = append(added, c.Name)
				}
			}
		}
		if len(running) < 2 && fault != "scale-out" || fault == "scale-in" && len(added) == 0 {
			fault = "scale-out"
		}
		target := ""
		if len(running) > 0 {
			target = running[r.rng.IntN(len(running))]
		}
		// A fault under way when publishing stops runs to its end (the HTTP
		// client's timeout bounds it): cut short, a drain or scale-in would
		// be reported as failed although the cluster carries it out.
		fctx := context.WithoutCancel(ctx)
		var err error
		switch fault {
		case "kill-quick": // back before the TTL: the ring does not change
			err = r.control(fctx, http.MethodPost, "/children/"+target+"/stop?signal=KILL&restart=1s", nil)
		case "kill-long": // down past the TTL: the ring changes, twice
			err = r.control(fctx, http.MethodPost, "/children/"+target+"/stop?signal=KILL&restart=12s", nil)
		case "term": // drain, then back
			err = r.control(fctx, http.MethodPost, "/children/"+target+"/stop?signal=TERM&restart=3s", nil)
		case "scale-out":
			err = r.control(fctx, http.MethodPost, "/gateways", nil)
			target = "a new gateway"
		case "scale-in":
			if len(added) > 0 {
				target = added[0]
			}
			err = r.control(fctx, http.MethodDelete, "/gateways/"+target+"?signal=TERM", nil)
		}
		desc := fmt.Sprintf("%s %s", fault, target)
		if err != nil {
			desc += " (failed: " + err.Error() + ")"
		}
		r.faultsDone = append(r.faultsDone, desc)
		if r.cfg.verbose {
			fmt.Printf("chaos: fault %d: %s\n", i+1, desc)
		}
	}
}

// report checks every device's raw frames and prints the report.
// chaosTally is what became of the notifications posted, and of the
// sockets lost, in one span of a run.
type chaosTally struct {
	accepted, delivered, lost, dups, disorder, storedTwice, gaps int
	collapsed                                                    int // not delivered: the device got a newer one with its collapse key
	unavailable, unknown                                         int
	unknownWhy                                                   map[string]int // the first answers of the unknown, by kind
	closes                                                       map[int]int    // by close code; 0: no close frame
	rehomes                                                      []time.Duration
}

func (t *chaosTally) closed() int {
	n := 0
	for _, c := range t.closes {
		n += c
	}
	return n
}

// rehome is the p-quantile of the tally's re-homes (socket lost → hello).
func (t *chaosTally) rehome(p float64) time.Duration {
	if len(t.rehomes) == 0 {
		return 0
	}
	rs := slices.Sorted(slices.Values(t.rehomes))
	return rs[min(len(rs)-1, int(float64(len(rs))*p))].Round(time.Millisecond)
}

// tallies splits the run at bounds (ascending): tally i holds the
// notifications first posted, and the sockets lost, in [bounds[i-1],
// bounds[i]) — tally 0 what came before bounds[0], the last what came after
// the last bound. Gaps count where they arrived.
func (r *chaosRun) tallies(bounds []time.Time) []chaosTally {
	ts := make([]chaosTally, len(bounds)+1)
	for i := range ts {
		ts[i].closes = map[int]int{}
	}
	span := func(t time.Time) *chaosTally {
		return &ts[sort.Search(len(bounds), func(i int) bool { return bounds[i].After(t) })]
	}
	for _, d := range r.devices {
		frames := d.notifications()
		r.mu.Lock()
		seen := map[uint64]int{}
		seqOf := map[string]uint64{}
		var prev uint64
		for _, f := range frames {
			if f.Type == wire.TypeGap {
				span(f.at).gaps++
				continue
			}
			at, ok := r.posts[f.ID]
			if !ok {
				at = f.at
			}
			t := span(at)
			t.delivered++
			if seen[f.Seq]++; seen[f.Seq] > 1 {
				t.dups++
			} else if f.Seq <= prev {
				t.disorder++
			}
			prev = f.Seq
			// One id at two seqs: a retry of an unknown outcome was stored
			// as a second notification.
			if s, ok := seqOf[f.ID]; ok && s != f.Seq {
				t.storedTwice++
			}
			seqOf[f.ID] = f.Seq
		}
		var newestKeyed uint64
		for _, f := range frames {
			if f.Type == wire.TypeNotification && r.keyed[f.ID] {
				newestKeyed = max(newestKeyed, f.Seq)
			}
		}
		for seq, id := range r.accepted[d.user] {
			t := span(r.posts[id])
			t.accepted++
			switch {
			case seen[seq] > 0:
			case r.keyed[id] && seq < newestKeyed:
				t.collapsed++ // the device got a newer one with its key
			default:
				t.lost++
			}
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.refusals {
		span(at).unavailable++
	}
	for _, u := range r.unknowns {
		t := span(u.at)
		t.unknown++
		if t.unknownWhy == nil {
			t.unknownWhy = map[string]int{}
		}
		t.unknownWhy[u.why]++
	}
	for _, c := range r.closes {
		span(c.at).closes[c.code]++
	}
	for _, h := range r.rehomes {
		t := span(h.at)
		t.rehomes = append(t.rehomes, h.took)
	}
	return ts
}

// chaosUnknown is a post whose first answer left its outcome unknown: when
// that answer came, and what it was (a 503 unknown_outcome, another
// status, or a failed request).
type chaosUnknown struct {
	at  time.Time
	why string
}

// unknownKinds is a tally's first answers of unknown outcome, as
// "503 unknown_outcome×2; request failed: EOF×1".
func (t *chaosTally) unknownKinds() string {
	var parts []string
	for _, why := range slices.Sorted(maps.Keys(t.unknownWhy)) {
		parts = append(parts, fmt.Sprintf("%s×%d", why, t.unknownWhy[why]))
	}
	return strings.Join(parts, "; ")
}

// closeCodes is a tally's closes as "1013×12 4001×3".
func (t *chaosTally) closeCodes() string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(t.closes)) {
		name := strconv.Itoa(code)
		if code == 0 {
			name = "none"
		}
		parts = append(parts, fmt.Sprintf("%s×%d", name, t.closes[code]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// report checks every device's raw frames and prints the report.
func (r *chaosRun) report(late bool) error {
	all := r.tallies(nil)[0]
	var moves uint64
	for _, d := range r.devices {
		moves += d.c.Stats().Moves
	}
	fmt.Printf(`
chaos report
  faults            %d: %s
  accepted          %d, %.0f/s (refused while unavailable: %d; posts retried after an unknown outcome: %d)
  delivered frames  %d
  lost              %d
  collapsed         %d (replaced by a newer one with their collapse key)
  duplicate frames  %d
  out of order      %d
  stored twice      %d
  gaps              %d
  late              %v
  ring changes      %d
  moves             %d
  sockets closed    %d: %s
  re-homes          %d: p50 %v, p99 %v, max %v (socket lost → hello)
`, len(r.faultsDone), strings.Join(r.faultsDone, "; "), r.count(), float64(r.count())/r.cfg.duration.Seconds(), all.unavailable, all.unknown,
		all.delivered, all.lost, all.collapsed, all.dups, all.disorder, all.storedTwice, all.gaps, late, r.ringChanges.Load(), moves,
		all.closed(), all.closeCodes(), len(all.rehomes), all.rehome(.5), all.rehome(.99), all.rehome(1))
	problems := all.problems()
	if int(r.ringChanges.Load()) < r.cfg.minChanges {
		problems = append(problems, fmt.Sprintf("the ring changed %d times, want at least %d", r.ringChanges.Load(), r.cfg.minChanges))
	}
	return r.verdict(problems, late)
}

// verdict adds the checks of every run to problems — everything arrived
// in time, every post had a definite outcome, something was accepted —
// prints the verdict, and fails the run if there is any problem.
func (r *chaosRun) verdict(problems []string, late bool) error {
	if late {
		problems = append(problems, fmt.Sprintf("not everything arrived within %v of the end", r.cfg.settle))
	}
	if n := r.unresolved(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d posts never had a definite outcome", n))
	}
	if r.count() == 0 {
		problems = append(problems, "nothing was accepted")
	}
	if len(problems) > 0 {
		fmt.Printf("chaos: FAIL:\n  %s\n", strings.Join(problems, "\n  "))
		return errors.New("chaos run failed")
	}
	fmt.Println("chaos: PASS")
	return nil
}

// problems are the tally's violations of the delivery guarantee: anything
// lost, delivered twice, out of order, stored twice, or a gap.
func (t *chaosTally) problems() []string {
	var out []string
	for _, p := range []struct {
		n    int
		what string
	}{{t.lost, "lost"}, {t.dups, "duplicate frames"}, {t.disorder, "out of order"}, {t.storedTwice, "stored twice"}, {t.gaps, "gaps"}} {
		if p.n > 0 {
			out = append(out, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	return out
}
