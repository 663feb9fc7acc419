package bench

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"
)

// Target is the cluster under test: where to publish and connect, the
// secrets to do it with, and the processes whose CPU and memory it costs.
type Target struct {
	Dispatchers []string // base URLs
	APIKey      string
	TokenSecret string
	// Processes are every process the system needs (gateways,
	// dispatchers, NATS, Consul), by name, with their kind.
	Processes []Process
	// Clients, if any, are the HTTP clients devices connect with, in turn
	// (the connections scenario spreads them over source addresses).
	Clients []*http.Client
	// Generators, if more than one, hold the devices in generator
	// processes of their own instead of this one.
	Generators Generators

	failed atomic.Int64 // sockets that ended or could not be opened
}

// Process is one process of the system under test. Metrics, if set, is
// its Prometheus /metrics URL.
type Process struct {
	Name, Kind string
	PID        int
	Metrics    string
}

// cpuTimes is the CPU seconds (user + system) each process has used so
// far, by name; a process that cannot be read is left out.
func cpuTimes(procs []Process) map[string]float64 {
	out := map[string]float64{}
	for _, p := range procs {
		if s, err := procStat(p.PID); err == nil {
			out[p.Name] = s.CPUTime()
		}
	}
	return out
}

func procStat(pid int) (procfs.ProcStat, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
}

// selfCPU is this process's CPU seconds so far.
func selfCPU() float64 {
	s, err := procStat(os.Getpid())
	if err != nil {
		return 0
	}
	return s.CPUTime()
}

// cpuUsed is the CPU seconds used between two readings, summed over the
// processes in both.
func cpuUsed(before, after map[string]float64) float64 {
	var sum float64
	for name, a := range after {
		if b, ok := before[name]; ok {
			sum += a - b
		}
	}
	return sum
}

// runID names one run's users and notifications apart from another's.
func runID() string {
	return strings.ToLower(strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36))
}
