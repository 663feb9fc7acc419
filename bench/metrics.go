package bench

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// goRuntime is what a Go server's Prometheus /metrics says of its runtime:
// the heap in use and the goroutines. Both herald's gateways and Centrifugo
// export them (client_golang's Go collector).
type goRuntime struct {
	heap, goroutines float64
}

var metricsClient = &http.Client{Timeout: 10 * time.Second}

// readGoRuntime scrapes url (a /metrics endpoint).
func readGoRuntime(url string) (goRuntime, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return goRuntime{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return goRuntime{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return goRuntime{}, fmt.Errorf("%s: %w", url, err)
	}
	gauge := func(name string) (float64, error) {
		f, ok := fams[name]
		if !ok || len(f.GetMetric()) == 0 {
			return 0, fmt.Errorf("%s has no %s", url, name)
		}
		return f.GetMetric()[0].GetGauge().GetValue(), nil
	}
	var g goRuntime
	if g.heap, err = gauge("go_memstats_heap_inuse_bytes"); err != nil {
		return goRuntime{}, err
	}
	if g.goroutines, err = gauge("go_goroutines"); err != nil {
		return goRuntime{}, err
	}
	return g, nil
}

// goRuntimes scrapes every process that has a /metrics endpoint, by name;
// one that cannot be read is left out.
func goRuntimes(procs []Process) map[string]goRuntime {
	out := map[string]goRuntime{}
	for _, p := range procs {
		if p.Metrics == "" {
			continue
		}
		if g, err := readGoRuntime(p.Metrics); err == nil {
			out[p.Name] = g
		}
	}
	return out
}
