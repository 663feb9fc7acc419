package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

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
