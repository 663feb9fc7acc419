package consul

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// LiveReply is a gateway's answer to a liveness request: its instance nonce
// and whether it can deliver. A gateway that answers but is unhealthy (its
// JetStream does not answer, say) is alive but failing.
type LiveReply struct {
	Instance string `json:"instance"`
	Healthy  bool   `json:"healthy"`
	Reason   string `json:"reason,omitempty"`
}

// Encode encodes the reply.
func (r LiveReply) Encode() []byte {
	b, _ := json.Marshal(r)
	return b
}

// decodeLiveReply reads a liveness reply. A bare nonce is the answer of a
// gateway from before replies carried health: alive and healthy.
func decodeLiveReply(b []byte) (LiveReply, bool) {
	if len(b) == 0 {
		return LiveReply{}, false
	}
	if !strings.HasPrefix(string(b), "{") {
		return LiveReply{Instance: string(b), Healthy: true}, true
	}
	var r LiveReply
	if err := json.Unmarshal(b, &r); err != nil || r.Instance == "" {
		return LiveReply{}, false
	}
	return r, true
}

// MinUptime is how long a watcher's NATS connection must have been up
// before it believes "no responders": right after a reconnect (its own, or
// the NATS servers'), the gateways may not have subscribed again yet.
const MinUptime = 3 * time.Second

// NATSProbe returns the Probe that asks over NATS, on subject(id), whether
// a gateway's process is alive. NATS answers a request nobody serves with
// "no responders" at once, so a dead process is found in one round trip
// once link has been up for MinUptime. A request that times out while NATS
// is connected is Silent; any other failure (NATS itself unreachable)
// cannot tell and says Unknown.
func NATSProbe(link *Link, subject func(id string) string) Probe {
	return func(ctx context.Context, id string) Liveness {
		m, err := link.nc.RequestWithContext(ctx, subject(id), nil)
		switch {
		case err == nil:
			r, ok := decodeLiveReply(m.Data)
			if !ok {
				return Liveness{State: Alive, Reason: "unreadable liveness reply"}
			}
			return Liveness{State: Alive, Instance: r.Instance, Healthy: r.Healthy, Reason: r.Reason}
		case errors.Is(err, nats.ErrNoResponders) && link.Up() >= MinUptime:
			return Liveness{State: Dead}
		case (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) && link.Up() > 0:
			return Liveness{State: Silent}
		default:
			return Liveness{State: Unknown}
		}
	}
}

// Link follows one NATS connection: how long it has been up, or down,
// without a break. Run makes it exact; without Run it learns of changes
// when asked.
type Link struct {
	nc *nats.Conn

	mu         sync.Mutex // guards the following
	connected  bool
	reconnects uint64
	since      time.Time // when connected (or reconnects) last changed
}

// NewLink starts following nc.
func NewLink(nc *nats.Conn) *Link {
	l := &Link{nc: nc, connected: nc.IsConnected(), reconnects: nc.Stats().Reconnects, since: time.Now()}
	return l
}

// Conn is the connection followed.
func (l *Link) Conn() *nats.Conn { return l.nc }

// Run notes every status change of the connection as it happens, until ctx
// ends.
func (l *Link) Run(ctx context.Context) {
	ch := l.nc.StatusChanged()
	defer l.nc.RemoveStatusListener(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			l.observe()
		}
	}
}

// observe notes the connection's state now; a reconnect between two looks
// shows in the reconnect count.
func (l *Link) observe() (connected bool, since time.Time) {
	c, r := l.nc.IsConnected(), l.nc.Stats().Reconnects
	l.mu.Lock()
	defer l.mu.Unlock()
	// nats.go counts a reconnect for every server that accepted the TCP
	// connection, even one that failed the handshake: a changed count
	// restarts the uptime of a connection that is up, never the downtime
	// of one that is down.
	if c != l.connected || c && r != l.reconnects {
		l.connected, l.since = c, time.Now()
	}
	l.reconnects = r
	return l.connected, l.since
}

// Up is how long the connection has been up without a break; 0 while it is
// down.
func (l *Link) Up() time.Duration {
	if c, since := l.observe(); c {
		return max(time.Since(since), time.Nanosecond)
	}
	return 0
}

// Down is how long the connection has been down; 0 while it is up.
func (l *Link) Down() time.Duration {
	if c, since := l.observe(); !c {
		return max(time.Since(since), time.Nanosecond)
	}
	return 0
}
