package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		g.conns.Add(1)
		defer g.conns.Done()
		g.handleWS(w, r)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", g.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.cfg.Registry, promhttp.HandlerOpts{}))
	return mux
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
		"fenced":          g.fenced.Load(),
		"draining":        g.draining.Load(),
	}
	status := http.StatusOK
	if err := g.health(); err != nil || !g.serve.Load() || g.fenced.Load() || g.draining.Load() {
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
