package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseEnvAndFlags(t *testing.T) {
	t.Setenv("HERALD_CONSUL_ADDR", "10.0.0.1:8500")
	t.Setenv("HERALD_TIMEOUT", "7s")
	fs := newFlagSet("x", "")
	addr := fs.String("consul-addr", "127.0.0.1:8500", "")
	timeout := fs.Duration("timeout", time.Second, "")
	if err := parse(fs, []string{"--timeout", "3s"}); err != nil {
		t.Fatal(err)
	}
	if *addr != "10.0.0.1:8500" {
		t.Errorf("consul-addr = %q, want the environment's value", *addr)
	}
	if *timeout != 3*time.Second {
		t.Errorf("timeout = %v, want the command line's 3s over the environment's 7s", *timeout)
	}
}

func TestParseRejectsBadEnvAndArgs(t *testing.T) {
	t.Setenv("HERALD_TIMEOUT", "soon")
	fs := newFlagSet("x", "")
	fs.Duration("timeout", time.Second, "")
	if err := parse(fs, nil); err == nil {
		t.Error("a malformed HERALD_TIMEOUT was accepted")
	}
	fs = newFlagSet("y", "")
	if err := parse(fs, []string{"stray"}); err == nil {
		t.Error("a stray argument was accepted")
	}
}

// TestFlagOwnEnvironmentVariable: a flag given its own variable with envVar
// reads that one, not HERALD_<NAME> (which another component on the host
// may have set), still loses to the command line, and says so in its
// usage.
func TestFlagOwnEnvironmentVariable(t *testing.T) {
	t.Setenv("HERALD_ADMIN_LISTEN", "0.0.0.0:1")
	t.Setenv("HERALD_GATEWAY_ADMIN_LISTEN", "127.0.0.1:2")
	t.Setenv("HERALD_DISPATCHER_ADMIN_LISTEN", "127.0.0.1:3")
	t.Setenv("HERALD_DISPATCHER_PPROF", "true")
	t.Setenv("HERALD_PPROF", "false")
	newSet := func() (*flagSet, *string, *bool) {
		fs := newFlagSet("dispatcher", "")
		admin := fs.String("admin-listen", "", "admin address")
		fs.envVar("admin-listen", "HERALD_DISPATCHER_ADMIN_LISTEN")
		pprof := fs.Bool("pprof", false, "profiles")
		fs.envVar("pprof", "HERALD_DISPATCHER_PPROF")
		return fs, admin, pprof
	}
	fs, admin, pprof := newSet()
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *admin != "127.0.0.1:3" || !*pprof {
		t.Errorf("admin-listen %q, pprof %v; want HERALD_DISPATCHER_ADMIN_LISTEN's 127.0.0.1:3 and HERALD_DISPATCHER_PPROF's true", *admin, *pprof)
	}
	fs, admin, _ = newSet()
	if err := parse(fs, []string{"--admin-listen", "127.0.0.1:4"}); err != nil {
		t.Fatal(err)
	}
	if *admin != "127.0.0.1:4" {
		t.Errorf("admin-listen %q, want the command line's 127.0.0.1:4", *admin)
	}
	var usage strings.Builder
	fs.SetOutput(&usage)
	fs.Usage()
	if !strings.Contains(usage.String(), "admin address (environment: HERALD_DISPATCHER_ADMIN_LISTEN)") ||
		!strings.Contains(usage.String(), "unless its description names another variable") {
		t.Errorf("usage does not document the flag's own variable:\n%s", usage.String())
	}
	t.Setenv("HERALD_DISPATCHER_PPROF", "maybe")
	if fs, _, _ := newSet(); parse(fs, nil) == nil {
		t.Error("a malformed HERALD_DISPATCHER_PPROF was accepted")
	}
	defer func() {
		if recover() == nil {
			t.Error("envVar of an undefined flag did not panic")
		}
	}()
	newFlagSet("x", "").envVar("no-such-flag", "HERALD_X")
}

// TestSplitListOrFile: a list flag's -file form reads one item per line or
// comma, and refuses both forms at once and an empty file.
func TestSplitListOrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("k1\nk2, k3\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := splitListOrFile("api-keys", "", file)
	if err != nil || strings.Join(got, "|") != "k1|k2|k3" {
		t.Errorf("from the file: %q, %v; want k1|k2|k3", got, err)
	}
	if got, err := splitListOrFile("api-keys", "a,b", ""); err != nil || strings.Join(got, "|") != "a|b" {
		t.Errorf("inline: %q, %v; want a|b", got, err)
	}
	if _, err := splitListOrFile("api-keys", "a", file); err == nil {
		t.Error("both --api-keys and --api-keys-file were accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	if _, err := splitListOrFile("api-keys", "", empty); err == nil {
		t.Error("an empty --api-keys-file was accepted")
	}
	if _, err := splitListOrFile("api-keys", "", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing --api-keys-file was accepted")
	}
}
