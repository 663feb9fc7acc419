package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus metrics, registered on
// Config.Registry (never the global one: tests run several gateways in one
// process).
type metrics struct {
	deliveries prometheus.Counter
	latency    prometheus.Histogram
	acks       prometheus.Counter
	replayed   prometheus.Counter
	logReads   *prometheus.CounterVec
	gaps       prometheus.Counter
	skipped    prometheus.Counter
	// Doorbells by outcome, resolved once: a doorbell is the hot path.
	doorbellNext, doorbellOld, doorbellRepair, doorbellOffline, doorbellBad prometheus.Counter
	antiEntropyPasses                                                       *prometheus.CounterVec
	antiEntropyRepairs                                                      prometheus.Counter
	slowConsumers                                                           prometheus.Counter
	slowDetected                                                            prometheus.Counter
	closes                                                                  *prometheus.CounterVec
	moves                                                                   *prometheus.CounterVec
	movesCancelled                                                          prometheus.Counter
	broadcastSent, broadcastDropped                                         prometheus.Counter
	doorbellOtherEpoch                                                      prometheus.Counter
	panics                                                                  *prometheus.CounterVec
	refused                                                                 *prometheus.CounterVec
	undeliverable                                                           prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promFactory{reg}
	m := &metrics{
		deliveries: f.counter("herald_deliveries_total", "Notification frames written to sockets."),
		latency: f.histogram("herald_delivery_latency_seconds", "From a notification's publish time (Herald-Ts) to its write to a socket, for live deliveries.",
			[]float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10}),
		acks:               f.counter("herald_acks_total", "Acks received from sockets."),
		replayed:           f.counter("herald_replayed_total", "Notifications sessions read from the log to catch up."),
		logReads:           f.counterVec("herald_log_reads_total", "Log read requests, by reason.", "reason"),
		gaps:               f.counter("herald_gaps_total", "Gap frames sent: retention dropped messages a socket had not received."),
		skipped:            f.counter("herald_skipped_total", "Notifications a socket was not sent: expired (ttl), or replaced by a newer one with their collapse key."),
		antiEntropyPasses:  f.counterVec("herald_anti_entropy_passes_total", "Anti-entropy passes, by trigger.", "trigger"),
		antiEntropyRepairs: f.counter("herald_anti_entropy_repairs_total", "Hubs anti-entropy found behind the log: lost doorbells repaired."),
		slowConsumers:      f.counter("herald_slow_consumer_closes_total", "Sockets closed with 4008 because a write timed out."),
		slowDetected:       f.counter("herald_slow_consumers_total", "Writes that outlived the write timeout."),
		closes:             f.counterVec("herald_socket_closes_total", "Sockets closed by the gateway, by close code.", "code"),
		moves:              f.counterVec("herald_moves_total", "Users sent to another gateway (moved + 4001), or closed with 1013 while fenced, by cause.", "cause"),
		movesCancelled:     f.counter("herald_moves_cancelled_total", "Scheduled moves the ring no longer called for when their time came."),
		panics:             f.counterVec("herald_panics_total", "Panics recovered, by where they happened; each cost at most one user's sockets.", "where"),
		refused:            f.counterVec("herald_sockets_refused_total", "Sockets refused at the edge, by reason: unauthenticated (the total cap), unauthenticated_per_addr, connect_rate.", "reason"),
		undeliverable:      f.counter("herald_undeliverable_total", "Log messages that could not be put in a frame (not JSON, not UTF-8, a bad id): their devices get a gap."),
	}
	// Per socket per broadcast: resolved once too.
	broadcasts := f.counterVec("herald_broadcast_frames_total", "Broadcast frames queued for sockets, or dropped for a full queue.", "result")
	m.broadcastSent, m.broadcastDropped = broadcasts.WithLabelValues("sent"), broadcasts.WithLabelValues("dropped")
	doorbells := f.counterVec("herald_doorbells_total", "Doorbells by outcome: next (fast path), old, repair (read the log), offline, bad, other_epoch (ignored: the log decides).", "outcome")
	m.doorbellNext, m.doorbellOld, m.doorbellRepair = doorbells.WithLabelValues("next"), doorbells.WithLabelValues("old"), doorbells.WithLabelValues("repair")
	m.doorbellOffline, m.doorbellBad = doorbells.WithLabelValues("offline"), doorbells.WithLabelValues("bad")
	m.doorbellOtherEpoch = doorbells.WithLabelValues("other_epoch")
	return m
}

// registerGauges registers the metrics read off the gateway's state.
func (g *Gateway) registerGauges() {
	f := promFactory{g.cfg.Registry}
	f.gaugeFunc("herald_sockets", "Open sockets.", func() float64 { s, _ := g.users.counts(); return float64(s) })
	f.gaugeFunc("herald_users", "Users with at least one socket.", func() float64 { _, u := g.users.counts(); return float64(u) })
	f.gaugeFunc("herald_unauthenticated_sockets", "Sockets that have not sent their auth frame yet.", func() float64 { return float64(g.edge.unauthenticated()) })
	f.gaugeFunc("herald_ring_members", "Members of the gateway's ring.", func() float64 { return float64(g.Ring().Len()) })
	f.counterFunc("herald_ring_changes_total", "Rings the watcher published.", func() float64 { return float64(g.watcher.Status().Changes) })
	f.gaugeFunc("herald_ring_held_members", "Members kept in the ring while failing their check.", func() float64 { return float64(len(g.watcher.Status().Held)) })
	f.counterFunc("herald_liveness_probes_total", "Liveness probes the watcher sent.", func() float64 { return float64(g.watcher.Status().Probes) })
	f.gaugeFunc("herald_consul_degraded", "1 while Consul is unreachable and the last ring is kept.", func() float64 { return b2f(g.watcher.Status().Degraded) })
	f.gaugeFunc("herald_nats_connected", "1 while NATS is connected.", func() float64 { return b2f(g.cfg.NATS.IsConnected()) })
	f.gaugeFunc("herald_moves_pending", "Moves scheduled and not yet sent.", func() float64 { return float64(g.place.pending()) })
	f.gaugeFunc("herald_fenced", "1 while fenced: cut off from NATS while the other gateways pass.", func() float64 { return b2f(g.place.fenced.Load()) })
	f.gaugeFunc("herald_draining", "1 while draining.", func() float64 { return b2f(g.place.draining.Load()) })
	f.gaugeFunc("herald_consul_agent_unreachable_seconds", "How long the gateway's Consul agent has failed every heartbeat; 0 when it answers. Never fences the gateway.", func() float64 {
		if reg := g.reg.Load(); reg != nil {
			return reg.Unreachable().Seconds()
		}
		return 0
	})
	f.gaugeFunc("herald_jetstream_ok", "1 while JetStream answers.", func() float64 { return b2f(g.jsOK.Load()) })
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// promFactory registers metrics on one registry.
type promFactory struct{ r prometheus.Registerer }

func (f promFactory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f promFactory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f promFactory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.r.MustRegister(h)
	return h
}

func (f promFactory) gaugeFunc(name, help string, fn func() float64) {
	f.r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

func (f promFactory) counterFunc(name, help string, fn func() float64) {
	f.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn))
}
