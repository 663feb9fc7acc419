package dispatcher

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamInfo reads the log's stream, waiting for it to answer.
func (e *env) streamInfo() *jetstream.StreamInfo {
	e.t.Helper()
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	var info *jetstream.StreamInfo
	waitFor(e.t, 10*time.Second, "the stream's info", func() bool {
		s, err := js.Stream(bg, "HERALD_INBOX")
		if err == nil {
			info = s.CachedInfo()
		}
		return err == nil
	})
	return info
}

// loseTail makes the stream lose acknowledged messages (inboxtest's
// LoseTail).
func (e *env) loseTail() {
	e.t.Helper()
	e.nats.LoseTail("HERALD_INBOX")
}

// refreshes counts the stream info requests anyone sends from now on: a
// running dispatcher's periodic refreshes, among others.
func (e *env) refreshes() func() int64 {
	e.t.Helper()
	var n atomic.Int64
	spy := inboxtest.Connect(e.t, e.nats.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if _, err := spy.Subscribe("$JS.API.STREAM.INFO.HERALD_INBOX", func(*nats.Msg) { n.Add(1) }); err != nil {
		e.t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return n.Load
}

// waitRefreshes waits until count has grown by n.
func waitRefreshes(t *testing.T, count func() int64, n int64) {
	t.Helper()
	want := count() + n
	waitFor(t, 10*time.Second, fmt.Sprintf("%d more stream info requests", n), func() bool { return count() >= want })
}

// TestLostTailIsANewEpoch: the stream loses notifications it acknowledged.
// The running dispatcher's periodic refresh finds it and records a new
// epoch, which gateways read and doorbells carry; the epoch changes once,
// and a restarted dispatcher keeps it.
func TestLostTailIsANewEpoch(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	fast := func(c *Config) { c.EpochRefresh = 50 * time.Millisecond }
	td := e.dispatcher(fast)
	td.waitRing("gw-a")
	for i := range 20 {
		td.notify(fmt.Sprintf(`{"user":"alice","data":%d}`, i))
	}
	old := e.epoch()
	refreshes := e.refreshes()

	e.loseTail()
	waitFor(t, 10*time.Second, "a new epoch", func() bool { return e.epoch() != old })
	now := e.epoch()
	mark := e.streamInfo().Config.Metadata[inbox.EpochKey]
	if !strings.HasPrefix(now, old+".") || mark == "" {
		t.Fatalf("epoch %s after the loss (was %s), %s %q", now, old, inbox.EpochKey, mark)
	}
	waitRefreshes(t, refreshes, 5)
	if got := e.epoch(); got != now || td.logStats().NewEpochs != 1 {
		t.Fatalf("epoch %s after more refreshes, %d recorded; want %s, once", got, td.logStats().NewEpochs, now)
	}
	waitFor(t, 5*time.Second, "the new epoch on doorbells", func() bool {
		td.notify(`{"user":"bob","data":1}`)
		dbs := gw.doorbellsFor("bob")
		return len(dbs) > 0 && dbs[len(dbs)-1].Epoch == now
	})

	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	td = e.dispatcher(fast)
	waitRefreshes(t, refreshes, 5)
	if got, m := e.epoch(), e.streamInfo().Config.Metadata[inbox.EpochKey]; got != now || m != mark || td.logStats().NewEpochs != 0 {
		t.Fatalf("after a dispatcher restart: epoch %s, %s %q, %d recorded; want %s, %q, none", got, inbox.EpochKey, m, td.logStats().NewEpochs, now, mark)
	}
}

// TestEpochStaysWithoutLoss: periodic refreshes, a NATS restart and a
// dispatcher restart leave a stream that lost nothing in its epoch.
func TestEpochStaysWithoutLoss(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	fast := func(c *Config) { c.EpochRefresh = 50 * time.Millisecond }
	td := e.dispatcher(fast)
	td.waitRing("gw-a")
	for i := range 20 {
		td.notify(fmt.Sprintf(`{"user":"alice","data":%d}`, i))
	}
	old := e.epoch()
	refreshes := e.refreshes()
	waitRefreshes(t, refreshes, 5)
	if got := e.epoch(); got != old {
		t.Fatalf("epoch %s after refreshes, want %s", got, old)
	}

	e.nats.Stop()
	e.nats.Start()
	waitRefreshes(t, refreshes, 5)
	td.notify(`{"user":"alice","data":"after"}`)
	if got := e.epoch(); got != old {
		t.Fatalf("epoch %s after a NATS restart, want %s", got, old)
	}

	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	td = e.dispatcher(fast)
	waitRefreshes(t, refreshes, 5)
	if got, md := e.epoch(), e.streamInfo().Config.Metadata; got != old || md[inbox.EpochKey] != "" || td.logStats().NewEpochs != 0 {
		t.Fatalf("after a dispatcher restart: epoch %s, metadata %v, %d recorded; want %s, nothing recorded", got, md, td.logStats().NewEpochs, old)
	}
}
