package dispatcher

import (
	"context"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
)

// Hold timings: how often a held /v1/connect looks at the ring and probes
// the owner, and over how long the clients released by one ring change are
// spread, so they do not all reach their new owners in the same instant.
const (
	holdPoll   = 100 * time.Millisecond
	holdProbe  = time.Second
	holdSpread = 500 * time.Millisecond
)

// connectAnswer tells a client where its socket goes.
type connectAnswer struct {
	Gateway string `json:"gateway"`
	URL     string `json:"url"`
	// Ring is the fingerprint of the ring the answer came from; the client
	// sends it in its auth frame, so a gateway with another view can tell.
	Ring string `json:"ring"`
}

// handleConnect serves POST /v1/connect: the caller is a user's browser or
// app, authenticated by its user token (never an API key, which must not
// reach clients). Any origin may call it: the token travels in a header,
// not a cookie, so allowing every origin lends no ambient authority.
func (d *Dispatcher) handleConnect(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Cache-Control", "no-store")
	tok, ok := bearer(r)
	if !ok {
		d.writeError(w, r, errorf(CodeUnauthorized, "missing user token: send Authorization: Bearer <token>"))
		return
	}
	if len(tok) > wire.MaxTokenBytes {
		// The gateway would refuse it in the auth frame anyway.
		d.writeError(w, r, errorf(CodeUnauthorized, "user token over %d bytes", wire.MaxTokenBytes))
		return
	}
	claims, err := d.verifier.Verify(tok)
	if err != nil {
		d.writeError(w, r, errorf(CodeUnauthorized, "%v", err))
		return
	}
	rg := d.Ring()
	m, ok := rg.Owner(claims.User)
	if ok && r.URL.Query().Get("unreachable") == m.ID {
		rg, m, ok = d.holdConnect(r.Context(), claims.User, m.ID)
	}
	if !ok {
		d.writeError(w, r, errorf(CodeUnavailable, "no gateway is available; retry with backoff"))
		return
	}
	writeJSON(w, http.StatusOK, connectAnswer{Gateway: m.ID, URL: m.URL, Ring: rg.Fingerprint()})
}

// handleConnectPreflight answers browsers' CORS preflight for /v1/connect.
func (d *Dispatcher) handleConnectPreflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// holdConnect answers a client that could not reach owner id, the user's
// owner in the current ring (the client says so with ?unreachable=<id>).
// A gateway that crashed stays in the ring until its Consul check's TTL
// expires; meanwhile a client could only retry blindly and then wait out
// its backoff. Held here, it gets the new owner as soon as the ring names
// one. The hold ends early when the owner answers its liveness probe (it
// restarted, or only this client cannot reach it) and when the dispatcher
// shuts down; after ConnectHold it answers the owner it has.
func (d *Dispatcher) holdConnect(ctx context.Context, user, id string) (*ring.Ring, ring.Member, bool) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectHold)
	defer cancel()
	outcome := "timeout"
	d.metrics.connectHeld.Inc()
	defer func() {
		d.metrics.connectHeld.Dec()
		d.metrics.connectHolds.WithLabelValues(outcome).Inc()
	}()
	poll := time.NewTicker(holdPoll)
	defer poll.Stop()
	var probed time.Time
	for {
		rg := d.Ring()
		m, ok := rg.Owner(user)
		if !ok || m.ID != id {
			outcome = "moved"
			select {
			case <-time.After(rand.N(holdSpread)):
			case <-ctx.Done():
			case <-d.closing:
			}
			return rg, m, ok
		}
		if time.Since(probed) >= holdProbe {
			probed = time.Now()
			pctx, pcancel := context.WithTimeout(ctx, holdProbe)
			alive := d.probe(pctx, id).State == consul.Alive
			pcancel()
			if alive {
				outcome = "alive"
				return rg, m, ok
			}
		}
		select {
		case <-poll.C:
		case <-ctx.Done():
			return rg, m, ok
		case <-d.closing:
			outcome = "closing"
			return rg, m, ok
		}
	}
}
