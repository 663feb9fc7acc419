package dispatcher

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// bearer returns the credentials of an "Authorization: Bearer <x>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

// lookupKey finds the API key k. It hashes k and compares the hash with
// every key's in constant time, without stopping at a match, so neither the
// time taken nor the keys' lengths tell an attacker anything.
func (d *Dispatcher) lookupKey(k string) *apiKey {
	sum := sha256.Sum256([]byte(k))
	var found *apiKey
	for i := range d.keys {
		if subtle.ConstantTimeCompare(sum[:], d.keys[i].sum[:]) == 1 {
			found = &d.keys[i]
		}
	}
	return found
}

type keyCtx struct{}

// requireAPIKey admits a request with a valid API key within its rate
// limit, which charges the request one notification. (A batch charges the
// rest of its items itself, once it knows how many.)
func (d *Dispatcher) requireAPIKey(next http.Handler) http.Handler {
	return d.requireKey(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.allow(w, r, keyOf(r), 1) {
			next.ServeHTTP(w, r)
		}
	}))
}

// requireKey admits a request with a valid API key, without charging its
// rate limit: for reads that cost no notification (/v1/cluster, whose
// socket counts are cached).
func (d *Dispatcher) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := bearer(r)
		if !ok {
			d.writeError(w, r, errorf(CodeUnauthorized, "missing API key: send Authorization: Bearer <API key>"))
			return
		}
		key := d.lookupKey(cred)
		if key == nil {
			d.writeError(w, r, errorf(CodeUnauthorized, "unknown API key"))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyCtx{}, key)))
	})
}

// allow takes n tokens from the key's bucket, or answers 429 with the
// Retry-After the bucket needs to hold them. n is at most the burst (more
// could never be granted); a batch's caller caps it.
func (d *Dispatcher) allow(w http.ResponseWriter, r *http.Request, key *apiKey, n int) bool {
	if n <= 0 {
		return true
	}
	now := time.Now()
	n = min(n, key.limiter.Burst())
	res := key.limiter.ReserveN(now, n)
	delay := res.DelayFrom(now)
	if res.OK() && delay == 0 {
		return true
	}
	res.CancelAt(now) // give the tokens back: this request is refused
	d.metrics.rateLimited.Inc()
	secs := int64(math.Ceil(delay.Seconds()))
	if !res.OK() || delay == rate.InfDuration {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	d.writeError(w, r, errorf(CodeRateLimited, "over this API key's rate limit of %g notifications/s (burst %d)",
		float64(key.limiter.Limit()), key.limiter.Burst()))
	return false
}

// keyOf returns the API key requireAPIKey admitted the request with.
func keyOf(r *http.Request) *apiKey {
	k, _ := r.Context().Value(keyCtx{}).(*apiKey)
	return k
}
