package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
)

// RehomeConfig is the rehome scenario: Users users, every one owned by one
// gateway (user names are picked on the ring until that gateway owns
// Users of them), connected with the Go client's default settings; then
// that gateway is killed.
type RehomeConfig struct {
	Users int // default 10,000
	// Graceful sends SIGTERM (the gateway drains) instead of SIGKILL.
	Graceful bool
	// Gateway is the gateway to kill; default, the ring's first.
	Gateway string
	// Stop stops the gateway (SIGKILL, or SIGTERM if graceful) and keeps
	// it down; it may return before the process has exited. Start brings
	// it back once the scenario has measured.
	Stop  func(ctx context.Context, gateway string, graceful bool) error
	Start func(ctx context.Context, gateway string) error
	// Generators hold the devices (default: 2 processes, 4 source
	// addresses each), so that the generator's own open-files limit is
	// not what 10,000 users reconnecting at once run into.
	Generators Generators
	// Within bounds the wait for every displaced user (default 2 min).
	Within   time.Duration
	Progress io.Writer
}

// rehomeDevice is what the scenario knows of one user's device.
type rehomeDevice struct {
	gateway string    // of the last hello
	moved   time.Time // first hello from another gateway than the killed one
	probe   time.Time // the probe's arrival
	probes  int       // probes received (more than one is a duplicate)
	// events are its connection's changes after the kill, for the report
	// on the slowest user.
	events []string
}

