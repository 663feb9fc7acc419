package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/heraldpush/herald/ring"
)

// RingConfig is the ring scenario: Keys keys placed on rings of each size.
type RingConfig struct {
	Sizes    []int // gateways per ring (default 10, 100, 1000)
	Keys     int   // keys placed (default 10,000,000)
	Progress io.Writer
}

// Ring simulates placement: for each ring size, how evenly the keys spread
// (coefficient of variation and max/mean of the members' key counts), how
// many move when one member joins and when one leaves (against the ideal
// 1/(N+1) and 1/N), and how long a lookup takes. It is pure computation,
// bounded by Keys × sizes × 3 lookups.
func Ring(cfg RingConfig, r *Report) error {
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = []int{10, 100, 1000}
	}
	if cfg.Keys == 0 {
		cfg.Keys = 10_000_000
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	for _, n := range cfg.Sizes {
		base, err := ringOf(n, "")
		if err != nil {
			return err
		}
		joined, err := ringOf(n, fmt.Sprintf("gw-%d", n))
		if err != nil {
			return err
		}
		left, err := ringOf(n-1, "")
		if err != nil {
			return err
		}
		counts := map[string]int{}
		movedJoin, movedLeave := 0, 0
		buf := make([]byte, 0, 32)
		for i := range cfg.Keys {
			buf = strconv.AppendInt(append(buf[:0], "user-"...), int64(i), 10)
			key := string(buf)
			o, _ := base.Owner(key)
			counts[o.ID]++
			if j, _ := joined.Owner(key); j.ID != o.ID {
				movedJoin++
			}
			if l, _ := left.Owner(key); l.ID != o.ID {
				movedLeave++
			}
			if i%2_000_000 == 0 {
				fmt.Fprintf(cfg.Progress, "bench ring: %d gateways, %d of %d keys\n", n, i, cfg.Keys)
			}
		}
		cv, maxMean := spread(counts, n, cfg.Keys)
		name := fmt.Sprintf("%d gateways: ", n)
		r.Add(name+"balance CoV", "%", 100*cv)
		r.Add(name+"max/mean keys", "×", maxMean)
		r.Add(name+"keys moved by a join", "%", 100*float64(movedJoin)/float64(cfg.Keys))
		r.Add(name+"keys moved by a leave", "%", 100*float64(movedLeave)/float64(cfg.Keys))
		r.Add(name+"lookup", "ns", lookupNS(base, 1_000_000))
		r.Note("%d gateways: a join ideally moves %.3f%% of the keys, a leave %.3f%%", n, 100/float64(n+1), 100/float64(n))
	}
	r.Note("%d keys \"user-0\"… per ring size; %d vnodes per gateway of weight 1", cfg.Keys, ring.DefaultVNodes)
	return nil
}

// ringOf is a ring of gateways gw-0 … gw-(n-1), plus extra if not "".
func ringOf(n int, extra string) (*ring.Ring, error) {
	var ms []ring.Member
	for i := range n {
		id := fmt.Sprintf("gw-%d", i)
		ms = append(ms, ring.Member{ID: id, Weight: 1, URL: "ws://" + id + "/ws"})
	}
	if extra != "" {
		ms = append(ms, ring.Member{ID: extra, Weight: 1, URL: "ws://" + extra + "/ws"})
	}
	return ring.New(0, ms)
}

// spread is the coefficient of variation and max/mean of n members' counts
// (a member with no keys counts as 0).
func spread(counts map[string]int, n, keys int) (cv, maxMean float64) {
	mean := float64(keys) / float64(n)
	var sq float64
	most := 0
	for _, c := range counts {
		d := float64(c) - mean
		sq += d * d
		most = max(most, c)
	}
	sq += float64(n-len(counts)) * mean * mean
	return math.Sqrt(sq/float64(n)) / mean, float64(most) / mean
}

// lookupNS is the mean time of one Owner call over n precomputed keys.
func lookupNS(r *ring.Ring, n int) float64 {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	start := time.Now()
	for _, k := range keys {
		r.Owner(k)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}
