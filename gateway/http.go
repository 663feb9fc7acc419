package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The gateway's two listeners. The public one serves the sockets and the
// probes a load balancer or orchestrator needs (/healthz, /readyz); the
// admin one, for operators only, serves metrics, pprof when enabled, and
// the probes again.

// Timeouts of the HTTP servers. A hijacked (WebSocket) connection has its
// deadlines cleared by net/http, so these bound only the HTTP part: the
// upgrade request, and idle keep-alive connections between probes.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
)

func (g *Gateway) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

func (g *Gateway) publicRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", g.handleWS)
	g.probeRoutes(mux)
	return mux
}

func (g *Gateway) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.cfg.Registry, promhttp.HandlerOpts{}))
	g.probeRoutes(mux)
	if g.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (g *Gateway) probeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", g.handleReady)
}

// handleReady answers 200 while the gateway accepts sockets, with what it
// knows about its dependencies either way.
func (g *Gateway) handleReady(w http.ResponseWriter, r *http.Request) {
	ws := g.watcher.Status()
	body := map[string]any{
		"gateway":         g.cfg.ID,
		"serving":         g.serve.Load(),
		"nats_connected":  g.cfg.NATS.IsConnected(),
		"jetstream_ok":    g.jsOK.Load(),
		"ring":            g.Ring().Fingerprint(),
		"consul_degraded": ws.Degraded,
		"held":            ws.Held,
		"epoch":           g.currentEpoch(),
		"fenced":          g.place.fenced.Load(),
		"draining":        g.place.draining.Load(),
	}
	if reg := g.reg.Load(); reg != nil {
		// Reported, never fatal: a gateway whose agent is sick still
		// delivers, and the others keep it while it answers healthy.
		body["consul_agent_unreachable_for"] = reg.Unreachable().Round(time.Millisecond).String()
	}
	status := http.StatusOK
	if err := g.health(); err != nil || !g.serve.Load() || g.place.fenced.Load() || g.place.draining.Load() {
		status = http.StatusServiceUnavailable
		if err != nil {
			body["error"] = err.Error()
		}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
