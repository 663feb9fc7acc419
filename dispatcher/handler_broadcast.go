package dispatcher

import (
	"net/http"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
)

// handleBroadcast serves POST /v1/broadcast. A broadcast is live-only: it
// reaches the sockets connected at that moment, through every gateway's
// subscription on the deployment's broadcast subject, and is never stored. A socket that
// is reconnecting misses it, and no cursor moves. The answer says so
// ("live_only": true), so nobody mistakes it for a stored notification.
func (d *Dispatcher) handleBroadcast(w http.ResponseWriter, r *http.Request) {
	body, err := readJSONBody(w, r, int64(d.cfg.MaxPayload+maxBodyOverhead))
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	data, err := decodeBroadcast(body, d.cfg.MaxPayload)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	if perr := d.cfg.NATS.PublishMsg(&nats.Msg{Subject: d.cfg.Deployment.Broadcast(), Header: wire.BroadcastHeader(time.Now()), Data: data}); perr != nil {
		d.metrics.broadcasts.WithLabelValues("failed").Inc()
		d.writeError(w, r, &Error{Code: CodeUnavailable, Message: "NATS is unavailable; the broadcast was not sent", Err: perr})
		return
	}
	d.metrics.broadcasts.WithLabelValues("sent").Inc()
	writeJSON(w, http.StatusAccepted, struct {
		Status   string `json:"status"`
		LiveOnly bool   `json:"live_only"`
	}{"broadcast", true})
}
