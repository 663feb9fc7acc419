package dispatcher

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
)

func mustToken(tb testing.TB, secret []byte, user string, ttl time.Duration) string {
	tb.Helper()
	tok, err := token.Sign(secret, user, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// TestConnect: a valid user token gets the user's owner, its URL and the
// ring's fingerprint; anything else is 401.
func TestConnect(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	e.gateway("gw-b", gatewayOpts{})
	td := e.dispatcher(func(c *Config) { c.TokenSecrets = [][]byte{otherSecret, testSecret} }) // rotation: both verify
	td.waitRing("gw-a", "gw-b")

	for _, user := range []string{"alice", "bob", "carol", "日本"} {
		r := td.do("POST", "/v1/connect", "", "Authorization", "Bearer "+mustToken(t, testSecret, user, time.Hour))
		if r.status != http.StatusOK {
			t.Fatalf("connect %s: %d %s", user, r.status, r.body)
		}
		got := decodeAs[struct {
			Gateway string `json:"gateway"`
			URL     string `json:"url"`
			Ring    string `json:"ring"`
		}](t, r)
		owner, _ := td.Ring().Owner(user)
		if got.Gateway != owner.ID || got.URL != owner.URL || got.Ring != td.Ring().Fingerprint() {
			t.Fatalf("connect %s: %+v, want %+v in ring %s", user, got, owner, td.Ring().Fingerprint())
		}
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("connect answers without CORS")
		}
	}
	if r := td.do("POST", "/v1/connect", "", "Authorization", "Bearer "+mustToken(t, otherSecret, "alice", time.Hour)); r.status != http.StatusOK {
		t.Fatalf("token signed with the older secret: %d %s", r.status, r.body)
	}
	foreign := []byte("another-deployment-secret-0123456789")
	for name, hdr := range map[string]string{
		"no token":            "",
		"not bearer":          "Basic " + mustToken(t, testSecret, "alice", time.Hour),
		"expired":             "Bearer " + mustToken(t, testSecret, "alice", -time.Minute),
		"foreign secret":      "Bearer " + mustToken(t, foreign, "alice", time.Hour),
		"garbage":             "Bearer not.a.jwt",
		"API key":             "Bearer " + testKey,
		"token over the size": "Bearer " + strings.Repeat("x", wire.MaxTokenBytes+1),
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, td.do("POST", "/v1/connect", "", "Authorization", hdr), http.StatusUnauthorized, CodeUnauthorized)
		})
	}
	r := td.do("OPTIONS", "/v1/connect", "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST")
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
	if allow := td.do("GET", "/v1/connect", "").header.Get("Allow"); allow != "OPTIONS, POST" {
		t.Fatalf("Allow on /v1/connect: %q", allow)
	}
}