// Rehome measures how long the users of a killed gateway are away: from the
// kill to the moment each displaced user is connected to its new owner and
// has received a probe notification posted after the kill. Every probe
// must arrive, exactly once; a missing one is lost.
func Rehome(ctx context.Context, t *Target, cfg RehomeConfig, r *Report) error {
	cfg.Users = cmp.Or(cfg.Users, 10_000)
	cfg.Within = cmp.Or(cfg.Within, 2*time.Minute)
	cfg.Generators.N = cmp.Or(cfg.Generators.N, 2)
	cfg.Generators.Sources = cmp.Or(cfg.Generators.Sources, 4)
	if cfg.Stop == nil || cfg.Start == nil {
		return errors.New("rehome: the scenario needs a way to stop and start a gateway")
	}
	arcs, err := t.arcs(ctx, t.Dispatchers[0])
	if err != nil {
		return err
	}
	victim := cfg.Gateway
	if victim == "" {
		victim = arcs[0].ID
	}
	run := runID()
	users := usersOwnedBy(arcs, victim, "bench-rh-"+run, cfg.Users)
	if len(users) < cfg.Users {
		return fmt.Errorf("rehome: gateway %q owns no arc of the ring", victim)
	}

	var (
		mu      sync.Mutex
		devices = make(map[string]*rehomeDevice, len(users))
		killed  atomic.Bool
		t0v     atomic.Value // the kill's time, once killed
		movedCh = make(chan struct{}, 1)
	)
	for _, u := range users {
		devices[u] = &rehomeDevice{}
	}
	probeData := map[string]string{"run": run, "probe": "after the kill"}
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	spreadDevices(t, cfg.Generators)
	defer spreadDevices(t, Generators{})
	err = t.devices(ctx, cctx, users, func(user string, f wire.ServerFrame) {
		mu.Lock()
		defer mu.Unlock()
		d := devices[user]
		switch f.Type {
		case wire.TypeHello:
			d.gateway = f.Gateway
			if killed.Load() && f.Gateway != victim && d.moved.IsZero() {
				d.moved = time.Now()
				select {
				case movedCh <- struct{}{}:
				default:
				}
			}
		case wire.TypeNotification:
			var p map[string]string
			if json.Unmarshal(f.Data, &p) == nil && p["run"] == run {
				if d.probes++; d.probes == 1 {
					d.probe = time.Now()
				}
			}
		}
	}, func(user string, st client.Status) {
		if !killed.Load() {
			return
		}
		e := fmt.Sprintf("+%v ", time.Since(t0v.Load().(time.Time)).Round(time.Millisecond))
		switch {
		case st.Connected:
			e += "hello from " + st.Gateway
		default:
			e += fmt.Sprintf("down (close %d, %v), backoff %v", st.CloseCode, st.Err, st.Backoff.Round(time.Millisecond))
		}
		mu.Lock()
		d := devices[user]
		if len(d.events) < 20 {
			d.events = append(d.events, e)
		}
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	// Until every user is on its owner: a ring that just changed (the
	// gateway of a previous run back) moves users for a while.
	onVictim := 0
	for end := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		onVictim = 0
		for _, d := range devices {
			if d.gateway == victim {
				onVictim++
			}
		}
		mu.Unlock()
		if onVictim == len(users) || time.Now().After(end) || ctx.Err() != nil {
			break
		}
	}
	if onVictim < len(users) {
		mu.Lock()
		on := map[string]int{}
		for _, d := range devices {
			on[d.gateway]++
		}
		mu.Unlock()
		members := map[string]bool{}
		for _, a := range arcs {
			members[a.ID] = true
		}
		return fmt.Errorf("rehome: %d of %d users are on %s, their owner on the ring of %v, a minute after connecting; users by gateway: %v", onVictim, len(users), victim, slices.Sorted(maps.Keys(members)), on)
	}
	how := map[bool]string{false: "SIGKILL", true: "SIGTERM (drain)"}[cfg.Graceful]
	fmt.Fprintf(progress(cfg.Progress), "bench rehome: %d users on %s; %s\n", len(users), victim, how)

	cpu0 := cpuTimes(t.Processes)
	t0 := time.Now()
	t0v.Store(t0)
	killed.Store(true)
	stopped := make(chan error, 1)
	go func() { stopped <- cfg.Stop(ctx, victim, cfg.Graceful) }()
	// The probes go out once the kill has landed: the process is gone, or
	// (draining) a first user has been moved off it.
	select {
	case err := <-stopped:
		if err != nil {
			return fmt.Errorf("rehome: stopping %s: %w", victim, err)
		}
		stopped <- nil
	case <-movedCh:
	case <-ctx.Done():
		return ctx.Err()
	}
	sent := time.Now()
	var postErrs atomic.Int64
	hc := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// The probe is retried with its id until the post is
			// definite: the scenario measures the move, not the
			// dispatcher's answers during it.
			for try := 0; try < 20 && ctx.Err() == nil; try++ {
				status, err := t.post(hc, i, "/v1/notify", map[string]any{"user": u, "id": "probe-" + run, "data": probeData})
				if err == nil && status == http.StatusAccepted {
					return
				}
				time.Sleep(250 * time.Millisecond)
			}
			postErrs.Add(1)
		})
	}
	wg.Wait()
	fmt.Fprintf(progress(cfg.Progress), "bench rehome: %d probes posted in %v\n", len(users), time.Since(sent).Round(time.Millisecond))

	done := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range devices {
			if !d.moved.IsZero() && !d.probe.IsZero() && d.gateway != victim {
				n++
			}
		}
		return n
	}
	deadline := t0.Add(cfg.Within)
	for done() < len(users) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0)
	cpu := cpuUsed(cpu0, cpuTimes(t.Processes))
	if err := <-stopped; err != nil {
		return fmt.Errorf("rehome: stopping %s: %w", victim, err)
	}

	mu.Lock()
	var back []time.Duration
	lost, dups, stayed := 0, 0, 0
	var slowest []string // the slowest user's events
	var slowestUser string
	var slowestTook time.Duration
	for u, d := range devices {
		switch {
		case d.probes == 0:
			lost++
		case d.probes > 1:
			dups += d.probes - 1
		}
		if d.moved.IsZero() || d.gateway == victim {
			stayed++
			continue
		}
		if !d.probe.IsZero() {
			took := max(d.moved.Sub(t0), d.probe.Sub(t0))
			back = append(back, took)
			if took > slowestTook {
				slowest, slowestUser, slowestTook = slices.Clone(d.events), u, took
			}
		}
	}
	mu.Unlock()
	slices.Sort(back)
	q := func(p float64) float64 { return quantileMS(back, p) }
	prefix := "rehome (" + map[bool]string{false: "SIGKILL", true: "SIGTERM"}[cfg.Graceful] + "): "
	r.Add(prefix+"users displaced", "", float64(len(users)))
	r.Add(prefix+"users on their new owner with the probe", "", float64(len(back)))
	r.Add(prefix+"time until rehomed p50", "ms", q(.5))
	r.Add(prefix+"time until rehomed p99", "ms", q(.99))
	r.Add(prefix+"time until every user rehomed", "ms", q(1))
	r.Add(prefix+"probes lost", "", float64(lost))
	r.Add(prefix+"probes duplicated", "", float64(dups))
	r.Add(prefix+"probe posts that failed 20 times", "", float64(postErrs.Load()))
	r.Add(prefix+"server CPU while rehoming", "cores", cpu/took.Seconds())
	r.Note("rehome: %d users all owned by %s, Go client defaults; %s at t0, a probe posted to each user once the kill landed (%v after t0); time from t0 to the user's hello on its new owner and its probe, whichever is later",
		len(users), victim, how, sent.Sub(t0).Round(time.Millisecond))

	if slowestUser != "" {
		r.Note("rehome: the slowest user, %s (%v): %s", slowestUser, slowestTook.Round(time.Millisecond), strings.Join(slowest, "; "))
	}
	if err := cfg.Start(ctx, victim); err != nil {
		return fmt.Errorf("rehome: starting %s again: %w", victim, err)
	}
	// Back in every dispatcher's ring before the next scenario (or run)
	// picks its users by the ring.
	if err := t.waitInRing(ctx, victim, time.Minute); err != nil {
		return fmt.Errorf("rehome: %s started again: %w", victim, err)
	}
	switch {
	case lost > 0 || dups > 0:
		return fmt.Errorf("rehome: %d probes lost, %d duplicated", lost, dups)
	case stayed > 0:
		return fmt.Errorf("rehome: %d of %d users were not on a new owner within %v", stayed, len(users), cfg.Within)
	}
	return nil
}

