package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ensureStream creates the log's stream as a dispatcher with cfg would,
// before any dispatcher of the test starts.
func (e *env) ensureStream(cfg inbox.Config) {
	e.t.Helper()
	if _, err := inbox.Ensure(bg, e.nc, cfg); err != nil {
		e.t.Fatalf("inbox.Ensure: %v", err)
	}
}

// streamUpdates counts the stream configuration updates anyone sends from
// now on.
func (e *env) streamUpdates() func() int {
	e.t.Helper()
	_, n := inboxtest.Count(e.t, e.nats.URL(), "$JS.API.STREAM.UPDATE.HERALD_INBOX")
	return n
}

// runToError runs a dispatcher that is expected to stop by itself, and
// returns Run's error; it fails the test if Run serves on for 20s.
func (e *env) runToError(edit func(*Config)) error {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := Config{
		Listener: ln, NATS: inboxtest.Connect(e.t, e.nats.URL(), nats.ReconnectBufSize(-1)), Consul: e.cc,
		APIKeys: []string{testKey}, TokenSecrets: [][]byte{testSecret}, Registry: prometheus.NewRegistry(), Logger: testLogger(e.t),
	}
	edit(&cfg)
	d, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		e.t.Fatal("Run served on for 20s; want it to stop with an error")
		return nil
	}
}

// TestRunRefusesAStreamConfiguredOtherwise: a dispatcher given a stream
// setting that the live stream has otherwise does not serve: Run fails
// with an error naming the setting and both values, and the stream stays
// as it was. So does one whose MaxPayload the stream's messages are too
// small for.
func TestRunRefusesAStreamConfiguredOtherwise(t *testing.T) {
	e := newEnv(t)
	e.ensureStream(inbox.Config{})
	updates := e.streamUpdates()
	before := e.streamInfo().Config
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Log.MaxMsgsPerUser = 50 }, "max-per-user is 100 on the stream, 50 asked"},
		{func(c *Config) { c.Log.Replicas = 3 }, "replicas is 1 on the stream, 3 asked"},
		{func(c *Config) { c.MaxPayload = 1 << 20 }, "max-msg-size is 69632 on the stream, at least 1052672 (MinMsgSize) asked"},
	} {
		err := e.runToError(c.edit)
		var mm *inbox.MismatchError
		if !errors.As(err, &mm) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Run = %v; want a mismatch saying %q", err, c.want)
		}
	}
	if n := updates(); n != 0 {
		t.Errorf("%d stream updates from dispatchers that refused to start", n)
	}
	if after := e.streamInfo().Config; !reflect.DeepEqual(after, before) {
		t.Errorf("the stream's configuration changed:\n%+v\nto\n%+v", before, after)
	}
}

// TestRunAdoptsTheLiveStream: a dispatcher that leaves the stream's
// settings unset serves the live stream as it is: its retention (here 7
// messages a user) holds, and nothing is written to the stream.
func TestRunAdoptsTheLiveStream(t *testing.T) {
	e := newEnv(t)
	e.ensureStream(inbox.Config{MaxMsgsPerUser: 7, MaxAge: time.Hour})
	updates := e.streamUpdates()
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher()
	td.waitRing("gw-a")
	for i := range 10 {
		td.notify(fmt.Sprintf(`{"user":"alice","data":%d}`, i))
	}
	if n := len(e.readLog("alice")); n != 7 {
		t.Fatalf("alice's log keeps %d messages, want the stream's 7", n)
	}
	if c := td.inbox.Load().Config(); c.MaxMsgsPerUser != 7 || c.MaxAge != time.Hour || c.Replicas != 1 {
		t.Fatalf("the dispatcher's log settings %+v, want the stream's", c)
	}
	if n := updates(); n != 0 {
		t.Fatalf("%d stream updates from a dispatcher that changed nothing", n)
	}
}

// TestNATSDownLongFailsAtOnce: once the dispatcher's NATS connection has
// been down for more than 2s, a notification is refused at once (503
// unavailable, counted), not after its 30s append deadline; while the
// connection is down for less than the log's MaxDown, a notification
// keeps trying and is stored once NATS is back.
func TestNATSDownLongFailsAtOnce(t *testing.T) {
	t.Run("down longer", func(t *testing.T) {
		e := newEnv(t)
		td := e.dispatcher(func(c *Config) { c.Log.AppendTimeout = 30 * time.Second })
		td.notify(`{"user":"alice","data":0}`)
		e.nats.Stop()
		waitFor(t, 10*time.Second, "the connection down for 2s", func() bool { return td.link.Down() > 2*time.Second })
		start := time.Now()
		wantError(t, td.publish("/v1/notify", `{"user":"alice","data":1}`), http.StatusServiceUnavailable, CodeUnavailable)
		t.Logf("refused after %v", time.Since(start))
		if n := td.metric("herald_appends_refused_nats_down_total"); n != 1 {
			t.Fatalf("herald_appends_refused_nats_down_total = %v, want 1", n)
		}
		e.nats.Start()
		waitFor(t, 10*time.Second, "the connection back", func() bool { return td.nc.IsConnected() })
		td.notify(`{"user":"alice","data":2}`)
	})
	t.Run("reconnecting", func(t *testing.T) {
		e := newEnv(t)
		td := e.dispatcher(func(c *Config) {
			c.Log.AppendTimeout = 30 * time.Second
			c.Log.MaxDown = 30 * time.Second // longer than the test's outage can take
		})
		td.notify(`{"user":"alice","data":0}`)
		e.nats.Stop()
		waitFor(t, 10*time.Second, "the connection to notice", func() bool { return !td.nc.IsConnected() })
		done := make(chan response, 1)
		go func() {
			r, _ := td.try("POST", "/v1/notify", `{"user":"alice","data":1,"id":"during"}`, "Authorization", "Bearer "+testKey, "Content-Type", "application/json")
			done <- r
		}()
		waitFor(t, 10*time.Second, "the append to retry", func() bool { return td.logStats().Retries > 0 })
		e.nats.Start()
		if r := <-done; r.status != http.StatusAccepted {
			t.Fatalf("notification sent while NATS reconnected: %d %s, want 202", r.status, r.body)
		}
		if ms := e.readLog("alice"); len(ms) != 2 || ms[1].ID != "during" {
			t.Fatalf("alice's log holds %d messages, want 2 ending with the one sent while reconnecting", len(ms))
		}
	})
}

