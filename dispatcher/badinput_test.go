package dispatcher

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBadInputChangesNothing sends every kind of bad request and checks its
// exact status and code, and that none of them stored anything or rang
// anyone.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	const maxPayload = 1024
	td := e.dispatcher(func(c *Config) { c.MaxPayload, c.MaxBatch = maxPayload, 3 })
	td.waitRing("gw-a")

	key := []string{"Authorization", "Bearer " + testKey, "Content-Type", "application/json"}
	item := `{"user":"alice","data":1}`
	big := strings.Repeat("x", maxPayload-2) // a JSON string of exactly maxPayload bytes
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		headers      []string
		status       int
		code         Code
	}{
		{"bad JSON", "POST", "/v1/notify", `{"user":"alice","data":`, key, 400, CodeInvalidJSON},
		{"not an object", "POST", "/v1/notify", `[{"user":"alice","data":1}]`, key, 400, CodeInvalidJSON},
		{"empty body", "POST", "/v1/notify", ``, key, 400, CodeInvalidJSON},
		{"data after the object", "POST", "/v1/notify", `{"user":"alice","data":1} {"user":"bob","data":1}`, key, 400, CodeInvalidJSON},
		{"closing bracket after the object", "POST", "/v1/notify", `{"user":"alice","data":1}]`, key, 400, CodeInvalidJSON},
		{"unknown field", "POST", "/v1/notify", `{"user":"alice","date":1}`, key, 400, CodeInvalidJSON},
		{"body not UTF-8", "POST", "/v1/notify", "{\"user\":\"al\xffice\",\"data\":1}", key, 400, CodeInvalidJSON},
		{"text/plain", "POST", "/v1/notify", item, []string{"Authorization", "Bearer " + testKey, "Content-Type", "text/plain"}, 415, CodeUnsupportedMedia},
		{"no content type", "POST", "/v1/notify", item, []string{"Authorization", "Bearer " + testKey}, 415, CodeUnsupportedMedia},
		{"data over the limit", "POST", "/v1/notify", `{"user":"alice","data":"` + big + `x"}`, key, 413, CodePayloadTooLarge},
		{"body far over the limit", "POST", "/v1/notify", `{"user":"alice","data":"` + strings.Repeat("x", maxPayload+maxBodyOverhead) + `"}`, key, 413, CodePayloadTooLarge},
		{"missing user", "POST", "/v1/notify", `{"data":1}`, key, 400, CodeInvalidUser},
		{"empty user", "POST", "/v1/notify", `{"user":"","data":1}`, key, 400, CodeInvalidUser},
		{"oversized user", "POST", "/v1/notify", `{"user":"` + strings.Repeat("u", 257) + `","data":1}`, key, 400, CodeInvalidUser},
		{"control character in user", "POST", "/v1/notify", `{"user":"ali\u0007ce","data":1}`, key, 400, CodeInvalidUser},
		{"newline in user", "POST", "/v1/notify", `{"user":"ali\nce","data":1}`, key, 400, CodeInvalidUser},
		{"user not a string", "POST", "/v1/notify", `{"user":42,"data":1}`, key, 400, CodeInvalidUser},
		{"null user", "POST", "/v1/notify", `{"user":null,"data":1}`, key, 400, CodeInvalidUser},
		{"empty id", "POST", "/v1/notify", `{"user":"alice","data":1,"id":""}`, key, 400, CodeInvalidID},
		{"oversized id", "POST", "/v1/notify", `{"user":"alice","data":1,"id":"` + strings.Repeat("i", 129) + `"}`, key, 400, CodeInvalidID},
		{"control character in id", "POST", "/v1/notify", `{"user":"alice","data":1,"id":"a\tb"}`, key, 400, CodeInvalidID},
		{"id ending in a space", "POST", "/v1/notify", `{"user":"alice","data":1,"id":"a "}`, key, 400, CodeInvalidID},
		{"id of spaces", "POST", "/v1/notify", `{"user":"alice","data":1,"id":"   "}`, key, 400, CodeInvalidID},
		{"lone surrogate in id", "POST", "/v1/notify", `{"user":"alice","data":1,"id":"a\udfffb"}`, key, 400, CodeInvalidID},
		{"lone surrogate in user", "POST", "/v1/notify", `{"user":"a\ud800b","data":1}`, key, 400, CodeInvalidUser},
		{"id not a string", "POST", "/v1/notify", `{"user":"alice","data":1,"id":7}`, key, 400, CodeInvalidID},
		{"missing data", "POST", "/v1/notify", `{"user":"alice"}`, key, 400, CodeInvalidData},
		{"null data", "POST", "/v1/notify", `{"user":"alice","data":null}`, key, 400, CodeInvalidData},
		{"no API key", "POST", "/v1/notify", item, []string{"Content-Type", "application/json"}, 401, CodeUnauthorized},
		{"wrong API key", "POST", "/v1/notify", item, []string{"Authorization", "Bearer nope", "Content-Type", "application/json"}, 401, CodeUnauthorized},
		{"API key as Basic", "POST", "/v1/notify", item, []string{"Authorization", "Basic " + testKey, "Content-Type", "application/json"}, 401, CodeUnauthorized},
		{"API key with a suffix", "POST", "/v1/notify", item, []string{"Authorization", "Bearer " + testKey + "x", "Content-Type", "application/json"}, 401, CodeUnauthorized},
		{"user token as API key", "POST", "/v1/notify", item, []string{"Authorization", "Bearer " + mustToken(t, testSecret, "alice", time.Hour), "Content-Type", "application/json"}, 401, CodeUnauthorized},
		{"unknown route", "POST", "/v1/nope", item, key, 404, CodeNotFound},
		{"trailing slash", "POST", "/v1/notify/", item, key, 404, CodeNotFound},
		{"dev route when not dev", "POST", "/v1/dev/token", `{"user":"alice"}`, key, 404, CodeNotFound},
		{"wrong method", "GET", "/v1/notify", "", key, 405, CodeMethodNotAllowed},
		{"wrong method on a GET route", "POST", "/healthz", "", key, 405, CodeMethodNotAllowed},
		{"bad wait mode", "POST", "/v1/notify?wait=forever", item, key, 400, CodeInvalidParameter},
		{"bad timeout", "POST", "/v1/notify?wait=delivered&timeout=soon", item, key, 400, CodeInvalidParameter},
		{"negative timeout", "POST", "/v1/notify?wait=delivered&timeout=-1s", item, key, 400, CodeInvalidParameter},
		{"timeout without wait", "POST", "/v1/notify?timeout=1s", item, key, 400, CodeInvalidParameter},
		{"batch too big", "POST", "/v1/notify/batch", `{"notifications":[` + strings.Repeat(item+",", 3) + item + `]}`, key, 413, CodeBatchTooLarge},
		{"batch not an array", "POST", "/v1/notify/batch", `{"notifications":{"user":"alice","data":1}}`, key, 400, CodeInvalidJSON},
		{"batch with wait", "POST", "/v1/notify/batch?wait=delivered", `{"notifications":[` + item + `]}`, key, 400, CodeInvalidParameter},
		{"batch without a key", "POST", "/v1/notify/batch", `{"notifications":[` + item + `]}`, []string{"Content-Type", "application/json"}, 401, CodeUnauthorized},
		{"broadcast over the limit", "POST", "/v1/broadcast", `{"data":"` + big + `x"}`, key, 413, CodePayloadTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := td.do(tc.method, tc.path, tc.body, tc.headers...)
			wantError(t, r, tc.status, tc.code)
			if tc.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}
	if got := td.do("GET", "/v1/notify", "").header.Get("Allow"); got != "POST" {
		t.Errorf("Allow on /v1/notify: %q, want POST", got)
	}
	if n := e.streamMsgs(); n != 0 {
		t.Fatalf("bad requests stored %d messages", n)
	}
	if n := gw.doorbellCount(); n != 0 || gw.broadcastCount() != 0 {
		t.Fatalf("bad requests rang the gateway %d times, broadcast %d times", n, gw.broadcastCount())
	}
	// Exactly at the limit is fine.
	if got := td.notify(`{"user":"alice","data":"` + big + `"}`); got.Seq == 0 {
		t.Fatalf("data of exactly MaxPayload bytes: %+v", got)
	}
	if got := td.metric("herald_notifications_total", "result", string(CodeInvalidUser)); got == 0 {
		t.Errorf("herald_notifications_total{result=invalid_user} = 0, want the rejections counted")
	}
}

