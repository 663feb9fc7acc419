package main

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestConnectNATSKeepalive: herald's NATS connections ping every second and
// give up on a server after two unanswered pings, whatever else the caller
// asks for.
func TestConnectNATSKeepalive(t *testing.T) {
	c := common{natsURL: "nats://127.0.0.1:1"} // nobody there: RetryOnFailedConnect returns at once
	nc, err := c.connectNATS("test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Opts.PingInterval != time.Second || nc.Opts.MaxPingsOut != 2 {
		t.Errorf("ping interval %v, max pings out %d; want 1s and 2", nc.Opts.PingInterval, nc.Opts.MaxPingsOut)
	}
}

// TestNATSServerKeepalive: herald nats pings its clients every second and
// drops one after two unanswered pings.
func TestNATSServerKeepalive(t *testing.T) {
	o, err := natsServerOptions("127.0.0.1:4222", t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if o.PingInterval != time.Second || o.MaxPingsOut != 2 || o.Host != "127.0.0.1" || o.Port != 4222 || !o.JetStream {
		t.Errorf("ping interval %v, max pings out %d, %s:%d, JetStream %v: want 1s, 2, 127.0.0.1:4222 with JetStream",
			o.PingInterval, o.MaxPingsOut, o.Host, o.Port, o.JetStream)
	}
	if _, err := natsServerOptions("127.0.0.1", "", 0); err == nil {
		t.Error("an address without a port was accepted")
	}
}
