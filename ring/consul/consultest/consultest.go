// Package consultest runs a real Consul dev agent for tests, from the binary
// `make deps` builds into bin/consul.
//
// Tests that need Consul fail, never skip, when the binary is missing: CI
// must not pass by testing less than it claims.
package consultest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is a Consul dev agent process. A dev agent keeps everything in
// memory, so Restart models an agent that forgets every registration.
type Agent struct {
	// HTTPAddr is the agent's HTTP API address, host:port.
	HTTPAddr string

	// Token is the management token of an agent started with ACLs on
	// (StartACL); Client uses it. Empty otherwise.
	Token string

	tb    testing.TB
	bin   string
	args  []string
	ports *Ports // held by the test whenever the agent is not running

	mu     sync.Mutex    // guards the following
	proc   *os.Process   // nil while stopped
	exited chan struct{} // closed when proc has been reaped
	out    *syncBuffer
}

// Binary returns the path of the Consul agent the tests use: $HERALD_CONSUL
// if set, else bin/consul at the root of the herald module.
func Binary() (string, error) {
	if p := os.Getenv("HERALD_CONSUL"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/heraldpush/herald\n")) {
			return filepath.Join(dir, "bin", "consul"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no herald go.mod above %s", dir)
		}
		dir = parent
	}
}

// Start starts a dev agent on free loopback ports and waits until it has a
// leader and has registered its own node. It is stopped when the test ends.
func Start(tb testing.TB) *Agent {
	tb.Helper()
	return start(tb, "")
}

// StartACL starts a dev agent with ACLs on and denying by default, whose
// management token is Agent.Token (also the agent's own token).
func StartACL(tb testing.TB) *Agent {
	tb.Helper()
	return start(tb, "8d5f2e06-3a9b-4c11-9f3e-2b7c1d0e6a55")
}

func start(tb testing.TB, token string) *Agent {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("consultest: %v", err)
	}
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("consultest: no Consul agent at %s (run `make deps` to build it): %v", bin, err)
	}
	var lastErr error
	for range 3 { // a free port can be taken between choosing and binding it
		reserved := Reserve(tb, 29000, 30900, 4, true)
		ports := reserved.Nums
		a := &Agent{
			tb:       tb,
			bin:      bin,
			ports:    reserved,
			HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[0]),
			args: []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
				"-node", "herald-test",
				"-http-port", strconv.Itoa(ports[0]), "-dns-port", "-1", "-grpc-port", "-1",
				"-server-port", strconv.Itoa(ports[1]), "-serf-lan-port", strconv.Itoa(ports[2]),
				"-serf-wan-port", strconv.Itoa(ports[3]), "-log-level", "warn"},
			Token: token,
		}
		if token != "" {
			a.args = append(a.args, "-hcl", `acl { enabled = true default_policy = "deny" tokens { initial_management = "`+token+`" agent = "`+token+`" } }`)
		}
		if lastErr = a.start(); lastErr == nil {
			tb.Cleanup(func() {
				a.Stop()
				if tb.Failed() {
					tb.Logf("consul agent output:\n%s", a.Output())
				}
			})
			return a
		}
	}
	tb.Fatalf("consultest: %v", lastErr)
	return nil
}

// Client returns an API client for the agent.
func (a *Agent) Client() *api.Client {
	return a.ClientWith(a.Token)
}

// ClientWith returns an API client for the agent that uses an ACL token.
func (a *Agent) ClientWith(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = a.HTTPAddr, token
	c, err := api.NewClient(cfg)
	if err != nil {
		a.tb.Fatalf("consultest: client: %v", err)
	}
	return c
}

// Stop kills the agent and waits for it to exit. Stopping a stopped agent
// does nothing.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return
	}
	a.proc.Kill()
	<-a.exited
	a.proc = nil
	a.ports.Guard() // until it starts again, or the test ends
}

// Restart stops the agent and starts a new one on the same ports. The new
// agent has forgotten everything.
func (a *Agent) Restart() {
	a.tb.Helper()
	a.Stop()
	if err := a.start(); err != nil {
		a.tb.Fatalf("consultest: restart: %v", err)
	}
}

// Output returns what the agent has printed since it last started.
func (a *Agent) Output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.out == nil {
		return ""
	}
	return a.out.String()
}

func (a *Agent) start() error {
	a.ports.Release()
	out := &syncBuffer{}
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	a.mu.Lock()
	a.proc, a.exited, a.out = cmd.Process, exited, out
	a.mu.Unlock()

	c := a.Client()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if leader, err := c.Status().Leader(); err == nil && leader != "" {
			if nodes, _, err := c.Catalog().Nodes(nil); err == nil && len(nodes) > 0 {
				return nil
			}
		}
		select {
		case <-exited:
			a.Stop()
			return fmt.Errorf("consul agent exited at start: %s", strings.TrimSpace(out.String()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	a.Stop()
	return fmt.Errorf("consul agent at %s not ready within 30s: %s", a.HTTPAddr, out.String())
}

// syncBuffer is a bytes.Buffer safe for the process's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
