package dispatcher

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/ring/consul/consultest"
)

// A handler only http.DefaultServeMux has: no listener of the dispatcher
// may answer it (net/http/pprof registers itself there too).
func init() {
	http.HandleFunc("/default-mux-only", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("default mux")) })
}

// TestAdminListener: the admin listener serves /metrics, /healthz and
// /readyz, and pprof only when asked; the public listener keeps the health
// endpoints but serves neither metrics nor profiles; neither serves
// http.DefaultServeMux.
func TestAdminListener(t *testing.T) {
	e := newEnv(t)
	e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher()
	prof := e.dispatcher(func(c *Config) { c.Pprof = true })
	for _, d := range []*testDispatcher{td, prof} {
		d.waitRing("gw-a")
		waitFor(t, 10*time.Second, "ready", func() bool { return d.do("GET", "/readyz", "").status == http.StatusOK })
	}
	td.notify(`{"user":"alice","data":1}`)

	r := td.admin("/metrics")
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`herald_notifications_total{result="routed"} 1`)) {
		t.Fatalf("admin /metrics: %d, want herald_notifications_total{result=\"routed\"} 1 in\n%.2000s", r.status, r.body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		for name, get := range map[string]func(string) response{
			"admin":  td.admin,
			"public": func(p string) response { return td.do("GET", p, "") },
		} {
			if r := get(path); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"ready":true`)) && path == "/readyz" {
				t.Errorf("%s %s: %d %s", name, path, r.status, r.body)
			}
		}
	}
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline", "/default-mux-only"} {
		wantError(t, td.do("GET", path, ""), http.StatusNotFound, CodeNotFound)
		wantError(t, prof.do("GET", path, ""), http.StatusNotFound, CodeNotFound)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine", "/default-mux-only", "/v1/cluster"} {
		if r := td.admin(path); r.status != http.StatusNotFound {
			t.Errorf("admin %s without Pprof: %d, want 404", path, r.status)
		}
	}
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/cmdline":           "dispatcher.test",
		"/debug/pprof/goroutine?debug=1": "goroutine profile",
		"/debug/pprof/heap?debug=1":      "heap profile",
	} {
		if r := prof.admin(path); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(want)) {
			t.Errorf("admin %s with Pprof: %d, want 200 with %q in %.300s", path, r.status, want, r.body)
		}
	}
	if r := prof.admin("/default-mux-only"); r.status != http.StatusNotFound {
		t.Errorf("the admin listener serves http.DefaultServeMux: %d %s", r.status, r.body)
	}

	// Run returns only after both servers have stopped.
	if err := prof.stop(); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{prof.url, prof.adminURL} {
		if c, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "http://"), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Run returned", u)
		}
	}
}

// TestServerTimeouts: both listeners' servers bound every phase of a
// request, so a slow or idle client cannot hold a connection forever; the
// admin one leaves room for a minute-long CPU profile.
func TestServerTimeouts(t *testing.T) {
	e := newEnv(t)
	d, err := New(Config{Addr: "127.0.0.1:0", NATS: e.nc, Consul: e.cc, APIKeys: []string{testKey},
		TokenSecrets: [][]byte{testSecret}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	servers := d.servers(bg, true)
	if len(servers) != 2 {
		t.Fatalf("%d servers, want the API's and the admin one", len(servers))
	}
	for i, srv := range servers {
		if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
			t.Errorf("server %d: read-header %v, read %v, write %v, idle %v: every one must be set",
				i, srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
		}
	}
	if w := servers[1].WriteTimeout; w <= time.Minute {
		t.Errorf("admin write timeout %v: a 60s CPU profile would be refused", w)
	}
	if len(d.servers(bg, false)) != 1 {
		t.Error("an admin server without an admin listener")
	}
}

// TestRunAdminAddress: Run listens on AdminAddr when no AdminListener is
// given, and an admin address in use is Run's error, at once, with the
// API's listener closed again.
func TestRunAdminAddress(t *testing.T) {
	e := newEnv(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	pub := consultest.Reserve(t, 30900, 32700, 1, false)
	pub.Release()
	pubAddr := "127.0.0.1:" + strconv.Itoa(pub.Nums[0])
	d, err := New(Config{Addr: pubAddr, AdminAddr: taken.Addr().String(), NATS: e.nc, Consul: e.cc,
		APIKeys: []string{testKey}, TokenSecrets: [][]byte{testSecret}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(bg) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "admin") || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("Run with a taken admin address: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run with a taken admin address did not return")
	}
	if l, err := net.Listen("tcp", pubAddr); err != nil {
		t.Fatalf("the API's address is still held after Run failed: %v", err)
	} else {
		l.Close()
	}

	// Given an address (not a listener), the admin endpoints are there.
	admin := consultest.Reserve(t, 30900, 32700, 1, false)
	admin.Release()
	adminAddr := "127.0.0.1:" + strconv.Itoa(admin.Nums[0])
	td := e.dispatcher(func(c *Config) { c.AdminListener, c.AdminAddr = nil, adminAddr })
	td.adminURL = "http://" + adminAddr
	if r := td.admin("/metrics"); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("herald_ring_members")) {
		t.Fatalf("admin /metrics on AdminAddr: %d", r.status)
	}

	// Without either there is no admin listener, and Run is fine.
	none := e.dispatcher(func(c *Config) { c.AdminListener = nil })
	if none.adminURL != "" {
		t.Fatalf("admin URL %q without an admin listener", none.adminURL)
	}
	if err := none.stop(); err != nil {
		t.Fatalf("Run without an admin listener: %v", err)
	}
}
