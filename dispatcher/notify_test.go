package dispatcher

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
)

// TestNotifyRingsTheOwner proves the main path: a notification is stored in
// its user's chain, answered with its seq and the ring owner, and the owner,
// and only the owner, gets a doorbell with the whole message and the log's
// epoch.
func TestNotifyRingsTheOwner(t *testing.T) {
	e := newEnv(t)
	gws := map[string]*testGateway{"gw-a": e.gateway("gw-a", gatewayOpts{}), "gw-b": e.gateway("gw-b", gatewayOpts{})}
	td := e.dispatcher()
	td.waitRing("gw-a", "gw-b")
	epoch := e.epoch()

	const users = 8
	prev := map[string]uint64{}
	for round := range 2 {
		for i := range users {
			user := "user-" + strconv.Itoa(i)
			id := fmt.Sprintf("n-%d-%d", round, i)
			data := fmt.Sprintf(`{"round":%d,"text":"hello %s"}`, round, user)
			before := time.Now()
			got := td.notify(fmt.Sprintf(`{"user":%q,"data":%s,"id":%q}`, user, data, id))
			owner, _ := td.Ring().Owner(user)
			if got.ID != id || got.Seq == 0 || got.Gateway != owner.ID || got.Status != StatusRouted || got.Duplicate || got.Delivery != "" {
				t.Fatalf("notify %s: %+v, want id %s, a seq, gateway %s, routed, not duplicate", user, got, id, owner.ID)
			}
			gw := gws[owner.ID]
			waitFor(t, 5*time.Second, "the doorbell at "+owner.ID, func() bool { return len(gw.doorbellsFor(user)) == round+1 })
			db := gw.doorbellsFor(user)[round]
			if !db.HasContent || db.Seq != got.Seq || db.Prev != prev[user] || db.ID != id || db.Epoch != epoch ||
				!bytes.Equal(db.Data, []byte(data)) || db.TS.Before(before.Add(-time.Second)) || db.TS.After(time.Now()) {
				t.Fatalf("doorbell %+v; want seq %d, prev %d, id %s, epoch %s, data %s, a fresh ts", db, got.Seq, prev[user], id, epoch, data)
			}
			prev[user] = got.Seq
		}
	}
	// Nobody else was rung, and the log holds each user's chain.
	for id, gw := range gws {
		for i := range users {
			user := "user-" + strconv.Itoa(i)
			owner, _ := td.Ring().Owner(user)
			if owner.ID != id && len(gw.doorbellsFor(user)) != 0 {
				t.Errorf("%s got a doorbell for %s, owned by %s", id, user, owner.ID)
			}
		}
	}
	for i := range users {
		user := "user-" + strconv.Itoa(i)
		msgs := e.readLog(user)
		if len(msgs) != 2 || msgs[0].Prev != 0 || msgs[1].Prev != msgs[0].Seq || msgs[1].Seq != prev[user] {
			t.Fatalf("log of %s: %+v, want a chain of two ending at %d", user, msgs, prev[user])
		}
	}
	if got := td.metric("herald_notifications_total", "result", "routed"); got != 2*users {
		t.Errorf("herald_notifications_total{result=routed} = %v, want %d", got, 2*users)
	}
	if got := td.metric("herald_doorbells_total", "result", "sent"); got != 2*users {
		t.Errorf("herald_doorbells_total{result=sent} = %v, want %d", got, 2*users)
	}
	if got := td.metric("herald_ring_members"); got != 2 {
		t.Errorf("herald_ring_members = %v, want 2", got)
	}
	if got := td.metric("herald_http_requests_total", "route", "/v1/notify", "code", "202"); got != 2*users {
		t.Errorf("herald_http_requests_total{route=/v1/notify,code=202} = %v, want %d", got, 2*users)
	}
	r := td.admin("/metrics")
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte("herald_append_conflicts_total")) {
		t.Fatalf("GET /metrics on the admin listener: %d, missing herald_append_conflicts_total", r.status)
	}
}