// usersOwnedBy names n users prefix-0, prefix-1, … skipping those the ring
// (its arcs) places elsewhere than gateway.
func usersOwnedBy(arcs []ring.Arc, gateway, prefix string, n int) []string {
	var users []string
	for i := 0; len(users) < n && i < 1000*n; i++ {
		if u := fmt.Sprintf("%s-%d", prefix, i); ring.ArcOwner(arcs, u) == gateway {
			users = append(users, u)
		}
	}
	return users
}

// arcs is the ring as a dispatcher sees it.
func (t *Target) arcs(ctx context.Context, dispatcher string) ([]ring.Arc, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, dispatcher+"/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/cluster: %s", resp.Status)
	}
	var cl struct {
		Arcs []struct {
			Start, End float64
			Gateway    string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&cl); err != nil {
		return nil, fmt.Errorf("GET /v1/cluster: %w", err)
	}
	if len(cl.Arcs) == 0 {
		return nil, errors.New("GET /v1/cluster: the ring is empty")
	}
	arcs := make([]ring.Arc, len(cl.Arcs))
	for i, a := range cl.Arcs {
		arcs[i] = ring.Arc{Start: a.Start, End: a.End, ID: a.Gateway}
	}
	return arcs, nil
}

// waitInRing waits until gateway owns arcs on every dispatcher's ring.
func (t *Target) waitInRing(ctx context.Context, gateway string, within time.Duration) error {
	in := func() bool {
		for _, d := range t.Dispatchers {
			arcs, err := t.arcs(ctx, d)
			if err != nil || !slices.ContainsFunc(arcs, func(a ring.Arc) bool { return a.ID == gateway }) {
				return false
			}
		}
		return true
	}
	for end := time.Now().Add(within); !in(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) || ctx.Err() != nil {
			return fmt.Errorf("not back in the dispatchers' rings within %v", within)
		}
	}
	return nil
}
