package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestControlRefusesWebPages: the control endpoint answers local tools
// (Host a loopback address:port, no Origin) and refuses with 403 whatever
// a web page could send: any Origin header (a cross-origin POST), or a Host
// that is not loopback (DNS rebinding).
func TestControlRefusesWebPages(t *testing.T) {
	d := &dev{log: slog.New(slog.NewTextHandler(io.Discard, nil)), dir: t.TempDir(), wake: make(chan struct{}, 1)}
	h := d.controlRoutes()
	for _, tc := range []struct {
		name, method, target, host, origin string
		want                               int
	}{
		{"curl", "GET", "/state", "127.0.0.1:8079", "", http.StatusOK},
		{"localhost", "GET", "/state", "localhost:8079", "", http.StatusOK},
		{"IPv6 loopback", "GET", "/state", "[::1]:8079", "", http.StatusOK},
		{"unknown child, locally", "POST", "/children/nobody/stop", "127.0.0.1:8079", "", http.StatusNotFound},
		{"cross-origin POST", "POST", "/children/gw-1/stop?signal=KILL", "127.0.0.1:8079", "https://evil.example", http.StatusForbidden},
		{"cross-origin add", "POST", "/gateways", "127.0.0.1:8079", "https://evil.example", http.StatusForbidden},
		{"opaque origin", "POST", "/children/gw-1/stop", "127.0.0.1:8079", "null", http.StatusForbidden},
		{"same-origin page", "GET", "/state", "127.0.0.1:8079", "http://127.0.0.1:8079", http.StatusForbidden},
		{"DNS rebinding", "POST", "/children/gw-1/stop", "evil.example:8079", "", http.StatusForbidden},
		{"rebinding without a port", "GET", "/state", "evil.example", "", http.StatusForbidden},
		{"loopback without a port", "GET", "/state", "127.0.0.1", "", http.StatusForbidden},
		{"a LAN address", "GET", "/state", "192.168.1.10:8079", "", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://127.0.0.1:8079"+tc.target, nil)
			r.Host = tc.host
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("%s %s (Host %q, Origin %q): %d %s, want %d", tc.method, tc.target, tc.host, tc.origin, w.Code, w.Body, tc.want)
			}
			if tc.want == http.StatusForbidden && !strings.Contains(w.Body.String(), "refused") {
				t.Fatalf("403 without a reason: %q", w.Body)
			}
		})
	}
	// An Origin header with an empty value is still one.
	r := httptest.NewRequest("POST", "http://127.0.0.1:8079/gateways", nil)
	r.Header["Origin"] = []string{""}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("an empty Origin header: %d, want 403", w.Code)
	}
}