// TestIdempotency: an id is stored once per user; its repeat answers the
// original seq as a duplicate and rings the owner without content (the
// duplicate's prev is unknown); the same id for two users is two messages;
// without an id each POST is a new message with an id made for it.
func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher()
	td.waitRing("gw-a")

	first := td.notify(`{"user":"alice","data":{"n":1},"id":"order-42"}`)
	again := td.notify(`{"user":"alice","data":{"n":1},"id":"order-42"}`)
	if first.Duplicate || !again.Duplicate || again.Seq != first.Seq || again.ID != "order-42" || again.Status != StatusRouted {
		t.Fatalf("first %+v, again %+v: want the same seq, the second a duplicate", first, again)
	}
	waitFor(t, 5*time.Second, "two doorbells for alice", func() bool { return len(gw.doorbellsFor("alice")) == 2 })
	if db := gw.doorbellsFor("alice")[1]; db.HasContent || db.Seq != first.Seq || db.Epoch == "" {
		t.Fatalf("the duplicate's doorbell %+v; want seq %d, an epoch and no content", db, first.Seq)
	}
	bob := td.notify(`{"user":"bob","data":{"n":1},"id":"order-42"}`)
	if bob.Duplicate || bob.Seq == first.Seq {
		t.Fatalf("bob with alice's id: %+v, want a message of his own", bob)
	}
	a := td.notify(`{"user":"carol","data":1}`)
	b := td.notify(`{"user":"carol","data":1}`)
	if a.ID == "" || b.ID == "" || a.ID == b.ID || a.Duplicate || b.Duplicate || a.Seq == b.Seq {
		t.Fatalf("two POSTs without an id: %+v, %+v; want two messages with distinct made-up ids", a, b)
	}
	if err := wire.ValidateID(a.ID); err != nil {
		t.Fatalf("made-up id %q: %v", a.ID, err)
	}
	if msgs := e.readLog("carol"); len(msgs) != 2 || msgs[0].ID != a.ID || msgs[1].ID != b.ID {
		t.Fatalf("carol's log %+v, want the two made-up ids", msgs)
	}
	if got := e.streamMsgs(); got != 4 {
		t.Fatalf("stream holds %d messages, want 4", got)
	}
	if got := td.metric("herald_notification_duplicates_total"); got != 1 {
		t.Errorf("herald_notification_duplicates_total = %v, want 1", got)
	}
}

