package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// healthServer answers every request with h, and is closed when the test
// ends.
func healthServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// hangingServer never answers: each request waits until the client gives up
// or the test ends.
func hangingServer(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := healthServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close, which waits for handlers
	return srv
}

// runHealthcheckGuarded runs herald healthcheck with args, failing the test
// if it has not returned within 30 s (it must give up at its timeout).
func runHealthcheckGuarded(t *testing.T, args ...string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- runHealthcheck(context.Background(), args) }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("herald healthcheck %q did not return within 30s", args)
		return nil
	}
}

// TestHealthcheck: a 2xx is healthy, anything else (an error status, a
// redirect, no answer within the timeout, nobody listening, a URL that is
// not http or https) is not, and the error says which in one line.
func TestHealthcheck(t *testing.T) {
	status := func(code int, body string) *httptest.Server {
		return healthServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || r.URL.Path != "/healthz" {
				http.Error(w, "want GET /healthz, got "+r.Method+" "+r.URL.Path, http.StatusTeapot)
				return
			}
			w.WriteHeader(code)
			w.Write([]byte(body))
		})
	}
	ok := status(http.StatusOK, "ok\n")
	noContent := status(http.StatusNoContent, "")
	unavailable := status(http.StatusServiceUnavailable, "{\"status\":\n  \"NATS down\"}\n")
	redirect := healthServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ok.URL+"/healthz", http.StatusFound)
	})
	hanging := hangingServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/healthz" // nobody listens there once closed
	ln.Close()

	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // "" for healthy
	}{
		{"200", []string{ok.URL + "/healthz"}, ""},
		{"204", []string{noContent.URL + "/healthz"}, ""},
		{"flags after the URL", []string{ok.URL + "/healthz", "--timeout", "5s"}, ""},
		{"503 with its body on one line", []string{unavailable.URL + "/healthz"}, `503 Service Unavailable: {"status": "NATS down"}`},
		{"wrong path", []string{ok.URL + "/nothere"}, "418"},
		{"redirect not followed", []string{redirect.URL + "/healthz"}, "302 Found"},
		{"no answer", []string{"--timeout", "200ms", hanging.URL + "/healthz"}, "no answer within 200ms"},
		{"nobody listening", []string{closed}, "connection refused"},
		{"no scheme", []string{"127.0.0.1:8080/healthz"}, "bad URL"},
		{"host:port", []string{"localhost:8080"}, "bad URL"},
		{"not http", []string{"ftp://127.0.0.1/healthz"}, "bad URL"},
		{"no host", []string{"http:///healthz"}, "bad URL"},
		{"not a URL", []string{"http://[::1/healthz"}, "bad URL"},
		{"two URLs", []string{ok.URL + "/healthz", ok.URL + "/healthz"}, "unexpected arguments"},
		{"zero timeout", []string{"--timeout", "0s", ok.URL + "/healthz"}, "positive"},
		{"no URL", nil, "no URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runHealthcheckGuarded(t, tc.args...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("herald healthcheck %q: %v, want healthy", tc.args, err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("herald healthcheck %q: healthy, want an error saying %q", tc.args, tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("herald healthcheck %q: %q, want it to say %q", tc.args, err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("herald healthcheck %q: %q is more than one line", tc.args, err)
			}
		})
	}
}

// TestHealthcheckEnvironment: without a URL argument HERALD_HEALTHCHECK_URL
// names it (one image's HEALTHCHECK serves gateways and dispatchers), an
// argument wins over it, and the timeout comes from
// HERALD_HEALTHCHECK_TIMEOUT, not HERALD_TIMEOUT, which belongs to the
// process checked.
func TestHealthcheckEnvironment(t *testing.T) {
	ok := healthServer(t, func(w http.ResponseWriter, r *http.Request) {})
	hanging := hangingServer(t)

	t.Setenv("HERALD_HEALTHCHECK_URL", ok.URL)
	if err := runHealthcheckGuarded(t); err != nil {
		t.Errorf("with HERALD_HEALTHCHECK_URL=%s: %v, want healthy", ok.URL, err)
	}
	t.Setenv("HERALD_HEALTHCHECK_URL", hanging.URL)
	t.Setenv("HERALD_HEALTHCHECK_TIMEOUT", "150ms")
	t.Setenv("HERALD_TIMEOUT", "1h")
	err := runHealthcheckGuarded(t)
	if err == nil || !strings.Contains(err.Error(), "no answer within 150ms") {
		t.Errorf("with HERALD_HEALTHCHECK_TIMEOUT=150ms against a server that never answers: %v, want no answer within 150ms", err)
	}
	if err := runHealthcheckGuarded(t, ok.URL); err != nil {
		t.Errorf("a URL argument did not win over HERALD_HEALTHCHECK_URL: %v", err)
	}
}

// TestHealthcheckHTTPS: https is verified against the system's CA
// certificates. Here the test server's certificate is in no pool, so the
// check fails; in a child process whose system pool is that certificate
// (SSL_CERT_FILE, which Go reads for the system pool as it reads
// /etc/ssl/certs/ca-certificates.crt in the images) it passes. The child is
// the herald binary, so this also checks the exit statuses Docker reads: 0
// healthy, 1 unhealthy or misused (2 would be Docker's reserved status).
func TestHealthcheckHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)

	err := runHealthcheckGuarded(t, srv.URL)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("a certificate no CA in the system pool signed: %v, want x509.UnknownAuthorityError", err)
	}

	dir := t.TempDir()
	trusted := filepath.Join(dir, "trusted.pem")
	if err := os.WriteFile(trusted, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		certFile string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"trusted", trusted, []string{srv.URL}, 0, "200 OK"},
		{"untrusted", empty, []string{srv.URL}, 1, "certificate"},
		{"no URL", trusted, nil, 1, "no URL"},
		{"nobody listening", trusted, []string{"http://127.0.0.1:1/healthz"}, 1, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, heraldBin, append([]string{"healthcheck"}, tc.args...)...)
			cmd.Env = append(withoutEnv(os.Environ(), "SSL_CERT_DIR", "HERALD_HEALTHCHECK_URL"), "SSL_CERT_FILE="+tc.certFile)
			out, err := cmd.CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.wantOut) {
				t.Errorf("herald healthcheck %q with SSL_CERT_FILE=%s: exit %d, %q; want exit %d saying %q",
					tc.args, filepath.Base(tc.certFile), code, out, tc.wantCode, tc.wantOut)
			}
			if lines := strings.Count(strings.TrimSuffix(string(out), "\n"), "\n") + 1; lines != 1 {
				t.Errorf("herald healthcheck %q printed %d lines, want one: %q", tc.args, lines, out)
			}
		})
	}
}

// withoutEnv is env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// TestHealthcheckBodyContains: with --body-contains, a 200 whose body lacks
// the text (Consul's /v1/status/leader with no leader: "") is unhealthy.
func TestHealthcheckBodyContains(t *testing.T) {
	var leader atomic.Value
	leader.Store("")
	srv := healthServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(leader.Load().(string))) })
	if err := runHealthcheckGuarded(t, srv.URL, "--body-contains", ":8300"); err == nil || !strings.Contains(err.Error(), `":8300"`) {
		t.Errorf("no leader: got %v, want an error naming the missing text", err)
	}
	leader.Store(`"172.18.0.3:8300"`)
	if err := runHealthcheckGuarded(t, srv.URL, "--body-contains", ":8300"); err != nil {
		t.Errorf("a leader: got %v, want healthy", err)
	}
}
