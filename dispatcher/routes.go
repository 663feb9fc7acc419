package dispatcher

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// route is one path of the API and its handlers by method. Paths match
// exactly, but for usersRoute, whose one parameter is the user: the route
// label of the metrics stays bounded.
type route struct {
	path    string
	methods map[string]http.Handler
	allow   string // the Allow header of a 405
}

// router answers unknown paths with 404 not_found and known paths with a
// method they do not serve with 405 method_not_allowed, both as JSON errors
// (http.ServeMux would answer in plain text).
type router struct {
	d      *Dispatcher
	routes map[string]*route
}

func (d *Dispatcher) routes() http.Handler {
	rt := &router{d: d, routes: map[string]*route{}}
	publish := d.requireAPIKey
	rt.handle("POST", "/v1/notify", publish(http.HandlerFunc(d.handleNotify)))
	rt.handle("POST", "/v1/notify/batch", publish(http.HandlerFunc(d.handleBatch)))
	rt.handle("POST", "/v1/broadcast", publish(http.HandlerFunc(d.handleBroadcast)))
	rt.handle("POST", "/v1/connect", http.HandlerFunc(d.handleConnect))
	rt.handle("OPTIONS", "/v1/connect", http.HandlerFunc(d.handleConnectPreflight))
	cluster := http.Handler(http.HandlerFunc(d.handleCluster))
	if !d.cfg.Dev {
		// It names every gateway and its load: for the backends and
		// operators, not for anyone who can reach the API. The demo page
		// (dev mode only) reads it without a key.
		cluster = d.requireKey(cluster)
	}
	rt.handle("GET", "/v1/cluster", cluster)
	rt.handle("GET", usersRoute, d.requireAPIKey(http.HandlerFunc(d.handleHistory)))
	rt.handle("DELETE", usersRoute, d.requireAPIKey(http.HandlerFunc(d.handleErase)))
	// Load balancers probe these on the API's port; the admin listener
	// serves them too, with /metrics, which the public port does not.
	rt.handle("GET", "/healthz", http.HandlerFunc(d.handleHealthz))
	rt.handle("GET", "/readyz", http.HandlerFunc(d.handleReadyz))
	if d.cfg.Dev {
		rt.handle("POST", "/v1/dev/token", http.HandlerFunc(d.handleDevToken))
		rt.handle("GET", "/v1/dev/config", http.HandlerFunc(d.handleDevConfig))
		if d.cfg.Page != nil {
			for _, path := range d.cfg.PagePaths {
				rt.handle("GET", path, d.cfg.Page)
			}
		}
	}
	for _, r := range rt.routes {
		var ms []string
		for m := range r.methods {
			ms = append(ms, m)
		}
		if r.methods["GET"] != nil {
			ms = append(ms, "HEAD")
		}
		slices.Sort(ms)
		r.allow = strings.Join(ms, ", ")
	}
	return rt
}

// adminRoutes are the admin listener's: metrics, health and, with Pprof,
// the profiles. net/http/pprof's handlers are mounted here, on this mux
// only: importing the package also registers them on http.DefaultServeMux,
// which herald never serves.
func (d *Dispatcher) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{Registry: d.registry}))
	mux.HandleFunc("GET /healthz", d.handleHealthz)
	mux.HandleFunc("GET /readyz", d.handleReadyz)
	if d.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index) // and every named profile: heap, goroutine, ...
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted like the API's requests, so Run waits for a profile
		// still being written (it ends with the request's context).
		if !d.flight.enter() {
			w.Header().Set("Connection", "close")
			d.writeError(w, r, errorf(CodeUnavailable, "the dispatcher is shutting down"))
			return
		}
		defer d.flight.leave()
		mux.ServeHTTP(w, r)
	})
}

func (rt *router) handle(method, path string, h http.Handler) {
	r := rt.routes[path]
	if r == nil {
		r = &route{path: path, methods: map[string]http.Handler{}}
		rt.routes[path] = r
	}
	r.methods[method] = h
}

func (rt *router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	d := rt.d
	if !d.flight.enter() {
		w.Header().Set("Connection", "close")
		d.writeError(w, req, errorf(CodeUnavailable, "the dispatcher is shutting down"))
		return
	}
	defer d.flight.leave()

	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	label := "unmatched"
	defer func() {
		d.metrics.requests.WithLabelValues(label, strconv.Itoa(rec.status)).Inc()
		d.metrics.latency.WithLabelValues(label).Observe(time.Since(start).Seconds())
	}()
	defer d.recoverRequest(rec, req)

	r := rt.routes[req.URL.Path]
	if r != nil && r.path == usersRoute {
		r = nil // the pattern itself is a path like any other: "{user}" is a user ID
	}
	if r == nil {
		user, ok, err := userFromPath(req.URL.EscapedPath())
		if err != nil {
			label = usersRoute
			d.writeError(rec, req, err)
			return
		}
		if ok {
			r = rt.routes[usersRoute]
			req.SetPathValue("user", user)
		}
	}
	if r == nil {
		d.writeError(rec, req, errorf(CodeNotFound, "no route %s", req.URL.Path))
		return
	}
	label = r.path
	h := r.methods[req.Method]
	if h == nil && req.Method == http.MethodHead {
		h = r.methods[http.MethodGet]
	}
	if h == nil {
		rec.Header().Set("Allow", r.allow)
		d.writeError(rec, req, errorf(CodeMethodNotAllowed, "%s does not serve %s; allowed: %s", r.path, req.Method, r.allow))
		return
	}
	h.ServeHTTP(rec, req)
}

// statusRecorder remembers the status a handler answered with, for the
// request metrics.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// recoverRequest, deferred, turns a handler's panic into a 500 for that
// request alone, logged with its stack and counted. http.ErrAbortHandler is
// net/http's own way to abort a response, not a bug: it goes on up.
func (d *Dispatcher) recoverRequest(w *statusRecorder, req *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	d.metrics.panics.WithLabelValues("http").Inc()
	d.log.Error("recovered a panic in a request handler", "route", req.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	if !w.wroteHeader {
		d.writeError(w, req, errorf(CodeInternal, "an internal error; nothing was changed by this request unless its answer says so"))
	}
}