// TestConnectHold: /v1/connect?unreachable=<owner> answers at once while
// the owner answers its liveness probe, and otherwise holds the request
// until the ring names another owner; without the hint the answer is the
// ring's owner, dead or not.
func TestConnectHold(t *testing.T) {
	e := newEnv(t)
	a := e.gateway("gw-a", gatewayOpts{})
	e.gateway("gw-b", gatewayOpts{})
	td := e.dispatcher()
	short := e.dispatcher(func(c *Config) { c.ConnectHold = time.Second })
	closing := e.dispatcher()
	off := e.dispatcher(func(c *Config) { c.ConnectHold = -1 })
	for _, d := range []*testDispatcher{td, short, closing, off} {
		d.waitRing("gw-a", "gw-b")
	}
	user := td.ownedBy("gw-a")
	auth := []string{"Authorization", "Bearer " + mustToken(t, testSecret, user, time.Hour)}
	connectTo := func(td *testDispatcher, query string) string {
		r := td.do("POST", "/v1/connect"+query, "", auth...)
		if r.status != http.StatusOK {
			t.Errorf("connect%s: %d %s", query, r.status, r.body)
			return ""
		}
		return decodeAs[struct {
			Gateway string `json:"gateway"`
			URL     string `json:"url"`
			Ring    string `json:"ring"`
		}](t, r).Gateway
	}
	connect := func(query string) string { return connectTo(td, query) }

	// The owner is alive: only this client cannot reach it.
	if got := connect("?unreachable=gw-a"); got != "gw-a" {
		t.Fatalf("with gw-a alive: %s, want gw-a", got)
	}
	if got := td.metric("herald_connect_holds_total", "outcome", "alive"); got != 1 {
		t.Fatalf("holds ended by a live owner: %v, want 1", got)
	}
	if got := connect("?unreachable=gw-b"); got != "gw-a" {
		t.Fatalf("naming a gateway that is not the owner: %s, want gw-a at once", got)
	}

	// gw-a's process dies; Consul still lists it as passing.
	a.nc.Close()

	// Held no longer than ConnectHold, not at all when it is negative, and
	// answered at once when the dispatcher shuts down.
	if got := connectTo(short, "?unreachable=gw-a"); got != "gw-a" || short.metric("herald_connect_holds_total", "outcome", "timeout") != 1 {
		t.Fatalf("after ConnectHold: %s and %v timeouts, want gw-a and 1", got, short.metric("herald_connect_holds_total", "outcome", "timeout"))
	}
	if got := connectTo(off, "?unreachable=gw-a"); got != "gw-a" || off.metric("herald_connect_held") != 0 {
		t.Fatalf("with the hold off: %s", got)
	}
	closed := make(chan string, 1)
	go func() { closed <- connectTo(closing, "?unreachable=gw-a") }()
	waitFor(t, 5*time.Second, "a connect held by the closing dispatcher", func() bool { return closing.metric("herald_connect_held") == 1 })
	if err := closing.stop(); err != nil {
		t.Fatal(err)
	}
	if got := <-closed; got != "gw-a" || closing.metric("herald_connect_holds_total", "outcome", "closing") != 1 {
		t.Fatalf("held while the dispatcher stopped: %q, want gw-a answered on closing", got)
	}

	held := make(chan string, 1)
	go func() { held <- connect("?unreachable=gw-a") }()
	waitFor(t, 5*time.Second, "the connect to be held", func() bool { return td.metric("herald_connect_held") == 1 })
	if got := connect(""); got != "gw-a" {
		t.Fatalf("without the hint: %s, want the ring's owner gw-a", got)
	}
	select {
	case got := <-held:
		t.Fatalf("the held connect answered %s while the ring still names gw-a", got)
	default:
	}
	a.healthy.Store(false) // its check fails: the ring drops it (the probe finds nobody)
	td.waitRing("gw-b")
	select {
	case got := <-held:
		if got != "gw-b" {
			t.Fatalf("held connect: %s, want the new owner gw-b", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held connect did not answer after the ring changed")
	}
	if got := td.metric("herald_connect_holds_total", "outcome", "moved"); got != 1 {
		t.Fatalf("holds ended by a ring change: %v, want 1", got)
	}
}

// TestCluster: /v1/cluster lists the ring's members with the socket counts
// their stats replies give, nulls for a member that does not answer, and
// "held" for a member that fails its check while alive.
func TestCluster(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{stats: &wire.GatewayStats{Gateway: "gw-a", Sockets: 3, Users: 2}})
	b := e.gateway("gw-b", gatewayOpts{stats: &wire.GatewayStats{Gateway: "gw-b", Sockets: 5, Users: 4}, ttl: time.Second})
	e.gateway("gw-c", gatewayOpts{}) // answers no stats requests
	td := e.dispatcher()
	td.waitRing("gw-a", "gw-b", "gw-c")

	type member struct {
		ID      string `json:"id"`
		URL     string `json:"url"`
		Weight  int    `json:"weight"`
		State   string `json:"state"`
		Sockets *int   `json:"sockets"`
		Users   *int   `json:"users"`
	}
	type view struct {
		Ring     string   `json:"ring"`
		Degraded bool     `json:"degraded"`
		Members  []member `json:"members"`
		Arcs     []struct {
			Start, End float64
			Gateway    string
		} `json:"arcs"`
		User *struct {
			ID       string  `json:"id"`
			Position float64 `json:"position"`
			Owner    string  `json:"owner"`
		} `json:"user"`
	}
	get := func() view {
		r := td.do("GET", "/v1/cluster", "", "Authorization", "Bearer "+testKey)
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/cluster: %d %s", r.status, r.body)
		}
		return decodeAs[view](t, r)
	}
	v := get()
	if v.Ring != td.Ring().Fingerprint() || v.Degraded || len(v.Members) != 3 {
		t.Fatalf("cluster %+v, want ring %s, not degraded, 3 members", v, td.Ring().Fingerprint())
	}
	n := func(p *int) any {
		if p == nil {
			return nil
		}
		return *p
	}
	for i, want := range []struct {
		id             string
		sockets, users any
	}{{"gw-a", 3, 2}, {"gw-b", 5, 4}, {"gw-c", nil, nil}} {
		m := v.Members[i]
		if m.ID != want.id || m.URL != "ws://127.0.0.1:7000/"+want.id || m.Weight != 1 || m.State != statePassing ||
			n(m.Sockets) != want.sockets || n(m.Users) != want.users {
			t.Errorf("member %d: %+v (sockets %v, users %v), want %s passing with %v sockets, %v users",
				i, m, n(m.Sockets), n(m.Users), want.id, want.sockets, want.users)
		}
	}

	// The arcs cover the circle, and the user's arc names its owner.
	if len(v.Arcs) < 3 || v.Arcs[0].Start != 0 || v.Arcs[len(v.Arcs)-1].End != 1 || v.User != nil {
		t.Fatalf("arcs %d from %v to %v, user %v", len(v.Arcs), v.Arcs[0].Start, v.Arcs[len(v.Arcs)-1].End, v.User)
	}
	r := td.do("GET", "/v1/cluster?user=alice", "", "Authorization", "Bearer "+testKey)
	withUser := decodeAs[view](t, r)
	owner, _ := td.Ring().Owner("alice")
	if withUser.User == nil || withUser.User.ID != "alice" || withUser.User.Owner != owner.ID {
		t.Fatalf("user = %+v, want alice owned by %s", withUser.User, owner.ID)
	}
	arc := slices.IndexFunc(withUser.Arcs, func(a struct {
		Start, End float64
		Gateway    string
	}) bool {
		return withUser.User.Position > a.Start && withUser.User.Position <= a.End
	})
	if arc < 0 || withUser.Arcs[arc].Gateway != owner.ID {
		t.Fatalf("alice at %v lies in arc %d, not %s's", withUser.User.Position, arc, owner.ID)
	}
	if r := td.do("GET", "/v1/cluster?user=a%00b", "", "Authorization", "Bearer "+testKey); r.status != http.StatusBadRequest {
		t.Fatalf("a control character in ?user=: status %d", r.status)
	}

	// gw-b's check fails while it still answers its liveness probe: it is
	// held, not dropped.
	b.healthy.Store(false)
	waitFor(t, 10*time.Second, "gw-b to be shown held", func() bool {
		v := get()
		i := slices.IndexFunc(v.Members, func(m member) bool { return m.ID == "gw-b" })
		return i >= 0 && v.Members[i].State == stateHeld
	})
	if got := td.metric("herald_ring_held_members"); got != 1 {
		t.Errorf("herald_ring_held_members = %v, want 1", got)
	}
	if td.Ring().Len() != 3 {
		t.Fatalf("ring of %d members while gw-b is held, want 3", td.Ring().Len())
	}
}

