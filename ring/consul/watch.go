package consul

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/ring"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// WatchConfig configures a Watcher.
type WatchConfig struct {
	// Client talks to a Consul agent. Required.
	Client *api.Client
	// Probe decides whether a member that stopped passing is dead. Required.
	Probe Probe
	// Service is the service to watch. If empty, defaults to Service.
	Service string
	// VNodes per unit of weight in the rings built. If zero, defaults to
	// ring.DefaultVNodes.
	VNodes int
	// Hold is how long a member that stopped passing but still answers its
	// probe stays in the ring. If zero, defaults to 30s.
	Hold time.Duration
	// Debounce is how long a change waits for the rest of its burst before
	// a ring is built. If zero, defaults to 200ms.
	Debounce time.Duration
	// ProbeInterval is how often held members are probed again. If zero,
	// defaults to 1s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe. If zero, defaults to 1s.
	ProbeTimeout time.Duration
	// QueryInterval is the sustained rate limit of the query loop (a token
	// bucket with a burst of 2), which bounds the load on Consul under churn
	// and while it is unreachable. If zero, defaults to 500ms.
	QueryInterval time.Duration
	// WaitTime is the longest a blocking query waits. If zero, defaults to
	// 5m.
	WaitTime time.Duration
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
}

// Status is a Watcher's view of its own health, for /readyz and metrics.
type Status struct {
	// Degraded is true while the last query to Consul failed; the watcher
	// keeps its last ring meanwhile.
	Degraded bool
	// DegradedSince is when the current run of failed queries began; zero
	// while not degraded. Readiness bounds how long a watcher may serve a
	// ring it cannot refresh by it.
	DegradedSince time.Time
	// LastContact is when Consul last answered a query (a blocking query
	// answers up to WaitTime after it was sent).
	LastContact time.Time
	// Err is the last query error while degraded.
	Err error
	// Held lists the members kept in the ring while failing, sorted.
	Held []string
	// Passing lists the members passing in Consul in the last snapshot,
	// sorted.
	Passing []string
	// Skipped counts instances in the last snapshot whose registration was
	// invalid (bad ID, weight or URL).
	Skipped int
	// Duplicates counts instances in the last snapshot dropped because
	// another instance passed with the same ID.
	Duplicates int
	// Changes counts rings published.
	Changes int64
	// Probes counts liveness probes sent.
	Probes int64
}

// Watcher follows the passing gateways in Consul and publishes rings.
type Watcher struct {
	cfg   WatchConfig
	log   *slog.Logger
	state atomic.Pointer[published]

	changes atomic.Int64
	probes  atomic.Int64

	mu     sync.Mutex // guards the following
	status Status     // Held, Skipped, Duplicates, Degraded, LastContact, Err
}

// published is a ring together with the channel closed when it is replaced.
type published struct {
	ring    *ring.Ring
	changed chan struct{}
}

// snapshot is one answer from Consul: the valid passing members by ID.
type snapshot struct {
	members    map[string]ring.Member
	skipped    int
	duplicates int
}

// NewWatcher checks cfg and fills its defaults.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("watch: no consul client")
	}
	if cfg.Probe == nil {
		return nil, errors.New("watch: no liveness probe")
	}
	if _, err := ring.New(cfg.VNodes, nil); err != nil {
		return nil, err
	}
	if cfg.Service == "" {
		cfg.Service = Service
	}
	cfg.Hold = cmp.Or(cfg.Hold, 30*time.Second)
	cfg.Debounce = cmp.Or(cfg.Debounce, 200*time.Millisecond)
	cfg.ProbeInterval = cmp.Or(cfg.ProbeInterval, time.Second)
	cfg.ProbeTimeout = cmp.Or(cfg.ProbeTimeout, time.Second)
	cfg.QueryInterval = cmp.Or(cfg.QueryInterval, 500*time.Millisecond)
	cfg.WaitTime = cmp.Or(cfg.WaitTime, 5*time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watcher{cfg: cfg, log: cfg.Logger}
	w.state.Store(&published{changed: make(chan struct{})})
	return w, nil
}