// TestRateLimit: each API key has its own bucket; a request over it gets
// 429 with Retry-After and stores nothing; a batch pays for every item.
func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) {
		c.APIKeys = []string{testKey, testKey2, testKey3}
		c.RateLimit, c.RateBurst = 0.01, 3 // one token per 100s: the bucket does not refill during the test
	})
	td.waitRing("gw-a")
	for i := range 3 {
		td.notify(`{"user":"alice","data":` + strconv.Itoa(i) + `}`)
	}
	r := td.publish("/v1/notify", `{"user":"alice","data":"over"}`)
	wantError(t, r, http.StatusTooManyRequests, CodeRateLimited)
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want whole seconds ≥ 1", r.header.Get("Retry-After"))
	}
	wantError(t, td.publish("/v1/broadcast", `{"data":1}`), http.StatusTooManyRequests, CodeRateLimited)
	if n := e.streamMsgs(); n != 3 {
		t.Fatalf("stream holds %d messages, want the 3 within the limit", n)
	}

	// The second key has its own bucket: a batch of 3 spends all of it,
	// and a batch of 2 more is refused whole.
	k2 := []string{"Authorization", "Bearer " + testKey2, "Content-Type", "application/json"}
	three := `{"notifications":[{"user":"bob","data":1},{"user":"bob","data":2},{"user":"bob","data":3}]}`
	if r := td.do("POST", "/v1/notify/batch", three, k2...); r.status != http.StatusAccepted {
		t.Fatalf("batch of 3 within the second key's burst: %d %s", r.status, r.body)
	}
	two := `{"notifications":[{"user":"bob","data":4},{"user":"bob","data":5}]}`
	wantError(t, td.do("POST", "/v1/notify/batch", two, k2...), http.StatusTooManyRequests, CodeRateLimited)
	if n := e.streamMsgs(); n != 6 {
		t.Fatalf("stream holds %d messages, want 6", n)
	}
	if got := td.metric("herald_rate_limited_total"); got != 3 {
		t.Errorf("herald_rate_limited_total = %v, want 3", got)
	}

	// A batch larger than the burst is charged the whole burst, not refused
	// forever: on a full bucket it goes through.
	k3 := []string{"Authorization", "Bearer " + testKey3, "Content-Type", "application/json"}
	five := `{"notifications":[{"user":"carol","data":1},{"user":"carol","data":2},{"user":"carol","data":3},{"user":"carol","data":4},{"user":"carol","data":5}]}`
	if r := td.do("POST", "/v1/notify/batch", five, k3...); r.status != http.StatusAccepted {
		t.Fatalf("batch of 5 on a full bucket of 3: %d %s", r.status, r.body)
	}
	if n := e.streamMsgs(); n != 11 {
		t.Fatalf("stream holds %d messages, want 11", n)
	}
	wantError(t, td.do("POST", "/v1/notify", `{"user":"carol","data":6}`, k3...), http.StatusTooManyRequests, CodeRateLimited)
}

// TestHandlerPanicIsA500: a panic in a request handler costs that request a
// 500 with the usual JSON error, is counted, and the dispatcher goes on.
func TestHandlerPanicIsA500(t *testing.T) {
	e := newEnv(t)
	td := e.dispatcher(func(c *Config) {
		c.Dev, c.APIKeys = true, nil
		c.Page = http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("a bug") })
		c.PagePaths = []string{"/boom"}
	})
	wantError(t, td.do("GET", "/boom", ""), http.StatusInternalServerError, CodeInternal)
	if n := td.metric("herald_panics_total", "where", "http"); n != 1 {
		t.Fatalf("herald_panics_total{where=http} = %v, want 1", n)
	}
	if r := td.do("GET", "/healthz", ""); r.status != http.StatusOK {
		t.Fatalf("after the panic, /healthz = %d", r.status)
	}
}
