package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/heraldpush/herald/gateway/wire"
)

// postJSON POSTs body as JSON to path on a dispatcher and decodes a 2xx
// answer into out.
func (t *Target) postJSON(hc *http.Client, i int, path string, body, out any) error {
	resp, err := t.request(hc, i, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// post POSTs body as JSON to path on a dispatcher and returns the status.
func (t *Target) post(hc *http.Client, i int, path string, body any) (int, error) {
	resp, err := t.request(hc, i, path, body)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// request POSTs body as JSON to path on dispatcher i (round robin) with
// the API key.
func (t *Target) request(hc *http.Client, i int, path string, body any) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, t.Dispatchers[i%len(t.Dispatchers)]+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.APIKey)
	req.Header.Set("Content-Type", "application/json")
	return hc.Do(req)
}

// userNames are n user IDs prefix-0, prefix-1, …
func userNames(prefix string, n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return users
}

// BroadcastConfig is the broadcast scenario: Sockets connected devices,
// and Rate broadcasts a second for Duration, each to every socket.
type BroadcastConfig struct {
	Sockets  int           // default 1000
	Rate     float64       // broadcasts per second (default 10)
	Duration time.Duration // default 10 s
	Progress io.Writer
}

// Broadcast measures deliveries per second and the latency from each
// broadcast's scheduled time to every socket's frame.
func Broadcast(ctx context.Context, sys System, cfg BroadcastConfig, r *Report) error {
	cfg.Sockets = cmp.Or(cfg.Sockets, 1000)
	cfg.Rate = cmp.Or(cfg.Rate, 10)
	cfg.Duration = cmp.Or(cfg.Duration, 10*time.Second)
	run := runID()
	var (
		mu        sync.Mutex
		hist      = hdrhistogram.New(1, 60_000_000, 3)
		delivered atomic.Int64
	)
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	users := userNames("bench-bc-"+run, cfg.Sockets)
	err := sys.Connect(ctx, cctx, users, func(_ string, data []byte) {
		var d struct {
			Run string `json:"run"`
			Due int64  `json:"due"`
		}
		if json.Unmarshal(data, &d) != nil || d.Run != run {
			return
		}
		delivered.Add(1)
		lat := time.Now().UnixNano() - d.Due
		mu.Lock()
		hist.RecordValue(max(lat/1000, 1))
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(progress(cfg.Progress), "bench broadcast: %d sockets connected\n", cfg.Sockets)
	hc := &http.Client{Timeout: 30 * time.Second}
	n := int(cfg.Rate * cfg.Duration.Seconds())
	var errs atomic.Int64
	var wg sync.WaitGroup
	cpu0, t0 := cpuTimes(sys.Procs()), time.Now()
	start := time.Now().Add(50 * time.Millisecond)
	for k := 0; k < n && ctx.Err() == nil; k++ {
		due := start.Add(time.Duration(float64(k) / cfg.Rate * float64(time.Second)))
		waitUntil(due)
		wg.Go(func() {
			if !sys.Broadcast(hc, k, users, map[string]any{"run": run, "due": due.UnixNano()}) {
				errs.Add(1)
			}
		})
	}
	wg.Wait()
	want := int64(n) * int64(cfg.Sockets)
	for end := time.Now().Add(5 * time.Second); delivered.Load() < want && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0).Seconds()
	cpu := cpuUsed(cpu0, cpuTimes(sys.Procs()))
	r.Add("broadcast: sockets", "", float64(cfg.Sockets))
	r.Add("broadcast: broadcasts", "/s", cfg.Rate)
	r.Add("broadcast: deliveries", "/s", float64(delivered.Load())/cfg.Duration.Seconds())
	r.Add("broadcast: delivered of sent × sockets", "%", 100*float64(delivered.Load())/float64(max(want, 1)))
	r.Add("broadcast: errors", "", float64(errs.Load()))
	mu.Lock()
	for _, q := range []float64{50, 99} {
		r.Add(fmt.Sprintf("broadcast: p%g POST→socket", q), "ms", float64(hist.ValueAtQuantile(q))/1000)
	}
	mu.Unlock()
	r.Add("broadcast: server CPU", "cores", cpu/took)
	if d := delivered.Load(); d > 0 {
		r.Add("broadcast: server CPU per delivery", "µs", cpu/float64(d)*1e6)
	}
	return nil
}

// ReplayConfig is the replay scenario: Users users with Stored
// notifications each in their logs connect fresh devices (since 0).
type ReplayConfig struct {
	Users    int // default 1000
	Stored   int // notifications per user (default 100, the default retention)
	Progress io.Writer
}

// Replay stores the notifications first (no device connected), then
// connects every user at once and measures, per user, the time from the
// start of its connect until it has received all of them.
func Replay(ctx context.Context, t *Target, cfg ReplayConfig, r *Report) error {
	cfg.Users = cmp.Or(cfg.Users, 1000)
	cfg.Stored = cmp.Or(cfg.Stored, 100)
	run := runID()
	prefix := "bench-rp-" + run
	hc := &http.Client{Timeout: 30 * time.Second}
	var errs atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range cfg.Users {
		for k := 0; k < cfg.Stored; k += 100 {
			var items []map[string]any
			for j := k; j < min(k+100, cfg.Stored); j++ {
				items = append(items, map[string]any{"user": fmt.Sprintf("%s-%d", prefix, i), "data": map[string]int{"j": j}})
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if status, err := t.post(hc, i, "/v1/notify/batch", map[string]any{"notifications": items}); err != nil || status != http.StatusAccepted {
					errs.Add(1)
				}
			})
		}
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if errs.Load() > 0 {
		return fmt.Errorf("storing the replay's notifications: %d batches failed", errs.Load())
	}
	fmt.Fprintf(progress(cfg.Progress), "bench replay: %d users × %d notifications stored\n", cfg.Users, cfg.Stored)
	var (
		mu     sync.Mutex
		got    = map[string]int{}
		caught []time.Duration
	)
	start := time.Now()
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	cpu0 := cpuTimes(t.Processes)
	if err := t.devices(ctx, cctx, userNames(prefix, cfg.Users), func(user string, f wire.ServerFrame) {
		if f.Type != wire.TypeNotification {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if got[user]++; got[user] == cfg.Stored {
			caught = append(caught, time.Since(start))
		}
	}, nil); err != nil {
		return err
	}
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end) && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		done := len(caught) == cfg.Users
		mu.Unlock()
		if done {
			break
		}
	}
	took := time.Since(start)
	cpu := cpuUsed(cpu0, cpuTimes(t.Processes))
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(caught)
	q := func(p float64) float64 { return quantileMS(caught, p) }
	r.Add("replay: users caught up", "", float64(len(caught)))
	r.Add("replay: time until caught up p50", "ms", q(.5))
	r.Add("replay: time until caught up p99", "ms", q(.99))
	r.Add("replay: time until all caught up", "ms", q(1))
	r.Add("replay: notifications replayed", "/s", float64(len(caught)*cfg.Stored)/took.Seconds())
	r.Add("replay: server CPU", "cores", cpu/took.Seconds())
	r.Note("replay: %d users each with %d stored notifications connect at once (since 0); time from the connects' start", cfg.Users, cfg.Stored)
	if len(caught) < cfg.Users {
		return fmt.Errorf("replay: only %d of %d users caught up within 2 minutes", len(caught), cfg.Users)
	}
	return nil
}

func progress(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// quantileMS is the p-quantile of sorted durations, in milliseconds; 0 if
// there are none.
func quantileMS(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(p*float64(len(sorted))))].Microseconds()) / 1000
}
