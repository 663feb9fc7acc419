package dispatcher

import (
	"cmp"
	"fmt"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the dispatcher's Prometheus metrics. Counters the log and the
// watcher keep themselves are read at scrape time (CounterFunc), so there is
// one source of truth for each.
type metrics struct {
	notifications *prometheus.CounterVec // by result: routed, stored or an error code
	duplicates    prometheus.Counter
	doorbells     *prometheus.CounterVec // by result: sent, failed
	// The per-notification series, resolved once.
	doorbellSent, doorbellFailed prometheus.Counter
	waits                        *prometheus.CounterVec // by outcome: delivered, offline, timeout
	graceDoorbells               prometheus.Counter
	connectHolds                 *prometheus.CounterVec
	broadcasts                   *prometheus.CounterVec // by result: sent, failed
	rateLimited                  prometheus.Counter
	requests                     *prometheus.CounterVec   // by route and code
	panics                       *prometheus.CounterVec   // by where
	latency                      *prometheus.HistogramVec // by route
}

// newMetrics registers the metrics on reg. It fails if reg already has
// them (two dispatchers given one registry).
func newMetrics(d *Dispatcher, reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_notifications_total",
			Help: "Notifications handled (single or batch item), by result: routed, stored, or the error code.",
		}, []string{"result"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_notification_duplicates_total",
			Help: "Notifications whose id was already in the log (answered with the original seq).",
		}),
		doorbells: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_doorbells_total",
			Help: "Doorbells rung on gateways, by result (sent, failed). Lost doorbells are repaired by the gateways' anti-entropy.",
		}, []string{"result"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_delivery_waits_total",
			Help: "wait=delivered requests by outcome: delivered, offline, timeout.",
		}, []string{"outcome"}),
		graceDoorbells: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_grace_doorbells_total",
			Help: "Notifications rung on both the previous and the new owner, in the grace window after a ring change.",
		}),
		connectHolds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_connect_holds_total",
			Help: "/v1/connect requests held because the client could not reach the owner, by how the hold ended: moved (the ring named another owner), alive (the owner answered its probe), unknown (no NATS to probe with), timeout, gone (the client left), closing (shutdown), full (too many held; answered at once).",
		}, []string{"outcome"}),
		broadcasts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_broadcasts_total",
			Help: "Live-only broadcasts, by result (sent, failed).",
		}, []string{"result"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rate_limited_total",
			Help: "Requests refused by an API key's rate limit.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_panics_total",
			Help: "Panics recovered, by where they happened (http: a request handler, answered 500).",
		}, []string{"where"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
	}
	for _, r := range []string{"routed", "stored"} {
		m.notifications.WithLabelValues(r)
	}
	m.doorbellSent, m.doorbellFailed = m.doorbells.WithLabelValues("sent"), m.doorbells.WithLabelValues("failed")
	for _, r := range []string{"sent", "failed"} {
		m.broadcasts.WithLabelValues(r)
	}
	status := func() consul.Status { return d.watcher.Status() }
	bool01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	cs := []prometheus.Collector{
		m.notifications, m.duplicates, m.doorbells, m.waits, m.graceDoorbells, m.connectHolds, m.broadcasts, m.rateLimited, m.requests, m.panics, m.latency,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_append_conflicts_total",
			Help: "Appends that found another message at the user's head (another writer, or a stale cached head).",
		}, func() float64 { return float64(d.logStats().Conflicts) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_log_epochs_recorded_total",
			Help: "New epochs this dispatcher recorded because the log went backwards (it lost an acknowledged tail).",
		}, func() float64 { return float64(d.logStats().NewEpochs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_append_retries_total",
			Help: "Append attempts beyond the first.",
		}, func() float64 { return float64(d.logStats().Retries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_appends_in_flight",
			Help: "Appends running now: waiting for their user's earlier append, or retrying (at most the log's MaxAppends).",
		}, func() float64 { return float64(d.logStats().InFlight) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_appends_refused_busy_total",
			Help: "Appends refused at once (503 unavailable) because the log's MaxAppends were in flight already.",
		}, func() float64 { return float64(d.logStats().Busy) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_appends_refused_nats_down_total",
			Help: "Appends that failed at once because the NATS connection had been down for more than the log's MaxDown (2s by default).",
		}, func() float64 { return float64(d.logStats().Down) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_connect_held",
			Help: "/v1/connect requests being held now.",
		}, func() float64 { return float64(d.held.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_grace_extended_gateways",
			Help: "Previous owners whose grace window is extended now: they report moves still pending, or did within the last seconds.",
		}, func() float64 {
			if rs := d.rings.Load(); rs != nil {
				return float64(rs.extendedCount(time.Now()))
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ring_members",
			Help: "Gateways in this dispatcher's ring.",
		}, func() float64 { return float64(d.Ring().Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_ring_changes_total",
			Help: "Rings published by this dispatcher's watcher.",
		}, func() float64 { return float64(status().Changes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_ring_held_members",
			Help: "Members kept in the ring while failing their Consul check but still alive.",
		}, func() float64 { return float64(len(status().Held)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_consul_degraded",
			Help: "1 while the last query to Consul failed (the last ring is kept).",
		}, func() float64 { return bool01(status().Degraded) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_liveness_probes_total",
			Help: "Liveness probes sent to gateways that stopped passing.",
		}, func() float64 { return float64(status().Probes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_nats_connected",
			Help: "1 while the NATS connection is up.",
		}, func() float64 { return bool01(d.cfg.NATS.IsConnected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_log_ready",
			Help: "1 once the log's stream has been created, or found as configured.",
		}, func() float64 { return bool01(d.inbox.Load() != nil) }),
	}
	limits := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_limit",
		Help: "Configured limits: payload_bytes, batch, rate_per_key, burst_per_key, max_wait_seconds, append_timeout_seconds, appends_in_flight.",
	}, []string{"limit"})
	limits.WithLabelValues("payload_bytes").Set(float64(d.cfg.MaxPayload))
	limits.WithLabelValues("batch").Set(float64(d.cfg.MaxBatch))
	limits.WithLabelValues("rate_per_key").Set(float64(d.cfg.RateLimit))
	limits.WithLabelValues("burst_per_key").Set(float64(d.cfg.RateBurst))
	limits.WithLabelValues("max_wait_seconds").Set(d.cfg.MaxWait.Seconds())
	limits.WithLabelValues("append_timeout_seconds").Set(d.cfg.Log.AppendTimeout.Seconds())
	limits.WithLabelValues("appends_in_flight").Set(float64(cmp.Or(d.cfg.Log.MaxAppends, inbox.DefaultMaxAppends)))
	for _, c := range append(cs, limits) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dispatcher: registering metrics: %w", err)
		}
	}
	return m, nil
}

// newRegistry is the registry of a dispatcher given none: its own, never
// the global one, so several dispatchers can live in one process.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
