package inbox_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
)

// BenchmarkAppend measures sequential appends (one at a time, each waiting
// for its PubAck) of 200-byte payloads, to one user's log and round-robin
// to 1,000 users' logs, on a single in-process server (R1) and a 3-node
// in-process cluster (R3), over loopback TCP, with every user's head
// cached as in a running dispatcher. Besides ns/op it reports the
// latency's p50 and p99 in microseconds and the appends per second. Run it
// with, e.g.:
//
//	go test -run '^$' -bench Append -benchtime 5000x ./gateway/inbox/
func BenchmarkAppend(b *testing.B) {
	payload := []byte(`"` + strings.Repeat("x", 198) + `"`)
	for _, replicas := range []int{1, 3} {
		var urls string
		if replicas == 1 {
			urls = inboxtest.Run(b).URL()
		} else {
			_, urls = inboxtest.RunCluster(b, 3)
		}
		l := ensure(b, appendConn(b, urls), inbox.Config{Replicas: replicas})
		for _, users := range []int{1, 1000} {
			names := make([]string, users)
			for i := range names {
				names[i] = "user-" + strconv.Itoa(i)
				// Warm: a running dispatcher has its users' heads cached,
				// so an append is one round trip.
				mustAppend(b, l, names[i], "warm")
			}
			run := 0
			b.Run("R"+strconv.Itoa(replicas)+"/users="+strconv.Itoa(users), func(b *testing.B) {
				run++
				lat := make([]time.Duration, 0, b.N)
				prefix := strconv.Itoa(run) + "-"
				b.ResetTimer()
				for i := range b.N {
					start := time.Now()
					if _, err := l.Append(ctx, names[i%users], prefix+strconv.Itoa(i), payload); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2])/1e3, "p50-us")
				b.ReportMetric(float64(lat[len(lat)*99/100])/1e3, "p99-us")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}
