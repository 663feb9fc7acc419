package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// runNATS runs an embedded NATS server with JetStream, for local use: a
// production cluster runs nats-server itself.
func runNATS(ctx context.Context, args []string) error {
	fs := newFlagSet("nats", "Run an embedded NATS server with JetStream (for local use and tests).")
	addr := fs.String("addr", "127.0.0.1:4222", "client listen address")
	storeDir := fs.String("store-dir", "data/nats", "JetStream store directory")
	maxStore := fs.Int64("max-store", 0, "JetStream file store limit in bytes (0: the server's default)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	c := common{logLevel: *logLevel, logFormat: "text"}
	log, err := c.logger("nats")
	if err != nil {
		return err
	}
	opts, err := natsServerOptions(*addr, *storeDir, *maxStore)
	if err != nil {
		return err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("NATS server not ready on %s (is the port taken?)", *addr)
	}
	log.Info("NATS with JetStream serving", "url", ns.ClientURL(), "store_dir", *storeDir)
	<-ctx.Done()
	log.Info("NATS shutting down")
	ns.Shutdown()
	ns.WaitForShutdown()
	return nil
}

// natsServerOptions configures herald nats's server. It pings its clients
// every second and drops one that leaves two pings unanswered, so a frozen
// or cut-off gateway loses its subscriptions within seconds (and its
// liveness probe answers "no responders": DESIGN.md) rather than after the
// default 2 minutes.
func natsServerOptions(addr, storeDir string, maxStore int64) (*server.Options, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--addr: bad port %q", portStr)
	}
	return &server.Options{
		ServerName:        "herald-nats",
		Host:              host,
		Port:              port,
		JetStream:         true,
		StoreDir:          storeDir,
		JetStreamMaxStore: maxStore,
		NoSigs:            true,
		PingInterval:      natsPingInterval,
		MaxPingsOut:       natsMaxPingsOut,
	}, nil
}
