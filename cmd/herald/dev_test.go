package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
		{[]string{"dispatcher", "--dev", "--listen", "127.0.0.1:0", "--api-keys", "a-real-key"}, "--dev refused with --api-keys"},
		{[]string{"dispatcher", "--dev", "--listen", "127.0.0.1:0", "--token-secrets", "a-real-secret-of-at-least-32-bytes!!"}, "--dev refused with --token-secrets"},
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