// TestBatch: items are validated and appended independently, results come
// in request order, and one user's items keep their order in the log.
func TestBatch(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher(func(c *Config) { c.MaxBatch = 7 })
	td.waitRing("gw-a")

	r := td.publish("/v1/notify/batch", `{"notifications":[
		{"user":"alice","data":{"n":1},"id":"a1"},
		{"user":"","data":1},
		{"user":"bob","data":"hi","id":"b1"},
		{"user":"carol"},
		{"user":"alice","data":{"n":2},"id":"a2"},
		{"user":"alice","data":{"n":3},"id":"a3"},
		{"user":"carol","data":2}
	]}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	type item struct {
		notified
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	got := decodeAs[struct {
		Results []item `json:"results"`
	}](t, r).Results
	if len(got) != 7 {
		t.Fatalf("%d results, want 7: %s", len(got), r.body)
	}
	// carol's second item is not tried: stored after her refused first
	// one, it would come before that one's corrected retry.
	if e := got[6].Error; e == nil || !strings.Contains(e.Message, "not attempted") {
		t.Errorf("carol's second item: %+v, want it not attempted", got[6])
	}
	for i, want := range []string{"a1", "invalid_user", "b1", "invalid_data", "a2", "a3", "unavailable"} {
		switch g := got[i]; {
		case g.Error != nil:
			if g.Error.Code != want || g.Error.Message == "" {
				t.Errorf("result %d: error %+v, want %s", i, *g.Error, want)
			}
		case g.ID != want || g.Seq == 0 || g.Gateway != "gw-a" || g.Status != StatusRouted:
			t.Errorf("result %d: %+v, want id %s stored and routed to gw-a", i, g.notified, want)
		}
	}
	if !(got[0].Seq < got[4].Seq && got[4].Seq < got[5].Seq) {
		t.Fatalf("alice's seqs %d, %d, %d: a batch must keep a user's order", got[0].Seq, got[4].Seq, got[5].Seq)
	}
	msgs := e.readLog("alice")
	if len(msgs) != 3 || msgs[0].ID != "a1" || msgs[1].ID != "a2" || msgs[2].ID != "a3" || msgs[1].Prev != msgs[0].Seq || msgs[2].Prev != msgs[1].Seq {
		t.Fatalf("alice's log %+v, want the chain a1, a2, a3", msgs)
	}
	waitFor(t, 5*time.Second, "a doorbell per stored item", func() bool { return gw.doorbellCount() == 4 })
	if n := e.streamMsgs(); n != 4 {
		t.Fatalf("stream holds %d messages, want 4", n)
	}

	// An empty batch is nothing to do; no notifications field is a mistake.
	if r := td.publish("/v1/notify/batch", `{"notifications":[]}`); r.status != http.StatusAccepted || !bytes.Contains(r.body, []byte(`"results":[]`)) {
		t.Fatalf("empty batch: %d %s", r.status, r.body)
	}
	wantError(t, td.publish("/v1/notify/batch", `{}`), http.StatusBadRequest, CodeInvalidJSON)
}

// TestBroadcast: a broadcast reaches every gateway's broadcast subscription
// and is never stored.
func TestBroadcast(t *testing.T) {
	e := newEnv(t)
	a, b := e.gateway("gw-a", gatewayOpts{}), e.gateway("gw-b", gatewayOpts{})
	td := e.dispatcher()
	td.waitRing("gw-a", "gw-b")

	r := td.publish("/v1/broadcast", `{"data":{"text":"maintenance at noon"}}`)
	if r.status != http.StatusAccepted || string(bytes.TrimSpace(r.body)) != `{"status":"broadcast","live_only":true}` {
		t.Fatalf("broadcast: %d %s", r.status, r.body)
	}
	waitFor(t, 5*time.Second, "both gateways to get the broadcast", func() bool { return a.broadcastCount() == 1 && b.broadcastCount() == 1 })
	a.mu.Lock()
	frame, err := wire.DecodeBroadcast(a.broadcasts[0].Header, a.broadcasts[0].Data)
	a.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.DecodeServerFrame(frame)
	if err != nil || f.Type != wire.TypeBroadcast || string(f.Data) != `{"text":"maintenance at noon"}` {
		t.Fatalf("broadcast frame %s: %+v, %v", frame, f, err)
	}
	if n := e.streamMsgs(); n != 0 {
		t.Fatalf("a broadcast stored %d messages", n)
	}
	wantError(t, td.publish("/v1/broadcast", `{"data":null}`), http.StatusBadRequest, CodeInvalidData)
	wantError(t, td.do("POST", "/v1/broadcast", `{"data":1}`, "Content-Type", "application/json"), http.StatusUnauthorized, CodeUnauthorized)
}

// TestEmptyRingStores: with no gateway, a notification is stored only, a
// delivery wait is answered offline at once, and /v1/connect has nowhere
// to send anyone.
func TestEmptyRingStores(t *testing.T) {
	e := newEnv(t)
	td := e.dispatcher()
	waitFor(t, 10*time.Second, "an empty ring", func() bool { return td.Ring() != nil })
	if n := td.Ring().Len(); n != 0 {
		t.Fatalf("ring of %d members, want none", n)
	}
	got := td.notify(`{"user":"alice","data":1}`)
	if got.Status != StatusStored || got.Gateway != "" || got.Seq == 0 {
		t.Fatalf("notify with an empty ring: %+v, want stored with no gateway", got)
	}
	got = td.notify(`{"user":"alice","data":2}` + "\n")
	if got.Status != StatusStored {
		t.Fatalf("second notify: %+v", got)
	}
	start := time.Now()
	r := td.publish("/v1/notify?wait=delivered&timeout=10s", `{"user":"alice","data":3}`)
	w := decodeAs[notified](t, r)
	if r.status != http.StatusAccepted || w.Status != StatusStored || w.Delivery != wire.Offline || time.Since(start) > 5*time.Second {
		t.Fatalf("wait=delivered with an empty ring: %d %s after %v; want stored, offline, at once", r.status, r.body, time.Since(start))
	}
	if n := e.streamMsgs(); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
	tok := mustToken(t, testSecret, "alice", time.Hour)
	wantError(t, td.do("POST", "/v1/connect", "", "Authorization", "Bearer "+tok), http.StatusServiceUnavailable, CodeUnavailable)
	if r := td.do("GET", "/readyz", ""); r.status != http.StatusOK {
		t.Fatalf("readyz with an empty ring: %d %s; want ready (notifications are stored)", r.status, r.body)
	}
}
