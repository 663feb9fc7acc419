package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldpush/herald/bench"
)

// herald bench measures a running cluster (by default `herald dev`'s, from
// its state file) from a process of its own, and prints a table (and, with
// --out, JSON). The scenarios are bounded in time and count.
func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: herald bench ring|notify|batch|fan-in|broadcast|replay|connections [flags]; herald bench SCENARIO --help for its flags")
	}
	scenario, args := args[0], args[1:]
	fs := newFlagSet("bench "+scenario, "Measure a running herald cluster (default: herald dev's) in the "+scenario+" scenario; print a table, and JSON with --out.")
	statePath := fs.String("state", "data/dev/state.json", "the herald dev state file naming the cluster's dispatchers, secrets and processes")
	peer := fs.String("peer", "", "also measure this peer in the same run (notify, batch, fan-in, connections): centrifugo; herald and the peer run one after the other, the other's processes stopped (SIGSTOP)")
	centrifugoBin := fs.String("centrifugo", "bin/centrifugo", "the Centrifugo binary (make centrifugo builds it)")
	centrifugoConf := fs.String("centrifugo-config", "deploy/bench/centrifugo.json", "Centrifugo's configuration")
	out := fs.String("out", "", "also write the report as JSON to this file")
	var rc bench.RingConfig
	var nc bench.NotifyConfig
	var bc bench.BroadcastConfig
	var rp bench.ReplayConfig
	var cc bench.ConnectionsConfig
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
	case "connections":
		fs.IntVar(&cc.Sockets, "sockets", 5000, "idle authenticated sockets, one user each (at most 18,000 from this one process)")
		fs.DurationVar(&cc.Settle, "settle", 60*time.Second, "how long the sockets idle before memory is read")
		fs.IntVar(&cc.Sources, "sources", 4, "source addresses 127.0.0.2… the sockets are spread over")
	case "replay":
		fs.IntVar(&rp.Users, "users", 1000, "users, each with --stored notifications, connecting at once")
		fs.IntVar(&rp.Stored, "stored", 100, "notifications stored per user before it connects")
	default:
		return fmt.Errorf("herald bench: unknown scenario %q (ring, notify, batch, fan-in, broadcast, replay, connections)", scenario)
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
		case "connections":
			cc.Progress = os.Stderr
			measure := func(sys bench.System, r *bench.Report) error { return bench.Connections(ctx, sys, cc, r) }
			if err = measure(t, r); err == nil && *peer != "" {
				err = benchPeer(ctx, *peer, *centrifugoBin, *centrifugoConf, t, measure, r)
			}
		default:
			nc.Progress = os.Stderr
			measure := func(sys bench.System, r *bench.Report) error { return bench.Notify(ctx, sys, nc, r) }
			if err = measure(t, r); err == nil && *peer != "" {
				err = benchPeer(ctx, *peer, *centrifugoBin, *centrifugoConf, t, measure, r)
			}
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

// benchPeer measures the peer the way measure measured herald, while
// herald's processes are stopped, and puts its figures beside herald's in r.
func benchPeer(ctx context.Context, peer, bin, conf string, t *bench.Target, measure func(bench.System, *bench.Report) error, r *bench.Report) error {
	if peer != "centrifugo" {
		return fmt.Errorf("--peer %q: the one peer is centrifugo", peer)
	}
	cf, stop, err := startCentrifugo(ctx, bin, conf)
	if err != nil {
		return err
	}
	defer stop()
	for _, p := range t.Processes {
		syscall.Kill(p.PID, syscall.SIGSTOP)
	}
	defer func() {
		for _, p := range t.Processes {
			syscall.Kill(p.PID, syscall.SIGCONT)
		}
	}()
	pr := &bench.Report{}
	if err := measure(cf, pr); err != nil {
		return err
	}
	r.Merge(pr, "centrifugo")
	r.Note("peer: Centrifugo (%s, memory engine, personal channel with history 100), measured while herald's processes were stopped", bin)
	return nil
}

// startCentrifugo runs Centrifugo on its configuration until stop, and
// waits for its /health.
func startCentrifugo(ctx context.Context, bin, conf string) (*bench.Centrifugo, func(), error) {
	b, err := os.ReadFile(conf)
	if err != nil {
		return nil, nil, err
	}
	var c struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		Client struct {
			Token struct {
				HMAC string `json:"hmac_secret_key"`
			} `json:"token"`
		} `json:"client"`
		HTTPAPI struct {
			Key string `json:"key"`
		} `json:"http_api"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", conf, err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting Centrifugo (make centrifugo builds %s): %w", bin, err)
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	cf := &bench.Centrifugo{URL: fmt.Sprintf("http://%s:%d", cmp.Or(c.HTTPServer.Address, "127.0.0.1"), c.HTTPServer.Port),
		APIKey: c.HTTPAPI.Key, Secret: c.Client.Token.HMAC, PID: cmd.Process.Pid}
	if err := waitUntil(ctx, 30*time.Second, func() bool {
		resp, err := http.Get(cf.URL + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}); err != nil {
		stop()
		return nil, nil, fmt.Errorf("no answer from Centrifugo's /health: %w", err)
	}
	return cf, stop, nil
}
