package dispatcher

import (
	"net/http"
	"time"
)

// handleHealthz serves GET /healthz: 200 while the process can answer.
func (d *Dispatcher) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
	}{"ok"})
}

// readiness is the body of /readyz: each condition, so an operator sees
// which one failed.
type readiness struct {
	Ready bool `json:"ready"`
	// Log: the stream has been created or updated.
	Log   bool   `json:"log"`
	Epoch string `json:"epoch,omitempty"`
	NATS  bool   `json:"nats"`
	// Ring: the watcher has built a ring (possibly empty: notifications
	// are then stored only).
	Ring        bool   `json:"ring"`
	Fingerprint string `json:"ring_fingerprint,omitempty"`
	Members     int    `json:"members"`
	Held        int    `json:"held"`
	// Consul: reachable, or unreachable for less than StaleAfter.
	Consul         bool       `json:"consul"`
	Degraded       bool       `json:"degraded"`
	DegradedFor    string     `json:"degraded_for,omitempty"`
	ConsulError    string     `json:"consul_error,omitempty"`
	LastContact    *time.Time `json:"consul_last_contact,omitempty"`
	StaleAfterSecs float64    `json:"stale_after_seconds"`
}

// handleReadyz serves GET /readyz: 200 when the dispatcher can accept
// notifications and route them (stream ensured, NATS connected, a ring,
// Consul reached within StaleAfter), else 503. A degraded dispatcher keeps
// its last ring and stays ready until StaleAfter: a Consul outage alone
// must not take every dispatcher out of the load balancer at once.
func (d *Dispatcher) handleReadyz(w http.ResponseWriter, r *http.Request) {
	st := d.watcher.Status()
	rg := d.Ring()
	rd := readiness{
		NATS:           d.cfg.NATS.IsConnected(),
		Ring:           rg != nil,
		Members:        rg.Len(),
		Held:           len(st.Held),
		Degraded:       st.Degraded,
		StaleAfterSecs: d.cfg.StaleAfter.Seconds(),
	}
	if l := d.inbox.Load(); l != nil {
		rd.Log, rd.Epoch = true, l.Epoch()
	}
	if rg != nil {
		rd.Fingerprint = rg.Fingerprint()
	}
	if !st.LastContact.IsZero() {
		lc := st.LastContact
		rd.LastContact = &lc
	}
	rd.Consul = !st.LastContact.IsZero()
	if st.Degraded && !st.DegradedSince.IsZero() {
		down := time.Since(st.DegradedSince)
		rd.DegradedFor = down.Round(time.Millisecond).String()
		rd.Consul = rd.Consul && down <= d.cfg.StaleAfter
	}
	if st.Err != nil {
		rd.ConsulError = st.Err.Error()
	}
	rd.Ready = rd.Log && rd.NATS && rd.Ring && rd.Consul
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}