// Ring returns the current ring, nil until the first one is built, and a
// channel that is closed when it is replaced.
func (w *Watcher) Ring() (*ring.Ring, <-chan struct{}) {
	p := w.state.Load()
	return p.ring, p.changed
}

// Hold is the watcher's hold period: how long a member that stops passing
// but still answers stays in the ring.
func (w *Watcher) Hold() time.Duration { return w.cfg.Hold }

// Status returns the watcher's health.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	s := w.status
	s.Held = slices.Clone(s.Held)
	s.Passing = slices.Clone(s.Passing)
	w.mu.Unlock()
	s.Changes = w.changes.Load()
	s.Probes = w.probes.Load()
	return s
}

// Run watches until ctx is done. It returns nil then, after every goroutine
// it started has ended.
func (w *Watcher) Run(ctx context.Context) error {
	snaps := make(chan snapshot, 1)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { w.query(ctx, snaps); return nil })
	g.Go(func() error { w.build(ctx, snaps); return nil })
	return g.Wait()
}

// query runs blocking queries for the passing members and hands every changed
// snapshot to the build loop.
func (w *Watcher) query(ctx context.Context, snaps chan snapshot) {
	lim := rate.NewLimiter(rate.Every(w.cfg.QueryInterval), 2)
	var (
		index uint64
		last  *snapshot
	)
	for {
		if lim.Wait(ctx) != nil {
			return
		}
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: w.cfg.WaitTime}).WithContext(ctx)
		entries, meta, err := w.cfg.Client.Health().Service(w.cfg.Service, "", true, q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.setContact(err)
			// The agent may come back restarted, with a lower index that
			// an old WaitIndex would block on for the whole WaitTime.
			index = 0
			continue
		}
		w.setContact(nil)
		// Consul's rules: an index that goes backwards resets to 0; one
		// that is 0 would make every query return at once.
		switch {
		case meta.LastIndex < index:
			index = 0
		case meta.LastIndex == 0:
			index = 1
		default:
			index = meta.LastIndex
		}
		s := w.parse(entries)
		if last != nil && s.equal(*last) {
			continue
		}
		last = &s
		select { // replace an unread snapshot: only the newest matters
		case <-snaps:
		default:
		}
		snaps <- s
	}
}

func (w *Watcher) setContact(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		if w.status.Degraded {
			w.log.Info("consul reachable again")
		}
		w.status.Degraded, w.status.Err, w.status.LastContact = false, nil, time.Now()
		w.status.DegradedSince = time.Time{}
		return
	}
	if !w.status.Degraded {
		w.log.Warn("consul unreachable; keeping the last ring", "error", err)
		w.status.DegradedSince = time.Now()
	}
	w.status.Degraded, w.status.Err = true, err
}

// parse turns catalog entries into members, skipping invalid registrations
// and resolving duplicate IDs to the instance on the lowest node name.
func (w *Watcher) parse(entries []*api.ServiceEntry) snapshot {
	s := snapshot{members: make(map[string]ring.Member, len(entries))}
	node := make(map[string]string, len(entries))
	slices.SortFunc(entries, func(a, b *api.ServiceEntry) int { return cmp.Compare(nodeName(a), nodeName(b)) })
	for _, e := range entries {
		if e.Service == nil {
			s.skipped++
			continue
		}
		m, err := memberOf(e.Service)
		if err != nil {
			s.skipped++
			w.log.Warn("skipping gateway with an invalid registration", "service_id", e.Service.ID, "node", nodeName(e), "error", err)
			continue
		}
		if n, dup := node[m.ID]; dup {
			s.duplicates++
			w.log.Warn("duplicate gateway ID; keeping the instance on the lowest node name",
				"gateway", m.ID, "kept_node", n, "dropped_node", nodeName(e))
			continue
		}
		node[m.ID] = nodeName(e)
		s.members[m.ID] = m
	}
	return s
}

func nodeName(e *api.ServiceEntry) string {
	if e.Node == nil {
		return ""
	}
	return e.Node.Node
}

func (s snapshot) equal(o snapshot) bool {
	if s.skipped != o.skipped || s.duplicates != o.duplicates || len(s.members) != len(o.members) {
		return false
	}
	for id, m := range s.members {
		if o.members[id] != m {
			return false
		}
	}
	return true
}

