package dispatcher

import (
	"net/http"

	"github.com/heraldpush/herald/gateway/wire"
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
	if ok && d.cfg.ConnectHold > 0 && r.URL.Query().Get("unreachable") == m.ID {
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
