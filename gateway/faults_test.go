package gateway_test

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/gateway/token"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// faultyDoorbells drops 20% of doorbells, duplicates 20%, and delays 30% by
// up to 300ms, which also reorders them.
type faultyDoorbells struct {
	mu      sync.Mutex // guards rng
	rng     *rand.Rand
	pending sync.WaitGroup
	stopped atomic.Bool

	dropped, duplicated, delayed atomic.Int64
}

func newFaultyDoorbells(seed uint64) *faultyDoorbells {
	return &faultyDoorbells{rng: rand.New(rand.NewPCG(seed, seed))}
}

func (f *faultyDoorbells) wrap(next func(*nats.Msg)) func(*nats.Msg) {
	return func(m *nats.Msg) {
		if f.stopped.Load() {
			next(m)
			return
		}
		f.mu.Lock()
		r, d := f.rng.Float64(), time.Duration(f.rng.Int64N(int64(300*time.Millisecond)))
		f.mu.Unlock()
		later := func(d time.Duration) {
			f.pending.Add(1)
			time.AfterFunc(d, func() { defer f.pending.Done(); next(m) })
		}
		switch {
		case r < 0.2:
			f.dropped.Add(1)
		case r < 0.4:
			f.duplicated.Add(1)
			next(m)
			later(d)
		case r < 0.7:
			f.delayed.Add(1)
			later(d)
		default:
			next(m)
		}
	}
}

// stop waits for delayed doorbells and passes the rest straight through.
func (f *faultyDoorbells) stop() {
	f.stopped.Store(true)
	f.pending.Wait()
}

// scrape reads one sample from a gateway's /metrics: name with its labels,
// exactly as exposed (e.g. `herald_log_reads_total{reason="repair"}`).
func scrape(wsURL, name string) (float64, bool) {
	admin, ok := adminURLs.Load(wsURL)
	if !ok {
		return 0, false
	}
	resp, err := http.Get(admin.(string) + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// storedMessages counts the messages in the log stream.
func storedMessages(c *cluster) (uint64, error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return 0, err
	}
	st, err := js.Stream(context.Background(), c.log.Config().Stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(context.Background())
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

func signWith(secret, user string, ttl time.Duration) (string, error) {
	return token.Sign([]byte(secret), user, ttl)
}