// TestClusterNeedsAPIKey: outside dev mode /v1/cluster answers only with an
// API key (401 with the usual error otherwise, whatever else is sent); in
// dev mode, for the demo page, without one. Reading it costs the key no
// notification.
func TestClusterNeedsAPIKey(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) { c.APIKeys = []string{testKey, testKey2}; c.RateBurst = 1; c.RateLimit = 0.001 })
	dev := e.dispatcher(func(c *Config) { c.Dev, c.APIKeys = true, nil })
	td.waitRing("gw-a")
	dev.waitRing("gw-a")

	for name, hdr := range map[string]string{
		"no key":       "",
		"unknown key":  "Bearer not-a-key",
		"not bearer":   "Basic " + testKey,
		"a user token": "Bearer " + mustToken(t, testSecret, "alice", time.Hour),
	} {
		t.Run(name, func(t *testing.T) {
			r := td.do("GET", "/v1/cluster", "", "Authorization", hdr)
			wantError(t, r, http.StatusUnauthorized, CodeUnauthorized)
			if strings.Contains(string(r.body), "gw-a") {
				t.Fatalf("the refusal names a gateway: %s", r.body)
			}
		})
	}
	for _, key := range []string{testKey, testKey2} {
		for range 3 { // more than the burst of 1: not rate limited
			if r := td.do("GET", "/v1/cluster", "", "Authorization", "Bearer "+key); r.status != http.StatusOK || !strings.Contains(string(r.body), `"gw-a"`) {
				t.Fatalf("with an API key: %d %s", r.status, r.body)
			}
		}
	}
	td.notify(`{"user":"alice","data":1}`) // the key's one token is still there
	if r := dev.do("GET", "/v1/cluster", ""); r.status != http.StatusOK || !strings.Contains(string(r.body), `"gw-a"`) {
		t.Fatalf("dev mode without a key: %d %s", r.status, r.body)
	}
}

