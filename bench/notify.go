package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// NotifyConfig is the notify scenario (and its batch and fan-in forms):
// Users connected devices, and notifications posted open-loop — the k-th
// is due at start + k/rate, whatever the answers — so latency counts from
// the scheduled send time and a slow server cannot slow the offered load.
type NotifyConfig struct {
	Users    int           // connected users, one device each (default 1000)
	Rate     float64       // notifications per second; 0: find the highest sustainable rate
	Duration time.Duration // of each step (default 10 s)
	Payload  int           // bytes of each notification's data (default 200)
	Batch    int           // notifications per request (default 1; POST /v1/notify/batch above 1)
	FanIn    int           // if > 0, every notification goes to one of only this many users
	MaxRate  float64       // the search's upper bound (default 20,000/s)
	MaxP99   time.Duration // a sustainable step's p99 bound (default 100 ms)
	Senders  int           // concurrent requests at most (default 512)
	Progress io.Writer
}

func (c *NotifyConfig) defaults() {
	c.Users = cmp.Or(c.Users, 1000)
	c.Duration = cmp.Or(c.Duration, 10*time.Second)
	c.Payload = cmp.Or(c.Payload, 200)
	c.Batch = cmp.Or(c.Batch, 1)
	c.MaxRate = cmp.Or(c.MaxRate, 20000)
	c.MaxP99 = cmp.Or(c.MaxP99, 100*time.Millisecond)
	c.Senders = cmp.Or(c.Senders, 512)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.FanIn > 0 {
		c.Users = min(c.Users, c.FanIn)
	}
}

// Step is one rate's result.
type Step struct {
	Offered, Accepted, Delivered float64 // per second
	Errors                       int     // requests not answered 202 (items, for batches)
	OnSchedule                   float64 // fraction of requests sent within 1 ms of their time
	P50, P90, P99, P999, Max     time.Duration
	ServerCores                  float64 // CPU of every process of the system, in cores
	ServerCPUPerDelivery         time.Duration
	GeneratorCores               float64
	ByKind                       map[string]float64 // server cores by process kind
}

// sustainable says whether the step kept up: the generator sent on time
// (else the generator, not the server, was measured), nearly everything
// offered was accepted and delivered, and the p99 stayed within bound.
func (s Step) sustainable(maxP99 time.Duration) (bool, string) {
	switch {
	case s.OnSchedule < 0.99:
		return false, fmt.Sprintf("the generator sent only %.1f%% within 1 ms of schedule", 100*s.OnSchedule)
	case s.Errors > 0 && float64(s.Errors) > 0.001*s.Offered:
		return false, fmt.Sprintf("%d errors", s.Errors)
	case s.Delivered < 0.99*s.Offered:
		return false, fmt.Sprintf("delivered %.0f/s of %.0f/s", s.Delivered, s.Offered)
	case s.P99 > maxP99:
		return false, fmt.Sprintf("p99 %v over %v", s.P99, maxP99)
	}
	return true, ""
}

// notifyRun is the connected users and what they received.
type notifyRun struct {
	cfg   NotifyConfig
	sys   System
	run   string
	users []string
	http  *http.Client
	pad   string

	// The current step: its number, and each notification's due time.
	step      atomic.Int64
	due       atomic.Pointer[[]int64]
	mu        sync.Mutex
	hist      *hdrhistogram.Histogram
	delivered atomic.Int64
}

