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
	// Probe asks a member that is not passing whether its process is alive
	// and healthy. Required.
	Probe Probe
	// Service is the service to watch. If empty, defaults to Service.
	Service string
	// VNodes per unit of weight in the rings built. If zero, defaults to
	// ring.DefaultVNodes.
	VNodes int
	// Hold is how long a member that is not passing and whose probe times
	// out or answers unhealthy stays in the ring, counting only time during
	// which more than half of the other members pass or answer healthy. If
	// zero, defaults to 30s.
	Hold time.Duration
	// Debounce is how long a change waits for the rest of its burst before
	// a ring is built. If zero, defaults to 200ms.
	Debounce time.Duration
	// ProbeInterval is how often held members are probed again. If zero,
	// defaults to 1s. A shorter one does not make a dead member leave
	// sooner than DeadGap after its first "no responders".
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
	// Passing lists the gateways passing in Consul in the last snapshot,
	// sorted; every one of them is in the ring. It is for self-fencing
	// (DESIGN.md): a gateway cut off from NATS fences itself only while
	// more than half of the other members are in this list and the watcher
	// is not Degraded.
	Passing []string
	// Held lists the members kept in the ring while not passing, sorted:
	// those that answer healthy, cannot be probed, or are failing but have
	// not yet been failing for the hold period.
	Held []string
	// HeldMembers says, for each member in Held and in the same order, why
	// it is kept and how near it is to leaving.
	HeldMembers []HeldMember
	// Skipped counts instances in the last snapshot whose registration was
	// invalid (bad ID, weight or URL), passing or not.
	Skipped int
	// Duplicates counts instances in the last snapshot dropped because
	// another instance had the same ID (a passing one, or one on a lower
	// node name).
	Duplicates int
	// Changes counts rings published.
	Changes int64
	// Probes counts liveness probes sent.
	Probes int64
}

// HeldMember is a ring member that is not passing in Consul, as the watcher
// last judged it.
type HeldMember struct {
	ID string
	// Since is when this watcher first saw it not passing.
	Since time.Time
	// InCatalog is false while Consul's catalog does not list it at all
	// (deregistered, or forgotten by a restarted agent); that alone never
	// removes it.
	InCatalog bool
	// Liveness is the answer to its last probe.
	Liveness Liveness
	// Verdict is what that answer means under the rule: "healthy",
	// "failing" (timed out, unhealthy, or another instance answered),
	// "dead" (one "no responders"; a second one DeadGap later removes it)
	// or "unknown" (the probe could not tell; counts as alive).
	Verdict string
	// Failing is the failing time counted toward the hold so far; the
	// member leaves when it reaches the hold period. Zero while it answers
	// healthy.
	Failing time.Duration
	// Paused is true when its failing time stopped counting at the last
	// evaluation because no more than half of the other members were
	// passing or answering healthy: a shared failure, not its own.
	Paused bool
}

// Watcher follows the gateways in Consul and publishes rings.
type Watcher struct {
	cfg   WatchConfig
	log   *slog.Logger
	state atomic.Pointer[published]

	changes atomic.Int64
	probes  atomic.Int64

	mu     sync.Mutex // guards the following
	status Status     // all but Changes and Probes
}

// published is a ring together with the channel closed when it is replaced.
type published struct {
	ring    *ring.Ring
	changed chan struct{}
}

// snapshot is one answer from Consul: every valid registration of the
// service, passing or not.
type snapshot struct {
	instances  map[string]instance // by gateway ID
	skipped    int
	duplicates int
}

// instance is one gateway's registration in a snapshot.
type instance struct {
	member ring.Member
	// passing: every check of the entry passes, the node's serfHealth
	// included (Consul's own passingOnly filter).
	passing bool
	// nonce is the meta instance: the answer its process gives to a
	// liveness request. Empty if the registration has none.
	nonce string
}

// passing returns the sorted IDs of the passing instances.
func (s snapshot) passing() []string {
	var ids []string
	for id, in := range s.instances {
		if in.passing {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
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

// Hold is the watcher's hold period: how long a member that is not passing
// stays in the ring while its probe times out or answers unhealthy (time
// counted only while more than half of the others pass or answer).
func (w *Watcher) Hold() time.Duration { return w.cfg.Hold }

// Status returns the watcher's health.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	s := w.status
	s.Passing = slices.Clone(s.Passing)
	s.Held = slices.Clone(s.Held)
	s.HeldMembers = slices.Clone(s.HeldMembers)
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

// query runs blocking queries for every instance of the service, passing or
// not, and hands every changed snapshot to the build loop. It asks for all of
// them, not only the passing ones, because the rule needs the non-passing
// instances' nonces, and a fresh watcher probes them.
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
		entries, meta, err := w.cfg.Client.Health().Service(w.cfg.Service, "", false, q)
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

// parse turns catalog entries into instances, skipping invalid
// registrations and resolving duplicate IDs to a passing instance if there
// is one, and among those to the one on the lowest node name.
func (w *Watcher) parse(entries []*api.ServiceEntry) snapshot {
	s := snapshot{instances: make(map[string]instance, len(entries))}
	node := make(map[string]string, len(entries))
	type entry struct {
		*api.ServiceEntry
		passing bool
	}
	es := make([]entry, 0, len(entries))
	for _, e := range entries {
		es = append(es, entry{e, e.Checks.AggregatedStatus() == api.HealthPassing})
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.passing != b.passing {
			if a.passing {
				return -1
			}
			return 1
		}
		return cmp.Compare(nodeName(a.ServiceEntry), nodeName(b.ServiceEntry))
	})
	for _, ee := range es {
		e := ee.ServiceEntry
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
			w.log.Warn("duplicate gateway ID; keeping a passing instance, on the lowest node name",
				"gateway", m.ID, "kept_node", n, "dropped_node", nodeName(e), "dropped_passing", ee.passing)
			continue
		}
		node[m.ID] = nodeName(e)
		s.instances[m.ID] = instance{member: m, passing: ee.passing, nonce: e.Service.Meta[MetaInstance]}
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
	if s.skipped != o.skipped || s.duplicates != o.duplicates || len(s.instances) != len(o.instances) {
		return false
	}
	for id, in := range s.instances {
		if o.instances[id] != in {
			return false
		}
	}
	return true
}
