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
	Sockets  int           // default 5000
	Settle   time.Duration // how long the sockets idle before memory is read (default 60 s)
	Sources  int           // source addresses (default 4)
	Progress io.Writer
}

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
	if cfg.Sockets > maxSocketsPerProcess {
		return fmt.Errorf("connections: %d sockets is more than one generator process holds here (%d; several processes are not built yet)", cfg.Sockets, maxSocketsPerProcess)
	}
	setSources(sys, sourceClients(cfg.Sources))
	procs := sys.Procs()
	rss0, rt0 := rss(procs), goRuntimes(procs)
	run := runID()
	users := userNames("bench-cn-"+run, cfg.Sockets)
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	start := time.Now()
	if err := sys.Connect(ctx, cctx, users, func(string, []byte) {}); err != nil {
		return err
	}
	took := time.Since(start)
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
	r.Note("connections: %s: RSS growth summed over %d processes after %v idle, from %d source addresses", sys.Name(), len(procs), cfg.Settle, cfg.Sources)
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

// sourceClients are HTTP clients dialing from 127.0.0.2, 127.0.0.3, …
func sourceClients(n int) []*http.Client {
	out := make([]*http.Client, n)
	for i := range out {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%250))}, Timeout: 10 * time.Second}
		out[i] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
	}
	return out
}

// setSources makes a system's devices dial from the source clients.
func setSources(sys System, clients []*http.Client) {
	switch s := sys.(type) {
	case *Target:
		s.Clients = clients
	case *Centrifugo:
		s.Clients = clients
	}
}
