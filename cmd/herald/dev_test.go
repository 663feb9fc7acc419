package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/ring/consul/consultest"
)

// heraldBin is this package built as a binary, for the tests that run
// herald as child processes.
var heraldBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		panic(err)
	}
	heraldBin = filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", heraldBin, ".").CombinedOutput()
	if err != nil {
		panic("building herald: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestSIGKILLGatewayChildProcess runs herald dev (real processes: Consul,
// NATS, 3 gateways, 2 dispatchers) with 300 users and a steady publisher,
// and SIGKILLs gateways, keeping each down past the Consul TTL: every user
// must come back online on a live gateway and receive everything accepted,
// exactly once, in order.
func TestSIGKILLGatewayChildProcess(t *testing.T) {
	consulBin, err := consultest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(consulBin); err != nil {
		t.Fatalf("no Consul agent at %s (run `make deps`): %v", consulBin, err)
	}
	cmd := exec.Command(heraldBin, "chaos", "--start-cluster", "--port-offset", "20000",
		"--users", "300", "--rate", "100", "--duration", "20s", "--fault-every", "8s",
		"--faults", "kill-long", "--min-ring-changes", "1", "-v")
	cmd.Dir = filepath.Dir(filepath.Dir(consulBin)) // the repository, where herald dev finds bin/consul
	out, err := cmd.CombinedOutput()
	t.Logf("herald chaos:\n%s", out)
	if err != nil {
		t.Fatalf("herald chaos failed: %v", err)
	}
	for name, want := range map[string]string{"lost": "0", "duplicate frames": "0", "out of order": "0", "gaps": "0"} {
		m := regexp.MustCompile(`(?m)^  ` + name + `\s+(\d+)$`).FindSubmatch(out)
		if m == nil || string(m[1]) != want {
			t.Errorf("report line %q = %q, want %s", name, m, want)
		}
	}
	m := regexp.MustCompile(`(?m)^  re-homes\s+(\d+):`).FindSubmatch(out)
	if m == nil {
		t.Fatal("no re-homes in the report")
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 50 {
		t.Errorf("only %d users re-homed after their gateway was killed; expected about a third of 300 per kill", n)
	}
}

// TestDevRefusedUnsafe: the dispatcher and the gateway refuse --dev, at
// startup and saying why, on an address that is not loopback and with real
// secrets or keys.
func TestDevRefusedUnsafe(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dispatcher", "--dev", "--listen", "0.0.0.0:0"}, "0.0.0.0:0, which is not a loopback address"},
		{[]string{"dispatcher", "--dev", "--listen", "127.0.0.1:0", "--admin-listen", ":0"}, ":0, which is not a loopback address"},
		{[]string{"dispatcher", "--dev", "--listen", "127.0.0.1:0", "--api-keys", "a-real-key"}, "--dev refused with --api-keys"},
		{[]string{"dispatcher", "--dev", "--listen", "127.0.0.1:0", "--token-secrets", "a-real-secret-of-at-least-32-bytes!!"}, "--dev refused with --token-secrets"},
		{[]string{"dispatcher", "--listen", "127.0.0.1:0", "--pprof", "--api-keys", "k"}, "--pprof needs --admin-listen"},
		{[]string{"gateway", "--dev", "--listen", ":0"}, ":0, which is not a loopback address"},
		{[]string{"gateway", "--dev", "--listen", "127.0.0.1:0", "--token-secrets", "a-real-secret-of-at-least-32-bytes!!"}, "--dev refused with --token-secrets"},
	} {
		// A command that is not refused runs until it is killed.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, heraldBin, tc.args...)
		cmd.Env = append(os.Environ(), "HERALD_NATS_URL=nats://127.0.0.1:1") // nothing may be reached before the check
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("herald %s: %v\n%s\nwant a refusal saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// TestDevAdminListeners runs herald dev (real processes) and checks what it
// set up: each dispatcher child has an admin listener, in the state file,
// serving /metrics and pprof, while its public port serves no /metrics; and
// the control endpoint refuses a request a web page would send.
func TestDevAdminListeners(t *testing.T) {
	consulBin, err := consultest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out lockedBuffer
	cmd := exec.Command(heraldBin, "dev", "--gateways", "1", "--dispatchers", "2", "--port-offset", "16000",
		"--dir", dir, "--consul", consulBin, "--restart-delay", "10m", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("herald dev output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "herald dev is up") {
		select {
		case <-exited:
			t.Fatal("herald dev exited")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("herald dev not up within 2 minutes")
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	get := func(url string, headers ...string) (int, string) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	dispatchers := 0
	for _, c := range st.Children {
		if c.Kind != "dispatcher" {
			continue
		}
		dispatchers++
		want := fmt.Sprintf("http://127.0.0.1:%d", c.Ports[0]+1000)
		if c.Admin != want || !slices.Contains(c.Ports, c.Ports[0]+1000) {
			t.Errorf("%s: admin %q, ports %v; want %s among its ports", c.Name, c.Admin, c.Ports, want)
			continue
		}
		if code, body := get(c.Admin + "/metrics"); code != http.StatusOK || !strings.Contains(body, "herald_ring_members 1") {
			t.Errorf("%s admin /metrics: %d, want herald_ring_members 1 in\n%.500s", c.Name, code, body)
		}
		if code, _ := get(c.Admin + "/debug/pprof/"); code != http.StatusOK {
			t.Errorf("%s admin /debug/pprof/: %d", c.Name, code)
		}
		if code, _ := get(c.URL + "/metrics"); code != http.StatusNotFound {
			t.Errorf("%s public /metrics: %d, want 404", c.Name, code)
		}
		if code, _ := get(c.URL + "/v1/cluster"); code != http.StatusOK {
			t.Errorf("%s /v1/cluster in dev mode without a key: %d", c.Name, code)
		}
	}
	if dispatchers != 2 {
		t.Fatalf("%d dispatchers in the state file, want 2", dispatchers)
	}
	if code, _ := get("http://" + st.Control + "/state"); code != http.StatusOK {
		t.Errorf("control /state: %d", code)
	}
	if code, body := get("http://"+st.Control+"/state", "Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("control /state from a web page: %d %s, want 403", code, body)
	}
}

// lockedBuffer is a bytes.Buffer a child process and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