// stallAppends makes every append of the dispatcher's log wait for its
// deadline: the stream is gone, and a subscriber on its subjects answers
// nothing.
func (e *env) stallAppends() {
	e.t.Helper()
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := js.DeleteStream(bg, "HERALD_INBOX"); err != nil {
		e.t.Fatal(err)
	}
	silent, err := e.nc.SubscribeSync("herald.inbox.>")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { silent.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

// TestMaxAppendsRefusesAtOnce: with the log's MaxAppends in flight, one
// more notification is refused at once (503 unavailable, counted), while
// the one in flight runs to its own answer.
func TestMaxAppendsRefusesAtOnce(t *testing.T) {
	e := newEnv(t)
	td := e.dispatcher(func(c *Config) {
		c.EpochRefresh = time.Hour // do not recreate the stream behind the test's back
		c.Log.MaxAppends = 1
		c.Log.AppendTimeout = 3 * time.Second
	})
	td.notify(`{"user":"alice","data":0}`) // the dispatcher now knows alice's head
	e.stallAppends()
	first := make(chan response, 1)
	go func() {
		r, _ := td.try("POST", "/v1/notify", `{"user":"alice","data":1,"id":"first"}`, "Authorization", "Bearer "+testKey, "Content-Type", "application/json")
		first <- r
	}()
	waitFor(t, 5*time.Second, "an append in flight", func() bool { return td.metric("herald_appends_in_flight") == 1 })
	wantError(t, td.publish("/v1/notify", `{"user":"bob","data":1}`), http.StatusServiceUnavailable, CodeUnavailable)
	if n := td.metric("herald_appends_refused_busy_total"); n != 1 {
		t.Fatalf("herald_appends_refused_busy_total = %v, want 1", n)
	}
	wantError(t, <-first, http.StatusServiceUnavailable, CodeUnknownOutcome)
	if n := td.metric("herald_appends_in_flight"); n != 0 {
		t.Fatalf("herald_appends_in_flight = %v after every append ended", n)
	}
}

// TestShutdownLetsAppendsFinish: an append in flight when Run's context
// ends gets its answer, even one that runs to its whole deadline, longer
// than the 5s the grace period once was.
func TestShutdownLetsAppendsFinish(t *testing.T) {
	e := newEnv(t)
	td := e.dispatcher(func(c *Config) {
		c.EpochRefresh = time.Hour
		c.Log.AppendTimeout = 6 * time.Second
	})
	td.notify(`{"user":"alice","data":0}`)
	e.stallAppends()
	answer := make(chan error, 1)
	var got response
	go func() {
		r, err := td.try("POST", "/v1/notify", `{"user":"alice","data":1,"id":"late"}`, "Authorization", "Bearer "+testKey, "Content-Type", "application/json")
		got = r
		answer <- err
	}()
	waitFor(t, 5*time.Second, "an append in flight", func() bool { return td.logStats().InFlight == 1 })
	if err := td.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := <-answer; err != nil {
		t.Fatalf("the append in flight at shutdown got no answer: %v", err)
	}
	if e := wantError(t, got, http.StatusServiceUnavailable, CodeUnknownOutcome); e.Error.ID != "late" {
		t.Fatalf("unknown_outcome names id %q, want late", e.Error.ID)
	}
}

// TestServerTimeoutsFitTheAppendDeadline: the API's write timeout outlasts
// a delivery wait plus an append, and a full batch whose users' appends
// each run to their deadline; the shutdown grace outlasts an append.
func TestServerTimeoutsFitTheAppendDeadline(t *testing.T) {
	e := newEnv(t)
	d, err := New(Config{Addr: "127.0.0.1:0", NATS: e.nc, Consul: e.cc, APIKeys: []string{testKey}, TokenSecrets: [][]byte{testSecret}, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	at := inbox.DefaultAppendTimeout
	if d.cfg.Log.AppendTimeout != at {
		t.Fatalf("AppendTimeout %v, want the default %v", d.cfg.Log.AppendTimeout, at)
	}
	write := d.servers(bg, false)[0].WriteTimeout
	batch := time.Duration((DefaultMaxBatch+batchConcurrency-1)/batchConcurrency) * at
	if write <= DefaultMaxWait+at || write <= batch {
		t.Errorf("write timeout %v: not above a delivery wait plus an append (%v), or a batch's appends (%v)", write, DefaultMaxWait+at, batch)
	}
	if g := d.shutdownGrace(); g <= at {
		t.Errorf("shutdown grace %v is not above the append deadline %v", g, at)
	}
}