// Notify runs the scenario into r: at cfg.Rate, or the highest sustainable
// rate found by bisection to within 5% (each probe one step).
func Notify(ctx context.Context, sys System, cfg NotifyConfig, r *Report) error {
	cfg.defaults()
	n := &notifyRun{cfg: cfg, sys: sys, run: runID(), pad: strings.Repeat("x", max(0, cfg.Payload-40)),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Senders, MaxConnsPerHost: cfg.Senders}}}
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := n.connect(ctx, cctx); err != nil {
		return err
	}
	name := "notify"
	switch {
	case cfg.Batch > 1:
		name = fmt.Sprintf("batch (%d per request)", cfg.Batch)
	case cfg.FanIn > 0:
		name = fmt.Sprintf("fan-in (%d users)", cfg.FanIn)
	}
	if cfg.Rate > 0 {
		s := n.runStep(ctx, cfg.Rate)
		n.report(r, name, s)
		if ok, why := s.sustainable(cfg.MaxP99); !ok {
			r.Note("%s at %.0f/s did not keep up: %s", name, cfg.Rate, why)
		}
		return ctx.Err()
	}
	// Double from 1000/s while steps keep up, then bisect between the last
	// that kept up (lo) and the first that did not (hi), to within 5%.
	var best Step
	lo, hi := 0.0, 0.0
	try := func(rate float64) bool {
		s := n.runStep(ctx, rate)
		ok, why := s.sustainable(cfg.MaxP99)
		if !ok && s.OnSchedule < 0.99 && ctx.Err() == nil {
			// The generator, not the server, fell behind: on a shared
			// machine a stall of this process does that at any rate, so
			// the step counts as failed only if a second run of it
			// falls behind too.
			fmt.Fprintf(cfg.Progress, "bench %s: %.0f/s: %s; running the step again\n", name, rate, why)
			s = n.runStep(ctx, rate)
			ok, why = s.sustainable(cfg.MaxP99)
		}
		if ok {
			why, lo, best = "kept up", rate, s
		} else {
			hi = rate
		}
		fmt.Fprintf(cfg.Progress, "bench %s: %.0f/s: p99 %v, delivered %.0f/s, server %.2f cores, generator %.2f: %s\n",
			name, rate, s.P99, s.Delivered, s.ServerCores, s.GeneratorCores, why)
		return ok
	}
	for rate := min(1000, cfg.MaxRate); ctx.Err() == nil && try(rate) && rate < cfg.MaxRate; rate = min(2*rate, cfg.MaxRate) {
	}
	for steps := 0; hi > 0 && hi-lo > 0.05*max(lo, 1) && steps < 12 && ctx.Err() == nil; steps++ {
		try((lo + hi) / 2)
	}
	if lo == 0 {
		r.Note("%s: no rate from %.0f/s down was sustainable", name, min(1000, cfg.MaxRate))
		return ctx.Err()
	}
	n.report(r, name+" at the highest sustainable rate", best)
	if hi == 0 {
		r.Note("%s: kept up at the upper bound, %.0f/s (--max-rate)", name, cfg.MaxRate)
	}
	return ctx.Err()
}

func (n *notifyRun) connect(ctx, cctx context.Context) error {
	n.users = userNames("bench-"+n.run, n.cfg.Users)
	if err := n.sys.Connect(ctx, cctx, n.users, n.onData); err != nil {
		return err
	}
	fmt.Fprintf(n.cfg.Progress, "bench: %s: %d users connected\n", n.sys.Name(), n.cfg.Users)
	return nil
}

// onData records a notification of the current step: its latency from
// its due time.
func (n *notifyRun) onData(_ string, data []byte) {
	var d struct {
		BID string `json:"bid"`
	}
	if json.Unmarshal(data, &d) != nil {
		return
	}
	// bid: b.<run>.<step>.<k>
	parts := strings.Split(d.BID, ".")
	if len(parts) != 4 || parts[1] != n.run || parts[2] != strconv.FormatInt(n.step.Load(), 10) {
		return
	}
	k, err := strconv.Atoi(parts[3])
	due := n.due.Load()
	if err != nil || due == nil || k < 0 || k >= len(*due) {
		return
	}
	lat := time.Now().UnixNano() - atomic.LoadInt64(&(*due)[k])
	n.delivered.Add(1)
	n.mu.Lock()
	n.hist.RecordValue(max(lat/1000, 1)) // µs
	n.mu.Unlock()
}

