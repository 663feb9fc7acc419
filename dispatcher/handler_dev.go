package dispatcher

import (
	"net/http"
	"time"

	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
)

// devTokenTTL is the lifetime of a dev token.
const devTokenTTL = time.Hour

// handleDevToken serves POST /v1/dev/token (dev mode only): a token for any
// user, signed with the first secret and carrying the configured audience
// and issuer, so the demo page can connect.
func (d *Dispatcher) handleDevToken(w http.ResponseWriter, r *http.Request) {
	body, err := readJSONBody(w, r, 4<<10)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	user, err := decodeDevToken(body)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	tok, serr := token.Sign(d.cfg.TokenSecrets[0], user, devTokenTTL,
		token.WithAudience(d.cfg.TokenAudience), token.WithIssuer(d.cfg.TokenIssuer))
	var claims token.Claims
	if serr == nil {
		// Read the expiry back from the token itself, which the JWT
		// rounds to the second.
		claims, serr = d.verifier.Verify(tok)
	}
	if serr != nil {
		d.writeError(w, r, &Error{Code: CodeInternal, Message: "signing the token failed", Err: serr})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		Token   string `json:"token"`
		Expires string `json:"expires"`
	}{tok, wire.FormatTS(claims.Expires)})
}

// handleDevConfig serves GET /v1/dev/config (dev mode only): the API key the
// demo page publishes with.
func (d *Dispatcher) handleDevConfig(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		APIKey string `json:"api_key"`
	}{d.cfg.APIKeys[0]})
}
