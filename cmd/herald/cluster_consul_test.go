package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/heraldpush/herald/ring/consul/consultest"
)

// TestComponentsWorkWithLeastConsulRights: with ACLs on and default deny,
// a gateway holding only gatewayRules registers, heartbeats and watches; a
// dispatcher holding dispatcherRules watches; and each is refused the rest.
func TestComponentsWorkWithLeastConsulRights(t *testing.T) {
	agent := consultest.StartACL(t)
	admin := agent.Client()
	const service = "herald-acl-gateway"
	gwTok, err := consulToken(admin, "herald-gateway-gw-1", "herald gateway gw-1", gatewayRules(service))
	if err != nil {
		t.Fatal(err)
	}
	dispTok, err := consulToken(admin, "herald-dispatcher", "herald dispatchers", dispatcherRules(service))
	if err != nil {
		t.Fatal(err)
	}
	gw, disp := agent.ClientWith(gwTok), agent.ClientWith(dispTok)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	alive := func(context.Context, string) consul.Liveness { return consul.Liveness{State: consul.Dead} }

	reg, err := consul.Register(context.Background(), consul.RegisterConfig{Client: gw, ID: "gw-1", Service: service,
		URL: "ws://127.0.0.1:7001/ws", TTL: 2 * time.Second, Probe: alive, Logger: log})
	if err != nil {
		t.Fatalf("a gateway with its token registers: %v", err)
	}
	defer reg.Close()
	w, err := consul.NewWatcher(consul.WatchConfig{Client: disp, Service: service, Probe: alive, Logger: log,
		QueryInterval: 50 * time.Millisecond, Debounce: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitForT(t, 10*time.Second, "the dispatcher's ring to hold gw-1", func() bool {
		r, _ := w.Ring()
		_, in := r.Member("gw-1")
		return in
	})
	time.Sleep(3 * time.Second) // longer than the TTL: the heartbeat, under the token, keeps it passing
	if es, _, err := disp.Health().Service(service, "", true, nil); err != nil || len(es) != 1 {
		t.Fatalf("gw-1 passing after its TTL: %d entries, %v", len(es), err)
	}

	refused := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed, want refused by ACLs", what)
		}
	}
	other := &api.AgentServiceRegistration{ID: "x", Name: "other-service", Port: 1}
	refused("a gateway registers another service", gw.Agent().ServiceRegister(other))
	refused("a dispatcher registers a gateway", disp.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "gw-9", Name: service, Port: 1}))
	_, err = gw.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil)
	refused("a gateway writes the KV store", err)
	_, _, err = disp.ACL().TokenList(nil)
	refused("a dispatcher lists ACL tokens", err)
}