// TestConnectAudienceIssuer: with TokenAudience and TokenIssuer set,
// /v1/connect accepts only tokens that carry both; a token not yet valid
// (beyond the verifier's leeway) is 401 like an expired one, so clients get
// a fresh token; dev tokens carry the configured audience and issuer.
func TestConnectAudienceIssuer(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) { c.TokenAudience, c.TokenIssuer = "herald", "https://auth.example" })
	dev := e.dispatcher(func(c *Config) {
		c.Dev, c.APIKeys = true, nil
		c.TokenAudience, c.TokenIssuer = "herald", "https://auth.example"
	})
	plain := e.dispatcher()
	for _, d := range []*testDispatcher{td, dev, plain} {
		d.waitRing("gw-a")
	}
	sign := func(opts ...token.SignOption) string {
		tok, err := token.Sign(testSecret, "alice", time.Hour, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	aud, iss := token.WithAudience("herald"), token.WithIssuer("https://auth.example")
	later := token.WithNotBefore(time.Now().Add(time.Minute))
	for _, tc := range []struct {
		name string
		d    *testDispatcher
		auth string
		want int
	}{
		{"aud and iss", td, sign(aud, iss), http.StatusOK},
		{"nbf within the leeway", td, sign(aud, iss, token.WithNotBefore(time.Now().Add(2*time.Second))), http.StatusOK},
		{"no aud", td, sign(iss), http.StatusUnauthorized},
		{"no iss", td, sign(aud), http.StatusUnauthorized},
		{"other aud", td, sign(token.WithAudience("billing"), iss), http.StatusUnauthorized},
		{"other iss", td, sign(aud, token.WithIssuer("https://evil.example")), http.StatusUnauthorized},
		{"neither", td, sign(), http.StatusUnauthorized},
		{"not yet valid", td, sign(aud, iss, later), http.StatusUnauthorized},
		{"none required", plain, sign(), http.StatusOK},
		{"none required, any aud", plain, sign(token.WithAudience("billing")), http.StatusOK},
		{"none required, not yet valid", plain, sign(later), http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.d.do("POST", "/v1/connect", "", "Authorization", tc.auth)
			if tc.want != http.StatusOK {
				wantError(t, r, tc.want, CodeUnauthorized)
			} else if r.status != tc.want {
				t.Fatalf("%d %s, want %d", r.status, r.body, tc.want)
			}
		})
	}

	r := dev.do("POST", "/v1/dev/token", `{"user":"alice"}`, "Content-Type", "application/json")
	tok := decodeAs[struct {
		Token   string `json:"token"`
		Expires string `json:"expires"`
	}](t, r)
	strict, err := token.NewVerifierWith(token.Options{Secrets: [][]byte{testSecret}, Audience: "herald", Issuer: "https://auth.example"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Verify(tok.Token); err != nil {
		t.Fatalf("the dev token lacks the audience or issuer: %v", err)
	}
	if c := dev.do("POST", "/v1/connect", "", "Authorization", "Bearer "+tok.Token); c.status != http.StatusOK {
		t.Fatalf("connect with a dev token: %d %s", c.status, c.body)
	}
}
