package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/dispatcher"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/heraldpush/herald/ring/consul/consultest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestComponentsWorkWithLeastNATSPermissions: a gateway and a dispatcher
// holding only natsPermissions deliver a notification end to end, and each
// is refused what its permissions leave out.
func TestComponentsWorkWithLeastNATSPermissions(t *testing.T) {
	d := wire.Deployment("perm-test")
	stream := d.Stream()
	type cred struct {
		kp  nkeys.KeyPair
		pub string
	}
	newCred := func() cred {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		return cred{kp, pub}
	}
	gw, disp := newCred(), newCred()
	srv := inboxtest.Run(t, func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{
			{Nkey: gw.pub, Permissions: natsPermissions(d, stream, "gw-1")},
			{Nkey: disp.pub, Permissions: natsPermissions(d, stream, "")},
		}
	})
	var (
		mu       sync.Mutex
		refusals []string
	)
	connect := func(c cred) *nats.Conn {
		nc, err := nats.Connect(srv.URL(), nats.Nkey(c.pub, c.kp.Sign), nats.MaxReconnects(-1),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				mu.Lock()
				defer mu.Unlock()
				refusals = append(refusals, err.Error())
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	agent := consultest.Start(t)
	secret := []byte("a test secret of at least thirty-two bytes")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	watch := consul.WatchConfig{QueryInterval: 50 * time.Millisecond, Debounce: 50 * time.Millisecond}

	dln, _ := net.Listen("tcp", "127.0.0.1:0")
	dcfg := dispatcher.Config{Listener: dln, NATS: connect(disp), Consul: agent.Client(), Deployment: d, Watch: watch,
		APIKeys: []string{"key"}, TokenSecrets: [][]byte{secret}, Logger: log}
	dsp, err := dispatcher.New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gcfg := gateway.Config{ID: "gw-1", Listener: ln, PublicURL: "ws://" + ln.Addr().String() + "/ws", NATS: connect(gw),
		Consul: agent.Client(), Deployment: d, Watch: watch, TTL: 2 * time.Second, TokenSecrets: [][]byte{secret}, Logger: log}
	g, err := gateway.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { dsp.Run(ctx) })
	wg.Go(func() { g.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	url := "http://" + dln.Addr().String()
	waitForT(t, 20*time.Second, "the dispatcher's ring", func() bool { return dsp.Ring().Len() == 1 })
	got := make(chan wire.ServerFrame, 4)
	cl, err := client.New(client.Config{Dispatcher: url,
		Token: func(context.Context) (string, error) { return token.Sign(secret, "alice", time.Hour) },
		OnFrame: func(_ string, f wire.ServerFrame) {
			if f.Type == wire.TypeNotification {
				got <- f
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { cl.Run(ctx) })
	waitForT(t, 20*time.Second, "alice connected", func() bool { return cl.Stats().Connects == 1 })
	req, _ := http.NewRequest("POST", url+"/v1/notify", strings.NewReader(`{"user":"alice","data":{"hi":1}}`))
	req.Header.Set("Authorization", "Bearer key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notify: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case f := <-got:
		if string(f.Data) != `{"hi":1}` {
			t.Fatalf("got %s", f.Data)
		}
	case <-time.After(10 * time.Second):
		mu.Lock()
		t.Fatalf("no notification with least privileges; refusals: %v", refusals)
	}
	mu.Lock()
	if len(refusals) != 0 {
		t.Fatalf("working components were refused: %v", refusals)
	}
	mu.Unlock()

	// What each may not do.
	gwc, dc := connect(gw), connect(disp)
	for what, do := range map[string]func() error{
		"a gateway appends to the log":      func() error { return gwc.Publish(d.Inbox("alice"), []byte("1")) },
		"a gateway rings another":           func() error { return gwc.Publish(d.Gateway("gw-2"), nil) },
		"a gateway broadcasts":              func() error { return gwc.Publish(d.Broadcast(), []byte("1")) },
		"a gateway deletes the stream":      func() error { return gwc.Publish("$JS.API.STREAM.DELETE."+stream, nil) },
		"a gateway listens for another":     func() error { _, err := gwc.SubscribeSync(d.Gateway("gw-2")); return err },
		"a dispatcher listens for doorbell": func() error { _, err := dc.SubscribeSync(d.Gateway("gw-1")); return err },
		"a dispatcher deletes the stream":   func() error { return dc.Publish("$JS.API.STREAM.DELETE."+stream, nil) },
		"another deployment's log":          func() error { return dc.Publish(wire.Deployment("other").Inbox("alice"), nil) },
	} {
		mu.Lock()
		before := len(refusals)
		mu.Unlock()
		if err := do(); err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("%s: %v", what, err)
		}
		gwc.Flush()
		dc.Flush()
		waitForT(t, 5*time.Second, what+" refused", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(refusals) > before && strings.Contains(strings.ToLower(refusals[len(refusals)-1]), "permissions violation")
		})
	}
}

func waitForT(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