// build owns the ring: it rebuilds it after each burst of snapshots and, while
// members are held, at every probe interval until they pass, die or expire.
func (w *Watcher) build(ctx context.Context, snaps chan snapshot) {
	var (
		snap    *snapshot
		failing = map[string]time.Time{} // member ID → when this watcher first saw it fail
		timer   = time.NewTimer(0)
		due     time.Time // when timer fires; zero when it is stopped
	)
	<-timer.C
	schedule := func(d time.Duration) {
		at := time.Now().Add(d)
		if due.IsZero() || at.Before(due) {
			timer.Reset(d)
			due = at
		}
	}
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-snaps:
			first := snap == nil
			snap = &s
			w.mu.Lock()
			w.status.Skipped, w.status.Duplicates = s.skipped, s.duplicates
			w.status.Passing = w.status.Passing[:0:0]
			for id := range s.members {
				w.status.Passing = append(w.status.Passing, id)
			}
			slices.Sort(w.status.Passing)
			w.mu.Unlock()
			if first {
				schedule(0) // a watcher with no ring builds it at once
			} else {
				schedule(w.cfg.Debounce)
			}
		case <-timer.C:
			due = time.Time{}
			if next := w.evaluate(ctx, *snap, failing); next > 0 {
				schedule(next)
			}
		}
	}
}

// evaluate builds the ring from the passing members plus the members of the
// current ring that are failing but not yet known dead, publishes it if it
// changed, and returns when it must run again (zero: not until the next
// snapshot).
func (w *Watcher) evaluate(ctx context.Context, snap snapshot, failing map[string]time.Time) time.Duration {
	now := time.Now()
	cur, _ := w.Ring()
	members := make([]ring.Member, 0, len(snap.members)+1)
	for _, m := range snap.members {
		members = append(members, m)
	}
	var suspects []ring.Member
	for _, m := range cur.Members() {
		if _, ok := snap.members[m.ID]; ok {
			continue
		}
		since, ok := failing[m.ID]
		if !ok {
			since = now
			failing[m.ID] = now
		}
		if now.Sub(since) >= w.cfg.Hold {
			w.log.Warn("gateway still failing after the hold period; dropping it", "gateway", m.ID, "failing_for", now.Sub(since).Round(time.Millisecond))
			continue
		}
		suspects = append(suspects, m)
	}

	var held []string
	next := time.Duration(0)
	for i, l := range w.probeAll(ctx, suspects) {
		m := suspects[i]
		if l.State == Dead {
			w.log.Info("gateway stopped passing and its process is gone; dropping it", "gateway", m.ID)
			continue
		}
		members = append(members, m)
		held = append(held, m.ID)
		left := w.cfg.Hold - now.Sub(failing[m.ID])
		next = min(cmp.Or(next, w.cfg.ProbeInterval), w.cfg.ProbeInterval, left)
	}
	for id := range failing {
		if !slices.Contains(held, id) {
			delete(failing, id)
		}
	}
	slices.Sort(held)
	w.mu.Lock()
	w.status.Held = held
	w.mu.Unlock()

	r, err := ring.New(w.cfg.VNodes, members)
	if err != nil { // members were validated; this is a bug
		w.log.Error("building ring", "error", err)
		return next
	}
	if cur == nil || r.Fingerprint() != cur.Fingerprint() {
		w.publish(r, held)
	}
	return next
}

// probeAll probes the members concurrently, each within ProbeTimeout.
func (w *Watcher) probeAll(ctx context.Context, ms []ring.Member) []Liveness {
	out := make([]Liveness, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, w.cfg.ProbeTimeout)
			defer cancel()
			w.probes.Add(1)
			out[i] = w.cfg.Probe(pctx, m.ID)
		})
	}
	wg.Wait()
	return out
}

func (w *Watcher) publish(r *ring.Ring, held []string) {
	ids := make([]string, 0, r.Len())
	for _, m := range r.Members() {
		ids = append(ids, m.ID)
	}
	w.log.Info("ring changed", "fingerprint", r.Fingerprint(), "members", ids, "held", held)
	old := w.state.Swap(&published{ring: r, changed: make(chan struct{})})
	close(old.changed)
	w.changes.Add(1)
}
