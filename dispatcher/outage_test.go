package dispatcher

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSDown: while NATS is down a notification is refused with 503,
// unavailable (nothing stored) or unknown_outcome (with the id to retry
// with); retried with the same ids after NATS is back, each notification
// exists exactly once.
func TestNATSDown(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) { c.Log.AppendTimeout = 500 * time.Millisecond })
	td.waitRing("gw-a")
	td.notify(`{"user":"alice","data":0,"id":"before"}`)

	e.nats.Stop()
	// Racing the connection's discovery: either answer is honest.
	r := td.publish("/v1/notify", `{"user":"alice","data":1,"id":"racing"}`)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("notify as NATS went down: %d %s, want 503", r.status, r.body)
	}
	racing := decodeAs[apiError](t, r)
	t.Logf("notify as NATS went down: %s", racing.Error.Code)
	if e := racing; e.Error.Code == string(CodeUnknownOutcome) && e.Error.ID != "racing" {
		t.Fatalf("unknown_outcome without the id to retry with: %s", r.body)
	} else if e.Error.Code != string(CodeUnknownOutcome) && e.Error.Code != string(CodeUnavailable) {
		t.Fatalf("notify as NATS went down: %s, want unavailable or unknown_outcome", r.body)
	}
	waitFor(t, 5*time.Second, "the dispatcher's connection to notice", func() bool { return td.nc.Status() != nats.CONNECTED })
	wantError(t, td.publish("/v1/notify", `{"user":"alice","data":2,"id":"during"}`), http.StatusServiceUnavailable, CodeUnavailable)
	ids := []string{"racing", "during"}
	wantError(t, td.publish("/v1/broadcast", `{"data":1}`), http.StatusServiceUnavailable, CodeUnavailable)
	// In a batch, a user's items after a failed one are not tried, so
	// retrying them in order keeps the user's order.
	r = td.publish("/v1/notify/batch", `{"notifications":[{"user":"bob","data":1,"id":"b1"},{"user":"bob","data":2,"id":"b2"},{"user":"carol","data":1,"id":"c1"}]}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("batch during the outage: %d %s", r.status, r.body)
	}
	items := decodeAs[struct {
		Results []apiError `json:"results"`
	}](t, r).Results
	for i, it := range items {
		if it.Error.Code != string(CodeUnavailable) || (i == 1) != strings.Contains(it.Error.Message, "not attempted") {
			t.Errorf("batch item %d during the outage: %+v", i, it.Error)
		}
	}
	if r := td.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `"nats":false`) {
		t.Fatalf("readyz with NATS down: %d %s", r.status, r.body)
	}

	e.nats.Start()
	waitFor(t, 10*time.Second, "the dispatcher's connection to come back", func() bool { return td.nc.IsConnected() })
	for _, id := range ids {
		td.notify(fmt.Sprintf(`{"user":"alice","data":1,"id":%q}`, id))
		td.notify(fmt.Sprintf(`{"user":"alice","data":1,"id":%q}`, id)) // and once more: a duplicate
	}
	var got []string
	for _, m := range e.readLog("alice") {
		got = append(got, m.ID)
	}
	if want := append([]string{"before"}, ids...); !slices.Equal(got, want) {
		t.Fatalf("alice's log after the outage holds %v; want each of %v exactly once", got, want)
	}
	waitFor(t, 5*time.Second, "readyz", func() bool { return td.do("GET", "/readyz", "").status == http.StatusOK })
}

// TestUnknownOutcome: an append whose publish is never acknowledged is 503
// unknown_outcome carrying the id, made by the dispatcher when the caller
// sent none; retried with that id, the notification exists exactly once.
func TestUnknownOutcome(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) {
		c.EpochRefresh = time.Hour // do not recreate the stream behind the test's back
		c.Log.AppendTimeout = 500 * time.Millisecond
	})
	td.waitRing("gw-a")
	td.notify(`{"user":"alice","data":0}`) // the dispatcher now knows alice's head

	// With the stream gone and a silent subscriber on its subjects, a
	// publish reaches someone but is never acknowledged.
	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(bg, "HERALD_INBOX"); err != nil {
		t.Fatal(err)
	}
	silent, err := e.nc.SubscribeSync("herald.inbox.>")
	if err != nil {
		t.Fatal(err)
	}
	e.nc.Flush()
	r := td.publish("/v1/notify", `{"user":"alice","data":1}`)
	id := wantError(t, r, http.StatusServiceUnavailable, CodeUnknownOutcome).Error.ID
	if id == "" {
		t.Fatalf("unknown_outcome without the id to retry with: %s", r.body)
	}
	silent.Unsubscribe()
	if _, err := js.CreateStream(bg, inbox.Config{}.StreamConfig()); err != nil {
		t.Fatal(err)
	}
	first := td.notify(fmt.Sprintf(`{"user":"alice","data":1,"id":%q}`, id))
	again := td.notify(fmt.Sprintf(`{"user":"alice","data":1,"id":%q}`, id))
	if first.ID != id || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("retries with id %s: %+v, %+v; want one message", id, first, again)
	}
	if msgs := e.readLog("alice"); len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("alice's log %+v, want exactly the retried message", msgs)
	}
}

// TestStorageFull: a store that refuses writes is 507 storage_full.
func TestStorageFull(t *testing.T) {
	e := newEnv(t, func(o *server.Options) { o.JetStreamMaxStore = 256 << 10 })
	td := e.dispatcher()
	big := strings.Repeat("x", 60000)
	var r response
	for i := 0; i < 100; i++ {
		r = td.publish("/v1/notify", fmt.Sprintf(`{"user":"user-%d","data":%q}`, i, big))
		if r.status != http.StatusAccepted {
			break
		}
	}
	wantError(t, r, http.StatusInsufficientStorage, CodeStorageFull)
}

// TestStreamRecreated: when the stream is deleted and created again, the
// dispatcher recreates it if need be, and its doorbells carry the new
// epoch once the periodic refresh has read it.
func TestStreamRecreated(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) {
		c.EpochRefresh = 50 * time.Millisecond
		c.Log.AppendTimeout = 300 * time.Millisecond
	})
	td.waitRing("gw-a")
	td.notify(`{"user":"alice","data":1}`)
	old := e.epoch()

	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(bg, "HERALD_INBOX"); err != nil {
		t.Fatal(err)
	}
	// The dispatcher creates it again by itself.
	waitFor(t, 10*time.Second, "the stream to be recreated", func() bool {
		_, err := js.Stream(bg, "HERALD_INBOX")
		return err == nil
	})
	waitFor(t, 10*time.Second, "a notify to succeed again", func() bool {
		return td.publish("/v1/notify", `{"user":"bob","data":1}`).status == http.StatusAccepted
	})
	now := e.epoch()
	if now == old {
		t.Fatalf("epoch %s unchanged after recreating the stream", now)
	}
	waitFor(t, 5*time.Second, "the new epoch on bob's doorbells", func() bool {
		td.notify(`{"user":"bob","data":2}`)
		dbs := gw.doorbellsFor("bob")
		return len(dbs) > 0 && dbs[len(dbs)-1].Epoch == now
	})
}

// TestReadyz: not ready without a ring or Consul; ready once both come;
// still ready while Consul is unreachable for less than StaleAfter, then
// not. /healthz answers throughout.
func TestReadyz(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	e.consul.Stop()
	const staleAfter = 3 * time.Second
	td := e.dispatcher(func(c *Config) { c.StaleAfter = staleAfter })

	type ready struct {
		Ready    bool   `json:"ready"`
		Log      bool   `json:"log"`
		NATS     bool   `json:"nats"`
		Ring     bool   `json:"ring"`
		Members  int    `json:"members"`
		Consul   bool   `json:"consul"`
		Degraded bool   `json:"degraded"`
		Epoch    string `json:"epoch"`
	}
	get := func() (int, ready) {
		r := td.do("GET", "/readyz", "")
		var rd ready
		if err := json.Unmarshal(r.body, &rd); err != nil {
			t.Fatalf("readyz body %s: %v", r.body, err)
		}
		return r.status, rd
	}
	waitFor(t, 5*time.Second, "the watcher to find Consul unreachable", func() bool { _, rd := get(); return rd.Degraded })
	if s, rd := get(); s != http.StatusServiceUnavailable || rd.Ready || rd.Ring || !rd.Log || !rd.NATS || rd.Consul {
		t.Fatalf("readyz without Consul: %d %+v; want 503, log and NATS up, no ring", s, rd)
	}
	if r := td.do("GET", "/healthz", ""); r.status != http.StatusOK {
		t.Fatalf("healthz: %d", r.status)
	}

	e.consul.Restart() // gw-a registers again at its next heartbeat
	waitFor(t, 15*time.Second, "readyz", func() bool { s, rd := get(); return s == http.StatusOK && rd.Members == 1 })

	e.consul.Stop()
	waitFor(t, 5*time.Second, "the watcher to find Consul gone", func() bool { _, rd := get(); return rd.Degraded })
	degraded := time.Now()
	if s, rd := get(); s != http.StatusOK || !rd.Ring || !rd.Consul {
		t.Fatalf("readyz right after Consul went away: %d %+v; want still ready with the last ring", s, rd)
	}
	waitFor(t, staleAfter+5*time.Second, "readyz to give up on Consul", func() bool {
		s, _ := get()
		return s == http.StatusServiceUnavailable
	})
	if took := time.Since(degraded); took < staleAfter-time.Second {
		t.Fatalf("not ready %v after Consul went away; StaleAfter is %v", took, staleAfter)
	}
	if got := td.metric("herald_consul_degraded"); got != 1 {
		t.Errorf("herald_consul_degraded = %v, want 1", got)
	}
}

// TestNew: New refuses configurations that cannot work, above all one
// that would serve the publishing endpoints without an API key.
func TestNew(t *testing.T) {
	e := newEnv(t)
	base := func() Config {
		return Config{Addr: "127.0.0.1:0", NATS: e.nc, Consul: e.cc, APIKeys: []string{testKey},
			TokenSecrets: [][]byte{testSecret}, Logger: testLogger(t)}
	}
	for name, edit := range map[string]func(*Config){
		"no API keys":         func(c *Config) { c.APIKeys = nil },
		"an empty API key":    func(c *Config) { c.APIKeys = []string{testKey, ""} },
		"no NATS":             func(c *Config) { c.NATS = nil },
		"no Consul":           func(c *Config) { c.Consul = nil },
		"no token secret":     func(c *Config) { c.TokenSecrets = nil },
		"a short secret":      func(c *Config) { c.TokenSecrets = [][]byte{[]byte("short")} },
		"no address":          func(c *Config) { c.Addr = "" },
		"negative limit":      func(c *Config) { c.MaxPayload = -1 },
		"messages too small":  func(c *Config) { c.Log.MaxMsgSize = 32 << 10 },
		"bad watch settings":  func(c *Config) { c.Watch.VNodes = -1 },
		"negative rate limit": func(c *Config) { c.RateLimit = -5 },
	} {
		c := base()
		edit(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	// Dev mode makes up a key; two dispatchers may not share a registry.
	c := base()
	c.APIKeys, c.Dev = nil, true
	d, err := New(c)
	if err != nil || len(d.cfg.APIKeys) != 1 || d.cfg.APIKeys[0] == "" {
		t.Fatalf("dev mode without keys: %v, keys %q", err, d.cfg.APIKeys)
	}
	c = base()
	if _, err := New(c); err != nil {
		t.Fatal(err)
	}
	c.Registry = d.registry
	if _, err := New(c); err == nil {
		t.Errorf("a second dispatcher on the first one's registry was accepted")
	}
}

// TestRunAddressInUse: Run listens first, so an address in use is its
// error, at once.
func TestRunAddressInUse(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := New(Config{Addr: ln.Addr().String(), NATS: e.nc, Consul: e.cc, APIKeys: []string{testKey},
		TokenSecrets: [][]byte{testSecret}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(bg) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("Run on a taken address: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run on a taken address did not return")
	}
	if err := d.Run(bg); err == nil {
		t.Fatal("a second Run was accepted")
	}
}

// TestDevMode: the dev endpoints exist only in dev mode, hand out the API
// key and user tokens that work, and refuse bad users.
func TestDevMode(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) { c.Dev, c.APIKeys = true, nil })
	td.waitRing("gw-a")

	r := td.do("GET", "/v1/dev/config", "")
	cfg := decodeAs[struct {
		APIKey string `json:"api_key"`
	}](t, r)
	if r.status != http.StatusOK || cfg.APIKey == "" {
		t.Fatalf("dev config: %d %s", r.status, r.body)
	}
	n := td.do("POST", "/v1/notify", `{"user":"alice","data":1}`, "Authorization", "Bearer "+cfg.APIKey, "Content-Type", "application/json")
	if n.status != http.StatusAccepted {
		t.Fatalf("notify with the generated dev key: %d %s", n.status, n.body)
	}

	r = td.do("POST", "/v1/dev/token", `{"user":"alice"}`, "Content-Type", "application/json")
	tok := decodeAs[struct {
		Token   string `json:"token"`
		Expires string `json:"expires"`
	}](t, r)
	exp, err := time.Parse(time.RFC3339Nano, tok.Expires)
	if r.status != http.StatusOK || err != nil || exp.Before(time.Now().Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("dev token: %d %s (%v); want a token valid for an hour", r.status, r.body, err)
	}
	c := td.do("POST", "/v1/connect", "", "Authorization", "Bearer "+tok.Token)
	if c.status != http.StatusOK || !strings.Contains(string(c.body), `"gateway":"gw-a"`) {
		t.Fatalf("connect with a dev token: %d %s", c.status, c.body)
	}
	wantError(t, td.do("POST", "/v1/dev/token", `{"user":""}`, "Content-Type", "application/json"), http.StatusBadRequest, CodeInvalidUser)
	wantError(t, td.do("POST", "/v1/dev/token", `{"user":"alice"}`), http.StatusUnsupportedMediaType, CodeUnsupportedMedia)

	// Without dev mode the routes do not exist.
	prod := e.dispatcher()
	wantError(t, prod.do("POST", "/v1/dev/token", `{"user":"alice"}`, "Content-Type", "application/json"), http.StatusNotFound, CodeNotFound)
	wantError(t, prod.do("GET", "/v1/dev/config", ""), http.StatusNotFound, CodeNotFound)
}
