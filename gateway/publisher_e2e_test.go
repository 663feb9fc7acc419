package gateway_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	pubclient "github.com/heraldpush/herald/dispatcher/client"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// TestPublisherClientEndToEnd: dispatcher/client against real dispatchers
// (one URL dead, so every call may fail over), NATS, Consul and a gateway:
// each call's effect reaches the user's device or the log.
func TestPublisherClientEndToEnd(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	d := c.startDispatcher()
	pub, err := pubclient.New(pubclient.Config{URLs: []string{deadURL(t), d.url}, APIKey: apiKey, BackoffBase: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alice := c.connect(d, "alice")
	waitFor(t, 10*time.Second, "alice's hello", func() bool { return len(alice.hellos()) > 0 })

	one, err := pub.Notify(ctx, pubclient.Notification{User: "alice", Data: map[string]string{"text": "hi"}})
	if err != nil || one.ID == "" || one.Seq == 0 || one.Status != "routed" {
		t.Fatalf("Notify = %+v, %v", one, err)
	}
	again, err := pub.Notify(ctx, pubclient.Notification{User: "alice", ID: one.ID, Data: "ignored"})
	if err != nil || !again.Duplicate || again.Seq != one.Seq {
		t.Fatalf("Notify with the same id = %+v, %v; want a duplicate", again, err)
	}
	waited, err := pub.NotifyAndWait(ctx, pubclient.Notification{User: "alice", Data: 2, TTL: 60, Collapse: "k"}, 5*time.Second)
	if err != nil || waited.Delivery != wire.Delivered {
		t.Fatalf("NotifyAndWait = %+v, %v; want delivered", waited, err)
	}
	many, err := pub.NotifyMany(ctx, []string{"alice", "bob"}, pubclient.Notification{Data: json.RawMessage(`{"to":"both"}`)})
	if err != nil || len(many) != 2 || many[0].User != "alice" || many[1].User != "bob" || many[0].Err != nil || many[0].ID != many[1].ID {
		t.Fatalf("NotifyMany = %+v, %v", many, err)
	}
	batch, err := pub.Batch(ctx, []pubclient.Notification{{User: "bob", Data: 1}, {User: "", Data: 2}, {User: "bob", Data: 3}})
	if err != nil || len(batch) != 3 || batch[0].Err != nil || batch[1].Err == nil || batch[1].Err.Code != "invalid_user" || batch[2].Seq <= batch[0].Seq {
		t.Fatalf("Batch = %+v, %v", batch, err)
	}
	waitFor(t, 5*time.Second, "alice's three", func() bool { return len(alice.seqs()) == 3 })
	if err := pub.Broadcast(ctx, "everyone"); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	waitFor(t, 5*time.Second, "the broadcast", func() bool {
		for _, r := range alice.raw() {
			if r.f.Type == wire.TypeBroadcast {
				return true
			}
		}
		return false
	})

	page, err := pub.History(ctx, "bob", 0, 2)
	if err != nil || len(page.Items) != 2 || !page.More || page.Items[0].Seq != many[1].Seq || page.Epoch != c.log.Epoch() {
		t.Fatalf("History = %+v, %v", page, err)
	}
	rest, err := pub.History(ctx, "bob", page.NextAfter, 0)
	if err != nil || len(rest.Items) != 1 || rest.Items[0].Seq != batch[2].Seq || rest.More {
		t.Fatalf("History, page 2 = %+v, %v", rest, err)
	}
	erased, err := pub.Erase(ctx, "alice")
	if err != nil || erased.Through != many[0].Seq || erased.Purged != 3 {
		t.Fatalf("Erase = %+v, %v", erased, err)
	}
	waitFor(t, 10*time.Second, "the gap of the erasure", func() bool {
		for _, r := range alice.raw() {
			if r.f.Type == wire.TypeGap && r.f.Next == erased.Through+1 {
				return true
			}
		}
		return false
	})
	if p, err := pub.History(ctx, "alice", 0, 0); err != nil || len(p.Items) != 0 {
		t.Fatalf("alice's history after the erasure: %+v, %v", p, err)
	}
	if _, err := pub.Notify(ctx, pubclient.Notification{User: "", Data: 1}); err == nil {
		t.Fatal("Notify of an empty user succeeded")
	}
}

// deadURL is an http URL nothing listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}
