package main

import (
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
