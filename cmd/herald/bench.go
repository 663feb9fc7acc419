package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/bench"
)

// herald bench measures a running cluster (by default `herald dev`'s, from
// its state file) from a process of its own, and prints a table (and, with
// --out, JSON). The scenarios are bounded in time and count.
func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: herald bench ring|notify|batch|fan-in|broadcast|replay [flags]; herald bench SCENARIO --help for its flags")
	}
	scenario, args := args[0], args[1:]
	fs := newFlagSet("bench "+scenario, "Measure a running herald cluster (default: herald dev's) in the "+scenario+" scenario; print a table, and JSON with --out.")
	statePath := fs.String("state", "data/dev/state.json", "the herald dev state file naming the cluster's dispatchers, secrets and processes")
	out := fs.String("out", "", "also write the report as JSON to this file")
	var rc bench.RingConfig
	var nc bench.NotifyConfig
	var bc bench.BroadcastConfig
	var rp bench.ReplayConfig
	sizes := "10,100,1000"
	switch scenario {
	case "ring":
		fs.IntVar(&rc.Keys, "keys", 10_000_000, "keys placed on each ring")
		fs.StringVar(&sizes, "sizes", sizes, "ring sizes (gateways), comma-separated")
	case "notify", "batch", "fan-in":
		fs.IntVar(&nc.Users, "users", 1000, "connected users, one device each")
		fs.Float64Var(&nc.Rate, "rate", 0, "notifications per second (0: find the highest sustainable rate by bisection)")
		fs.DurationVar(&nc.Duration, "step", 10*time.Second, "length of each rate's step")
		fs.IntVar(&nc.Payload, "payload", 200, "bytes of each notification's data")
		fs.Float64Var(&nc.MaxRate, "max-rate", 20000, "the search's upper bound")
		fs.DurationVar(&nc.MaxP99, "max-p99", 100*time.Millisecond, "the p99 a sustainable step stays within")
		if scenario == "batch" {
			fs.IntVar(&nc.Batch, "batch", 100, "notifications per request")
		}
		if scenario == "fan-in" {
			fs.IntVar(&nc.FanIn, "fan-in-users", 10, "users every notification goes to one of")
		}
	case "broadcast":
		fs.IntVar(&bc.Sockets, "sockets", 1000, "connected sockets, one user each")
		fs.Float64Var(&bc.Rate, "rate", 10, "broadcasts per second")
		fs.DurationVar(&bc.Duration, "duration", 10*time.Second, "how long to broadcast")
	case "replay":
		fs.IntVar(&rp.Users, "users", 1000, "users, each with --stored notifications, connecting at once")
		fs.IntVar(&rp.Stored, "stored", 100, "notifications stored per user before it connects")
	default:
		return fmt.Errorf("herald bench: unknown scenario %q (ring, notify, batch, fan-in, broadcast, replay)", scenario)
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	r := &bench.Report{Scenario: scenario, Command: "herald bench " + strings.Join(append([]string{scenario}, args...), " "),
		Machine: bench.ThisMachine(), Started: time.Now()}
	var err error
	switch scenario {
	case "ring":
		for _, s := range splitList(sizes) {
			n, err := strconv.Atoi(s)
			if err != nil || n < 2 {
				return fmt.Errorf("--sizes %q: want ring sizes of at least 2", sizes)
			}
			rc.Sizes = append(rc.Sizes, n)
		}
		rc.Progress = os.Stderr
		err = bench.Ring(rc, r)
	default:
		var t *bench.Target
		if t, err = benchTarget(*statePath); err != nil {
			return err
		}
		switch scenario {
		case "broadcast":
			bc.Progress = os.Stderr
			err = bench.Broadcast(ctx, t, bc, r)
		case "replay":
			rp.Progress = os.Stderr
			err = bench.Replay(ctx, t, rp, r)
		default:
			nc.Progress = os.Stderr
			err = bench.Notify(ctx, t, nc, r)
		}
	}
	if err != nil {
		return err
	}
	r.Seconds = time.Since(r.Started).Seconds()
	r.Print(os.Stdout)
	if *out != "" {
		return r.WriteJSON(*out)
	}
	return nil
}

// benchTarget reads the cluster from a herald dev state file.
func benchTarget(path string) (*bench.Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's state (is herald dev running? --state names its file): %w", err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t := &bench.Target{Dispatchers: st.Dispatchers, APIKey: st.APIKey, TokenSecret: st.TokenSecret}
	for _, c := range st.Children {
		if c.PID > 0 {
			t.Processes = append(t.Processes, bench.Process{Name: c.Name, Kind: c.Kind, PID: c.PID})
		}
	}
	if len(t.Dispatchers) == 0 || len(t.Processes) == 0 {
		return nil, fmt.Errorf("%s names no dispatchers or no running processes", path)
	}
	return t, nil
}
