package bench

import (
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestReadGoRuntime: the heap and goroutines come from a real Go
// collector's /metrics, and an endpoint without them is an error rather
// than a zero.
func TestReadGoRuntime(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	g, err := readGoRuntime(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if g.heap <= 0 || g.goroutines < 1 || g.goroutines > float64(runtime.NumGoroutine()+50) {
		t.Fatalf("read %+v: want a positive heap and about this process's %d goroutines", g, runtime.NumGoroutine())
	}
	empty := httptest.NewServer(promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}))
	defer empty.Close()
	if _, err := readGoRuntime(empty.URL); err == nil {
		t.Fatal("an endpoint without Go metrics read as zeros")
	}
}
