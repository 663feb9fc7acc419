package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
		return errors.New("usage: herald bench ring|notify|batch|fan-in|broadcast|replay|rehome|connections [flags]; herald bench SCENARIO --help for its flags")
	}
	scenario, args := args[0], args[1:]
	if scenario == "worker" {
		// A generator process of a scenario's own (bench.Generators):
		// its spec on stdin, its events on stdout.
		return bench.RunWorker(ctx, os.Stdin, os.Stdout)
	}
	fs := newFlagSet("bench "+scenario, "Measure a running herald cluster (default: herald dev's) in the "+scenario+" scenario; print a table, and JSON with --out.")
	statePath := fs.String("state", "data/dev/state.json", "the herald dev state file naming the cluster's dispatchers, secrets and processes")
	var pc peerConfig
	fs.StringVar(&pc.peer, "peer", "", "also measure this peer in the same run (notify, batch, fan-in, broadcast, connections): centrifugo; herald and the peer run one after the other, the other's processes stopped (SIGSTOP)")
	fs.StringVar(&pc.engines, "peer-engine", "memory", "the peer's engines, each measured in its own column: memory, redis, or memory,redis")
	fs.StringVar(&pc.bin, "centrifugo", "bin/centrifugo", "the Centrifugo binary (make centrifugo builds it)")
	fs.StringVar(&pc.conf, "centrifugo-config", "deploy/bench/centrifugo.json", "Centrifugo's configuration with its memory engine")
	fs.StringVar(&pc.redisConf, "centrifugo-redis-config", "deploy/bench/centrifugo-redis.json", "Centrifugo's configuration with its Redis engine (at the address Redis is started on)")
	fs.StringVar(&pc.redis, "redis-server", "redis-server", "the Redis server the Redis engine uses, started by the bench (Debian's redis-server)")
	out := fs.String("out", "", "also write the report as JSON to this file")
	var rc bench.RingConfig
	var nc bench.NotifyConfig
	var bc bench.BroadcastConfig
	var rp bench.ReplayConfig
	var cc bench.ConnectionsConfig
	var hc bench.RehomeConfig
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
		fs.IntVar(&cc.Sockets, "sockets", 5000, "idle authenticated sockets, one user each")
		fs.DurationVar(&cc.Settle, "settle", 60*time.Second, "how long the sockets idle before memory is read")
		fs.IntVar(&cc.Sources, "sources", 4, "source addresses 127.0.0.2… each generator process dials from")
		fs.IntVar(&cc.Generators, "generators", 0, "generator processes holding the sockets (default: one per 9,000)")
	case "rehome":
		fs.IntVar(&hc.Users, "users", 10_000, "users, every one owned by the gateway that is killed")
		fs.BoolVar(&hc.Graceful, "graceful", false, "SIGTERM the gateway (it drains) instead of SIGKILL")
		fs.StringVar(&hc.Gateway, "gateway", "", "the gateway to kill (default: the ring's first)")
		fs.IntVar(&hc.Generators.N, "generators", 2, "generator processes holding the devices")
		fs.IntVar(&hc.Generators.Sources, "sources", 4, "source addresses 127.0.0.2… each generator process dials from")
	case "replay":
		fs.IntVar(&rp.Users, "users", 1000, "users, each with --stored notifications, connecting at once")
		fs.IntVar(&rp.Stored, "stored", 100, "notifications stored per user before it connects")
	default:
		return fmt.Errorf("herald bench: unknown scenario %q (ring, notify, batch, fan-in, broadcast, replay, rehome, connections)", scenario)
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
		var control string
		if t, control, err = benchTarget(*statePath); err != nil {
			return err
		}
		switch scenario {
		case "rehome":
			hc.Progress = os.Stderr
			hc.Stop, hc.Start = devGatewayControl(control)
			err = bench.Rehome(ctx, t, hc, r)
		case "broadcast":
			bc.Progress = os.Stderr
			err = withPeer(ctx, pc, t, r, func(sys bench.System, r *bench.Report) error { return bench.Broadcast(ctx, sys, bc, r) })
		case "replay":
			rp.Progress = os.Stderr
			err = bench.Replay(ctx, t, rp, r)
		case "connections":
			cc.Progress = os.Stderr
			err = withPeer(ctx, pc, t, r, func(sys bench.System, r *bench.Report) error { return bench.Connections(ctx, sys, cc, r) })
		default:
			nc.Progress = os.Stderr
			err = withPeer(ctx, pc, t, r, func(sys bench.System, r *bench.Report) error { return bench.Notify(ctx, sys, nc, r) })
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

// benchTarget reads the cluster, and its control endpoint, from a herald
// dev state file.
func benchTarget(path string) (*bench.Target, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading the cluster's state (is herald dev running? --state names its file): %w", err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	t := &bench.Target{Dispatchers: st.Dispatchers, APIKey: st.APIKey, TokenSecret: st.TokenSecret}
	for _, c := range st.Children {
		if c.PID > 0 {
			p := bench.Process{Name: c.Name, Kind: c.Kind, PID: c.PID}
			if c.Kind == "gateway" && c.Admin != "" {
				p.Metrics = c.Admin + "/metrics"
			}
			t.Processes = append(t.Processes, p)
		}
	}
	if len(t.Dispatchers) == 0 || len(t.Processes) == 0 {
		return nil, "", fmt.Errorf("%s names no dispatchers or no running processes", path)
	}
	return t, st.Control, nil
}

// devGatewayControl stops (keeping it down) and starts a gateway of herald
// dev through its control endpoint.
func devGatewayControl(control string) (stop func(context.Context, string, bool) error, start func(context.Context, string) error) {
	r := &chaosRun{cfg: chaosConfig{control: control}, http: &http.Client{Timeout: 2 * time.Minute}}
	stop = func(ctx context.Context, gw string, graceful bool) error {
		sig := map[bool]string{false: "KILL", true: "TERM"}[graceful]
		return r.control(ctx, http.MethodPost, "/children/"+gw+"/stop?signal="+sig, nil)
	}
	start = func(ctx context.Context, gw string) error {
		return r.control(ctx, http.MethodPost, "/children/"+gw+"/start", nil)
	}
	return stop, start
}

// peerConfig is the peer a scenario is also measured on, and how to run it.
type peerConfig struct {
	peer, engines        string
	bin, conf, redisConf string
	redis                string
}

// withPeer measures herald, then the peer on each of its engines, and puts
// the peer's figures beside herald's in r.
func withPeer(ctx context.Context, pc peerConfig, t *bench.Target, r *bench.Report, measure func(bench.System, *bench.Report) error) error {
	if err := measure(t, r); err != nil || pc.peer == "" {
		return err
	}
	if pc.peer != "centrifugo" {
		return fmt.Errorf("--peer %q: the one peer is centrifugo", pc.peer)
	}
	for _, engine := range splitList(pc.engines) {
		if err := benchPeer(ctx, pc, engine, t, measure, r); err != nil {
			return err
		}
	}
	return nil
}

// benchPeer measures the peer on one engine the way measure measured
// herald, while herald's processes are stopped.
func benchPeer(ctx context.Context, pc peerConfig, engine string, t *bench.Target, measure func(bench.System, *bench.Report) error, r *bench.Report) error {
	conf, column := pc.conf, "centrifugo"
	var redisPID int
	switch engine {
	case "memory":
	case "redis":
		conf, column = pc.redisConf, "centrifugo+redis"
		pid, stop, err := startRedis(ctx, pc.redis, benchRedisPort)
		if err != nil {
			return err
		}
		defer stop()
		redisPID = pid
	default:
		return fmt.Errorf("--peer-engine %q: want memory or redis", engine)
	}
	cf, stop, err := startCentrifugo(ctx, pc.bin, conf)
	if err != nil {
		return err
	}
	defer stop()
	cf.RedisPID = redisPID
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
		return fmt.Errorf("%s: %w", column, err)
	}
	r.Merge(pr, column)
	r.Note("peer %s: Centrifugo (%s, %s engine, personal channel with history 100), measured while herald's processes were stopped", column, pc.bin, engine)
	return nil
}

// benchRedisPort is where the bench runs Redis for Centrifugo's Redis
// engine; deploy/bench/centrifugo-redis.json names it.
const benchRedisPort = 26379

// startRedis runs a Redis server of its own on loopback, without
// persistence, until stop, and waits until it answers.
func startRedis(ctx context.Context, bin string, port int) (pid int, stop func(), err error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return 0, nil, fmt.Errorf("%s is taken: the bench starts a Redis of its own there", addr)
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--loglevel", "warning")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("starting Redis for Centrifugo's Redis engine (apt-get install redis-server, or make redis): %w", err)
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	if err := waitUntil(ctx, 30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 7)
		_, werr := c.Write([]byte("PING\r\n"))
		n, _ := io.ReadFull(c, buf)
		return werr == nil && string(buf[:n]) == "+PONG\r\n"
	}); err != nil {
		stop()
		return 0, nil, fmt.Errorf("no PONG from Redis on %s: %w", addr, err)
	}
	return cmd.Process.Pid, stop, nil
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
