package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestClusterInitNATSConfig: a NATS node runs on the configuration herald
// cluster init writes, serves TLS with the CA it writes, and admits a
// gateway with its nkey seed and the permissions of the configuration.
func TestClusterInitNATSConfig(t *testing.T) {
	dir := t.TempDir()
	if err := runClusterInit([]string{"--dir", dir}); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "nats-1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// The configuration names the files where a container mounts them.
	local := filepath.Join(t.TempDir(), "nats-1.conf")
	if err := os.WriteFile(local, []byte(strings.ReplaceAll(string(conf), "/secrets/", dir+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(local)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v\n%s", err, conf)
	}
	if opts.PingInterval != natsPingInterval || opts.MaxPingsOut != natsMaxPingsOut {
		t.Errorf("pings every %v, %d outstanding; want %v, %d", opts.PingInterval, opts.MaxPingsOut, natsPingInterval, natsMaxPingsOut)
	}
	if len(opts.Routes) != 3 || !opts.Cluster.NoAdvertise {
		t.Errorf("routes %v, no_advertise %v: want 3 routes and no gossiped client addresses", opts.Routes, opts.Cluster.NoAdvertise)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster.Port, opts.Routes = 0, nil
	opts.StoreDir = t.TempDir()
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("the NATS node did not start")
	}
	url := "tls://localhost:" + strings.TrimPrefix(srv.ClientURL()[strings.LastIndex(srv.ClientURL(), ":"):], ":")
	var c common
	c.nats.nkey, c.nats.tlsCA = filepath.Join(dir, "gw-1.nk"), filepath.Join(dir, "ca.pem")
	nopts, err := c.nats.options()
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 10)
	nopts = append(nopts, nats.MaxReconnects(0), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refused <- err }))
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		t.Fatalf("gw-1 with its nkey over TLS: %v", err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("herald.gw.gw-1", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("herald.gw.gw-2", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		if !strings.Contains(err.Error(), `"herald.gw.gw-2"`) {
			t.Errorf("refused %v; want only gw-2's subject refused", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("gw-1 subscribed to gw-2's doorbells: the configuration's permissions were not applied")
	}
	// Without the nkey the node refuses the connection.
	anon, err := nats.Connect(url, nats.RootCAs(filepath.Join(dir, "ca.pem")), nats.MaxReconnects(0))
	if err == nil {
		anon.Close()
		t.Error("a client without an nkey was admitted")
	}
}