// runStep offers rate notifications per second for the step's duration,
// then waits up to 5 s for the deliveries.
func (n *notifyRun) runStep(ctx context.Context, rate float64) Step {
	step := n.step.Add(1)
	total := int(rate * n.cfg.Duration.Seconds())
	requests := (total + n.cfg.Batch - 1) / n.cfg.Batch
	due := make([]int64, total)
	n.mu.Lock()
	n.hist = hdrhistogram.New(1, 60_000_000, 3) // 1 µs to 60 s
	n.mu.Unlock()
	n.delivered.Store(0)
	n.due.Store(&due)
	var accepted, errs, onTime atomic.Int64
	jobs := make(chan int, n.cfg.Senders)
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	reqEvery := float64(n.cfg.Batch) / rate * float64(time.Second)
	for range n.cfg.Senders {
		wg.Go(func() {
			for q := range jobs {
				at := start.Add(time.Duration(float64(q) * reqEvery))
				now := time.Now()
				if now.Sub(at) <= time.Millisecond {
					onTime.Add(1)
				}
				first, last := q*n.cfg.Batch, min(total, (q+1)*n.cfg.Batch)
				for k := first; k < last; k++ {
					atomic.StoreInt64(&due[k], at.UnixNano())
				}
				ok := n.post(step, first, last)
				accepted.Add(int64(ok))
				errs.Add(int64(last - first - ok))
			}
		})
	}
	procs := n.sys.Procs()
	cpu0, self0, t0 := cpuTimes(procs), selfCPU(), time.Now()
	for q := 0; q < requests && ctx.Err() == nil; q++ {
		waitUntil(start.Add(time.Duration(float64(q) * reqEvery)))
		jobs <- q
	}
	close(jobs)
	wg.Wait()
	for end := time.Now().Add(5 * time.Second); n.delivered.Load() < accepted.Load() && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0).Seconds()
	cpu1, self1 := cpuTimes(procs), selfCPU()
	secs := n.cfg.Duration.Seconds()
	s := Step{Offered: rate, Accepted: float64(accepted.Load()) / secs, Delivered: float64(n.delivered.Load()) / secs,
		Errors: int(errs.Load()), OnSchedule: float64(onTime.Load()) / float64(max(requests, 1)),
		ServerCores: cpuUsed(cpu0, cpu1) / took, GeneratorCores: (self1 - self0) / took, ByKind: map[string]float64{}}
	for _, p := range procs {
		if a, ok := cpu1[p.Name]; ok {
			s.ByKind[p.Kind] += (a - cpu0[p.Name]) / took
		}
	}
	if d := n.delivered.Load(); d > 0 {
		s.ServerCPUPerDelivery = time.Duration(cpuUsed(cpu0, cpu1) / float64(d) * float64(time.Second))
	}
	n.mu.Lock()
	us := func(q float64) time.Duration { return time.Duration(n.hist.ValueAtQuantile(q)) * time.Microsecond }
	s.P50, s.P90, s.P99, s.P999, s.Max = us(50), us(90), us(99), us(99.9), time.Duration(n.hist.Max())*time.Microsecond
	n.mu.Unlock()
	return s
}

// post sends notifications first..last-1 (one request) and returns how
// many were accepted.
func (n *notifyRun) post(step int64, first, last int) int {
	var items []Item
	for k := first; k < last; k++ {
		id := fmt.Sprintf("b.%s.%d.%d", n.run, step, k)
		items = append(items, Item{User: n.users[k%len(n.users)], ID: id, Data: map[string]any{"bid": id, "pad": n.pad}})
	}
	return n.sys.Notify(n.http, first, items)
}

func (n *notifyRun) report(r *Report, name string, s Step) {
	r.Add(name+": offered", "/s", s.Offered)
	r.Add(name+": accepted", "/s", s.Accepted)
	r.Add(name+": delivered", "/s", s.Delivered)
	r.Add(name+": errors", "", float64(s.Errors))
	for _, p := range []struct {
		q string
		d time.Duration
	}{{"p50", s.P50}, {"p90", s.P90}, {"p99", s.P99}, {"p99.9", s.P999}, {"max", s.Max}} {
		r.Add(name+": "+p.q+" POST→socket", "ms", float64(p.d.Microseconds())/1000)
	}
	r.Add(name+": server CPU", "cores", s.ServerCores)
	r.Add(name+": server CPU per delivered notification", "µs", float64(s.ServerCPUPerDelivery.Nanoseconds())/1000)
	r.Add(name+": generator CPU", "cores", s.GeneratorCores)
	r.Add(name+": requests sent within 1 ms of schedule", "%", 100*s.OnSchedule)
	var kinds []string
	for k, v := range s.ByKind {
		kinds = append(kinds, fmt.Sprintf("%s %.2f", k, v))
	}
	r.Note("%s: server cores by kind: %s", name, strings.Join(kinds, ", "))
}

// waitUntil returns at t, give or take microseconds. Go's timers wake up to
// a millisecond late (the runtime's poller waits in whole milliseconds),
// which alone would put a sleeping generator off its schedule: it sleeps
// until a millisecond and a half before t, then spins, yielding, for the
// rest. Above about 700 requests a second it therefore spins all the time,
// which costs the generator about one core (reported as its CPU).
func waitUntil(t time.Time) {
	if d := time.Until(t) - 1500*time.Microsecond; d > 0 {
		time.Sleep(d)
	}
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}
