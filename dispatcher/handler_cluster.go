package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
)

// Member states in /v1/cluster.
const (
	statePassing = "passing" // passing its Consul check
	stateHeld    = "held"    // failing its check but alive: kept for the hold period
)

// statsTimeout bounds the wait for a gateway's socket counts; a gateway
// slower than this is shown with nulls.
const statsTimeout = 500 * time.Millisecond

// statsTTL is how long socket counts are reused, so a burst of /v1/cluster
// requests costs one NATS request per gateway, not one per request.
const statsTTL = time.Second

type clusterMember struct {
	ID      string `json:"id"`
	URL     string `json:"url"`
	Weight  int    `json:"weight"`
	State   string `json:"state"`
	Sockets *int   `json:"sockets"` // null when the gateway did not answer
	Users   *int   `json:"users"`
}

type clusterView struct {
	// Ring is the fingerprint of the current ring; empty before the first.
	Ring     string          `json:"ring"`
	Degraded bool            `json:"degraded"`
	Members  []clusterMember `json:"members"`
	// Arcs divide the circle among the members, for drawing it.
	Arcs []clusterArc `json:"arcs"`
	// User is where ?user= sits on the circle and who owns it.
	User *clusterUser `json:"user,omitempty"`
}

// clusterArc is a ring.Arc: keys at positions in (start, end] belong to
// gateway.
type clusterArc struct {
	Start   float64 `json:"start"`
	End     float64 `json:"end"`
	Gateway string  `json:"gateway"`
}

type clusterUser struct {
	ID       string  `json:"id"`
	Position float64 `json:"position"` // fraction of the circle, [0, 1)
	Owner    string  `json:"owner"`    // empty when the ring is empty
}

// handleCluster serves GET /v1/cluster: the ring as this dispatcher sees
// it, with each gateway's socket counts. It exposes no secrets, but it does
// map the cluster, so outside dev mode it needs an API key.
func (d *Dispatcher) handleCluster(w http.ResponseWriter, r *http.Request) {
	u := r.URL.Query().Get("user")
	if u != "" {
		if err := wire.ValidateUser(u); err != nil {
			d.writeError(w, r, errorf(CodeInvalidUser, "%v", err))
			return
		}
	}
	rg := d.Ring()
	st := d.watcher.Status()
	view := clusterView{Degraded: st.Degraded, Members: []clusterMember{}}
	if rg != nil {
		view.Ring = rg.Fingerprint()
	}
	stats := d.gatewayStats(r.Context(), rg)
	for _, m := range rg.Members() {
		cm := clusterMember{ID: m.ID, URL: m.URL, Weight: m.Weight, State: statePassing}
		if slices.Contains(st.Held, m.ID) {
			cm.State = stateHeld
		}
		if s, ok := stats[m.ID]; ok {
			cm.Sockets, cm.Users = &s.Sockets, &s.Users
		}
		view.Members = append(view.Members, cm)
	}
	view.Arcs = []clusterArc{}
	for _, a := range rg.Arcs() {
		view.Arcs = append(view.Arcs, clusterArc{Start: a.Start, End: a.End, Gateway: a.ID})
	}
	if u != "" {
		view.User = &clusterUser{ID: u, Position: ring.Position(u)}
		if owner, ok := rg.Owner(u); ok {
			view.User.Owner = owner.ID
		}
	}
	writeJSON(w, http.StatusOK, view)
}

// statsCache holds the last socket counts, fetched for one ring.
type statsCache struct {
	// mu guards the following. It is held while fetching, so concurrent
	// requests wait for one round of NATS requests and share it.
	mu   sync.Mutex
	at   time.Time
	ring string
	got  map[string]wire.GatewayStats // read-only once stored
}

// gatewayStats asks every member of rg for its counts, in parallel, each
// within statsTimeout; members that do not answer are absent.
func (d *Dispatcher) gatewayStats(ctx context.Context, rg *ring.Ring) map[string]wire.GatewayStats {
	if rg.Len() == 0 {
		return nil
	}
	c := &d.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got != nil && c.ring == rg.Fingerprint() && time.Since(c.at) < statsTTL {
		return c.got
	}
	var ids []string
	for _, m := range rg.Members() {
		ids = append(ids, m.ID)
	}
	got := map[string]wire.GatewayStats{}
	// Shared with later requests: not cut short by this one's client.
	for id, a := range d.requestStats(context.WithoutCancel(ctx), ids) {
		if a.err == nil {
			got[id] = a.stats
		}
	}
	c.at, c.ring, c.got = time.Now(), rg.Fingerprint(), got
	return got
}

// statsAnswer is a gateway's answer to a stats request, or why there is
// none: nats.ErrNoResponders when no process serves the gateway's subject.
type statsAnswer struct {
	stats wire.GatewayStats
	err   error
}

// requestStats asks every gateway in ids for its stats, in parallel, each
// within statsTimeout, and returns an answer for each.
func (d *Dispatcher) requestStats(ctx context.Context, ids []string) map[string]statsAnswer {
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	var (
		mu  sync.Mutex
		got = make(map[string]statsAnswer, len(ids))
		wg  sync.WaitGroup
	)
	for _, id := range ids {
		wg.Go(func() {
			var a statsAnswer
			reply, err := d.cfg.NATS.RequestWithContext(ctx, d.cfg.Deployment.Stats(id), nil)
			switch {
			case err != nil:
				a.err = err
			case json.Unmarshal(reply.Data, &a.stats) != nil || a.stats.Sockets < 0 || a.stats.Users < 0 || a.stats.MovesPending < 0:
				d.log.Warn("gateway answered a stats request with nonsense", "gateway", id, "reply", string(reply.Data))
				a.err = errors.New("unreadable stats reply")
			}
			mu.Lock()
			got[id] = a
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}
