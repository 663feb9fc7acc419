package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"syscall"
	"time"
)

// The control endpoint (loopback only):
//
//	GET    /state                          the state file's content
//	POST   /children/{name}/stop           ?signal=KILL|TERM|INT (default TERM) &restart=<duration> (default: stay down)
//	POST   /children/{name}/start
//	POST   /children/{name}/restart        ?signal=… &delay=<duration> (default 0)
//	POST   /gateways                       add a gateway; answers its entry
//	DELETE /gateways/{name}                ?signal=… (default TERM: drain) and remove it
//
// Stops answer once the process has exited. Every route is behind
// localOnly.
func (d *dev) controlRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		st := d.saveStateLocked()
		d.mu.Unlock()
		writeJSONResponse(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /children/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		c := d.find(r.PathValue("name"))
		if c == nil {
			http.Error(w, "no such child", http.StatusNotFound)
			return
		}
		sig, err := parseSignal(r.URL.Query().Get("signal"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch r.PathValue("action") {
		case "stop":
			restart, err := parseDelay(r.URL.Query().Get("restart"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			d.stop(c, sig, restart)
		case "restart":
			delay, err := parseDelay(r.URL.Query().Get("delay"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			d.stop(c, sig, max(delay, time.Nanosecond))
		case "start":
			if err := d.start(c); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		default:
			http.Error(w, "unknown action: stop, start or restart", http.StatusNotFound)
			return
		}
		d.mu.Lock()
		info := c.info
		d.mu.Unlock()
		writeJSONResponse(w, http.StatusOK, info)
	})
	mux.HandleFunc("POST /gateways", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		c := d.gatewayChild()
		d.children = append(d.children, c)
		d.mu.Unlock()
		if err := d.start(c); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSONResponse(w, http.StatusOK, c.info)
	})
	mux.HandleFunc("DELETE /gateways/{name}", func(w http.ResponseWriter, r *http.Request) {
		c := d.find(r.PathValue("name"))
		if c == nil || c.info.Kind != "gateway" {
			http.Error(w, "no such gateway", http.StatusNotFound)
			return
		}
		sig, err := parseSignal(r.URL.Query().Get("signal"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d.mu.Lock()
		c.info.Removed = true
		d.mu.Unlock()
		d.stop(c, sig, 0)
		writeJSONResponse(w, http.StatusOK, c.info)
	})
	return localOnly(mux)
}

// localOnly refuses, with 403, what a web page could send: listening on
// loopback keeps other hosts out, but not the developer's own browser. A
// page on any site can POST to 127.0.0.1 (no preflight for a simple POST),
// and browsers then send an Origin header, which curl, herald chaos and the
// tests never do; and a site whose name its DNS points at 127.0.0.1 (DNS
// rebinding) arrives with its own name as Host.
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header["Origin"]; ok {
			http.Error(w, "refused: a request with an Origin header comes from a web page; the control endpoint is for local tools (curl, herald chaos)", http.StatusForbidden)
			return
		}
		if !loopback(r.Host) {
			http.Error(w, fmt.Sprintf("refused: Host %q is not a loopback address:port", r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func parseSignal(s string) (syscall.Signal, error) {
	switch s {
	case "", "TERM":
		return syscall.SIGTERM, nil
	case "KILL":
		return syscall.SIGKILL, nil
	case "INT":
		return syscall.SIGINT, nil
	}
	return 0, fmt.Errorf("signal %q: want KILL, TERM or INT", s)
}

// parseDelay reads a duration; "" and "never" are zero.
func parseDelay(s string) (time.Duration, error) {
	if s == "" || s == "never" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d, nil
}

func writeJSONResponse(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
