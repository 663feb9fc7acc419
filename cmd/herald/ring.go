package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/ring/consul"
)

// runRing prints the ring built from the passing gateways, once or (with
// --watch) on every change. It has no NATS connection, so its liveness probe
// cannot tell: a member that stops passing is shown held until the hold
// period ends.
func runRing(ctx context.Context, args []string) error {
	fs := newFlagSet("ring", "Show the ring the dispatchers and gateways build from the passing gateways in Consul.")
	addr := fs.String("consul-addr", "127.0.0.1:8500", "Consul agent HTTP address")
	watch := fs.Bool("watch", false, "keep watching and print every new ring")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the first ring")
	if err := parse(fs, args); err != nil {
		return err
	}
	client, err := (&common{consulAddr: *addr}).consul()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *watch {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	w, err := consul.NewWatcher(consul.WatchConfig{
		Client: client,
		Probe:  func(context.Context, string) consul.Liveness { return consul.Liveness{State: consul.Unknown} },
		Logger: logger,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	first := time.After(*timeout)
	r, changed := w.Ring()
	for r == nil {
		select {
		case <-changed:
			r, changed = w.Ring()
		case <-first:
			cancel()
			<-done
			return fmt.Errorf("no ring from Consul at %s within %v: %v", *addr, *timeout, w.Status().Err)
		case <-ctx.Done():
			return <-done
		}
	}
	for {
		printRing(os.Stdout, r, w.Status())
		if !*watch {
			cancel()
			return <-done
		}
		select {
		case <-changed:
			r, changed = w.Ring()
		case <-ctx.Done():
			return <-done
		}
	}
}

func printRing(out io.Writer, r *ring.Ring, s consul.Status) {
	fmt.Fprintf(out, "ring %s: %d gateways, %d vnodes per unit of weight\n", r.Fingerprint(), r.Len(), r.VNodes())
	for _, m := range r.Members() {
		fmt.Fprintf(out, "  %-24s weight %-2d %s\n", m.ID, m.Weight, m.URL)
	}
	if len(s.Held) > 0 {
		fmt.Fprintf(out, "  held while failing: %v\n", s.Held)
	}
}
