package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ConnectionsConfig is the connections scenario: Sockets idle,
// authenticated sockets (connect = herald's /v1/connect + dial + auth +
// hello; Centrifugo's dial + connect), spread over Sources source
// addresses 127.0.0.2… (one address reaches about 28k ports of one
// destination).
type ConnectionsConfig struct {
	Sockets int           // default 5000
	Settle  time.Duration // how long the sockets idle before memory is read (default 60 s)
	Sources int           // source addresses per generator process (default 4)
	// Generators are the generator processes the sockets are spread over
	// (default: one per socketsPerGenerator).
	Generators int
	Progress   io.Writer
}

// socketsPerGenerator is how many sockets one generator process holds by
// default: half its open-files limit, so that reconnects have room.
const socketsPerGenerator = 9000

// maxSocketsPerProcess keeps one generator process under this machine's
// hard limit of 20,000 open files.
const maxSocketsPerProcess = 18000

// Connections measures the connect rate and, after the sockets have idled
// for Settle at the default GOGC, the memory each costs the server: the
// growth of the servers' resident set (RSS(N) − RSS(0)) / N. RSS(0) is the
// servers' as found, so run it on a fresh cluster: a Go process keeps
// memory it once used, and a cluster that held sockets before grows less.
func Connections(ctx context.Context, sys System, cfg ConnectionsConfig, r *Report) error {
	cfg.Sockets = cmp.Or(cfg.Sockets, 5000)
	cfg.Settle = cmp.Or(cfg.Settle, 60*time.Second)
	cfg.Sources = cmp.Or(cfg.Sources, 4)
	if cfg.Generators == 0 {
		cfg.Generators = (cfg.Sockets + socketsPerGenerator - 1) / socketsPerGenerator
	}
	if cfg.Sockets > cfg.Generators*maxSocketsPerProcess {
		return fmt.Errorf("connections: %d sockets is more than %d generator processes hold here (%d each)", cfg.Sockets, cfg.Generators, maxSocketsPerProcess)
	}
	spreadDevices(sys, Generators{N: cfg.Generators, Sources: cfg.Sources})
	defer spreadDevices(sys, Generators{})
	procs := sys.Procs()
	rss0, rt0 := rss(procs), goRuntimes(procs)
	run := runID()
	users := userNames("bench-cn-"+run, cfg.Sockets)
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	start, failed0 := time.Now(), sys.Failures()
	if err := sys.Connect(ctx, cctx, users, func(string, []byte) {}); err != nil {
		return err
	}
	took, failed := time.Since(start), sys.Failures()-failed0
	fmt.Fprintf(progress(cfg.Progress), "bench connections: %s: %d sockets in %v; idling %v\n", sys.Name(), cfg.Sockets, took.Round(time.Millisecond), cfg.Settle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.Settle):
	}
	rss1, rt1 := rss(procs), goRuntimes(procs)
	var grew, grewSockets float64
	for _, p := range procs {
		d := rss1[p.Name] - rss0[p.Name]
		grew += d
		if p.Kind == "gateway" || p.Kind == "centrifugo" { // the processes holding the sockets
			grewSockets += d
		}
	}
	r.Add("connections: sockets", "", float64(cfg.Sockets))
	r.Add("connections: connect rate", "/s", float64(cfg.Sockets)/took.Seconds())
	r.Add("connections: failed connect attempts", "", float64(failed))
	r.Add("connections: RSS per idle socket, socket servers", "KiB", grewSockets/float64(cfg.Sockets)/1024)
	r.Add("connections: RSS per idle socket, every server process", "KiB", grew/float64(cfg.Sockets)/1024)
	var heap, goroutines float64
	scraped := 0
	for _, p := range procs {
		a, okA := rt0[p.Name]
		b, okB := rt1[p.Name]
		if okA && okB && (p.Kind == "gateway" || p.Kind == "centrifugo") {
			heap += b.heap - a.heap
			goroutines += b.goroutines - a.goroutines
			scraped++
		}
	}
	if scraped > 0 {
		r.Add("connections: Go heap in use per idle socket, socket servers", "KiB", heap/float64(cfg.Sockets)/1024)
		r.Add("connections: goroutines per idle socket, socket servers", "", goroutines/float64(cfg.Sockets))
	}
	r.Note("connections: %s: RSS growth summed over %d processes after %v idle; %d generator processes, %d source addresses each", sys.Name(), len(procs), cfg.Settle, cfg.Generators, cfg.Sources)
	return nil
}

// rss is each process's resident set in bytes, by name.
func rss(procs []Process) map[string]float64 {
	out := map[string]float64{}
	for _, p := range procs {
		if s, err := procStat(p.PID); err == nil {
			out[p.Name] = float64(s.ResidentMemory())
		}
	}
	return out
}

// sourceIP is the i-th source address: 127.0.0.2, 127.0.0.3, …
func sourceIP(i int) net.IP { return net.IPv4(127, 0, 0, byte(2+i%250)) }

// sourceClient is an HTTP client dialing from ip.
func sourceClient(ip net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// spreadDevices makes a system's devices dial from g.Sources source addresses,
// in g.N generator processes if more than one.
func spreadDevices(sys System, g Generators) {
	var clients []*http.Client
	if g.N <= 1 {
		for i := range g.Sources {
			clients = append(clients, sourceClient(sourceIP(i)))
		}
	}
	switch s := sys.(type) {
	case *Target:
		s.Clients, s.Generators = clients, g
	case *Centrifugo:
		s.Clients, s.Generators = clients, g
	}
}
